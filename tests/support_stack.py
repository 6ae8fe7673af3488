"""Start the local stack as a user would (`python -m sdlocal.stack`) on a free port."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
# where this checkout's packages live: child processes import from here, not from an install
SOURCE_PATH = os.pathsep.join(
    str(REPO / p)
    for p in (
        "layers/sdcore",
        "local",
        "functions/proxy",
        "functions/admin",
        "functions/control",
        "functions/inference",
    )
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RunningStack:
    def __init__(self, data_dir: Path, port: int | None = None, **env: str) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir / "stack.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def credentials(self) -> dict[str, str]:
        path = self.data_dir / "credentials.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    @property
    def headers(self) -> dict[str, str]:
        """The user key's Authorization header."""
        return {"Authorization": f"Bearer {self.credentials.get('user_key', '')}"}

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.credentials.get('admin_key', '')}"}

    def start(self, timeout: float = 180) -> RunningStack:
        env = {
            **os.environ,
            "SD_DATA_DIR": str(self.data_dir),
            "PORT": str(self.port),
            "SD_HTTP_WORKERS": "3",
            "SD_RATE_PER_MINUTE": "100000",
            "PYTHONPATH": SOURCE_PATH,
            **self.env,
        }
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sdlocal.stack"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"stack exited early:\n{self.log.read_text()[-4000:]}")
            try:  # what a script does: wait for /health, then the demo must be usable
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    models = httpx.get(f"{self.url}/models", timeout=5, headers=self.headers)
                    demo = [m for m in models.json() if m["name"] == "demo"]
                    if not demo or demo[0]["status"] == "registering":
                        self.stop()
                        raise RuntimeError(f"/health said ready, but the demo model is {demo}")
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"stack did not come up:\n{self.log.read_text()[-4000:]}")

    def kill(self) -> None:
        """SIGKILL: a crash, no clean shutdown (its worker processes are orphaned)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def workers(self) -> list[int]:
        """Pids of the stack's inference worker processes."""
        if self.proc is None:
            return []
        pids = []
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                text = status.read_text()
                cmdline = (status.parent / "cmdline").read_bytes()
            except OSError:
                continue
            ppid = next((ln.split()[1] for ln in text.splitlines() if ln.startswith("PPid:")), "")
            if ppid == str(self.proc.pid) and b"sdcore.adapters.local.runtime" in cmdline:
                pids.append(int(status.parent.name))
        return pids

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def wait_for_result(client: httpx.Client, task_id: str, timeout: float = 180) -> dict:
    """The task's result once it has ended (a sync request answered 202 on a busy machine)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body: dict = client.get(f"/tasks/{task_id}/result").json()
        if body["status"] in ("succeeded", "failed", "cancelled"):
            return body
        time.sleep(0.1)
    raise AssertionError(f"task {task_id} did not end within {timeout} s")
