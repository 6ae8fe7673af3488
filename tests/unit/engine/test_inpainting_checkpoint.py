"""A single-file inpainting checkpoint (9-channel UNet, as sd-v1-5-inpainting) loaded with a
4-channel config and used natively for txt2img, img2img and inpainting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import save_file

from sdcore.engine.diffusers_engine import DiffusersEngine
from sdcore.errors import InvalidInputError
from sdcore.ports import EngineInputs
from sdlocal.demo import tiny

from .support import MODEL_HASH, Steps, gen
from .test_img2img_modes import _img2img, _inpaint, _mask, _px, _two_colour


@pytest.mark.parametrize("name", ["tiny-sd", "tiny-sdxl"])
def test_a_single_file_inpainting_checkpoint_loads_and_runs_every_kind(
    tmp_path: Path, name: str
) -> None:
    # Given an LDM-layout single file whose UNet takes 9 channels (as sd-v1-5-inpainting, or
    # an SDXL inpainting model)
    pipe = tiny.build_pipeline(seed=4, name=name)
    config = {**pipe.unet.config, "in_channels": 9}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(6)
        pipe.unet = UNet2DConditionModel.from_config(config)
    pipe.register_modules(unet=pipe.unet)
    path = tmp_path / "inpainting.safetensors"
    save_file(tiny.to_ldm_state_dict(pipe, tiny.ARCHITECTURES[name]), str(path))
    # When it is loaded with the 4-channel tiny config
    config_dir = tiny.CONFIG_DIR.parent / name
    engine = DiffusersEngine(path, "tiny-inpaint", MODEL_HASH, config_dir=config_dir)
    engine.device_preference = "cpu"
    engine.load()
    # Then its own UNet is there, and txt2img, img2img and inpainting run on it
    assert torch.equal(engine.model.inpaint.unet.conv_in.weight, pipe.unet.conv_in.weight)
    assert engine.run(gen(), EngineInputs(), Steps()).images[0].size == (64, 64)
    assert _img2img(engine, _two_colour(64, 64)).size == (64, 64)
    init, mask = _two_colour(64, 64), _mask((64, 64), (24, 24, 40, 40))
    out = _px(_inpaint(engine, init, mask, mask_blur=0))
    assert np.array_equal(out[np.asarray(mask) == 0], _px(init)[np.asarray(mask) == 0])
    with pytest.raises(InvalidInputError) as err:
        engine.run(gen(hires=True), EngineInputs(), Steps())
    assert err.value.field == "enable_hr"
