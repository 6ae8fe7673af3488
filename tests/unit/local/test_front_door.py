"""The local front door on its own (no control loop, no workers): its process, the function
worker pool, API Gateway's limits and S3's signed GET/PUT roles."""

from __future__ import annotations

import hashlib
import http.client
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sdcore.composition import get_services, use_settings
from sdcore.domain.models import Model, ModelStatus, TaskStatus
from sdcore.settings import Settings
from sdcore.usecases.auth import bootstrap_local
from sdlocal.server import FrontDoor, LocalServer
from sdlocal.waits import InFlight


@pytest.fixture(scope="module")
def front_door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalServer, dict]]:
    data_dir = tmp_path_factory.mktemp("front-door")
    settings = Settings(
        data_dir=data_dir,
        model_cache_dir=data_dir / "cache",
        backend="local",
        sync_timeout_s=20,
        port=0,
        http_workers=1,
    )
    use_settings(settings)
    svc = get_services()
    keys = bootstrap_local(svc, data_dir) or {}
    now = svc.clock.now()
    svc.models.create(
        Model(
            name="demo",
            status=ModelStatus.UNLOADED,
            sha256="0" * 64,
            size=1,
            key="models/demo.safetensors",
            registered_at=now,
            modified_at=now,
        )
    )
    server = LocalServer(settings)
    try:
        yield server, keys
    finally:
        server.shutdown()
        server.server_close()
        use_settings(None)


def _url(server: LocalServer) -> str:
    host, port = server.server_address
    return f"http://{host}:{port}"


def _children(pid: int) -> list[int]:
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            lines = status.read_text().splitlines()
        except OSError:
            continue
        if any(ln.split()[1:] == [str(pid)] for ln in lines if ln.startswith("PPid:")):
            found.append(int(status.parent.name))
    return found


def test_functions_answer_with_lowercase_headers_and_query(front_door) -> None:
    server, keys = front_door
    with httpx.Client(base_url=_url(server), timeout=30) as api:
        assert api.get("/health").json() == {"status": "ok"}
        resp = api.get("/tasks", params={"limit": "1"},
                       headers={"authorization": f"Bearer {keys['user_key']}"})  # fmt: skip
        assert resp.status_code == 200, resp.text
        assert api.get("/tasks").status_code == 401


def test_requests_and_answers_bigger_than_a_pipe_buffer(front_door) -> None:
    server, keys = front_door
    with httpx.Client(base_url=_url(server), timeout=30) as api:
        spec = api.get("/openapi.json")  # more than a pipe buffer (64 kB) from the function
        assert spec.status_code == 200 and len(spec.content) > 64 * 1024
        assert "paths" in spec.json()
        big = {"prompt": "p", "init_images": ["A" * (5 * 1024 * 1024)]}  # under Lambda's 6 MB
        resp = api.post("/img2img", json=big,
                        headers={"Authorization": f"Bearer {keys['user_key']}"})  # fmt: skip
        assert resp.status_code == 422, resp.text  # the function read all 5 MB and answered


@pytest.mark.parametrize("size", [10 * 1024 * 1024 + 1, 6 * 1024 * 1024 + 1])
def test_body_over_the_lambda_payload_limit_is_413(front_door, size: int) -> None:
    """API Gateway takes 10 MB, but a Lambda function is handed at most 6 MB."""
    server, keys = front_door
    resp = httpx.post(f"{_url(server)}/txt2img", content=b"x" * size, timeout=30,
                      headers={"Authorization": f"Bearer {keys['user_key']}"})  # fmt: skip
    assert resp.status_code == 413
    assert resp.json()["error"] == "payload_too_large"


def test_signed_get_head_and_part_put(front_door) -> None:
    server, _ = front_door
    blobs = get_services().blobs
    blobs.put("outputs/u/t/0.png", b"\x89PNG fake", "image/png")
    url = blobs.url("outputs/u/t/0.png", 60)
    path_q = url[url.index("/files/") :]
    with httpx.Client(base_url=_url(server), timeout=30) as api:
        got = api.get(path_q)
        assert got.status_code == 200 and got.content == b"\x89PNG fake"
        assert got.headers["content-type"] == "image/png"
        head = api.head(path_q)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(len(b"\x89PNG fake"))
        assert api.get(path_q.replace("signature=", "signature=0")).status_code == 403

        upload = blobs.create_multipart("models/m.safetensors")
        part_url = blobs.part_url("models/m.safetensors", upload, 1, 60)
        part = os.urandom(3 * 1024 * 1024 + 17)  # several network chunks
        put = api.put(part_url[part_url.index("/uploads/") :], content=part)
        assert put.status_code == 200, put.text
        assert put.headers["etag"].strip('"') == hashlib.md5(part).hexdigest()
        assert [p.etag for p in blobs.list_parts("models/m.safetensors", upload)] == [
            hashlib.md5(part).hexdigest()
        ]


def test_a_dead_function_process_answers_502_and_is_replaced(front_door) -> None:
    server, keys = front_door
    base = _url(server)
    workers = _children(server.process.pid)
    assert len(workers) == 1
    headers = {"Authorization": f"Bearer {keys['user_key']}"}
    # Given the function's process killed (as an out-of-memory kill would) and gone
    os.kill(workers[0], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{workers[0]}/status").exists() and "Z" not in _state(workers[0]):
        assert time.monotonic() < deadline, "the killed process is still there"
        time.sleep(0.05)
    with httpx.Client(base_url=base, timeout=60, headers=headers) as api:
        # When a request reaches it: 502, and a new process takes its place
        answer = api.post("/txt2img", json={"prompt": "a red circle"})
        assert answer.status_code == 502
        assert answer.json()["error"] == "function_error"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the next request waits for the replacement
            resp = api.get("/health")
            if resp.status_code == 200:
                break
        assert resp.status_code == 200
        replaced = _children(server.process.pid)
        assert len(replaced) == 1 and replaced != workers


def _state(pid: int) -> str:
    try:
        return next(
            ln.split()[1] for ln in Path(f"/proc/{pid}/status").read_text().splitlines()
            if ln.startswith("State:")
        )  # fmt: skip
    except (OSError, StopIteration):
        return "gone"


def test_the_front_door_ends_with_the_stack(front_door) -> None:
    """A front door whose stack is gone (its end of the pipe closed) stops serving."""
    server, _ = front_door
    other = LocalServer(get_services().settings)
    other._conn.close()  # what the stack's death does to the pipe
    other.process.join(timeout=30)
    assert not other.process.is_alive()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{_url(other)}/health", timeout=5)


def test_a_signed_url_over_a_path_out_of_the_store_is_404_not_500(front_door) -> None:
    """Signed, but its path leads out of the objects folder: nothing is there to serve."""
    server, _ = front_door
    blobs = get_services().blobs
    (blobs.objects.parent / "secret.txt").write_text("not an object")
    url = blobs._signed("/files/../secret.txt", 60)  # as if we had issued it
    path_q = url[url.index("/files/") :]
    conn = http.client.HTTPConnection(*server.server_address, timeout=30)
    try:
        conn.request("GET", path_q)  # sent as is: no client-side dot-segment removal
        resp = conn.getresponse()
        assert resp.status == 404, resp.read()
        assert b"not an object" not in resp.read()
    finally:
        conn.close()


def test_a_sync_wait_holds_no_function_process(front_door) -> None:
    """One function process here: while a sync request waits for its task (nothing runs tasks
    in this fixture), /health and the caller's other calls are still answered by it."""
    server, keys = front_door
    headers = {"Authorization": f"Bearer {keys['user_key']}"}
    svc = get_services()
    before = {t.task_id for t in svc.tasks.list_by_status(TaskStatus.QUEUED, limit=500)}
    answer: dict[str, httpx.Response] = {}
    with httpx.Client(base_url=_url(server), timeout=60, headers=headers) as api:

        def sync_call() -> None:
            answer["r"] = api.post("/txt2img", json={"prompt": "waits"})

        waiting = threading.Thread(target=sync_call)
        waiting.start()
        deadline = time.monotonic() + 30
        new: set[str] = set()
        while not new:  # the task is submitted; its request now waits for it
            assert time.monotonic() < deadline, "the task was never submitted"
            queued = svc.tasks.list_by_status(TaskStatus.QUEUED, limit=500)
            new = {t.task_id for t in queued} - before
            time.sleep(0.05)
        [task_id] = new
        assert api.get("/health").json() == {"status": "ok"}  # the process is free
        assert waiting.is_alive(), answer["r"].text  # the sync request still waits
        # the task ends (cancelled): the waiting request answers with its result at once
        assert api.post(f"/tasks/{task_id}/cancellation").status_code == 200
        waiting.join(timeout=30)
    assert answer["r"].status_code == 200, answer["r"].text
    assert answer["r"].json()["taskId"] == task_id
    assert answer["r"].json()["status"] == "cancelled"


def test_a_caller_holds_at_most_its_share_of_the_processes() -> None:
    inflight = InFlight(limit=2)
    alice = InFlight.caller({"authorization": ["Bearer sd_alice"]})
    bob = InFlight.caller({"x-api-key": ["sd_bob"]})
    with inflight.hold(alice) as first, inflight.hold(alice) as second:
        with inflight.hold(alice) as third, inflight.hold(bob) as other:
            assert (first, second, third, other) == (True, True, False, True)
        with inflight.hold("") as public:  # no key (/health): never refused
            assert public
    with inflight.hold(alice) as again:
        assert again and not inflight.held.get(bob)


def test_health_says_starting_until_the_stack_has_started() -> None:
    """The stack registers its demo model through its own front door: until it says it has
    started, /health is 503 (a script waiting for 200 must not submit before the model
    exists); the other routes are served meanwhile."""
    import asyncio
    import json

    door = FrontDoor(None, None, None, None, starting="the demo model is being registered")  # type: ignore[arg-type]
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/health", "headers": [],
             "query_string": b""}  # fmt: skip
    asyncio.run(door(scope, receive, send))
    assert sent[0]["status"] == 503
    assert json.loads(sent[1]["body"]) == {
        "status": "starting",
        "detail": "the demo model is being registered",
    }
    sent.clear()
    door.starting = None  # what the stack's "started" message does (every e2e stack waits on it)

    async def to_the_function(*_: object) -> None:
        sent.append({"to": "function"})

    door._function = to_the_function  # type: ignore[method-assign]
    asyncio.run(door(scope, receive, send))
    assert sent == [{"to": "function"}]
