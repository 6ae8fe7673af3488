"""A Chinese prompt through the offline translator draws what it says: `translate: true` on the
local backend, the proxy handler taking the request and an inference worker running the shipped
demo checkpoint (models/demo-shapes.safetensors, 64x64), as `make run` serves it."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

import inference_function.app as inference_app
from proxy_function.app import lambda_handler as proxy
from sdcore import composition
from sdcore.adapters.zh.translator import OfflineTranslator
from sdcore.composition import get_services
from sdcore.configs import config_dir
from sdcore.domain.models import Model, ModelStatus
from sdcore.engine.diffusers_engine import DiffusersEngine
from sdlocal.demo.shapes import classify
from sdlocal.stack import DEMO_CHECKPOINT
from tests.functional.test_webui_interrogate import call, worker

pytestmark = pytest.mark.skipif(
    not (OfflineTranslator.installed() and DEMO_CHECKPOINT.is_file()),
    reason="needs the installed dictionary and the demo checkpoint",
)


@pytest.fixture
def stack(local_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    monkeypatch.setenv("SD_SYNC_TIMEOUT", "300")
    monkeypatch.setenv("SD_MODEL_NAME", "demo")
    monkeypatch.setenv("SD_MODEL_CACHE_DIR", str(tmp_path / "cache"))
    composition.reset()
    digest = hashlib.sha256(DEMO_CHECKPOINT.read_bytes()).hexdigest()
    demo = Model(name="demo", status=ModelStatus.UNLOADED, sha256=digest, size=1,
                 key="models/demo.safetensors", registered_at=0, modified_at=0)  # fmt: skip
    get_services().models.create(demo)
    engine = DiffusersEngine(DEMO_CHECKPOINT, "demo", digest, config_dir=config_dir("demo-shapes"),
                             device="cpu")  # fmt: skip
    engine.load()
    monkeypatch.setattr(inference_app, "load_engine", lambda *_: engine)
    monkeypatch.setattr(inference_app, "_engine", None)
    yield local_env


def test_a_chinese_prompt_draws_a_red_circle_on_white(stack: Path) -> None:
    # the webui defaults (Euler, 20 steps, CFG 7) at the checkpoint's native 64x64; two images
    # (seeds 1 and 2), each read back from its PNG
    body = {"prompt": "红色的圆形，白色背景", "translate": True, "seed": 1, "batch_size": 2}
    with worker():
        status, result = call(proxy, "POST", "/txt2img", body)
    assert status == 200 and result["status"] == "succeeded", result
    images = [Image.open(io.BytesIO(get_services().blobs.get(k))) for k in result["images"]]
    assert [image.size for image in images] == [(64, 64)] * 2
    assert [classify(image.convert("RGB")) for image in images] == [("red", "circle", "white")] * 2
    infotext = result["info"]["infotexts"][0]
    assert infotext.startswith("red circle, white background\n")
    assert "Original prompt: 红色的圆形，白色背景" in infotext
    assert images[0].info["parameters"] == infotext  # the PNG's own parameters chunk
