"""A checkpoint that cannot load with its config is refused at upload, naming the tensors that
differ, and never becomes usable; the same weights as a diffusers folder (which carries its own
configs) upload and generate. Local backend, the real engine."""

from __future__ import annotations

from pathlib import Path

import pytest

import inference_function.app as inference_app
from sdcore import composition
from tests.functional.events import Context
from tests.functional.test_models_local import MIB, call, proxy, submit, upload

pytest.importorskip("diffusers")


@pytest.fixture
def env(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("SD_PART_SIZE", str(5 * MIB))
    monkeypatch.setenv("SD_MODEL_CACHE_DIR", str(tmp_path / "cache"))
    return Path(request.getfixturevalue("local_env"))


def test_a_narrow_single_file_is_refused_and_its_diffusers_folder_generates(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sdlocal.demo import tiny

    # Given the tiny SD 1.x model (a 32-wide text encoder) as one file, registered with `auto`
    single = tiny.save_single_file(tmp_path / "narrow.safetensors").read_bytes()
    refused = upload("narrow", single, config="auto")
    # Then auto picked sd15 by its keys, and the file was held against sd15's every tensor
    assert refused["status"] == "registering" and refused["pending"]["error"] == refused["error"]
    why = refused["error"]
    assert why.startswith("not a valid checkpoint: it does not fit the config sd15: UNet: ")
    assert (
        "text encoder: embeddings.position_embedding.weight is [77, 32], "
        "config sd15 expects [77, 768]" in why
    )
    assert "uploaded as a diffusers folder" in why
    status, body = submit("narrow")
    assert status == 409 and "does not fit the config sd15" in body["message"]

    # When the same weights come as a diffusers folder (its own configs), with `auto` too
    folder = tiny.save_diffusers_tar(tmp_path / "narrow.tar").read_bytes()
    model = upload("narrow-folder", folder, config="auto")
    assert model["status"] == "unloaded" and model["error"] is None, model
    assert model["format"] == "diffusers" and model["details"] == {"architecture": "sd1"}

    # Then a task on it generates, through the inference function and the real engine
    monkeypatch.setenv("SD_MODEL_NAME", "narrow-folder")
    composition.reset()
    monkeypatch.setattr(inference_app, "_engine", None)
    status, task = submit("narrow-folder")
    assert status == 202, task
    done = inference_app.lambda_handler({"taskId": task["taskId"]}, Context())
    assert done["status"] == "succeeded", done
    status, result = call(proxy, "GET", f"/tasks/{task['taskId']}/result")
    assert status == 200 and len(result["images"]) == 1, result
