"""The client's side of model uploads and imports, over a scripted server (httpx MockTransport):
Content-MD5 on every part, the part's ETag checked, and the wait for the server's verification
job (progress events; a refusal is an ApiError 409 with the reason)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from sdlocal.client import ApiError, ChecksumError, Client, UploadEvent

PART = 5 * 1024 * 1024


class Server:
    """Answers the admin routes an upload uses; `verify` scripts what GET /admin/models/{name}
    answers after the completion (one answer per poll)."""

    def __init__(self, data: bytes, verify: list[dict[str, Any] | None], etag: str | None = None):
        self.data, self.verify, self.etag = data, verify, etag
        self.received: dict[int, bytes] = {}
        self.md5_headers: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST" and path == "/admin/models":
            parts = [{"partNumber": n, "url": f"http://s3/part/{n}"} for n in (1, 2)]
            return httpx.Response(
                201,
                json={
                    "name": "m",
                    "status": "registering",
                    "uploadId": "u1",
                    "partSize": PART,
                    "parts": parts,
                },  # fmt: skip
            )
        if request.method == "GET" and path == "/admin/models/m/upload":
            return httpx.Response(200, json={"uploadId": "u1", "parts": []})
        if request.method == "PUT" and path.startswith("/part/"):
            body = request.read()
            self.md5_headers.append(request.headers["Content-MD5"])
            self.received[int(path.rsplit("/", 1)[1])] = body
            return httpx.Response(200, headers={"ETag": self.etag or hashlib.md5(body).hexdigest()})
        if request.method == "POST" and path == "/admin/models/m/complete":
            return httpx.Response(202, json={"name": "m", "pending": {"stage": "verifying"}})
        if request.method == "GET" and path == "/admin/models/m":
            pending = self.verify.pop(0)
            return httpx.Response(200, json={"name": "m", "status": "unloaded", "pending": pending})
        return httpx.Response(404, json={"message": f"no route {request.method} {path}"})


def model_file(tmp_path: Path) -> tuple[Path, bytes]:
    data = bytes(range(256)) * (PART // 256) + b"tail"
    path = tmp_path / "m.safetensors"
    path.write_bytes(data)
    return path, data


def verifying(done: int, error: str | None = None) -> dict[str, Any]:
    return {"stage": "verifying", "bytesDone": done, "error": error}


def test_upload_sends_content_md5_and_waits_for_the_verification(tmp_path: Path) -> None:
    path, data = model_file(tmp_path)
    server = Server(data, [verifying(0), verifying(PART), None])
    events: list[UploadEvent] = []
    with Client("http://api", transport=httpx.MockTransport(server)) as client:
        done = client.upload_model(path, "m", on_progress=events.append, parallel=2)
    assert server.received[1] + server.received[2] == data
    expected = [base64.b64encode(hashlib.md5(server.received[n]).digest()).decode() for n in (1, 2)]
    assert sorted(server.md5_headers) == sorted(expected)
    assert done["model"]["pending"] is None and server.verify == []
    phases = [e.phase for e in events]
    assert phases.index("verify") > max(i for i, p in enumerate(phases) if p == "part")
    assert [e.bytes_done for e in events if e.phase == "verify"] == [0, PART]
    assert phases[-1] == "complete"


def test_a_refused_upload_is_a_409_with_the_reason(tmp_path: Path) -> None:
    path, data = model_file(tmp_path)
    reason = "not a valid checkpoint: this file looks like a lora, not a checkpoint"
    server = Server(data, [verifying(0, reason)])
    with (
        Client("http://api", transport=httpx.MockTransport(server)) as client,
        pytest.raises(ApiError) as refused,
    ):
        client.upload_model(path, "m")
    assert refused.value.status == 409 and reason in str(refused.value)


def test_a_part_whose_etag_is_not_its_md5_is_refused(tmp_path: Path) -> None:
    path, data = model_file(tmp_path)
    server = Server(data, [], etag='"' + "0" * 32 + '"')
    with (
        Client("http://api", transport=httpx.MockTransport(server)) as client,
        pytest.raises(ChecksumError, match="not the part's MD5"),
    ):
        client.upload_model(path, "m")


def test_import_waits_and_reports_progress() -> None:
    answers = [
        {"stage": "importing", "bytesDone": 10, "size": 100, "error": None},
        {"stage": "verifying", "bytesDone": 100, "size": 100, "error": None},
        None,
    ]
    seen: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            body = json.loads(request.read())
            assert body["url"] == "https://hub/x.safetensors" and body["type"] == "lora"
            return httpx.Response(202, json={"name": "x", "pending": answers[0]})
        return httpx.Response(200, json={"name": "x", "pending": answers.pop(0)})

    with Client("http://api", transport=httpx.MockTransport(handler)) as client:
        client_model = client.import_model(
            "https://hub/x.safetensors", "x", type="lora", on_progress=seen.append
        )
    assert client_model["pending"] is None
    assert [m["pending"] and m["pending"]["stage"] for m in seen] == [
        "importing",
        "verifying",
        None,
    ]
