"""The Python client (`sdlocal.client.Client`) and the `sd` CLI against a running local stack:
generation sync and async with progress, downloads checked by md5, task paging and
cancellation, and the resumable parallel model upload."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from sdlocal.client import ApiError, ChecksumError, Client, Progress, UploadEvent
from tests.data.fetch_photos import fetch
from tests.support_stack import REPO, SOURCE_PATH, RunningStack

pytestmark = pytest.mark.slow

PART_SIZE = 5 * 1024 * 1024  # the server's minimum: the ~11 MB test model has 3 parts


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    running = RunningStack(
        tmp_path_factory.mktemp("client-stack"),
        SD_IDLE_SECONDS="600",
        SD_PART_SIZE=str(PART_SIZE),
        SD_PROGRESS_INTERVAL="0.1",
    ).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(stack: RunningStack) -> Iterator[Client]:
    with Client(stack.url, api_key=stack.credentials["user_key"], timeout=120) as sd:
        yield sd


@pytest.fixture(scope="module")
def admin(stack: RunningStack) -> Iterator[Client]:
    with Client(stack.url, api_key=stack.credentials["admin_key"], timeout=120) as sd:
        yield sd


@pytest.fixture(scope="module")
def model_file(stack: RunningStack, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real single-file checkpoint of the tiny test architecture (~11 MB, config tiny-sd)."""
    from sdlocal.demo.tiny import save_single_file

    target = save_single_file(tmp_path_factory.mktemp("model") / "tiny.safetensors")
    assert 2 * PART_SIZE < target.stat().st_size <= 3 * PART_SIZE
    return target


def sd(
    stack: RunningStack, *args: str, key: str | None = "user_key", **env: str
) -> subprocess.CompletedProcess[str]:
    """Run the CLI as `python -m sdlocal.cli`."""
    full_env = {
        **os.environ,
        "SD_URL": stack.url,
        "PYTHONPATH": SOURCE_PATH,
        **env,
    }
    full_env.pop("SD_API_KEY", None)
    if key:
        full_env["SD_API_KEY"] = stack.credentials[key]
    return subprocess.run(
        [sys.executable, "-m", "sdlocal.cli", *args],
        env=full_env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_sync_txt2img_then_download_checks_md5(client: Client, tmp_path: Path) -> None:
    # When
    result = client.txt2img("a red circle", seed=3, steps=3, batch_size=2)
    paths = client.download(result, tmp_path / "out")
    # Then
    assert result["status"] == "succeeded", result
    assert [p.name for p in paths] == [f"{result['taskId']}-0.png", f"{result['taskId']}-1.png"]
    for path, md5 in zip(paths, result["md5"], strict=True):
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG")
        assert hashlib.md5(data).hexdigest() == md5


def test_async_txt2img_wait_reports_progress(client: Client) -> None:
    # Given
    accepted = client.txt2img("a blue square", steps=12, width=128, height=128, async_=True)
    assert set(accepted) == {"taskId", "status"}
    seen: list[Progress] = []
    # When
    result = client.wait(accepted["taskId"], on_progress=seen.append, poll_s=0.1, timeout_s=90)
    # Then
    assert result["status"] == "succeeded" and len(result["urls"]) == 1
    assert len(seen) >= 2
    assert seen[0]["status"] in ("queued", "running")
    assert seen[-1]["status"] == "succeeded" and seen[-1]["progress"] == 1.0
    assert any(0 < p["progress"] < 1 for p in seen), [p["progress"] for p in seen]
    fractions = [p["progress"] for p in seen]
    assert fractions == sorted(fractions)


def test_list_tasks_follows_the_cursor(client: Client) -> None:
    # Given three new tasks
    ids = [client.txt2img(f"task {n}", steps=1, async_=True)["taskId"] for n in range(3)]
    # When
    first_page = client.list_tasks_page(limit=2)
    listed = [t["taskId"] for t in client.list_tasks(page_size=2)]
    # Then: newest first, across pages, no repeats
    assert first_page["cursor"] and len(first_page["tasks"]) == 2
    assert listed[:3] == ids[::-1]
    assert len(listed) == len(set(listed)) >= 3
    assert [t["taskId"] for t in client.list_tasks(limit=3, page_size=2)] == ids[::-1]
    for task_id in ids:
        client.wait(task_id, poll_s=0.1, timeout_s=60)


def test_cancel_a_running_task(client: Client) -> None:
    # Given a task long enough to catch running
    task_id = client.txt2img("slow", steps=150, width=128, height=128, async_=True)["taskId"]

    def cancel_once_running(p: Progress) -> None:
        if p["state"]["samplingStep"] >= 1 and not p["state"]["interrupted"]:
            assert client.cancel(task_id)["cancelRequested"] is True

    # When
    result = client.wait(task_id, on_progress=cancel_once_running, poll_s=0.1, timeout_s=60)
    # Then
    assert result["status"] == "cancelled"
    assert result["images"] == []
    assert client.progress(task_id)["state"]["interrupted"] is True


def test_api_errors_carry_status_and_a_readable_message(client: Client) -> None:
    with pytest.raises(ApiError) as missing:
        client.result("no-such-task")
    assert missing.value.status == 404
    with pytest.raises(ApiError) as invalid:
        client.txt2img("x", steps=0)
    assert invalid.value.status == 422
    assert "steps" in str(invalid.value)


def test_cli_txt2img_wait_downloads_the_images(stack: RunningStack, tmp_path: Path) -> None:
    # When
    run = sd(stack, "txt2img", "a green triangle", "--steps", "3", "--seed", "9", "--wait",
             "--out", str(tmp_path))  # fmt: skip
    # Then
    assert run.returncode == 0, run.stderr
    body = json.loads(run.stdout)
    assert body["status"] == "succeeded"
    assert body["files"] == [str(tmp_path / f"{body['taskId']}-0.png")]
    data = Path(body["files"][0]).read_bytes()
    assert hashlib.md5(data).hexdigest() == body["md5"][0]
    # and the task is listed and shown
    listed = sd(stack, "tasks", "list", "--limit", "1")
    assert listed.returncode == 0 and json.loads(listed.stdout)[0]["taskId"] == body["taskId"]
    shown = sd(stack, "tasks", "show", body["taskId"])
    assert json.loads(shown.stdout)["images"] == body["images"]


def test_cli_remove_paints_the_person_out_with_the_demo_model(
    stack: RunningStack, tmp_path: Path
) -> None:
    # Given the test photo at the demo checkpoint's size
    photo = tmp_path / "astronaut.png"
    Image.open(fetch()).convert("RGB").resize((64, 64), Image.Resampling.LANCZOS).save(photo)
    # When
    flags = ["--box", "--dilate", "2", "--blur", "2", "--steps", "4", "--seed", "3"]
    run = sd(stack, "remove", str(photo), "--prompt", "a grey wall", *flags,
             "--out", str(tmp_path / "out"))  # fmt: skip
    # Then: the edited photo and the mask, the rest of the photo untouched, with progress shown
    assert run.returncode == 0, run.stderr
    body = json.loads(run.stdout)
    assert body["status"] == "succeeded" and body["info"]["maskMode"] == "box", body
    assert 0.3 < body["info"]["maskCoverage"] < 1 and "100%" in run.stderr
    edited, mask = (np.asarray(Image.open(f).convert("RGB")).astype(int) for f in body["files"])
    before, masked = np.asarray(Image.open(photo)).astype(int), mask[..., 0]
    assert np.array_equal(edited[masked == 0], before[masked == 0])
    assert np.abs(edited[masked == 255] - before[masked == 255]).mean() > 10


def test_cli_exit_codes(stack: RunningStack) -> None:
    missing = sd(stack, "tasks", "show", "no-such-task")
    assert missing.returncode == 1
    assert "404" in missing.stderr and missing.stdout == ""
    assert sd(stack, "txt2img").returncode == 2  # no prompt
    assert sd(stack, "models", "delete", "demo", key="user_key").returncode == 1  # not admin


def test_upload_resumes_an_interrupted_upload(
    stack: RunningStack, admin: Client, model_file: Path
) -> None:
    # Given an upload interrupted after its first part
    data = model_file.read_bytes()
    plan = httpx.post(
        f"{stack.url}/admin/models",
        headers=stack.admin_headers,
        json={
            "name": "resumed",
            "type": "checkpoint",
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "config": "tiny-sd",
        },
    ).json()
    assert plan["partSize"] == PART_SIZE and len(plan["parts"]) == 3
    put = httpx.put(plan["parts"][0]["url"], content=data[:PART_SIZE])
    assert put.status_code == 200
    events: list[UploadEvent] = []
    # When
    done = admin.upload_model(
        model_file, "resumed", config="tiny-sd", parallel=2, on_progress=events.append
    )
    # Then
    assert done["uploadId"] == plan["uploadId"]
    assert done["skippedParts"] == [1] and done["uploadedParts"] == [2, 3]
    assert done["sha256"] == hashlib.sha256(data).hexdigest() == done["model"]["sha256"]
    assert done["model"]["status"] == "unloaded" and done["model"]["error"] is None
    parts = [e for e in events if e.phase == "part"]
    assert sorted((e.part_number, e.skipped) for e in parts) == [(1, True), (2, False), (3, False)]
    assert parts[-1].bytes_done == len(data)
    assert events[-1].phase == "complete"
    # and the CLI deletes it
    deleted = sd(stack, "models", "delete", "resumed", key="admin_key")
    assert deleted.returncode == 0, deleted.stderr
    assert json.loads(deleted.stdout)["status"] == "deleted"


def test_cli_models_upload_with_the_local_credentials(
    stack: RunningStack, model_file: Path
) -> None:
    # When: no key given, so the admin key comes from $SD_DATA_DIR/credentials.json
    run = sd(stack, "models", "upload", str(model_file), "--name", "cli-upload",
             "--config", "tiny-sd", "--parallel", "3",
             key=None, SD_DATA_DIR=str(stack.data_dir))  # fmt: skip
    # Then
    assert run.returncode == 0, run.stderr
    body = json.loads(run.stdout)
    assert body["model"]["status"] == "unloaded"
    assert body["uploadedParts"] == [1, 2, 3] and body["skippedParts"] == []
    assert "sha256 " + body["sha256"] in run.stderr
    listed = json.loads(sd(stack, "models", "list").stdout)
    assert any(m["name"] == "cli-upload" and m["status"] == "unloaded" for m in listed)
    assert sd(stack, "models", "delete", "cli-upload", key="admin_key").returncode == 0


@pytest.mark.parametrize("name", ["tiny-sd2", "tiny-sdxl"])
def test_sd2_and_sdxl_single_files_upload_and_generate(
    admin: Client, client: Client, tmp_path: Path, name: str
) -> None:
    """The whole path for the other architectures: upload (checked against the config's
    architecture), listing details, a worker loading it, an image with its infotext."""
    from sdlocal.demo.tiny import save_single_file

    path = save_single_file(tmp_path, seed=1, name=name)
    done = admin.upload_model(path, name, config=name)
    model = done["model"]
    assert model["status"] == "unloaded" and model["error"] is None, model
    assert model["details"]["architecture"] == {"tiny-sd2": "sd2", "tiny-sdxl": "sdxl"}[name]
    result = client.txt2img(
        "a red circle", seed=5, steps=3, stable_diffusion_model=name, sampler_name="DPM++ 2S a"
    )
    assert result["status"] == "succeeded", result
    info = result["info"]
    assert (info["width"], info["height"], info["sd_model_name"]) == (64, 64, name)
    assert "Sampler: DPM++ 2S a, Schedule type: Karras" in info["infotexts"][0]
    # a file of one architecture with another's config is refused with the reason
    with pytest.raises(ApiError, match="pick the config of its architecture"):
        admin.upload_model(path, f"{name}-as-sd15", config="tiny-sd")


# --- without a stack: the client's retry and checksum rules over a mock transport -------------


def test_429_is_retried_after_retry_after_then_gives_up() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if len(calls) < 3:
            return httpx.Response(429, headers={"Retry-After": "0"}, json={"error": "busy"})
        return httpx.Response(200, json=[])

    with Client("http://api", transport=httpx.MockTransport(handler)) as sd_client:
        assert sd_client.models() == []
    assert len(calls) == 3

    always = httpx.MockTransport(
        lambda r: httpx.Response(429, headers={"Retry-After": "0"}, json={"message": "slow down"})
    )
    with (
        Client("http://api", transport=always, max_retries=2) as sd_client,
        pytest.raises(ApiError) as exc,
    ):
        sd_client.models()
    assert exc.value.status == 429 and "slow down" in str(exc.value)


def test_download_refuses_an_image_whose_md5_differs(tmp_path: Path) -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(200, content=b"\x89PNG not it"))
    result = {"taskId": "t1", "status": "succeeded", "urls": ["http://files/0.png"],
              "md5": ["0" * 32]}  # fmt: skip
    with Client("http://api", transport=transport) as sd_client, pytest.raises(ChecksumError):
        sd_client.download(result, tmp_path)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_cli_batch_of_a_folder_returns_a_labelled_grid(
    stack: RunningStack, client: Client, tmp_path: Path
) -> None:
    # Given a folder of three templates that differ in steps and guidance
    for name, steps, cfg in (("flat", 2, 7), ("sharp", 3, 7), ("soft", 3, 4)):
        doc = {"steps": steps, "cfg_scale": cfg, "seed": 5, "folder": "looks",
               "promptTemplate": "{prompt}, white background"}  # fmt: skip
        client.put_template(name, doc)
    # When
    run = sd(stack, "batch", "a red circle", "--folder", "looks", "--out", str(tmp_path))
    # Then: three tasks, and a grid of their pictures under their labels
    assert run.returncode == 0, run.stderr
    body = json.loads(run.stdout)
    assert body["status"] == "succeeded" and len(body["tasks"]) == 3, body
    assert body["tasks"][2]["label"] == "soft\ncfg_scale: 4\nsteps: 3"
    grid = Image.open(body["files"][0])
    cell = Image.open(client.download(client.result(body["tasks"][0]["taskId"]), tmp_path)[0])
    assert grid.width == 3 * cell.width and grid.height > cell.height
    # and the simple API runs a template as a style, in its envelope
    answer = httpx.post(f"{stack.url}/simple/txt2img", headers=stack.headers, timeout=120,
                        json={"prompt": "a red circle", "style": "flat"}).json()  # fmt: skip
    assert answer["code"] == 0 and answer["msg"] == "ok" and len(answer["data"]["images"]) == 1
