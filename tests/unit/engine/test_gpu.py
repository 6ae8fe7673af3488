"""The CUDA path: fp16 weights, SDPA attention, the SDXL VAE kept out of fp16, peak memory from
the allocator. Skipped where no CUDA device is present (this project's CI machines have none); a
machine with a GPU runs them with the rest of the suite."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from sdcore.engine.diffusers_engine import DiffusersEngine
from sdcore.ports import EngineInputs
from sdlocal.demo import tiny

from .support import MODEL_HASH, Steps, gen

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module", params=["tiny-sd", "tiny-sd2", "tiny-sdxl"])
def gpu_engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    name = request.param
    path = tiny.save_single_file(tmp_path_factory.mktemp(name), seed=0, name=name)
    engine = DiffusersEngine(
        Path(path), name, MODEL_HASH, config_dir=tiny.CONFIG_DIR.parent / name, device="auto"
    )
    engine.load()
    return engine


def test_auto_picks_cuda_in_fp16_with_sdpa_attention(gpu_engine: DiffusersEngine) -> None:
    pipe = gpu_engine.model.txt2img
    assert gpu_engine.device == "cuda" and gpu_engine.dtype == torch.float16
    assert pipe.unet.dtype == torch.float16 and pipe.unet.device.type == "cuda"
    processors = set(map(type, pipe.unet.attn_processors.values()))
    assert processors == {AttnProcessor2_0}  # torch's scaled_dot_product_attention


def test_cuda_fp16_gives_finite_repeatable_pictures_and_peak_memory(
    gpu_engine: DiffusersEngine,
) -> None:
    first = gpu_engine.run(gen(), EngineInputs(), Steps())
    again = gpu_engine.run(gen(), EngineInputs(), Steps())
    a, b = (np.asarray(r.images[0], dtype=np.int16) for r in (first, again))
    assert np.array_equal(a, b)  # same seed, same device: same pixels
    assert a.std() > 0  # not a blank (NaN latents decode to black)
    assert 0 < first.info["peak_memory_mb"] < 4096


def test_cuda_img2img_and_hires(gpu_engine: DiffusersEngine) -> None:
    from PIL import Image

    init = Image.new("RGB", (64, 64), (200, 30, 30))
    out = gpu_engine.run(gen(kind="img2img", denoising_strength=0.5), EngineInputs([init]), Steps())
    assert np.asarray(out.images[0]).std() > 0
    hires = gpu_engine.run(gen(hires=True, hr_scale=2), EngineInputs(), Steps())
    assert hires.images[0].size == (128, 128) and np.asarray(hires.images[0]).std() > 0
