"""Model management on the AWS adapters (moto's HTTP server): parts PUT to S3 presigned URLs with
their Content-MD5, the verification job delivered from the SQS job queue, import into S3 from a
URL, the sweep of abandoned multipart uploads, and delete removing the Lambda function."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from sdcore import composition
from sdcore.clock import Clock
from tests import model_files as mf
from tests.functional.events import Context, load
from tests.functional.jobs import run_model_jobs
from tests.functional.test_aws_path import _http, aws, moto_url  # noqa: F401 (fixtures)
from tests.functional.test_models_local import big_checkpoint, file_server  # noqa: F401

MIB = 1024 * 1024


@pytest.fixture
def env(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    monkeypatch.setenv("SD_PART_SIZE", str(5 * MIB))
    monkeypatch.setenv("SD_ALLOW_PRIVATE_URLS", "true")
    yield request.getfixturevalue("aws")


def admin(method: str, path: str, body: Any = None) -> tuple[int, Any]:
    from admin_function.app import lambda_handler

    return _http(lambda_handler, method, path, body)


def start(name: str, data: bytes, kind: str = "checkpoint") -> dict[str, Any]:
    status, plan = admin(
        "POST",
        "/admin/models",
        {"name": name, "type": kind, "size": len(data), "config": "tiny-sd",
         "sha256": hashlib.sha256(data).hexdigest()},
    )  # fmt: skip
    assert status == 201, plan
    return plan


def put(plan: dict[str, Any], data: bytes, n: int) -> dict[str, Any]:
    chunk = data[(n - 1) * plan["partSize"] : n * plan["partSize"]]
    md5 = hashlib.md5(chunk)
    resp = httpx.put(
        plan["parts"][n - 1]["url"],
        content=chunk,
        headers={"Content-MD5": base64.b64encode(md5.digest()).decode()},
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["ETag"].strip('"') == md5.hexdigest()
    return {"partNumber": n, "etag": resp.headers["ETag"]}


def complete(name: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    status, body = admin("POST", f"/admin/models/{name}/complete", {"parts": parts})
    assert status == 202 and body["pending"]["stage"] == "verifying", body
    assert [job["job"] for job in run_model_jobs()] == ["verify"]
    return admin("GET", f"/admin/models/{name}")[1]


def test_resumed_three_part_upload_verified_by_a_job_from_sqs(env: dict) -> None:
    data = big_checkpoint(11 * MIB)
    plan = start("resumed", data)
    assert len(plan["parts"]) == 3
    # SigV4: under SigV2 the Content-MD5 header would be part of the signature and not match
    assert "X-Amz-Signature=" in plan["parts"][0]["url"]
    first = put(plan, data, 1)
    status, held = admin("GET", "/admin/models/resumed/upload")
    assert [p["partNumber"] for p in held["parts"]] == [1]
    again = start("resumed", data)
    assert again["uploadId"] == plan["uploadId"]

    model = complete("resumed", [first, put(again, data, 2), put(again, data, 3)])

    assert model["status"] == "unloaded" and model["error"] is None, model
    assert model["sha256"] == hashlib.sha256(data).hexdigest()
    s3 = env["clients"]["s3"]
    stored = s3.list_objects_v2(Bucket=env["names"]["Bucket"], Prefix="models/")["Contents"]
    assert [o["Size"] for o in stored] == [len(data)]


def test_truncated_upload_is_unusable_with_the_reason(env: dict) -> None:
    from proxy_function.app import lambda_handler as proxy

    data = big_checkpoint(11 * MIB)
    plan = start("short", data)
    model = complete("short", [put(plan, data, 1), put(plan, data, 2)])
    assert model["error"] == f"size mismatch: registered {len(data)} bytes, received {10 * MIB}"
    body = {"prompt": "x", "stable_diffusion_model": "short"}
    status, answer = _http(proxy, "POST", "/txt2img", body, {"Request-Type": "async"})
    assert status == 409 and "size mismatch" in answer["message"]


def test_import_from_a_url_into_s3(env: dict, file_server) -> None:  # noqa: F811
    base, files = file_server
    data = mf.safetensors(mf.embedding_shapes(4, 64))
    files["/emb.safetensors"] = data
    body = {"name": "emb", "type": "embedding", "url": f"{base}/emb.safetensors"}
    assert admin("POST", "/admin/models/import", body)[0] == 202
    assert [job["job"] for job in run_model_jobs()] == ["import"]
    model = admin("GET", "/admin/models/emb")[1]
    assert model["status"] == "unloaded" and model["sha256"] == hashlib.sha256(data).hexdigest()
    s3 = env["clients"]["s3"]
    stored = s3.get_object(
        Bucket=env["names"]["Bucket"], Key=composition.get_services().models.get("emb").key
    )
    assert stored["Body"].read() == data


def test_the_sweep_aborts_abandoned_multipart_uploads(
    env: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    from control_function.app import lambda_handler as control

    data = big_checkpoint(6 * MIB)
    put(start("stale", data), data, 1)
    s3, bucket = env["clients"]["s3"], env["names"]["Bucket"]
    orphan = s3.create_multipart_upload(Bucket=bucket, Key="models/lora/ghost/x")["UploadId"]
    assert len(s3.list_multipart_uploads(Bucket=bucket)["Uploads"]) == 2
    later = Clock.now(Clock()) + 8 * 86400
    monkeypatch.setattr(Clock, "now", lambda self: later)

    swept = control(load("schedule.json"), Context())["swept"]

    assert sorted(swept) == ["models/lora/ghost/x", "stale"]
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert admin("GET", "/admin/models/stale")[1]["error"].startswith("upload abandoned")
    assert orphan


def test_delete_removes_the_lambda_function(env: dict) -> None:
    data = mf.checkpoint()
    plan = start("doomed", data)
    complete("doomed", [put(plan, data, 1)])
    svc = composition.get_services()
    record = svc.fleet.ensure(svc.models.get("doomed"))  # what control does on a first task
    lam = env["clients"]["lambda"]
    assert lam.get_function(FunctionName=record.name)["Configuration"]["PackageType"] == "Image"

    status, body = admin("DELETE", "/admin/models/doomed")

    assert status == 200 and body["status"] == "deleted"
    with pytest.raises(ClientError, match="ResourceNotFound"):
        lam.get_function(FunctionName=record.name)
    assert admin("GET", "/admin/functions")[1] == []
    stored = env["clients"]["s3"].list_objects_v2(Bucket=env["names"]["Bucket"], Prefix="models/")
    assert stored.get("KeyCount", 0) == 0
