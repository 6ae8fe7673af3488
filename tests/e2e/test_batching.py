"""Dynamic batching on the local stack over HTTP (SD_MAX_BATCH=4, one slot in all): compatible
requests queued behind a task that holds the only slot run as one batch once it frees, and
each one's picture is the one it gets when it runs alone."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.support_stack import RunningStack, wait_for_result

pytestmark = pytest.mark.slow
ASYNC = {"Request-Type": "async"}
COLORS = ("red", "blue", "green", "purple")


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    stack = RunningStack(
        tmp_path_factory.mktemp("batching"),
        SD_MAX_BATCH="4",
        SD_MAX_CONCURRENCY="1",
        SD_PROGRESS_INTERVAL="0.2",
    ).start()
    with httpx.Client(base_url=stack.url, headers=stack.headers, timeout=120) as client:
        yield client
    stack.stop()


def _pixels(api: httpx.Client, body: dict) -> np.ndarray:
    image = Image.open(io.BytesIO(api.get(body["urls"][0]).content)).convert("RGB")
    return np.asarray(image, dtype=np.int16)


def _request(n: int) -> dict:
    return {"prompt": f"a {COLORS[n]} circle on a white background", "seed": 100 + n,
            "steps": 4, "width": 64, "height": 64}  # fmt: skip


def test_requests_queued_behind_the_only_slot_run_as_one_batch(api: httpx.Client) -> None:
    # Given a long task of another size holding the only slot
    long = {"prompt": "long", "steps": 150, "width": 512, "height": 512}
    long_id = api.post("/txt2img", json=long, headers=ASYNC).json()["taskId"]
    deadline = time.monotonic() + 60
    while api.get(f"/tasks/{long_id}/result").json()["status"] != "running":
        assert time.monotonic() < deadline, "the long task never started"
        time.sleep(0.1)
    # and four compatible requests (prompts and seeds differ) queued behind it
    ids = []
    for n in range(4):
        resp = api.post("/txt2img", json=_request(n), headers=ASYNC)
        assert resp.status_code == 202, resp.text
        ids.append(resp.json()["taskId"])
    assert api.get(f"/tasks/{long_id}/result").json()["status"] == "running"

    # When the slot frees
    api.post(f"/tasks/{long_id}/cancellation")
    done = [wait_for_result(api, task_id) for task_id in ids]

    # Then all four succeeded in one batch, which every one of them records
    assert [b["status"] for b in done] == ["succeeded"] * 4, [b["error"] for b in done]
    batches = {b["info"]["batch"]["id"] for b in done}
    assert len(batches) == 1
    assert sorted(done[0]["info"]["batch"]["tasks"]) == sorted(ids)
    assert batches <= set(ids)  # led by one of them, under the one slot it was given
    # and each picture is the one the same request draws alone (within one level where the
    # engine batches for real: a batched matmul may round differently)
    for n, batched in enumerate(done):
        alone = api.post("/txt2img", json=_request(n)).json()
        assert alone["status"] == "succeeded", alone
        assert "batch" not in alone["info"]
        diff = np.abs(_pixels(api, batched) - _pixels(api, alone))
        assert diff.max() <= 1, (n, int(diff.max()))
