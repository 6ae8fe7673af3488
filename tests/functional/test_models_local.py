"""Model management through the admin and proxy handlers, local backend: multipart uploads
(resumed, truncated, wrong digest, wrong type), verification as a job, every model type and its
webui listing, import from a URL, update while a task runs, rename, abort, delete, the sweep."""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import inference_function.app as inference_app
from admin_function.app import lambda_handler as admin
from control_function.app import lambda_handler as control
from proxy_function.app import lambda_handler as proxy
from sdcore import composition
from sdcore.clock import Clock
from sdcore.composition import get_services
from sdcore.domain.models import FunctionRecord, GenerationParams, ModelChanges, ModelStatus
from sdcore.errors import InvalidInputError
from sdcore.ports import Engine, EngineInputs, EngineResult, StepCallback, StepInfo, function_name
from tests import model_files as mf
from tests.functional.events import Context, api, load
from tests.functional.jobs import run_model_jobs

MIB = 1024 * 1024


@pytest.fixture
def env(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("SD_PART_SIZE", str(5 * MIB))
    monkeypatch.setenv("SD_ALLOW_PRIVATE_URLS", "true")  # the import tests' server is local
    monkeypatch.setenv("SD_MODEL_CACHE_DIR", str(tmp_path / "cache"))
    return Path(request.getfixturevalue("local_env"))


def call(handler: Any, method: str, path: str, body: Any = None, headers=None) -> tuple[int, Any]:
    resp = handler(api(method, path, body, headers), Context())
    return resp["statusCode"], json.loads(resp["body"]) if resp.get("body") else None


def query(handler: Any, path: str, **params: str) -> tuple[int, Any]:
    """A GET with a query string, as API Gateway puts it in the event."""
    event = api("GET", path)
    event["queryStringParameters"] = params
    event["multiValueQueryStringParameters"] = {k: [v] for k, v in params.items()}
    resp = handler(event, Context())
    return resp["statusCode"], json.loads(resp["body"])


def start(name: str, data: bytes, kind: str = "checkpoint", **extra: Any) -> dict[str, Any]:
    body = {"name": name, "type": kind, "size": len(data), "config": "tiny-sd", **extra}
    body.setdefault("sha256", hashlib.sha256(data).hexdigest())
    status, plan = call(admin, "POST", "/admin/models", body)
    assert status == 201, plan
    return plan


def put_part(plan: dict[str, Any], data: bytes, n: int) -> dict[str, Any]:
    """What the local server does with a signed part PUT (Content-MD5 checked)."""
    chunk = data[(n - 1) * plan["partSize"] : n * plan["partSize"]]
    md5 = base64.b64encode(hashlib.md5(chunk).digest()).decode()
    etag = get_services().blobs.write_part(plan["uploadId"], n, iter([chunk]), md5)
    return {"partNumber": n, "etag": f'"{etag}"'}


def complete(name: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    status, body = call(admin, "POST", f"/admin/models/{name}/complete", {"parts": parts})
    assert status == 202 and body["pending"]["stage"] == "verifying", body
    assert [job["job"] for job in run_model_jobs()] == ["verify"]
    status, model = call(admin, "GET", f"/admin/models/{name}")
    assert status == 200
    return model


def upload(name: str, data: bytes, kind: str = "checkpoint", **extra: Any) -> dict[str, Any]:
    plan = start(name, data, kind, **extra)
    return complete(name, [put_part(plan, data, p["partNumber"]) for p in plan["parts"]])


def submit(model: str) -> tuple[int, Any]:
    body = {"prompt": "x", "steps": 4, "stable_diffusion_model": model}
    return call(proxy, "POST", "/txt2img", body, {"Request-Type": "async"})


def big_checkpoint(size: int) -> bytes:
    """A valid checkpoint of about `size` bytes (a large tensor pads it out)."""
    return mf.checkpoint({"model.diffusion_model.pad.weight": [size]})


# --- uploads ---------------------------------------------------------------------------------


def test_a_three_part_upload_resumed_after_its_first_part(env: Path) -> None:
    data = big_checkpoint(11 * MIB)
    plan = start("resumed", data)
    assert len(plan["parts"]) == 3 and plan["partSize"] == 5 * MIB
    first = put_part(plan, data, 1)
    # the client went away; later it asks what the server holds, and registers the same file
    status, held = call(admin, "GET", "/admin/models/resumed/upload")
    assert status == 200 and held["uploadId"] == plan["uploadId"]
    assert held["parts"] == [{"partNumber": 1, "etag": first["etag"].strip('"')}]
    again = start("resumed", data)
    assert again["uploadId"] == plan["uploadId"] and len(again["parts"]) == 3
    model = complete("resumed", [first, put_part(again, data, 2), put_part(again, data, 3)])
    assert model["status"] == "unloaded" and model["error"] is None and model["pending"] is None
    assert model["sha256"] == hashlib.sha256(data).hexdigest() and model["size"] == len(data)
    assert model["format"] == "safetensors" and model["version"] == 1
    assert submit("resumed")[0] == 202


def test_a_truncated_upload_leaves_the_model_unusable(env: Path) -> None:
    data = big_checkpoint(11 * MIB)
    plan = start("short", data)
    # only two of the three parts arrive, and the client completes anyway
    model = complete("short", [put_part(plan, data, 1), put_part(plan, data, 2)])
    assert model["status"] == "registering"
    assert model["error"] == f"size mismatch: registered {len(data)} bytes, received {10 * MIB}"
    status, body = submit("short")
    assert status == 409 and "size mismatch" in body["message"]
    assert not any(get_services().blobs.list_multipart("models/"))  # nothing left behind


def test_a_wrong_sha256_leaves_the_model_unusable_and_a_new_upload_replaces_it(env: Path) -> None:
    data = mf.checkpoint()
    model = upload("bad", data, sha256="ab" * 32)
    assert model["error"].startswith("sha256 mismatch: registered " + "ab" * 32)
    assert model["pending"]["error"] == model["error"]
    status, body = submit("bad")
    assert status == 409 and "sha256 mismatch" in body["message"]
    assert upload("bad", data)["status"] == "unloaded"


def test_a_file_that_is_no_model_or_of_another_type_is_refused(env: Path) -> None:
    junk = upload("junk", b"GGUF not a model, not safetensors" * 40)
    assert "not a .safetensors file nor an uncompressed tar" in junk["error"]
    lora = upload("lora-as-ckpt", mf.safetensors(mf.lora_shapes()))
    assert lora["error"] == "not a valid checkpoint: this file looks like a lora, not a checkpoint"
    status, body = submit("lora-as-ckpt")
    assert status == 409 and "looks like a lora" in body["message"]


def test_a_pickle_checkpoint_needs_sd_allow_pickle_then_loads_and_runs(
    env: Path, tmp_path: Path
) -> None:
    import io

    import torch
    from safetensors.torch import load_file

    from sdcore.engine.diffusers_engine import DiffusersEngine
    from sdcore.usecases.model_cache import load_engine
    from sdlocal.demo import tiny

    buf = io.BytesIO()
    state = load_file(str(tiny.save_single_file(tmp_path, name="tiny-sd")))
    torch.save({"state_dict": state, "global_step": 1}, buf)
    refused = upload("pickled", buf.getvalue())
    assert "SD_ALLOW_PICKLE" in refused["error"]
    get_services().settings.allow_pickle = True
    model = upload("pickled-ok", buf.getvalue())
    assert (model["format"], model["error"], model["details"]["architecture"]) == (
        "pickle",
        None,
        "sd1",
    )
    engine = load_engine(get_services(), "pickled-ok", DiffusersEngine)
    assert engine.model_path.name == "model.ckpt"
    params = GenerationParams(kind="txt2img", prompt="a red circle", steps=2)
    assert engine.run(params, EngineInputs(), lambda info: None).images[0].size == (64, 64)


def test_a_damaged_part_is_refused_by_its_content_md5(env: Path) -> None:
    data = mf.checkpoint()
    plan = start("damaged", data)
    wrong = base64.b64encode(hashlib.md5(b"other bytes").digest()).decode()
    with pytest.raises(InvalidInputError, match="Content-MD5"):
        get_services().blobs.write_part(plan["uploadId"], 1, iter([data]), wrong)
    assert call(admin, "GET", "/admin/models/damaged/upload")[1]["parts"] == []


def test_aborting_an_upload(env: Path) -> None:
    data = mf.checkpoint()
    plan = start("gone", data)
    put_part(plan, data, 1)
    status, body = call(admin, "DELETE", "/admin/models/gone/upload")
    assert status == 200 and body["status"] == "deleted"
    assert call(admin, "GET", "/admin/models/gone")[0] == 404
    assert get_services().blobs.list_multipart("models/") == []
    assert call(admin, "DELETE", "/admin/models/gone/upload")[0] == 404


def test_bad_input_is_a_422_naming_the_field(env: Path) -> None:
    data = mf.checkpoint()
    body = {"name": "x", "size": len(data), "sha256": "0" * 64}
    status, answer = call(admin, "POST", "/admin/models", {**body, "config": "sdxl-nope"})
    assert status == 422 and answer["detail"][0]["loc"] == ["body", "config"]
    status, answer = call(admin, "POST", "/admin/models", {**body, "type": "hypernetwork"})
    assert status == 422 and answer["detail"][0]["loc"] == ["body", "type"]
    status, answer = query(admin, "/admin/models", type="nope")
    assert status == 422 and answer["detail"][0]["loc"] == ["query", "type"]
    assert call(admin, "GET", "/admin/models")[1] == []  # nothing half-written


# --- types and listings ------------------------------------------------------------------------


def test_every_type_is_verified_and_listed_where_the_webui_looks(env: Path) -> None:
    for kind, make in mf.BY_TYPE.items():
        model = upload(f"my-{kind}", make(), kind)
        assert model["status"] == "unloaded" and model["error"] is None, model
    status, loras = query(admin, "/admin/models", type="lora")
    assert status == 200 and [m["name"] for m in loras] == ["my-lora"]
    status, loras = query(proxy, "/models", type="lora")
    assert status == 200 and [m["name"] for m in loras] == ["my-lora"]
    webui = {
        path: call(proxy, "GET", f"/sdapi/v1/{path}")[1]
        for path in ("sd-models", "sd-vae", "loras", "embeddings", "upscalers")
    }
    [checkpoint] = webui["sd-models"]
    assert checkpoint["model_name"] == "my-checkpoint" and checkpoint["config"] == "tiny-sd"
    assert checkpoint["title"] == f"my-checkpoint [{checkpoint['sha256'][:10]}]"
    assert checkpoint["hash"] == checkpoint["sha256"][:10]
    assert checkpoint["filename"] == "my-checkpoint.safetensors"
    assert [v["model_name"] for v in webui["sd-vae"]] == ["my-vae"]
    assert webui["loras"][0]["name"] == "my-lora" and webui["loras"][0]["metadata"]["rank"] == 4
    assert webui["embeddings"]["loaded"] == {
        "my-embedding": {
            "step": None,
            "sd_checkpoint": None,
            "sd_checkpoint_name": None,
            "shape": 32,
            "vectors": 2,
        }
    }
    assert {"name": "my-upscaler", "scale": 2}.items() <= webui["upscalers"][-1].items()
    status, controlnets = call(proxy, "GET", "/sdapi/v1/controlnet/model_list")
    assert controlnets == {"model_list": ["my-controlnet"]}
    for what in ("checkpoints", "vae", "loras", "embeddings"):
        assert call(proxy, "POST", f"/sdapi/v1/refresh-{what}") == (200, {})
    # a LoRA is no checkpoint, a checkpoint no VAE
    status, body = submit("my-lora")
    assert status == 422 and body["detail"][0]["loc"] == ["body", "stable_diffusion_model"]
    status, body = call(
        proxy,
        "POST",
        "/txt2img",
        {"sd_vae": "my-checkpoint", "stable_diffusion_model": "my-checkpoint"},
        {"Request-Type": "async"},
    )
    assert status == 422 and body["detail"][0]["loc"] == ["body", "sd_vae"]


def test_a_diffusers_folder_tar_is_a_checkpoint(env: Path) -> None:
    model = upload("folder", mf.diffusers_tar("folder"))
    assert (model["status"], model["format"], model["error"]) == ("unloaded", "diffusers", None)


# --- import from a URL -------------------------------------------------------------------------


@pytest.fixture
def file_server() -> Iterator[tuple[str, dict[str, bytes]]]:
    """An HTTP server on 127.0.0.1 serving the bytes put in its dict (404 otherwise)."""
    files: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            data = files.get(self.path)
            if data is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", files
    finally:
        server.shutdown()
        server.server_close()


def test_import_from_a_url_is_a_job_with_progress(env: Path, file_server) -> None:
    base, files = file_server
    data = mf.safetensors(mf.lora_shapes(rank=8))
    files["/styles/ink.safetensors"] = data
    body = {"name": "ink", "type": "lora", "url": f"{base}/styles/ink.safetensors"}
    status, model = call(admin, "POST", "/admin/models/import", body)
    assert status == 202 and model["status"] == "registering"
    assert model["pending"]["stage"] == "importing" and model["pending"]["source"] == body["url"]
    assert submit("ink")[0] in (409, 422)  # not usable while it comes in
    assert [job["job"] for job in run_model_jobs()] == ["import"]
    status, model = call(admin, "GET", "/admin/models/ink")
    assert model["status"] == "unloaded" and model["pending"] is None and model["error"] is None
    assert model["sha256"] == hashlib.sha256(data).hexdigest() and model["size"] == len(data)
    assert call(proxy, "GET", "/sdapi/v1/loras")[1][0]["metadata"]["rank"] == 8


def test_import_failures_leave_the_reason(env: Path, file_server) -> None:
    base, files = file_server
    files["/lora.safetensors"] = mf.safetensors(mf.lora_shapes())
    cases = {
        "missing": ({"url": f"{base}/nope.safetensors"}, "import failed: url: answered HTTP 404"),
        "digest": ({"url": f"{base}/lora.safetensors", "sha256": "cd" * 32}, "sha256 mismatch"),
    }
    for name, (extra, _) in cases.items():
        body = {"name": name, "type": "lora", **extra}
        assert call(admin, "POST", "/admin/models/import", body)[0] == 202
    run_model_jobs()
    for name, (_, reason) in cases.items():
        model = call(admin, "GET", f"/admin/models/{name}")[1]
        assert model["status"] == "registering" and reason in model["error"], model


def test_import_urls_go_through_the_address_guard(env: Path, monkeypatch) -> None:
    for url, reason in [
        ("ftp://example.com/m.safetensors", "must be an http or https URL"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
    ]:
        status, body = call(admin, "POST", "/admin/models/import", {"name": "m", "url": url})
        assert status == 422 and body["detail"][0]["loc"] == ["body", "url"], body
        assert reason in body["detail"][0]["msg"]
    assert call(admin, "GET", "/admin/models")[1] == []


# --- update, rename, delete ----------------------------------------------------------------------


class RecordingEngine(Engine):
    """Stands in for diffusers: which version ran each task, and a hook mid-run."""

    loads: list[str] = []
    during_run: Any = None

    def __init__(self, sha256: str) -> None:
        self.model_hash = sha256

    def load(self) -> None:
        RecordingEngine.loads.append(self.model_hash)

    def run(
        self, params: GenerationParams, inputs: EngineInputs, on_step: StepCallback
    ) -> EngineResult:
        for step in range(1, params.steps + 1):
            if step == 2 and RecordingEngine.during_run:
                hook, RecordingEngine.during_run = RecordingEngine.during_run, None
                hook()
            on_step(StepInfo(step, params.steps, 0, 1, 0.01))
        image = Image.new("RGB", (8, 8))
        return EngineResult([image], ["x"], {"model_sha256": self.model_hash})


def test_an_update_while_a_task_runs(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def load_engine(svc: Any, name: str, make: Any) -> Engine:
        engine = RecordingEngine(svc.models.get(name).sha256)
        engine.load()
        return engine

    monkeypatch.setenv("SD_MODEL_NAME", "demo")  # the inference function of "demo"
    composition.reset()
    monkeypatch.setattr(inference_app, "load_engine", load_engine)
    monkeypatch.setattr(inference_app, "_engine", None)
    monkeypatch.setattr(RecordingEngine, "loads", [])
    v1 = mf.checkpoint(metadata={"v": "1"})
    v2 = mf.checkpoint(metadata={"v": "2"})
    upload("demo", v1)
    _, first = submit("demo")
    _, second = submit("demo")

    # Given the first task is running on version 1 when version 2 is uploaded and verified
    def update() -> None:
        model = upload("demo", v2, update=True)
        assert model["version"] == 2 and model["sha256"] == hashlib.sha256(v2).hexdigest()

    RecordingEngine.during_run = update
    assert inference_app.lambda_handler({"taskId": first["taskId"]}, Context())["status"] == (
        "succeeded"
    )
    # Then it finished on version 1, and the next task runs on version 2
    assert inference_app.lambda_handler({"taskId": second["taskId"]}, Context())["status"] == (
        "succeeded"
    )
    ran = [call(proxy, "GET", f"/tasks/{t['taskId']}/result")[1] for t in (first, second)]
    assert [r["info"]["model_sha256"] for r in ran] == [
        hashlib.sha256(v1).hexdigest(),
        hashlib.sha256(v2).hexdigest(),
    ]
    assert RecordingEngine.loads == [r["info"]["model_sha256"] for r in ran]
    # the old version's file is gone; an update needs "update": true and another file
    assert len(list((env / "objects" / "models" / "checkpoint" / "demo").iterdir())) == 1
    plan = {"name": "demo", "size": len(v2), "sha256": hashlib.sha256(v1).hexdigest()}
    assert call(admin, "POST", "/admin/models", plan)[0] == 409
    status, body = call(admin, "POST", "/admin/models", {**plan, "update": True, "type": "lora"})
    assert status == 422 and body["detail"][0]["loc"] == ["body", "type"]


def test_a_failed_update_keeps_the_current_version(env: Path) -> None:
    v1 = mf.checkpoint()
    upload("stable", v1)
    model = upload("stable", mf.safetensors(mf.vae_shapes()), update=True)
    assert model["status"] == "unloaded" and model["error"] is None and model["version"] == 1
    assert "looks like a vae" in model["pending"]["error"]
    assert model["sha256"] == hashlib.sha256(v1).hexdigest()
    assert submit("stable")[0] == 202


def test_rename(env: Path) -> None:
    upload("old-name", mf.checkpoint())
    status, model = call(admin, "POST", "/admin/models/old-name/rename", {"newName": "new-name"})
    assert status == 200 and model["name"] == "new-name" and model["status"] == "unloaded"
    assert call(admin, "GET", "/admin/models/old-name")[0] == 404
    assert submit("new-name")[0] == 202
    status, body = call(admin, "POST", "/admin/models/new-name/rename", {"newName": "bad name!"})
    assert status == 422 and body["detail"][0]["loc"] == ["body", "newName"]
    upload("other", mf.checkpoint(metadata={"o": "1"}))
    assert call(admin, "POST", "/admin/models/other/rename", {"newName": "new-name"})[0] == 409


def test_delete_removes_the_function_files_and_cached_copies(env: Path) -> None:
    svc = get_services()
    model = upload("doomed", mf.checkpoint())
    name = function_name(svc.settings.function_prefix, "doomed")
    svc.functions.put(FunctionRecord(name=name, model="doomed", status="active", created_at=0))
    cached = svc.settings.model_cache_dir / model["sha256"]
    cached.mkdir(parents=True)
    (cached / "model.bin").write_bytes(b"copy")
    assert [f["model"] for f in call(admin, "GET", "/admin/functions")[1]] == ["doomed"]

    status, body = call(admin, "DELETE", "/admin/models/doomed")

    assert status == 200 and body["status"] == "deleted"
    assert call(admin, "GET", "/admin/functions")[1] == []
    assert not cached.exists()
    assert [p for p in (env / "objects" / "models").rglob("*") if p.is_file()] == []
    assert call(admin, "GET", "/admin/models/doomed")[0] == 404
    assert submit("doomed")[0] == 404


# --- the schedule: sweep and status --------------------------------------------------------------


def test_the_sweep_ends_abandoned_uploads_dead_jobs_and_marks_unloaded(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = get_services()
    data = mf.checkpoint()
    upload("held", mf.checkpoint(metadata={"h": "1"}))
    upload("busy", mf.checkpoint(metadata={"b": "1"}))
    start("stale", data)  # never completed
    plan = start("slow", data)
    call(admin, "POST", "/admin/models/slow/complete", {"parts": [put_part(plan, data, 1)]})
    # (its verification job is queued but never runs: the job died)
    orphan = svc.blobs.create_multipart("models/checkpoint/ghost/x")
    svc.models.update(
        "held", ModelChanges(status=ModelStatus.LOADED)
    )  # by a worker that is gone now
    svc.models.update(
        "busy", ModelChanges(status=ModelStatus.LOADED)
    )  # and a task of it holds its slots
    assert svc.slots.acquire("t-busy", "busy", Clock().now(), 900, 10, 10) is not None
    fresh = control(load("schedule.json"), Context())
    assert fresh["swept"] == [] and fresh["unloaded"] == ["held"]

    # When eight days pass (the busy task's lease has long expired)
    later = Clock.now(Clock()) + 8 * 86400
    monkeypatch.setattr(Clock, "now", lambda self: later)
    schedule = control(load("schedule.json"), Context())
    swept = schedule["swept"]
    assert schedule["unloaded"] == ["busy"]

    # Then
    assert sorted(swept) == ["models/checkpoint/ghost/x", "slow", "stale"]
    stale = call(admin, "GET", "/admin/models/stale")[1]
    assert stale["error"] == "upload abandoned: not completed within 168 h"
    status, body = submit("stale")
    assert status == 409 and "upload abandoned" in body["message"]
    slow = call(admin, "GET", "/admin/models/slow")[1]
    assert slow["error"].startswith("verifying stopped: no progress for 1200 s")
    assert svc.blobs.list_multipart("models/") == []
    assert orphan not in {u.upload_id for u in svc.blobs.list_multipart("")}
    # the dead job, delivered late, changes nothing
    assert [job["name"] for job in run_model_jobs()] == ["slow"]
    assert call(admin, "GET", "/admin/models/slow")[1]["error"] == slow["error"]


def test_the_local_job_loop_runs_a_job_cut_short_by_a_restart_once_more(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import admin_function.app as admin_app
    from sdlocal.events import EventSource

    svc = get_services()
    assert svc.jobs is not None
    ran: list[str] = []

    def job(svc: Any, body: dict[str, Any]) -> str:
        ran.append(body["name"])
        return "verified"

    monkeypatch.setattr(admin_app, "run_job", job)
    svc.jobs.send({"job": "verify", "name": "cut-short", "key": "k"})
    assert svc.jobs.receive(1, visibility_s=0.3)  # taken by a stack that then died
    loop = EventSource("model-jobs", svc.jobs, admin_app.lambda_handler, function="admin",
                       batch_size=1, visibility_s=0.3, retry_after_s=5)  # fmt: skip
    loop.start()
    try:
        deadline = time.monotonic() + 10
        while svc.jobs.depth() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        loop.stop()
    assert svc.jobs.depth() == 0
    assert ran == ["cut-short"]  # delivered again soon after the restart, once


def test_a_verification_that_died_after_joining_the_parts_is_run_again(env: Path) -> None:
    svc = get_services()
    data = mf.checkpoint()
    plan = start("again", data)
    part = put_part(plan, data, 1)
    status, _ = call(admin, "POST", "/admin/models/again/complete", {"parts": [part]})
    assert status == 202
    # Given the first run joined the parts and then died before recording it
    pending = svc.models.get("again").pending
    assert pending is not None and pending.upload_id is not None
    svc.blobs.complete_multipart(pending.key, pending.upload_id, svc.blobs.list_parts(
        pending.key, pending.upload_id
    ))  # fmt: skip
    # When the job is delivered again, then it carries on from the joined file
    assert [job["job"] for job in run_model_jobs()] == ["verify"]
    model = call(admin, "GET", "/admin/models/again")[1]
    assert model["status"] == "unloaded" and model["error"] is None, model
