"""`sd models` against a running local stack: upload through the local server's signed part URLs
(Content-MD5 checked) with the verification job run by the stack, import from a URL, listing by
type, show, a refused upload, delete. The model files are tiny hand-written ones (no torch)."""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import model_files as mf
from tests.e2e.test_client_cli import sd
from tests.support_stack import RunningStack

pytestmark = pytest.mark.slow

PART = 5 * 1024 * 1024


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    running = RunningStack(
        tmp_path_factory.mktemp("models-stack"),
        SD_PART_SIZE=str(PART),
        SD_ALLOW_PRIVATE_URLS="true",  # the import comes from a server on 127.0.0.1
    ).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    folder = tmp_path_factory.mktemp("served")
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(folder))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", folder
    server.shutdown()
    server.server_close()


def test_upload_import_list_show_delete(stack: RunningStack, files, tmp_path: Path) -> None:
    # a 3-part checkpoint through the CLI: parts, then the stack's verification job
    checkpoint = tmp_path / "big.safetensors"
    checkpoint.write_bytes(mf.checkpoint({"model.diffusion_model.pad.weight": [11 * PART // 5]}))
    run = sd(stack, "models", "upload", str(checkpoint), "--name", "big", "--config", "tiny-sd",
             key="admin_key")  # fmt: skip
    assert run.returncode == 0, run.stderr
    body = json.loads(run.stdout)
    assert body["model"]["status"] == "unloaded" and body["uploadedParts"] == [1, 2, 3]
    assert "verify" in run.stderr  # the verification's progress bar

    # an import from a URL, followed to its end
    base, folder = files
    (folder / "ink.safetensors").write_bytes(mf.safetensors(mf.lora_shapes(rank=16)))
    run = sd(stack, "models", "import", f"{base}/ink.safetensors", "--name", "ink",
             "--type", "lora", key="admin_key")  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["status"] == "unloaded"
    listed = json.loads(sd(stack, "models", "list", "--type", "lora").stdout)
    assert [m["name"] for m in listed] == ["ink"]
    shown = json.loads(sd(stack, "models", "show", "ink", key="admin_key").stdout)
    assert shown["details"]["rank"] == 16 and len(shown["details"]["webui_hash"]) == 64
    assert shown["pending"] is None
    loras = httpx.get(f"{stack.url}/sdapi/v1/loras", headers=stack.headers).json()
    assert [lora["name"] for lora in loras] == ["ink"]

    # a LoRA uploaded as a checkpoint is refused with the reason
    lora = folder / "ink.safetensors"
    run = sd(stack, "models", "upload", str(lora), "--name", "wrong", key="admin_key")
    assert run.returncode == 1 and "looks like a lora, not a checkpoint" in run.stderr

    assert sd(stack, "models", "delete", "ink", key="admin_key").returncode == 0
    assert json.loads(sd(stack, "models", "list", "--type", "lora").stdout) == []


def test_the_local_server_refuses_a_part_with_a_wrong_content_md5(stack: RunningStack) -> None:
    data = mf.checkpoint()
    plan = httpx.post(
        f"{stack.url}/admin/models",
        headers=stack.admin_headers,
        json={"name": "damaged", "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
              "config": "tiny-sd"},
    ).json()  # fmt: skip
    url = plan["parts"][0]["url"]
    wrong = base64.b64encode(hashlib.md5(b"something else").digest()).decode()
    assert httpx.put(url, content=data, headers={"Content-MD5": wrong}).status_code == 400
    right = base64.b64encode(hashlib.md5(data).digest()).decode()
    assert httpx.put(url, content=data, headers={"Content-MD5": right}).status_code == 200
