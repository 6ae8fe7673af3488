"""What a new user does with a fresh deployment, as one flow: an admin creates a user and uploads
the demo checkpoint; the user draws with it async (with a webhook) and sync; the admin deletes it.

The e2e tests run it against the local stack; `pytest -m aws` against a real deployment
(tests/aws/test_deployed_stack.py). Only the public API and the client are used."""

from __future__ import annotations

import io
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from PIL import Image

from sdcore.webhooks import verify
from sdlocal.client import ApiError, Client
from sdlocal.stack import DEMO_CHECKPOINT

# (headers, body) of each webhook POST received so far
Received = Callable[[], list[tuple[dict[str, str], bytes]]]


@dataclass
class SmokeReport:
    """What the flow saw, with how long each step took (seconds)."""

    model: str
    async_task: str = ""
    sync_task: str = ""
    seconds: dict[str, float] = field(default_factory=dict)


def _png(url: str) -> Image.Image:
    resp = httpx.get(url, timeout=60)
    assert resp.status_code == 200, resp.status_code
    return Image.open(io.BytesIO(resp.content))


def run_smoke(
    base_url: str,
    admin_key: str,
    webhook_url: str,
    received: Received,
    checkpoint: Path = DEMO_CHECKPOINT,
    timeout_s: float = 900,
) -> SmokeReport:
    """The flow; an assertion fails on the first thing that is wrong. `timeout_s` bounds each
    wait (a cold GPU-less function may take minutes for its first image)."""
    tag = secrets.token_hex(3)
    report = SmokeReport(model=f"smoke-demo-{tag}")
    clock = time.monotonic()

    def lap(name: str) -> None:
        nonlocal clock
        report.seconds[name] = round(time.monotonic() - clock, 2)
        clock = time.monotonic()

    with Client(base_url, admin_key, timeout=120) as admin:
        user = admin._json("POST", "/admin/users", json={"name": f"smoke-{tag}", "role": "user"})
        model = admin.upload_model(checkpoint, report.model, config="demo-shapes")["model"]
        assert model["status"] == "unloaded" and model["format"] == "safetensors", model
        lap("upload")
        try:
            with Client(base_url, user["apiKey"], timeout=120) as client:
                body = {"prompt": "a red circle on a white background", "seed": 3,
                        "stable_diffusion_model": report.model}  # fmt: skip
                # async, with a webhook: the task's end is POSTed, signed with the user's secret
                queued = client.txt2img(**body, async_=True, webhook=webhook_url)
                report.async_task = queued["taskId"]
                done = client.wait(report.async_task, poll_s=2, timeout_s=timeout_s)
                assert done["status"] == "succeeded", done
                assert _png(done["urls"][0]).size == (64, 64)
                lap("async")
                deadline = time.monotonic() + min(timeout_s, 300)
                hooks: list[tuple[dict[str, str], bytes]] = []
                while not hooks and time.monotonic() < deadline:
                    hooks = [h for h in received() if report.async_task.encode() in h[1]]
                    time.sleep(0.5)
                assert hooks, "no webhook delivery"
                headers, payload = hooks[0]
                headers = {k.lower(): v for k, v in headers.items()}
                assert json.loads(payload)["taskId"] == report.async_task
                assert verify(user["webhookSecret"].encode(), payload, headers["x-signature-256"])
                lap("webhook")
                # sync: the warm function answers within the wait (else the task id: wait on it)
                answer = client.txt2img(**{**body, "seed": 4})
                report.sync_task = answer["taskId"]
                if answer["status"] != "succeeded":
                    answer = client.wait(report.sync_task, poll_s=2, timeout_s=timeout_s)
                assert answer["status"] == "succeeded", answer
                assert _png(answer["urls"][0]).size == (64, 64)
                lap("sync")
        finally:
            admin.delete_model(report.model)
            admin._json("POST", f"/admin/users/smoke-{tag}/revoke")
        try:
            admin.admin_model(report.model)
        except ApiError as e:
            assert e.status == 404, e.body
        else:
            raise AssertionError(f"model {report.model} is still there after its deletion")
        lap("delete")
    return report
