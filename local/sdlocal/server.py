"""The local HTTP front door: API Gateway's role for the proxy and admin functions, and S3's
role for signed object GETs and part PUTs.

HTTP is served by uvicorn (httptools parser, uvloop where installed) in one event loop. Each
request to a function is handed, as an API Gateway event, to a pool of long-lived worker
processes over a pipe, one request at a time per process, as Lambda runs one event at a time per
execution environment (Powertools' resolver keeps the current event in class state, so it must
not serve two requests at once in one process). A request that finds every worker busy waits
for the next free one; a worker that dies answers 502 and is replaced."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import mimetypes
import multiprocessing
import os
import pickle
import queue
import signal
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from multiprocessing.connection import Connection
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from sdcore import composition
from sdcore.adapters.local.blobs import FileBlobStore
from sdcore.adapters.local.runtime import LocalContext
from sdcore.api.front_door import (
    DEFER_HEADER,
    RESUME_HEADER,
    WAIT_SECONDS_HEADER,
    WAIT_TASK_HEADER,
)
from sdcore.api.streaming import streaming_to
from sdcore.errors import DomainError
from sdcore.settings import Settings
from sdlocal import webapp
from sdlocal.scrape import scrape
from sdlocal.waits import INTERNAL, InFlight, TaskWaits

log = logging.getLogger("sdcore.server")

MAX_BODY = 6 * 1024 * 1024  # Lambda's payload limit (API Gateway takes 10 MB, Lambda 6)
MAX_PART = 5 * 1024**3  # S3's largest part
READ_CHUNK = 1024 * 1024

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
# a piece of a streamed answer as it is made: (status, headers, bytes)
OnPiece = Callable[[int, dict[str, str], bytes], Awaitable[None]]
PIECE = "piece"  # a worker's message carrying one; its answer (a dict) ends the request


def _invoke(target: str, event: dict[str, Any]) -> dict[str, Any]:
    if target == "admin":
        from admin_function.app import lambda_handler
    else:
        from proxy_function.app import lambda_handler
    return lambda_handler(event, LocalContext(function_name=target))


def _worker_main(conn: Connection, parent: int, settings: Settings) -> None:
    """A function's execution environment: import once, then serve events one at a time."""
    _die_with(parent)
    composition.use_settings(settings)
    import admin_function.app  # noqa: F401
    import proxy_function.app  # noqa: F401

    conn.send_bytes(b"ready")
    while True:
        try:
            target, event = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return

        def sink(status: int, headers: dict[str, str], piece: bytes) -> None:
            message = (PIECE, status, headers, piece)
            conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))

        try:
            with streaming_to(sink):  # a streamed route's pieces go out as they are made
                response = _invoke(target, event)
        except Exception as exc:  # what Lambda reports for an unhandled error
            log.exception("unhandled error in the %s function", target)
            response = {
                "statusCode": 502,
                "headers": {"Content-Type": "application/json"},
                "body": json.dumps({"error": "function_error", "message": type(exc).__name__}),
            }
        conn.send_bytes(pickle.dumps(response, protocol=pickle.HIGHEST_PROTOCOL))


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


class FunctionError(Exception):
    """The worker process died while serving a request."""


class _Worker:
    def __init__(self, ctx: Any, settings: Settings) -> None:
        parent, child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(
            target=_worker_main, args=(child, os.getpid(), settings), name="sd-http-worker"
        )
        self.process.start()
        child.close()
        self.conn: Connection = parent

    def wait_ready(self, timeout: float = 120) -> None:
        if not self.conn.poll(timeout) or self.conn.recv_bytes() != b"ready":
            raise RuntimeError("an HTTP worker process did not start")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.close()
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)


class WorkerPool:
    """Long-lived function processes, each serving one request at a time over its pipe."""

    def __init__(self, settings: Settings) -> None:
        self.ctx = multiprocessing.get_context("spawn")
        self.settings = settings
        self.workers = [_Worker(self.ctx, settings) for _ in range(settings.http_workers)]
        for worker in self.workers:
            worker.wait_ready()
        self.idle: asyncio.Queue[_Worker] | None = None

    def bind(self) -> None:
        """Attach to the running event loop."""
        self.idle = asyncio.Queue()
        for worker in self.workers:
            self.idle.put_nowait(worker)

    async def call(
        self, target: str, event: dict[str, Any], on_piece: OnPiece | None = None
    ) -> dict[str, Any]:
        """The function's answer to `event`; the pieces of a streamed answer, as they come, to
        `on_piece` first (the answer then repeats them whole)."""
        assert self.idle is not None, "bind() first"
        loop = asyncio.get_running_loop()
        worker = await self.idle.get()
        try:
            fd = worker.conn.fileno()
            os.set_blocking(fd, True)  # the loop's reader (uvloop) leaves the pipe non-blocking
            worker.conn.send_bytes(pickle.dumps((target, event), protocol=pickle.HIGHEST_PROTOCOL))
            while True:
                message = await self._next(loop, worker)
                if isinstance(message, dict):
                    break
                if on_piece is not None:
                    _, status, headers, piece = message
                    await on_piece(status, headers, piece)
            response: dict[str, Any] = message
        except (EOFError, OSError, pickle.UnpicklingError) as exc:
            log.error("HTTP worker %s died; starting another", worker.process.pid)
            worker.close()
            self.workers.remove(worker)
            worker = await loop.run_in_executor(None, self._replacement)
            raise FunctionError(str(exc)) from exc
        finally:
            self.idle.put_nowait(worker)
        return response

    @staticmethod
    async def _next(loop: asyncio.AbstractEventLoop, worker: _Worker) -> Any:
        """The worker's next message, waited for in the event loop."""
        fd = worker.conn.fileno()
        readable = loop.create_future()

        def ready() -> None:
            if not readable.done():
                readable.set_result(None)

        loop.add_reader(fd, ready)
        try:
            await readable
        finally:
            loop.remove_reader(fd)
            os.set_blocking(fd, True)  # the answer may be bigger than the pipe's buffer
        return pickle.loads(worker.conn.recv_bytes())

    def _replacement(self) -> _Worker:
        worker = _Worker(self.ctx, self.settings)
        worker.wait_ready()
        self.workers.append(worker)
        return worker

    def close(self) -> None:
        for worker in list(self.workers):
            worker.close()


def _headers(scope: Scope) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    for key, value in scope["headers"]:
        headers.setdefault(key.decode("latin-1"), []).append(value.decode("latin-1"))
    return headers


class FrontDoor:
    """The ASGI application: routes a request to S3's role or to a function."""

    def __init__(
        self,
        blobs: FileBlobStore,
        pool: WorkerPool,
        waits: TaskWaits,
        inflight: InFlight,
        starting: str | None = None,
    ) -> None:
        self.blobs = blobs
        self.pool = pool
        self.waits = waits
        self.inflight = inflight
        # why the stack is not ready yet (it registers its demo model through this door);
        # /health answers 503 with it until the stack says it has started
        self.starting = starting

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        try:
            if method in ("GET", "HEAD") and path.startswith("/files/"):
                return await self._get_file(scope, send)
            if method == "PUT" and path.startswith("/uploads/") and path.count("/") == 3:
                return await self._put_part(scope, receive, send)
            if webapp.is_web_path(method, path):
                return await self._web(scope, send)
            if method == "GET" and path == "/metrics":  # every process's figures, admins only
                headers = {k: v[-1] for k, v in _headers(scope).items()}
                loop = asyncio.get_running_loop()
                return await self._send(send, *await loop.run_in_executor(None, scrape, headers))
            if path == "/health" and self.starting is not None:
                body = json.dumps({"status": "starting", "detail": self.starting}).encode()
                return await self._send(send, 503, body, {"Content-Type": "application/json"})
            return await self._function(scope, receive, send)
        except OSError:
            return  # the client went away

    @staticmethod
    async def _send(
        send: Send, status: int, body: bytes, headers: dict[str, str] | None = None
    ) -> None:
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
        raw.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})

    async def _error(self, send: Send, status: int, code: str, message: str) -> None:
        body = json.dumps({"error": code, "message": message}).encode()
        await self._send(send, status, body, {"Content-Type": "application/json"})

    def _signed(self, scope: Scope) -> bool:
        query = parse_qs(scope["query_string"].decode("latin-1"))
        expires = query.get("expires", [""])[0]
        signature = query.get("signature", [""])[0]
        return self.blobs.verify(scope["path"], expires, signature)

    @staticmethod
    def _length(scope: Scope) -> int:
        for key, value in scope["headers"]:
            if key == b"content-length":
                try:
                    return int(value)
                except ValueError:
                    return -1
        return 0

    # --- S3's role -----------------------------------------------------------------------------
    async def _get_file(self, scope: Scope, send: Send) -> None:
        if not self._signed(scope):
            return await self._error(send, 403, "forbidden", "bad or expired signature")
        key = scope["path"][len("/files/") :]
        local = self.blobs.local_path(key)
        if local is None:
            return await self._error(send, 404, "not_found", f"object {key} not found")
        ctype = mimetypes.guess_type(key)[0] or "application/octet-stream"
        loop = asyncio.get_running_loop()
        with open(local, "rb") as fh:  # noqa: ASYNC230 (reads go to a thread below)
            size = local.stat().st_size
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", ctype.encode()), (b"content-length", str(size).encode())
            ]})  # fmt: skip
            if scope["method"] == "HEAD":
                return await send({"type": "http.response.body", "body": b""})
            left = size
            while left > 0:
                chunk = await loop.run_in_executor(None, fh.read, min(left, READ_CHUNK))
                if not chunk:
                    break
                left -= len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": left > 0})
            if left > 0:  # the file shrank under us: end the response short, not hang
                await send({"type": "http.response.body", "body": b""})

    async def _put_part(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._signed(scope):
            return await self._error(send, 403, "forbidden", "bad or expired signature")
        _, _, upload_id, number = scope["path"].split("/", 3)
        length = self._length(scope)
        if length < 0 or length > MAX_PART:
            return await self._error(send, 400, "bad_request", "bad Content-Length")
        # the part is streamed to the blob store in a thread, through a small bounded queue
        chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=16)
        finished = threading.Event()
        loop = asyncio.get_running_loop()

        def body() -> Iterator[bytes]:
            left = length
            while left > 0:
                chunk = chunks.get()
                if chunk is None:
                    raise ConnectionError("client closed mid-part")
                left -= len(chunk)
                yield chunk

        def write() -> str:
            try:
                # S3's check of a damaged part: a Content-MD5 that does not match is refused
                md5 = _headers(scope).get("content-md5", [None])[0]
                return self.blobs.write_part(upload_id, int(number), body(), md5)
            finally:
                finished.set()

        def put(item: bytes | None) -> None:
            while not finished.is_set():
                try:
                    return chunks.put(item, timeout=0.5)
                except queue.Full:
                    continue

        writer = loop.run_in_executor(None, write)
        received = 0
        while received < length and not writer.done():
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            if chunk:
                received += len(chunk)
                await loop.run_in_executor(None, put, chunk)
            if not message.get("more_body", False):
                break
        if received < length and not writer.done():
            await loop.run_in_executor(None, put, None)
        try:
            etag = await writer
        except (DomainError, ValueError) as exc:
            return await self._error(send, 400, "bad_request", str(exc))
        except ConnectionError:
            return
        await self._send(send, 200, b"", {"ETag": f'"{etag}"'})

    # --- CloudFront's role: the web app's files --------------------------------------------------
    async def _web(self, scope: Scope, send: Send) -> None:
        headers = webapp.security_headers(self.blobs.base_url)
        target = webapp.resolve(scope["path"])
        if target is None:
            body = b"not found (the web app is built by `make install`)"
            return await self._send(send, 404, body, {**headers, "Content-Type": "text/plain"})
        body = await asyncio.get_running_loop().run_in_executor(None, target.read_bytes)
        headers = {
            **headers,
            "Content-Type": webapp.content_type(target),
            "Cache-Control": "no-cache",
        }
        if scope["method"] == "HEAD":
            headers["Content-Length"] = str(len(body))
            raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
            await send({"type": "http.response.start", "status": 200, "headers": raw})
            return await send({"type": "http.response.body", "body": b""})
        await self._send(send, 200, body, headers)

    # --- API Gateway's role --------------------------------------------------------------------
    async def _function(self, scope: Scope, receive: Receive, send: Send) -> None:
        length = self._length(scope)
        if length < 0 or length > MAX_BODY:
            return await self._error(send, 413, "payload_too_large", "body over 6 MB")
        parts: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                return await self._error(send, 413, "payload_too_large", "body over 6 MB")
            parts.append(chunk)
            more = message.get("more_body", False)
        raw_path = scope["raw_path"].decode("latin-1")
        if scope["query_string"]:
            raw_path += "?" + scope["query_string"].decode("latin-1")
        client = scope.get("client") or ("127.0.0.1", 0)
        headers = {k: v for k, v in _headers(scope).items() if k not in INTERNAL}
        path = scope["path"]
        target = "admin" if path == "/admin" or path.startswith("/admin/") else "proxy"
        if target == "proxy" and scope["method"] == "POST":  # a sync wait happens here
            headers[DEFER_HEADER] = ["1"]
        event = api_gateway_event(scope["method"], raw_path, headers, b"".join(parts), client[0])
        started = gone = False

        async def on_piece(status: int, piece_headers: dict[str, str], piece: bytes) -> None:
            nonlocal started, gone
            if gone:  # the client left: the function's answer is still read to its end
                return
            try:
                if not started:  # no Content-Length: uvicorn sends the body chunked
                    raw = [(k.lower().encode("latin-1"), v.encode("latin-1"))
                           for k, v in piece_headers.items()]  # fmt: skip
                    await send({"type": "http.response.start", "status": status, "headers": raw})
                    started = True
                await send({"type": "http.response.body", "body": piece, "more_body": True})
            except OSError:
                gone = True

        try:
            response = await self._call(target, event, self.inflight.caller(headers), on_piece)
        except FunctionError:
            if started:  # the status is out: end the body short
                return await send({"type": "http.response.body", "body": b""})
            return await self._error(send, 502, "function_error", "the function's process died")
        if started:  # streamed: the answer repeats the pieces whole
            return await send({"type": "http.response.body", "body": b""})
        if response is None:
            refusal = {
                "error": "too_many_requests",
                "message": "too many requests at once from this caller: retry shortly",
            }
            retry = {"content-type": "application/json", "retry-after": "1"}
            return await self._send(send, 429, json.dumps(refusal).encode(), retry)
        data = response.get("body") or ""
        body = base64.b64decode(data) if response.get("isBase64Encoded") else data.encode()
        out: dict[str, str] = {}
        for key, values in (response.get("multiValueHeaders") or {}).items():
            out[key] = ", ".join(values)
        out.update(response.get("headers") or {})
        out.pop("Content-Length", None)
        out.pop("content-length", None)
        await self._send(send, int(response["statusCode"]), body, out)

    async def _call(
        self, target: str, event: dict[str, Any], caller: str, on_piece: OnPiece | None = None
    ) -> dict[str, Any] | None:
        """The function's answer; a sync wait it handed over is done here, in the event loop,
        then the request is replayed to render the answer. None: the caller holds too many
        processes already."""
        with self.inflight.hold(caller) as allowed:
            if not allowed:
                return None
            response = await self.pool.call(target, event, on_piece)
        answered = {k.lower(): v[-1] for k, v in (response.get("multiValueHeaders") or {}).items()}
        answered.update({k.lower(): v for k, v in (response.get("headers") or {}).items()})
        waiting = answered.get(WAIT_TASK_HEADER)
        if waiting is None:
            return response
        seconds = float(answered.get(WAIT_SECONDS_HEADER, "0"))
        await self.waits.wait(waiting, seconds)
        headers = {k: v for k, v in event["multiValueHeaders"].items() if k != DEFER_HEADER}
        headers[RESUME_HEADER] = [waiting]
        replay = {**event, "headers": {k: v[-1] for k, v in headers.items()},
                  "multiValueHeaders": headers}  # fmt: skip
        # not counted against the caller: the request was admitted, its answer must come
        return await self.pool.call(target, replay)


class _Serving:
    """uvicorn on host:port with the worker pool, in the front door's process."""

    def __init__(self, settings: Settings, blobs: FileBlobStore, starting: str | None) -> None:
        import uvicorn

        host, port = settings.host, settings.port
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        deadline = time.monotonic() + 10
        while True:  # a front door of a stack that was just killed may still be letting go
            try:
                self.socket.bind((host, port))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.socket.listen(1024)
        self.server_address = self.socket.getsockname()
        self.pool = WorkerPool(settings)
        limit = settings.max_inflight_per_user or max(1, settings.http_workers - 1)
        front_door = FrontDoor(blobs, self.pool, TaskWaits(settings), InFlight(limit), starting)
        self.front_door = front_door
        config = uvicorn.Config(
            front_door, lifespan="off", access_log=False, log_level="warning",
            server_header=False, timeout_keep_alive=30, backlog=1024, timeout_graceful_shutdown=5,
        )  # fmt: skip
        self.uvicorn = uvicorn.Server(config)

    def serve(self) -> None:
        async def serve() -> None:
            self.pool.bind()
            await self.uvicorn.serve(sockets=[self.socket])

        try:
            with asyncio.Runner(loop_factory=self.uvicorn.config.get_loop_factory()) as runner:
                runner.run(serve())
        finally:
            self.socket.close()
            self.pool.close()


def _die_with(parent: int) -> None:
    """Have the kernel kill this process when the stack's process dies (Linux), so a killed
    stack leaves no front door answering on its port."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before that took effect
        os._exit(0)


def _front_door_main(
    settings: Settings, conn: Connection, parent: int, starting: str | None = None
) -> None:
    """The front door's process: serves until told to stop, or until the stack is gone; the
    message "started" ends its starting state."""
    _die_with(parent)
    composition.use_settings(settings)
    try:
        blobs = composition.get_services().blobs
        if not isinstance(blobs, FileBlobStore):
            raise TypeError("the local stack serves its own files: SD_BACKEND must be local")
        serving = _Serving(settings, blobs, starting)
    except Exception as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", serving.server_address))

    def watch() -> None:
        # a stop message, the stack's end of the pipe closing, or the stack gone (kill -9)
        while os.getppid() == parent:
            try:
                if conn.poll(0.5):
                    if conn.recv() == "started":
                        serving.front_door.starting = None
                        continue
                    break
            except (EOFError, OSError):
                break
        serving.uvicorn.should_exit = True
        time.sleep(15)  # graceful shutdown has had its time
        os._exit(0)

    threading.Thread(target=watch, name="front-door-watch", daemon=True).start()
    serving.serve()


class LocalServer:
    """The front door, run in its own process so that HTTP never waits for the stack's own
    threads (control loop, fleet) to release the interpreter lock."""

    def __init__(
        self, settings: Settings, start_timeout: float = 180, starting: str | None = None
    ) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.process = ctx.Process(
            target=_front_door_main,
            args=(settings, child, os.getpid(), starting),
            name="sd-front-door",
        )
        self.process.start()
        child.close()
        if not self._conn.poll(start_timeout):
            self.process.kill()
            raise RuntimeError("the HTTP front door did not start")
        status, detail = self._conn.recv()
        if status != "ready":
            self.process.join(timeout=5)
            raise RuntimeError(f"the HTTP front door did not start: {detail}")
        self.server_address: tuple[str, int] = tuple(detail)  # type: ignore[assignment]

    def started(self) -> None:
        """The stack is ready: /health answers as the proxy says from now on."""
        self._conn.send("started")

    def shutdown(self) -> None:
        with contextlib.suppress(OSError):
            self._conn.send("stop")

    def server_close(self, timeout: float = 15) -> None:
        self.process.join(timeout=timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)
        with contextlib.suppress(OSError):
            self._conn.close()
