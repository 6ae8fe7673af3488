"""The local HTTP front door: API Gateway's role for the proxy and admin functions, and S3's
role for signed object GETs and part PUTs.

Each request to a function runs in a pool of worker processes, one request at a time per
process, as Lambda runs one event at a time per execution environment (Powertools' resolver
keeps the current event in class state, so it must not serve two requests at once in one
process)."""

from __future__ import annotations

import base64
import json
import mimetypes
import multiprocessing
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from sdcore.adapters.local.blobs import FileBlobStore
from sdcore.errors import DomainError
from sdcore.local.context import LocalContext

MAX_BODY = 10 * 1024 * 1024  # API Gateway's payload limit
MAX_PART = 5 * 1024**3  # S3's largest part


def _invoke(target: str, event: dict[str, Any]) -> dict[str, Any]:
    if target == "admin":
        from admin_function.app import lambda_handler
    else:
        from proxy_function.app import lambda_handler
    return lambda_handler(event, LocalContext(function_name=target))


def _warm(_: int) -> None:
    import admin_function.app  # noqa: F401
    import proxy_function.app  # noqa: F401


def api_gateway_event(
    method: str, raw_path: str, headers: dict[str, list[str]], body: bytes, source_ip: str
) -> dict[str, Any]:
    """A REST API (v1) proxy event, as API Gateway sends it."""
    parts = urlsplit(raw_path)
    path = unquote(parts.path)
    multi_query = parse_qs(parts.query, keep_blank_values=True)
    try:
        text, is_b64 = body.decode("utf-8"), False
    except UnicodeDecodeError:
        text, is_b64 = base64.b64encode(body).decode(), True
    return {
        "resource": path,
        "path": path,
        "httpMethod": method,
        "headers": {k: v[-1] for k, v in headers.items()},
        "multiValueHeaders": headers,
        "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {
            "requestId": uuid.uuid4().hex,
            "stage": "local",
            "httpMethod": method,
            "path": path,
            "resourcePath": path,
            "identity": {"sourceIp": source_ip},
            "requestTimeEpoch": int(time.time() * 1000),
        },
        "body": text if body else None,
        "isBase64Encoded": is_b64,
    }


class LocalServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str, port: int, blobs: FileBlobStore, workers: int) -> None:
        super().__init__((host, port), _Handler)
        self.blobs = blobs
        ctx = multiprocessing.get_context("spawn")
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
        list(self.pool.map(_warm, range(workers)))

    def server_close(self) -> None:
        super().server_close()
        self.pool.shutdown(wait=False, cancel_futures=True)


class _Handler(BaseHTTPRequestHandler):
    server: LocalServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # quiet: the functions log what matters

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, body: Any) -> None:
        self._send(status, json.dumps(body).encode(), {"Content-Type": "application/json"})

    def _length(self) -> int:
        try:
            return int(self.headers.get("Content-Length", "0"))
        except ValueError:
            return -1

    def _signed(self, resource: str) -> bool:
        query = parse_qs(urlsplit(self.path).query)
        expires = query.get("expires", [""])[0]
        signature = query.get("signature", [""])[0]
        return self.server.blobs.verify(resource, expires, signature)

    # --- S3's role -----------------------------------------------------------------------------
    def _get_file(self, path: str) -> None:
        if not self._signed(path):
            return self._json(403, {"error": "forbidden", "message": "bad or expired signature"})
        key = path[len("/files/") :]
        local = self.server.blobs.local_path(key)
        if local is None:
            return self._json(404, {"error": "not_found", "message": f"object {key} not found"})
        ctype = mimetypes.guess_type(key)[0] or "application/octet-stream"
        self._send(200, local.read_bytes(), {"Content-Type": ctype})

    def _put_part(self, path: str) -> None:
        if not self._signed(path):
            return self._json(403, {"error": "forbidden", "message": "bad or expired signature"})
        _, _, upload_id, number = path.split("/", 3)
        length = self._length()
        if length < 0 or length > MAX_PART:
            return self._json(400, {"error": "bad_request", "message": "bad Content-Length"})

        def body() -> Iterator[bytes]:
            left = length
            while left > 0:
                chunk = self.rfile.read(min(left, 1024 * 1024))
                if not chunk:
                    raise ConnectionError("client closed mid-part")
                left -= len(chunk)
                yield chunk

        try:
            etag = self.server.blobs.write_part(upload_id, int(number), body())
        except (DomainError, ValueError) as exc:
            return self._json(400, {"error": "bad_request", "message": str(exc)})
        self._send(200, b"", {"ETag": f'"{etag}"'})

    # --- API Gateway's role --------------------------------------------------------------------
    def _function(self, path: str) -> None:
        length = self._length()
        if length < 0 or length > MAX_BODY:
            self.close_connection = True
            return self._json(413, {"error": "payload_too_large", "message": "body over 10 MB"})
        body = self.rfile.read(length) if length else b""
        headers: dict[str, list[str]] = {}
        for key, value in self.headers.items():
            headers.setdefault(key, []).append(value)
        event = api_gateway_event(self.command, self.path, headers, body, self.client_address[0])
        target = "admin" if path == "/admin" or path.startswith("/admin/") else "proxy"
        response = self.server.pool.submit(_invoke, target, event).result()
        data = response.get("body") or ""
        raw = base64.b64decode(data) if response.get("isBase64Encoded") else data.encode()
        out: dict[str, str] = {}
        for key, values in (response.get("multiValueHeaders") or {}).items():
            out[key] = ", ".join(values)
        out.update(response.get("headers") or {})
        self._send(int(response["statusCode"]), raw, out)

    def _route(self) -> None:
        path = unquote(urlsplit(self.path).path)
        try:
            if self.command in ("GET", "HEAD") and path.startswith("/files/"):
                return self._get_file(path)
            if self.command == "PUT" and path.startswith("/uploads/") and path.count("/") == 3:
                return self._put_part(path)
            return self._function(path)
        except (BrokenPipeError, ConnectionError):
            self.close_connection = True

    def __getattr__(self, name: str) -> Any:
        # every method goes to the functions, which answer 404/405 for what they don't serve
        # (BaseHTTPRequestHandler would answer 501 for a method it has no do_<METHOD> for)
        if name.startswith("do_"):
            return self._route
        raise AttributeError(name)
