"""`POST /edits/remove` on the local backend: the proxy handler takes the request, an inference
worker (the real engine on the tiny model, the built-in MediaPipe person segmenter) runs it.
Bad fields and unknown targets are 422s naming the field; a segmenter registered through the
admin API brings its own labels; nothing of the target found ends `succeeded` with the photo
and `maskCoverage` 0."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import inference_function.app as inference_app
from proxy_function.app import lambda_handler as proxy
from sdcore import composition
from sdcore.composition import get_services
from sdcore.domain.models import Model, ModelStatus
from sdcore.engine.diffusers_engine import DiffusersEngine
from sdcore.engine.img2img import resize_image
from sdlocal.demo import tiny
from tests.data.fetch_photos import fetch
from tests.functional.test_webui_interrogate import call, upload, worker
from tests.interrogators import tar_folder
from tests.segmenters import save_segmenter


def _b64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _png(key: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(get_services().blobs.get(key))).convert("RGB"))


@pytest.fixture
def stack(local_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    monkeypatch.setenv("SD_SYNC_TIMEOUT", "120")
    monkeypatch.setenv("SD_MODEL_NAME", "demo")
    monkeypatch.setenv("SD_MODEL_CACHE_DIR", str(tmp_path / "cache"))
    composition.reset()
    demo = Model(name="demo", status=ModelStatus.UNLOADED, sha256="0" * 64, size=1,
                 key="models/demo.safetensors", registered_at=0, modified_at=0)  # fmt: skip
    get_services().models.create(demo)
    engine = DiffusersEngine(tiny.save_single_file(tmp_path / "tiny-sd.safetensors"), "demo",
                             "0" * 64, config_dir=tiny.CONFIG_DIR, device="cpu")  # fmt: skip
    engine.load()
    monkeypatch.setattr(inference_app, "load_engine", lambda *_: engine)
    monkeypatch.setattr(inference_app, "_engine", None)
    yield local_env


def test_remove_people_and_other_classes(stack: Path, tmp_path: Path) -> None:
    photo = Image.open(fetch()).convert("RGB")
    body = {"image": _b64(photo), "prompt": "an empty room", "width": 64, "height": 64,
            "steps": 2, "dilate": 2, "blur": 2, "seed": 5}  # fmt: skip

    # bad fields and unknown targets: 422 naming the field, before any task
    for change, field, words in [
        ({"target": "car"}, "target", "valid: person"),
        ({"maskMode": "circle"}, "maskMode", "'mask' or 'box'"),
        ({"dilate": -1}, "dilate", "greater than or equal to 0"),
        ({"segmenter": "nope"}, "segmenter", "unknown segmenter 'nope'"),
    ]:
        status, answer = call(proxy, "POST", "/edits/remove", {**body, **change})
        assert status == 422 and answer["detail"][0]["loc"][-1] == field, answer
        assert words in answer["detail"][0]["msg"], answer

    with worker():
        status, result = call(proxy, "POST", "/edits/remove", body)
        assert status == 200 and result["status"] == "succeeded", result
        edited_key, mask_key = result["images"]
        info = result["info"]
        assert info["segmenter"] == "mediapipe-selfie-segmentation" and info["target"] == "person"
        assert 0.3 < info["maskCoverage"] < 0.9 and info["inpaint"]["denoising_strength"] == 1.0
        edited, mask = _png(edited_key), _png(mask_key)[..., 0]
        same = np.asarray(resize_image(0, photo, 64, 64))
        assert np.array_equal(edited[mask == 0], same[mask == 0])
        assert np.abs(edited[mask == 255].astype(int) - same[mask == 255]).mean() > 10

        # a registered segmenter: its labels are the targets; nothing found -> the photo back
        folder = save_segmenter(tmp_path / "segformer")
        listed = upload("segformer-tiny", "segmenter", tar_folder(folder))
        assert listed["details"]["labels"] == ["background", "person", "car"], listed
        bad = {**body, "segmenter": "segformer-tiny", "target": "tree"}
        status, answer = call(proxy, "POST", "/edits/remove", bad)
        assert status == 422 and "valid: background, person, car" in str(answer), answer
        wall = Image.new("RGB", (64, 64), (200, 190, 180))
        nobody = {**body, "image": _b64(wall), "segmenter": "segformer-tiny"}
        status, result = call(proxy, "POST", "/edits/remove", nobody)
        assert status == 200 and result["status"] == "succeeded", result
        assert result["info"]["maskCoverage"] == 0
        assert result["info"]["segmenter"] == "segformer-tiny"
        assert np.array_equal(_png(result["images"][0]), np.asarray(wall))


def test_remove_people_as_a_webui_img2img_script(stack: Path) -> None:
    photo = Image.open(fetch()).convert("RGB").resize((64, 64), Image.Resampling.LANCZOS)
    body = {"init_images": [_b64(photo)], "prompt": "an empty room", "steps": 2, "width": 64,
            "height": 64, "denoising_strength": 1, "inpainting_fill": 0,
            "script_name": "remove people", "script_args": ["person", "box", 2, 2]}  # fmt: skip
    status, info = call(proxy, "GET", "/sdapi/v1/script-info")
    [script] = [s for s in info if s["name"] == "remove people"]
    assert script["is_img2img"] and [a["label"] for a in script["args"]][:2] == [
        "Target",
        "Mask mode",
    ]
    for change, field in [
        ({"script_args": ["person", "circle"]}, "script_args"),
        ({"script_args": ["person", "mask", 999]}, "script_args"),
        ({"script_args": ["dog"]}, "target"),
        ({"mask": _b64(photo)}, "mask"),
    ]:
        status, answer = call(proxy, "POST", "/sdapi/v1/img2img", {**body, **change})
        assert status == 422 and answer["detail"][0]["loc"][-1] == field, answer
    with worker():
        status, answer = call(proxy, "POST", "/sdapi/v1/img2img", body)
    assert status == 200, answer
    edited, mask = (np.asarray(Image.open(io.BytesIO(base64.b64decode(i))).convert("RGB"))
                    for i in answer["images"])  # fmt: skip
    outside = mask[..., 0] == 0
    assert outside.any() and np.array_equal(edited[outside], np.asarray(photo)[outside])
    assert json.loads(answer["info"])["maskMode"] == "box"
