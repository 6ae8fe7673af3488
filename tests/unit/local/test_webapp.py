"""The web app's files through the local front door: the page at `/`, its files under `/app/`,
each with the Content-Security-Policy; nothing outside the built folder is reachable."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from sdcore.adapters.local.blobs import FileBlobStore
from sdlocal import webapp
from sdlocal.server import FrontDoor


def _get(door: FrontDoor, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(),
             "query_string": b"", "headers": []}  # fmt: skip
    asyncio.run(door(scope, receive, send))
    start = sent[0]
    headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, b"".join(m.get("body", b"") for m in sent[1:])


@pytest.fixture
def door(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FrontDoor:
    dist = tmp_path / "dist"
    (dist / "app").mkdir(parents=True)
    (dist / "index.html").write_text("<!doctype html><title>t</title>")
    (dist / "app" / "app.js").write_text("export {};")
    (tmp_path / "secret.txt").write_text("not for the web")
    monkeypatch.setattr(webapp, "WEB_DIST", dist)
    blobs = FileBlobStore(tmp_path / "blobs", "http://localhost:7860")
    return FrontDoor(blobs, None, None, None)  # type: ignore[arg-type] (no function is called)


def test_the_page_and_its_files_come_with_the_csp(door: FrontDoor) -> None:
    status, headers, body = _get(door, "/")
    assert status == 200 and body.startswith(b"<!doctype html>")
    assert headers["content-type"] == "text/html; charset=utf-8"
    csp = headers["content-security-policy"]
    assert "script-src 'self';" in csp and "default-src 'none'" in csp
    assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
    # signed result URLs point at the stack's public address: pictures may come from there
    assert "img-src 'self' data: blob: http://localhost:7860;" in csp
    assert headers["x-content-type-options"] == "nosniff"
    status, headers, body = _get(door, "/app/app.js")
    assert status == 200 and headers["content-type"].startswith("text/javascript")
    status, headers, body = _get(door, "/app/app.js", method="HEAD")
    assert status == 200 and body == b"" and headers["content-length"] == "10"


@pytest.mark.parametrize(
    "path", ["/app/missing.js", "/app/../secret.txt", "/app/%2e%2e/secret.txt"]
)
def test_nothing_else_is_served(door: FrontDoor, path: str) -> None:
    status, headers, body = _get(door, path)
    assert status == 404 and b"not for the web" not in body
    assert "content-security-policy" in headers


def test_only_the_page_s_paths_are_the_web_app_s() -> None:
    assert webapp.is_web_path("GET", "/") and webapp.is_web_path("HEAD", "/app/app.css")
    assert not webapp.is_web_path("POST", "/")
    for api_path in ("/txt2img", "/tasks", "/admin/models", "/files/x", "/health", "/docs"):
        assert not webapp.is_web_path("GET", api_path)
