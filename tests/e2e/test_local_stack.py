"""The whole request path over HTTP, against the local stack started as `make run` starts it:
proxy -> task table -> queue -> control -> worker process -> PNG in the object store."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.support_stack import RunningStack

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stack")


@pytest.fixture(scope="module")
def stack(data_dir: Path) -> Iterator[RunningStack]:
    running = RunningStack(data_dir, SD_IDLE_SECONDS="600").start()
    yield running
    running.stop()


@pytest.fixture
def api(stack: RunningStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.url, timeout=120, headers=stack.headers) as client:
        yield client


def _png(client: httpx.Client, url: str) -> Image.Image:
    resp = client.get(url)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "image/png"
    img = Image.open(io.BytesIO(resp.content))
    img.load()
    return img


def _wait(client: httpx.Client, task_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/tasks/{task_id}/result").json()
        if body["status"] in ("succeeded", "failed", "cancelled"):
            return body
        time.sleep(0.1)
    raise AssertionError(f"task {task_id} did not finish")


def test_health(api: httpx.Client) -> None:
    assert api.get("/health").json() == {"status": "ok"}


def test_models_lists_the_demo_checkpoint(api: httpx.Client) -> None:
    models = {m["name"]: m for m in api.get("/models").json()}
    demo = models["demo"]
    assert demo["type"] == "checkpoint"
    assert demo["status"] in ("unloaded", "loading", "loaded")
    assert len(demo["sha256"]) == 64 and demo["size"] > 0
    assert demo["registeredTime"].endswith("Z")


def test_the_demo_controlnet_is_registered_before_the_stack_says_ready(
    api: httpx.Client,
) -> None:
    # /health answered 200 (the fixture waited for it): both demo models are registered
    assert api.get("/sdapi/v1/controlnet/model_list").json() == {"model_list": ["demo-canny"]}


def test_sync_txt2img_returns_a_url_serving_a_png(api: httpx.Client) -> None:
    # When
    resp = api.post("/txt2img", json={"prompt": "a red circle", "seed": 7, "steps": 4})
    # Then
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["status"] == "succeeded"
    assert body["images"] == [f"outputs/user/{body['taskId']}/0.png"]
    img = _png(api, body["urls"][0])
    assert img.size == (64, 64)  # the checkpoint's native size when width/height are omitted
    text = img.text["parameters"]
    assert text.startswith("a red circle\n")
    assert "Steps: 4" in text and "Seed: 7" in text and "Model: demo" in text
    assert body["parameters"]["steps"] == 4 and body["info"]["seed"] == 7
    timings = body["timings"]
    assert timings["createdAt"] <= timings["startedAt"] <= timings["finishedAt"]


def test_same_seed_gives_same_pixels(api: httpx.Client) -> None:
    req = {"prompt": "a blue square", "seed": 42, "steps": 3, "width": 64, "height": 64}
    first = api.post("/txt2img", json=req).json()
    second = api.post("/txt2img", json=req).json()
    assert _png(api, first["urls"][0]).tobytes() == _png(api, second["urls"][0]).tobytes()


def test_async_returns_a_task_that_succeeds(api: httpx.Client) -> None:
    resp = api.post(
        "/txt2img",
        json={"prompt": "x", "steps": 2, "batch_size": 2},
        headers={"Request-Type": "async"},
    )
    assert resp.status_code == 202
    assert resp.json()["status"] == "queued"
    body = _wait(api, resp.json()["taskId"])
    assert body["status"] == "succeeded"
    assert len(body["urls"]) == 2
    assert body["info"]["all_seeds"][1] == body["info"]["all_seeds"][0] + 1


def test_progress_then_cancellation_of_a_long_task(api: httpx.Client) -> None:
    # Given a task long enough to watch (512x512, 150 steps: over a minute on 2 cores)
    task_id = api.post(
        "/txt2img",
        json={"prompt": "slow", "steps": 150, "width": 512, "height": 512},
        headers={"Request-Type": "async"},
    ).json()["taskId"]
    deadline = time.monotonic() + 90
    progress = None
    while time.monotonic() < deadline:
        progress = api.get(f"/tasks/{task_id}/progress").json()
        if progress["state"]["samplingStep"] >= 2:
            break
        time.sleep(0.2)
    assert progress is not None
    assert 0 < progress["progress"] < 1
    assert progress["state"]["samplingSteps"] == 150
    assert progress["etaRelative"] > 0
    # When
    cancelled_at = time.monotonic()
    first = api.post(f"/tasks/{task_id}/cancellation")
    again = api.post(f"/tasks/{task_id}/cancellation")
    # Then the loop stops at its next step, not after 150
    assert first.status_code == 200 and again.status_code == 200
    body = _wait(api, task_id, timeout=30)
    assert body["status"] == "cancelled"
    assert time.monotonic() - cancelled_at < 15
    assert body["images"] == []
    after = api.get(f"/tasks/{task_id}/progress").json()
    assert after["state"]["interrupted"] is True
    assert api.post(f"/tasks/{task_id}/cancellation").json()["status"] == "cancelled"


def test_img2img_with_mask_and_extras_upscale(api: httpx.Client) -> None:
    source = api.post("/txt2img", json={"prompt": "a", "seed": 1, "steps": 2}).json()
    png = api.get(source["urls"][0]).content
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    buf = io.BytesIO()
    mask.save(buf, format="PNG")
    # input as a data URL, mask as plain base64
    resp = api.post(
        "/img2img",
        json={
            "prompt": "b",
            "steps": 4,
            "denoising_strength": 0.5,
            "init_images": ["data:image/png;base64," + base64.b64encode(png).decode()],
            "mask": base64.b64encode(buf.getvalue()).decode(),
        },
    )
    assert resp.status_code == 200, resp.text
    out = _png(api, resp.json()["urls"][0])
    assert out.size == (64, 64)
    assert "Denoising strength: 0.5" in out.text["parameters"]
    # an earlier result given by object key
    up = api.post("/extra_images", json={"image": source["images"][0], "upscaling_resize": 2})
    assert up.status_code == 200, up.text
    assert _png(api, up.json()["urls"][0]).size == (128, 128)


def test_bad_input_is_a_422_naming_the_field(api: httpx.Client) -> None:
    resp = api.post("/txt2img", json={"prompt": "x", "steps": 0})
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["loc"] == ["body", "steps"]
    resp = api.post("/txt2img", json={"sampler_name": "Nope"})
    assert resp.status_code == 422
    assert "Euler" in resp.json()["detail"][0]["msg"]
    resp = api.post("/img2img", json={"init_images": ["%%%"]})
    assert resp.status_code == 422
    assert resp.json()["detail"][0]["loc"] == ["body", "init_images", 0]
    resp = api.post("/txt2img", content=b"{not json", headers={"Content-Type": "application/json"})
    assert resp.status_code == 422
    resp = api.post("/txt2img", json={"stable_diffusion_model": "missing"})
    assert resp.status_code == 404
    assert api.get("/tasks/nope/result").status_code == 404
    assert api.post("/tasks/nope/cancellation").status_code == 404


def _scrape(client: httpx.Client) -> dict[str, list[tuple[dict[str, str], float]]]:
    from prometheus_client.parser import text_string_to_metric_families

    resp = client.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples


def _total(
    samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str
) -> float:
    return sum(v for got, v in samples.get(name, []) if labels.items() <= got.items())


def test_a_burst_shows_in_metrics_and_admin_stats(stack: RunningStack) -> None:
    with httpx.Client(base_url=stack.url, timeout=120, headers=stack.admin_headers) as admin:
        before = _total(_scrape(admin), "sd_tasks_succeeded_total", model="demo")
        with httpx.Client(base_url=stack.url, timeout=120, headers=stack.headers) as api:
            # metrics name users and models: an admin's only
            assert api.get("/metrics").status_code == 403
            assert httpx.get(f"{stack.url}/metrics").status_code == 401
            # Given a burst of three tasks and a refused request
            ids = [
                api.post("/txt2img", json={"prompt": "burst", "steps": 2, "seed": n},
                         headers={"Request-Type": "async"}).json()["taskId"]
                for n in range(3)
            ]  # fmt: skip
            assert api.post("/txt2img", json={"steps": "many"}).status_code == 422
            assert all(_wait(api, task_id)["status"] == "succeeded" for task_id in ids)

        # Then /metrics shows them, summed over the stack's processes, with their labels
        demo = {"model": "demo", "fleet": "local"}
        deadline = time.monotonic() + 30
        while True:  # the gauges come with control's next schedule tick
            samples = _scrape(admin)
            if "sd_tasks_waiting" in samples or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert _total(samples, "sd_tasks_succeeded_total", **demo) - before >= 3
        assert _total(samples, "sd_tasks_submitted_total", model="demo", kind="txt2img") >= 3
        assert _total(samples, "sd_queue_wait_seconds_count", **demo) >= 3
        assert _total(samples, "sd_run_seconds_count", status="succeeded", **demo) >= 3
        assert _total(samples, "sd_end_to_end_seconds_bucket", le="+Inf", **demo) >= 3
        assert _total(samples, "sd_sampling_steps_per_second_count", **demo) >= 3
        assert _total(samples, "sd_cold_starts_total", function="inference") >= 1
        assert _total(samples, "sd_model_loads_total", outcome="loaded", **demo) >= 1
        assert _total(samples, "sd_http_client_errors_total", route="/txt2img", status="422") >= 1
        assert _total(samples, "sd_slot_cap", model="all") >= 1
        assert "sd_tasks_waiting" in samples

        # and /admin/stats counts them and their latencies from the task records
        stats = admin.get("/admin/stats").json()
        hour = stats["windows"][0]
        assert hour["window"] == "hour" and not hour["truncated"]
        assert hour["total"]["succeeded"] >= 3 and hour["total"]["submitted"] >= 3
        [model] = [m for m in hour["models"] if m["model"] == "demo"]
        assert model["fleet"] == "local" and model["queueWaitSeconds"]["count"] >= 3
        assert model["runSeconds"]["p95"] is not None


def test_restart_keeps_finished_results(stack: RunningStack) -> None:
    with httpx.Client(base_url=stack.url, timeout=120, headers=stack.headers) as api:
        body = api.post("/txt2img", json={"prompt": "keep me", "steps": 2}).json()
        before = api.get(body["urls"][0]).content
    stack.stop()
    stack.start()
    with httpx.Client(base_url=stack.url, timeout=120, headers=stack.headers) as api:
        again = api.get(f"/tasks/{body['taskId']}/result").json()
        assert again["status"] == "succeeded"
        assert again["parameters"]["prompt"] == "keep me"
        assert api.get(again["urls"][0]).content == before
