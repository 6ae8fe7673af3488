"""The torch-free layout model verification holds a single file against is what diffusers'
single-file loader takes, for every shipped config: the expected tensors, run through the
loader's own LDM -> diffusers converters, are exactly the models' parameters (names and shapes).
Built on the meta device: nothing is allocated, so the full-size configs cost no memory."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders.single_file_utils import (
    convert_ldm_clip_checkpoint,
    convert_ldm_unet_checkpoint,
    convert_ldm_vae_checkpoint,
    convert_open_clip_checkpoint,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from sdcore import configs
from sdcore.guards.checkpoint_fit import TEXT_ENCODERS, Layout, expected_parts
from sdcore.guards.model_layouts import config_architecture


def _meta(prefix: str, layout: Layout) -> dict[str, torch.Tensor]:
    """A file holding exactly the expected tensors, each in its first allowed shape (a square
    one where any size goes: SD 2.x's unused text projection)."""
    file = {}
    for key, want in layout.items():
        shape = [d if d is not None else want.shapes[0][0] for d in want.shapes[0]]
        file[prefix + key] = torch.empty([int(d or 0) for d in shape], device="meta")
    return file


def _shapes(state: dict[str, Any]) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in state.items()}


@pytest.mark.parametrize("name", configs.checkpoint_configs())
def test_the_expected_layout_is_what_the_loader_takes(name: str) -> None:
    folder = configs.config_dir(name)
    arch = config_architecture(folder)
    assert arch is not None
    parts = expected_parts(folder, arch)
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
    prefix, layout = parts["UNet"]
    converted = convert_ldm_unet_checkpoint(_meta(prefix, layout), dict(unet.config))
    assert _shapes(converted) == _shapes(unet.state_dict())
    prefix, layout = parts["VAE"]
    converted = convert_ldm_vae_checkpoint(_meta(prefix, layout), dict(vae.config))
    assert _shapes(converted) == _shapes(vae.state_dict())
    for label, prefix, sub, open_clip in TEXT_ENCODERS[arch]:
        text_config = CLIPTextConfig.from_pretrained(folder / sub)
        cls = CLIPTextModelWithProjection if sub == "text_encoder_2" else CLIPTextModel
        with init_empty_weights():
            encoder = cls(text_config)
        file = _meta(prefix, parts[label][1])
        if open_clip:
            converted = convert_open_clip_checkpoint(encoder, file, prefix=prefix)
        else:
            converted = convert_ldm_clip_checkpoint(file)
        if not hasattr(encoder, "text_model"):  # as the loader does for a flattened CLIPTextModel
            converted = {k.removeprefix("text_model."): v for k, v in converted.items()}
        assert _shapes(converted) == _shapes(encoder.state_dict()), label


def test_inpainting_checkpoints_take_a_nine_channel_first_conv() -> None:
    folder = configs.config_dir("sd15")
    unet = expected_parts(folder, "sd1", inpainting=True)["UNet"][1]
    assert unet["input_blocks.0.0.weight"].shapes == ((320, 9, 3, 3),)
