"""A fake OpenAI-compatible chat server on 127.0.0.1 (a thread, an ephemeral port) that streams
scripted replies as server-sent events, one `data:` line per piece, as vLLM or Ollama do."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One answer: an error status, or pieces streamed in order. `gates[i]`, when given, is
    waited on before piece i goes out (a test proves a piece arrived before the next was sent);
    `hang` holds the answer back until the server stops (a timeout)."""

    pieces: list[str] = field(default_factory=list)
    status: int = 200
    gates: dict[int, threading.Event] = field(default_factory=dict)
    hang: bool = False


class FakeOpenAI:
    def __init__(self) -> None:
        self.replies: queue.Queue[Reply] = queue.Queue()
        self.requests: list[dict[str, Any]] = []
        self.stopping = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append({"path": self.path, "headers": dict(self.headers), **body})
                reply = fake.replies.get_nowait()
                if reply.hang:
                    fake.stopping.wait()
                    return
                if reply.status != 200:
                    data = json.dumps({"error": {"message": "slow down"}}).encode()
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Retry-After", "0")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for number, piece in enumerate(reply.pieces):
                    gate = reply.gates.get(number)
                    if gate is not None and not gate.wait(30):
                        return
                    chunk = {"choices": [{"index": 0, "delta": {"content": piece}}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                end = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
                self.wfile.write(f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n".encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/v1"


@contextmanager
def fake_openai() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI()
    fake.thread.start()
    try:
        yield fake
    finally:
        fake.stopping.set()
        fake.server.shutdown()
        fake.server.server_close()
