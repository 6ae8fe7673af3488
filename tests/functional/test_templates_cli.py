"""`sd templates` and `sd batch` against the proxy handler in-process (an httpx transport turns
each request into an API Gateway event); no worker runs: the test ends the batch's tasks."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from proxy_function.app import lambda_handler as proxy
from sdcore.composition import get_services
from sdlocal import cli
from sdlocal.client import Client
from tests.functional.events import Context, api
from tests.functional.test_templates_batches import _finish, stack  # noqa: F401 (fixture)


def _bridge(request: httpx.Request) -> httpx.Response:
    if request.url.path.startswith("/files/"):  # an image URL of the local blob store
        key = request.url.path.removeprefix("/files/")
        return httpx.Response(200, content=get_services().blobs.get(key))
    headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
    event = api(request.method, request.url.path, request.content.decode() or None, headers)
    query = dict(request.url.params)
    event["queryStringParameters"] = query or None
    resp = proxy(event, Context())
    return httpx.Response(resp["statusCode"], content=(resp.get("body") or "").encode())


@pytest.fixture
def sd(stack: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:  # noqa: F811
    monkeypatch.setenv("SD_DATA_DIR", str(stack))
    monkeypatch.setattr(
        cli, "Client", lambda url, **kw: Client(url, transport=httpx.MockTransport(_bridge), **kw)
    )
    monkeypatch.chdir(tmp_path)

    def run(*argv: str) -> int:
        return cli.main(["--url", "http://api", *argv])

    return run


def test_templates_round_trip_through_files_and_run_as_a_batch(
    sd: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name, steps in (("a", 2), ("b", 3)):
        doc = {"name": name, "steps": steps, "width": 64, "height": 64, "folder": "cmp"}
        (src / f"{name}.json").write_text(json.dumps(doc))
    assert sd("templates", "import", str(src)) == 0
    assert capsys.readouterr().out.splitlines() == ["a: version 1", "b: version 1"]
    assert sd("templates", "import", str(src)) == 0  # again: the next versions
    assert capsys.readouterr().out.splitlines() == ["a: version 2", "b: version 2"]

    assert sd("templates", "export", str(tmp_path / "out")) == 0
    capsys.readouterr()
    exported = json.loads((tmp_path / "out" / "a.json").read_text())
    assert exported["steps"] == 2 and exported["name"] == "a" and "version" not in exported

    (src / "bad.json").write_text(json.dumps({"steps": 0}))
    assert sd("templates", "put", str(src / "bad.json")) == 1
    assert "steps" in capsys.readouterr().err

    # the batch: a worker (here, this thread) ends the tasks while the bar follows them
    def work() -> None:
        svc = get_services()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            queued = svc.tasks.list_by_owner("user", limit=10)
            if len(queued) == 2:
                for task in queued:
                    _finish(task.task_id, "red")
                return

    worker = threading.Thread(target=work)
    worker.start()
    assert sd("batch", "a fox", "--folder", "cmp", "--out", str(tmp_path / "grids")) == 0
    worker.join()
    state = json.loads(capsys.readouterr().out)
    assert state["status"] == "succeeded" and [t["template"] for t in state["tasks"]] == ["a", "b"]
    assert Path(state["files"][0]).stat().st_size > 0


def test_templates_run_and_batches_take_overrides(
    sd: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = tmp_path / "a.json"
    doc.write_text(json.dumps({"name": "a", "steps": 2, "prompt": "{prompt}, watercolour"}))
    assert sd("templates", "put", str(doc)) == 0
    capsys.readouterr()
    assert sd("templates", "run", "a", "a fox", "--set", "cfg_scale=9", "--async") == 0
    task = get_services().tasks.get(json.loads(capsys.readouterr().out)["taskId"])
    assert (task.params.prompt, task.params.guidance, task.params.steps) == (
        "a fox, watercolour",
        9,
        2,
    )
    assert sd("batch", "a cat", "--templates", "a", "--set", "seed=7", "--no-wait") == 0
    batch = json.loads(capsys.readouterr().out)
    assert get_services().tasks.get(batch["tasks"][0]["taskId"]).params.seed == 7
    assert sd("templates", "run", "a", "x", "--set", "steps=0", "--async") == 1
    assert "overrides.steps" in capsys.readouterr().err
