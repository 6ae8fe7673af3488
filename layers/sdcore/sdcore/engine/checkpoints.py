"""Checkpoint files on local disk: a single file's tensors and shapes, its architecture, and
opening it (or a diffusers folder) as a pipeline, offline; the device a model runs on; and the
LDM (webui) names of a UNet's parameters, which LyCORIS files and single-file writers use."""

from __future__ import annotations

import json
import re
import resource
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline, UNet2DConditionModel
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
from diffusers.utils import logging as diffusers_logging
from safetensors import safe_open
from safetensors.torch import load_file
from transformers.utils import logging as transformers_logging

from sdcore import configs
from sdcore.guards.modelfiles import (
    ARCHITECTURE_CONFIGS,
    ModelFileError,
    architecture_mismatch,
    checkpoint_architecture,
)

XL_PIPELINE = "StableDiffusionXLPipeline"


def load_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A single file's tensors: safetensors, or a torch `.ckpt` through torch's weights_only
    unpickler (memory-mapped; its `state_dict` when it has one). Callers check a pickle is
    allowed before calling."""
    if path.suffix != ".ckpt":
        return load_file(str(path))
    loaded = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path.name}: the pickle holds no state dict")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def checkpoint_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor name -> shape of a single file (a safetensors file's header only)."""
    if path.suffix == ".ckpt":
        return {k: list(v.shape) for k, v in load_checkpoint(path).items()}
    with safe_open(str(path), "pt") as f:
        names = f.keys()
        return {k: list(f.get_slice(k).get_shape()) for k in names}


def single_file_architecture(path: Path) -> str:
    """`sd1`, `sd2` or `sdxl` from a single file's key layout.

    Raises ValueError for other checkpoints (an SDXL refiner, SD3, ...)."""
    shapes = checkpoint_shapes(path)
    try:
        return checkpoint_architecture(shapes)
    except ModelFileError as exc:
        raise ValueError(f"{path.name}: {exc}") from exc


def pipeline_class(folder: Path) -> str:
    """The pipeline class a diffusers or config folder's model_index.json names."""
    return str(json.loads((folder / "model_index.json").read_text()).get("_class_name", ""))


@torch.no_grad()
def uses_v_prediction(unet: Any) -> bool:
    """The webui's test for an SD 2.x checkpoint (768-v or 512-base look the same on disk): at
    t=999 on a flat 0.5 input an epsilon model predicts about the input itself, a v model
    something well below it."""
    x = torch.full((1, 4, 8, 8), 0.5, device=unet.device, dtype=unet.dtype)
    context = torch.full((1, 2, unet.config.cross_attention_dim), 0.5, device=unet.device)
    t = torch.tensor([999], device=unet.device)
    out = unet(x, t, encoder_hidden_states=context.to(unet.dtype)).sample
    return float((out.float() - x.float()).mean()) < -1


def inpainting_unet(path: Path, config: Path) -> Any:
    """The UNet of a single-file inpainting checkpoint (9 input channels: latents, mask, masked
    image latents), which the config's 4-channel UNet cannot take; None for other checkpoints."""
    key = "model.diffusion_model.input_blocks.0.0.weight"
    shape = checkpoint_shapes(path).get(key)
    if shape is None or shape[1] != 9:
        return None
    unet_config = {**UNet2DConditionModel.load_config(str(config), subfolder="unet")}
    unet = UNet2DConditionModel.from_config({**unet_config, "in_channels": 9})
    state = convert_ldm_unet_checkpoint(load_checkpoint(path), dict(unet.config))
    unet.load_state_dict(state, strict=True)
    return unet.eval()


def pick_device(preference: str = "auto") -> tuple[str, torch.dtype]:
    """cuda in fp16 when present, else Apple mps, else cpu; fp32 off cuda (fp16 is slow or
    unsupported there)."""
    if preference == "auto":
        if torch.cuda.is_available():
            preference = "cuda"
        elif torch.backends.mps.is_available():
            preference = "mps"
        else:
            preference = "cpu"
    return preference, torch.float16 if preference.startswith("cuda") else torch.float32


def peak_memory_mb(device: str) -> float:
    """Peak memory: CUDA's allocator peak since the last reset on a GPU, else the process's peak
    resident set size (Linux reports KiB, macOS bytes)."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


# --- opening a checkpoint as a pipeline ------------------------------------------------------


@dataclass
class Opened:
    """A checkpoint opened as a StableDiffusion(XL)Pipeline, and what it is."""

    pipe: Any  # diffusers registers a pipeline's modules dynamically
    architecture: str  # sd1, sd2 or sdxl
    xl: bool


def open_pipeline(
    path: Path, config_dir: Path | None, dtype: torch.dtype, allow_pickle: bool
) -> Opened:
    """A diffusers folder or a single file (with `config_dir`, or the shipped config of its
    architecture) as a pipeline on the CPU, from local files only.

    Raises
    ------
    FileNotFoundError
        `path` does not exist.
    ValueError
        Neither a diffusers folder nor a `.safetensors` file (nor an allowed `.ckpt`), or not
        an SD 1.x, 2.x or XL checkpoint, or not of its config's architecture.
    """
    common: dict[str, Any] = {
        "local_files_only": True,
        "safety_checker": None,
        "feature_extractor": None,
        "requires_safety_checker": False,
    }
    if dtype != torch.float32:  # weights load as float32; asking for it only warns
        common["dtype"] = dtype
    # a worker's log is no terminal: no "Loading ..." bars from either library
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    if not path.exists():
        raise FileNotFoundError(f"model not found: {path}")
    if path.is_dir():
        return _open_folder(path, common)
    if path.suffix == ".ckpt" and not allow_pickle:
        raise ValueError(f"{path.name}: pickle checkpoints are not allowed (SD_ALLOW_PICKLE)")
    if path.suffix in (".safetensors", ".ckpt"):
        return _open_single_file(path, config_dir, common)
    raise ValueError(f"{path}: expected a diffusers folder or a .safetensors file")


def _open_folder(path: Path, common: dict[str, Any]) -> Opened:
    if not (path / "model_index.json").is_file():
        raise ValueError(f"{path} is a folder without model_index.json (not diffusers)")
    xl = pipeline_class(path) == XL_PIPELINE
    pipe = _from(xl, "from_pretrained", str(path), common)
    architecture = "sdxl" if xl else "sd1"
    if not xl and int(pipe.text_encoder.config.hidden_size) == 1024:
        architecture = "sd2"
    return Opened(pipe, architecture, xl)


def _open_single_file(path: Path, config_dir: Path | None, common: dict[str, Any]) -> Opened:
    architecture = single_file_architecture(path)
    config = config_dir or configs.pipeline_config(ARCHITECTURE_CONFIGS[architecture])
    why = architecture_mismatch(architecture, config)
    if why is not None:
        raise ValueError(f"{path.name}: {why}")
    xl = pipeline_class(config) == XL_PIPELINE
    unet = inpainting_unet(path, config)  # the config's UNet takes 4 channels
    if unet is not None:
        common = {**common, "unet": unet}
    pipe = _from(xl, "from_single_file", str(path), {**common, "config": str(config)})
    return Opened(pipe, architecture, xl)


def _from(xl: bool, how: str, source: str, common: dict[str, Any]) -> Any:
    """`StableDiffusion(XL)Pipeline.<how>(source)`; the SD 1.x/2.x pipeline takes a safety
    checker (none here), the XL one a watermarker (none either)."""
    if xl:
        kwargs = {k: v for k, v in common.items() if "safety" not in k and "feature" not in k}
        return getattr(StableDiffusionXLPipeline, how)(source, add_watermarker=False, **kwargs)
    return getattr(StableDiffusionPipeline, how)(source, **common)


# --- LDM (webui) parameter names -------------------------------------------------------------

_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_UNET_FIXED = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}


def resnet_key(rest: str, table: dict[str, str]) -> str:
    """A resnet parameter's name after its block, renamed by `table` (diffusers -> LDM)."""
    head, _, tail = rest.partition(".")
    return f"{table.get(head, head)}.{tail}"


def ldm_unet_key(key: str, per_level: int, up_attn: list[bool]) -> str:
    """A UNet2DConditionModel parameter name in the LDM layout (`per_level`: resnets per level plus
    the down/upsampler slot; `up_attn`: which up levels have attention). KeyError: none."""
    for src, dst in _UNET_FIXED.items():
        if key.startswith(src + "."):
            return dst + key[len(src) :]
    if m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        block = 1 + int(m[1]) * per_level + int(m[3])
        if m[2] == "resnets":
            return f"input_blocks.{block}.0.{resnet_key(m[4], _UNET_RESNET)}"
        return f"input_blocks.{block}.1.{m[4]}"
    if m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{1 + int(m[1]) * per_level + per_level - 1}.0.op.{m[2]}"
    if m := re.match(r"mid_block\.resnets\.(\d)\.(.+)", key):
        return f"middle_block.{2 * int(m[1])}.{resnet_key(m[2], _UNET_RESNET)}"
    if m := re.match(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        block = int(m[1]) * per_level + int(m[3])
        if m[2] == "resnets":
            return f"output_blocks.{block}.0.{resnet_key(m[4], _UNET_RESNET)}"
        return f"output_blocks.{block}.1.{m[4]}"
    if m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        level = int(m[1])
        slot = 2 if up_attn[level] else 1  # the upsampler follows the attention when there is one
        return f"output_blocks.{level * per_level + per_level - 1}.{slot}.conv.{m[2]}"
    raise KeyError(f"no LDM name for UNet key {key!r}")
