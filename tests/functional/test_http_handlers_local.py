"""Proxy and admin handlers called with real-shaped API Gateway events, local backend."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from admin_function.app import lambda_handler as admin
from proxy_function.app import lambda_handler as proxy
from sdcore import composition
from sdcore.composition import get_services
from sdcore.domain.models import TaskStatus
from tests import model_files
from tests.functional.events import Context, api
from tests.functional.jobs import run_model_jobs


def _call(handler, method: str, path: str, body=None, headers=None) -> tuple[int, object]:
    resp = handler(api(method, path, body, headers), Context())
    return resp["statusCode"], json.loads(resp["body"]) if resp.get("body") else None


def _upload(name: str, data: bytes, sha256: str | None = None) -> tuple[int, object]:
    """The admin multipart flow; parts are written as the local server's signed PUT does. The
    completion answers 202; the verification job then runs, and the model is answered."""
    status, plan = _call(
        admin,
        "POST",
        "/admin/models",
        {
            "name": name,
            "size": len(data),
            "sha256": sha256 or hashlib.sha256(data).hexdigest(),
            "config": "tiny-sd",
        },
    )
    assert status == 201, plan
    blobs = get_services().blobs
    parts = []
    for part in plan["parts"]:
        url = urlsplit(part["url"])
        query = parse_qs(url.query)
        assert blobs.verify(url.path, query["expires"][0], query["signature"][0])
        n = part["partNumber"]
        chunk = data[(n - 1) * plan["partSize"] : n * plan["partSize"]]
        etag = blobs.write_part(plan["uploadId"], n, iter([chunk]))
        parts.append({"partNumber": n, "etag": f'"{etag}"'})
    status, body = _call(admin, "POST", f"/admin/models/{name}/complete", {"parts": parts})
    assert status == 202 and body["pending"]["stage"] == "verifying", body
    assert [job["job"] for job in run_model_jobs()] == ["verify"]
    return _call(admin, "GET", f"/admin/models/{name}")


def _safetensors() -> bytes:
    return model_files.checkpoint()


def test_health(local_env: Path) -> None:
    assert _call(proxy, "GET", "/health") == (200, {"status": "ok"})


def test_txt2img_validation_names_the_field(local_env: Path) -> None:
    status, body = _call(proxy, "POST", "/txt2img", {"steps": "many"})
    assert status == 422
    assert body["detail"][0]["loc"] == ["body", "steps"]
    status, body = _call(proxy, "POST", "/txt2img", {}, {"Request-Type": "later"})
    assert status == 422
    assert body["detail"][0]["loc"] == ["body", "Request-Type"]
    status, body = _call(proxy, "POST", "/txt2img", {"width": 100})
    assert status == 422 and body["detail"][0]["loc"] == ["body", "width"]


def test_unknown_task_is_404_and_unknown_model_404(local_env: Path) -> None:
    assert _call(proxy, "GET", "/tasks/abc/result")[0] == 404
    assert _call(proxy, "GET", "/tasks/abc/progress")[0] == 404
    assert _call(proxy, "POST", "/tasks/abc/cancellation")[0] == 404
    status, body = _call(proxy, "POST", "/txt2img", {"prompt": "x"})  # no default model yet
    assert status == 404 and "demo" in body["message"]


def test_upload_register_submit_and_cancel_a_queued_task(local_env: Path) -> None:
    # Given a checkpoint uploaded through admin
    status, model = _upload("demo", _safetensors())
    assert status == 200, model
    assert model["status"] == "unloaded" and model["format"] == "safetensors"
    assert model["pending"] is None and model["error"] is None
    status, listed = _call(proxy, "GET", "/models")
    assert [m["name"] for m in listed] == ["demo"]
    # When a task is submitted async
    status, body = _call(proxy, "POST", "/txt2img", {"prompt": "x"}, {"Request-Type": "async"})
    assert status == 202 and body["status"] == "queued"
    task_id = body["taskId"]
    status, result = _call(proxy, "GET", f"/tasks/{task_id}/result")
    assert result["status"] == "queued" and result["timings"]["createdAt"].endswith("Z")
    assert result["parameters"]["prompt"] == "x"
    # Then a sync call that outlasts the wait answers 202 with the task id
    status, body = _call(proxy, "POST", "/txt2img", {"prompt": "y"})
    assert status == 202 and body["status"] == "queued"
    # And cancelling a queued task ends it for good, idempotently
    for _ in range(2):
        status, body = _call(proxy, "POST", f"/tasks/{task_id}/cancellation")
        assert status == 200 and body["status"] == "cancelled"
    status, progress = _call(proxy, "GET", f"/tasks/{task_id}/progress")
    assert progress["state"]["interrupted"] is True


def test_upload_with_a_wrong_sha256_leaves_the_model_unusable(local_env: Path) -> None:
    status, body = _upload("bad", _safetensors(), sha256="ab" * 32)
    assert status == 200 and "sha256 mismatch" in body["error"]
    assert "sha256 mismatch" in body["pending"]["error"]
    [model] = _call(admin, "GET", "/admin/models")[1]
    assert model["status"] == "registering" and "sha256 mismatch" in model["error"]
    status, body = _call(
        proxy, "POST", "/txt2img", {"stable_diffusion_model": "bad"}, {"Request-Type": "async"}
    )
    assert status == 409 and "sha256 mismatch" in body["message"]
    # a corrected upload under the same name is accepted
    assert _upload("bad", _safetensors())[0] == 200


def test_upload_of_a_file_that_is_no_model_is_refused(local_env: Path) -> None:
    status, body = _upload("junk", b"hello world, not a model")
    assert status == 200 and "not a .safetensors" in body["error"]
    assert body["status"] == "registering"


def test_a_wrong_etag_is_a_422_and_delete_removes_the_model(local_env: Path) -> None:
    data = _safetensors()
    status, plan = _call(
        admin,
        "POST",
        "/admin/models",
        {"name": "m", "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
         "config": "tiny-sd"},
    )  # fmt: skip
    get_services().blobs.write_part(plan["uploadId"], 1, iter([data]))
    status, body = _call(
        admin, "POST", "/admin/models/m/complete", {"parts": [{"partNumber": 1, "etag": "x"}]}
    )
    assert status == 422 and body["detail"][0]["loc"] == ["body", "parts"]
    assert (
        _call(admin, "POST", "/admin/models", {"name": "m", "size": 1, "sha256": "0" * 64})[0]
        == 409
    )
    status, body = _call(admin, "DELETE", "/admin/models/m")
    assert status == 200 and body["status"] == "deleted"
    assert _call(admin, "GET", "/admin/models")[1] == []
    assert _call(admin, "DELETE", "/admin/models/m")[0] == 404


def test_a_task_over_the_work_budget_is_a_422_naming_each_field(local_env: Path) -> None:
    assert _upload("demo", _safetensors())[0] == 200
    # the schema's maxima: days of CPU, refused before anything is stored
    huge = {"prompt": "x", "width": 2048, "height": 2048, "steps": 150, "batch_size": 8,
            "n_iter": 16}  # fmt: skip
    status, body = _call(proxy, "POST", "/txt2img", huge, {"Request-Type": "async"})
    assert status == 422, body
    locs = {tuple(d["loc"]) for d in body["detail"]}
    assert locs == {("body", f) for f in ("steps", "width", "height", "batch_size", "n_iter")}
    assert "pixel-steps" in body["detail"][0]["msg"]
    assert get_services().tasks.list_by_status(TaskStatus.QUEUED) == []


def test_control_ends_the_tasks_of_dead_letters_and_failed_invocations(
    local_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from control_function.app import lambda_handler as control
    from tests.functional.events import sqs

    monkeypatch.setenv("SD_DEAD_LETTER_QUEUES", "sd-dlq,sd-jobs-dlq")
    composition.reset()
    assert _upload("demo", _safetensors())[0] == 200
    ids = []
    for prompt in ("a", "b"):
        status, body = _call(
            proxy, "POST", "/txt2img", {"prompt": prompt}, {"Request-Type": "async"}
        )
        ids.append(body["taskId"])
    # Given a task message dead-lettered, and a failed invocation of the other task
    dead = sqs({"taskId": ids[0]})
    dead["Records"][0]["eventSourceARN"] = "arn:aws:sqs:us-east-1:123456789012:sd-dlq"
    dead["Records"][0]["attributes"]["ApproximateReceiveCount"] = "6"
    oom = {"errorType": "Runtime.OutOfMemory", "errorMessage": "killed"}
    failed = sqs(
        {
            "requestContext": {"condition": "RetriesExhausted"},
            "requestPayload": {"taskId": ids[1]},
            "responsePayload": oom,
        }
    )
    # When control gets them
    assert control(dead, Context()) == {"batchItemFailures": []}
    assert control(failed, Context()) == {"batchItemFailures": []}
    # Then both tasks ended failed, each with its reason
    errors = [_call(proxy, "GET", f"/tasks/{i}/result")[1]["error"] for i in ids]
    assert errors == [
        "control could not hand the task to a function (6 tries failed)",
        "the inference function failed: Runtime.OutOfMemory: killed",
    ]


def test_health_is_503_until_the_default_model_is_usable(local_env: Path) -> None:
    """A script that waits for /health and then submits must not get 409 (not ready)."""
    assert _call(proxy, "GET", "/health") == (200, {"status": "ok"})  # no default model yet
    data = _safetensors()
    digest = hashlib.sha256(data).hexdigest()
    register = {"name": "demo", "size": len(data), "sha256": digest, "config": "tiny-sd"}
    assert _call(admin, "POST", "/admin/models", register)[0] == 201
    status, body = _call(proxy, "GET", "/health")
    assert status == 503
    assert body == {
        "status": "starting",
        "detail": "the default model demo is not ready yet (uploading)",
    }
    _call(admin, "DELETE", "/admin/models/demo")
    assert _upload("demo", data)[0] == 200  # uploaded and verified
    assert _call(proxy, "GET", "/health") == (200, {"status": "ok"})
    status, body = _call(proxy, "POST", "/txt2img", {"prompt": "x"}, {"Request-Type": "async"})
    assert status == 202, body
