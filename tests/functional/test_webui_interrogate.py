"""`POST /sdapi/v1/interrogate` end to end on the local backend: a captioner and a tagger
uploaded through the admin API (and verified), then interrogated through the proxy handler
while an inference worker (the real engine) runs the task; the caller's webui options reach
the result. Without a registered model of the method's type the route answers 422 naming
`model`."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import inference_function.app as inference_app
from admin_function.app import lambda_handler as admin
from proxy_function.app import lambda_handler as proxy
from sdcore import composition
from sdcore.composition import get_services
from sdcore.domain.interrogate import InterrogateSpec
from sdcore.domain.models import Model, ModelStatus, TaskStatus
from sdcore.engine.diffusers_engine import DiffusersEngine
from sdcore.engine.interrogate import Captioner
from sdlocal.demo import tiny
from tests.functional.events import Context, api
from tests.functional.jobs import run_model_jobs
from tests.interrogators import save_captioner, save_tagger, tar_folder

PICTURE = Image.new("RGB", (48, 40), (30, 120, 200))


def _png() -> str:
    buf = io.BytesIO()
    PICTURE.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def call(handler: Any, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    resp = handler(api(method, path, body), Context())
    return resp["statusCode"], json.loads(resp["body"]) if resp.get("body") else None


def upload(name: str, kind: str, data: bytes) -> dict[str, Any]:
    body = {
        "name": name,
        "type": kind,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    status, plan = call(admin, "POST", "/admin/models", body)
    assert status == 201, plan
    [part] = plan["parts"]
    etag = get_services().blobs.write_part(plan["uploadId"], 1, iter([data]), None)
    done = {"parts": [{"partNumber": part["partNumber"], "etag": f'"{etag}"'}]}
    assert call(admin, "POST", f"/admin/models/{name}/complete", done)[0] == 202
    assert [job["job"] for job in run_model_jobs()] == ["verify"]
    return call(admin, "GET", f"/admin/models/{name}")[1]


@pytest.fixture
def stack(local_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    monkeypatch.setenv("SD_WEBUI_TIMEOUT", "120")
    monkeypatch.setenv("SD_MODEL_NAME", "demo")
    monkeypatch.setenv("SD_MODEL_CACHE_DIR", str(tmp_path / "cache"))
    composition.reset()
    svc = get_services()
    demo = Model(name="demo", status=ModelStatus.UNLOADED, sha256="0" * 64, size=1,
                 key="models/demo.safetensors", registered_at=0, modified_at=0)  # fmt: skip
    svc.models.create(demo)
    engine = DiffusersEngine(tiny.save_single_file(tmp_path / "tiny-sd.safetensors"), "demo",
                             "0" * 64, config_dir=tiny.CONFIG_DIR, device="cpu")  # fmt: skip
    engine.load()
    monkeypatch.setattr(inference_app, "load_engine", lambda *_: engine)
    monkeypatch.setattr(inference_app, "_engine", None)
    yield local_env


@contextmanager
def worker() -> Iterator[None]:
    """An inference worker that runs each queued task as control would hand it over."""
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            for task in get_services().tasks.list_by_status(TaskStatus.QUEUED):
                inference_app.lambda_handler({"taskId": task.task_id}, Context())
            stop.wait(0.02)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)


def test_interrogate_captions_and_tags_with_the_registered_models(
    stack: Path, tmp_path: Path
) -> None:
    # nothing registered: 422 naming model, saying which type to register
    for method, kind in (("clip", "captioner"), ("deepdanbooru", "tagger")):
        status, body = call(
            proxy, "POST", "/sdapi/v1/interrogate", {"image": _png(), "model": method}
        )
        assert status == 422 and body["detail"][0]["loc"][-1] == "model", body
        assert f"registered {kind} model" in body["detail"][0]["msg"]
    status, body = call(proxy, "POST", "/sdapi/v1/interrogate", {"image": _png(), "model": "blip"})
    assert status == 422 and "clip, deepdanbooru" in json.dumps(body)

    captioner = save_captioner(tmp_path / "captioner")
    assert upload("blip-tiny", "captioner", tar_folder(captioner))["error"] is None
    assert (
        upload("tags-tiny", "tagger", tar_folder(save_tagger(tmp_path / "tagger")))["error"] is None
    )

    with worker():
        status, body = call(proxy, "POST", "/sdapi/v1/interrogate", {"image": _png()})
        assert status == 200, body
        # the webui's defaults: beams 1, length 24..48, every list
        spec = InterrogateSpec(method="clip", model="blip-tiny")
        assert body == {"caption": Captioner(captioner, "cpu").interrogate(PICTURE, spec)}
        assert body["caption"].count(", ") >= 6  # caption, medium, artist, movement, 3 flavours

        tags = {"image": _png(), "model": "deepdanbooru"}
        assert call(proxy, "POST", "/sdapi/v1/interrogate", tags) == (
            200, {"caption": r"apple, cat \(animal\), zebra"},
        )  # fmt: skip
        options = {"interrogate_deepbooru_score_threshold": 0.65, "deepbooru_sort_alpha": False}
        assert call(proxy, "POST", "/sdapi/v1/options", options)[0] == 200
        assert call(proxy, "POST", "/sdapi/v1/interrogate", tags) == (
            200, {"caption": r"zebra, cat \(animal\)"},
        )  # fmt: skip

    # each call was a task: its result carries the text, no images
    latest = get_services().tasks.list_by_owner("user", TaskStatus.SUCCEEDED, limit=1)[0]
    status, result = call(proxy, "GET", f"/tasks/{latest.public_id}/result")
    assert status == 200 and result["images"] == [], result
    assert result["info"]["caption"] == r"zebra, cat \(animal\)"
    assert result["parameters"]["interrogator"] == "tags-tiny"
