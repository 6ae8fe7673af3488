"""A tiny SD 1.x-architecture checkpoint with random weights, built offline in about a second.

It has every part of a real SD 1.x model (CLIP text encoder, cross-attention UNet, an 8x VAE) at a
size that runs on a laptop CPU in milliseconds, so tests and the local stack exercise the real
loading and inference paths. Its pictures are noise-like: the weights are random, not trained.

The architecture comes from the `configs/tiny-sd` folder shipped with the engine, which is also
the `config=` a single-file copy of this model loads with, exactly like a real SD 1.5 checkpoint
loads with `configs/sd15`.

CLI::

    python -m sdlocal.demo.tiny --out DIR --format single-file|diffusers-tar
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from safetensors.torch import save_file
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
)

from sdcore import configs
from sdcore.engine.checkpoints import ldm_unet_key, resnet_key

CONFIG_DIR = configs.config_dir("tiny-sd")
NAME = "tiny-sd"

# Key prefixes of the original (LDM / webui) single-file layout.
UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."


# config folder -> architecture (which pipeline, which single-file text-encoder layout); the
# full-size ones build random-weight models of the real size (benchmarks/full_size_load.py)
ARCHITECTURES = {
    "tiny-sd": "sd1",
    "tiny-sd2": "sd2",
    "tiny-sdxl": "sdxl",
    "sd15": "sd1",
    "sd2": "sd2",
    "sd2-base": "sd2",
    "sdxl": "sdxl",
}


def build_pipeline(seed: int = 0, name: str = NAME) -> Any:
    """The model of the shipped config folder `name` (`tiny-sd`, `tiny-sd2`, `tiny-sdxl`, or a
    full-size one) with weights drawn from `seed` (the global torch RNG is left untouched), in
    torch's default dtype."""
    cfg = str(CONFIG_DIR.parent / name)
    arch = ARCHITECTURES[name]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel.from_config(
            UNet2DConditionModel.load_config(cfg, subfolder="unet")
        )
        torch.manual_seed(seed + 1)
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(cfg, subfolder="vae"))
        torch.manual_seed(seed + 2)
        text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(cfg, subfolder="text_encoder"))
        if arch == "sdxl":
            torch.manual_seed(seed + 3)
            text_encoder_2 = CLIPTextModelWithProjection(
                CLIPTextConfig.from_pretrained(cfg, subfolder="text_encoder_2")
            )
    tokenizer = CLIPTokenizer.from_pretrained(cfg, subfolder="tokenizer", local_files_only=True)
    scheduler_cls = {"sd1": PNDMScheduler, "sd2": DDIMScheduler, "sdxl": EulerDiscreteScheduler}
    scheduler = scheduler_cls[arch].from_pretrained(
        cfg, subfolder="scheduler", local_files_only=True
    )
    parts: dict[str, Any] = {
        "vae": vae.eval(),
        "text_encoder": text_encoder.eval(),
        "tokenizer": tokenizer,
        "unet": unet.eval(),
        "scheduler": scheduler,
    }
    pipe: Any
    if arch == "sdxl":
        tokenizer_2 = CLIPTokenizer.from_pretrained(
            cfg, subfolder="tokenizer_2", local_files_only=True
        )
        pipe = StableDiffusionXLPipeline(
            **parts, text_encoder_2=text_encoder_2.eval(), tokenizer_2=tokenizer_2
        )
    else:
        pipe = StableDiffusionPipeline(
            **parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_diffusers(path: Path, seed: int = 0, name: str = NAME) -> Path:
    """Write the model as a diffusers folder (safetensors weights) at `path`."""
    path = Path(path)
    pipe: Any = build_pipeline(seed, name)
    pipe.save_pretrained(path, safe_serialization=True)
    return path


def save_diffusers_tar(path: Path, seed: int = 0) -> Path:
    """Write the diffusers folder as an uncompressed tar, entries relative to the folder root.

    `path` is the tar file (`*.tar`) or a directory to put `tiny-sd.tar` in. Entries are sorted and
    carry no owner or time, so the same seed gives the same bytes (and sha256) on one machine.
    """
    target = _target(Path(path), ".tar")
    with tempfile.TemporaryDirectory() as tmp:
        root = save_diffusers(Path(tmp) / NAME, seed)
        with tarfile.open(target, "w") as tar:
            for file in sorted(p for p in root.rglob("*") if p.is_file()):
                info = tarfile.TarInfo(file.relative_to(root).as_posix())
                info.size = file.stat().st_size
                info.mode = 0o644
                with file.open("rb") as fh:
                    tar.addfile(info, fh)
    return target


def save_single_file(path: Path, seed: int = 0, name: str = NAME) -> Path:
    """Write the model as one `.safetensors` file in the original LDM/webui key layout of its
    architecture (SD 1.x, SD 2.x or SDXL).

    `path` is the file (`*.safetensors`) or a directory to put `<name>.safetensors` in.
    """
    target = _target(Path(path), ".safetensors", name)
    state = to_ldm_state_dict(build_pipeline(seed, name), ARCHITECTURES[name])
    save_file(state, str(target), metadata={"format": "pt"})
    return target


def _target(path: Path, suffix: str, name: str = NAME) -> Path:
    if path.suffix != suffix:
        path.mkdir(parents=True, exist_ok=True)
        path = path / f"{name}{suffix}"
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    return path


# --- diffusers -> LDM key layout -------------------------------------------------------------
# diffusers ships only the LDM -> diffusers direction (and its reverse script hardcodes SD's four
# levels of two layers). These follow the LDM layout for any level count and layers_per_block.

_VAE_FIXED = {
    "encoder.conv_norm_out": "encoder.norm_out",
    "decoder.conv_norm_out": "decoder.norm_out",
}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def unet_to_ldm(state: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    """UNet2DConditionModel state dict -> LDM `model.diffusion_model.*` keys (no prefix here)."""
    per_level = config["layers_per_block"] + 1  # resnets per level, plus the down/upsampler slot
    up_attn = ["CrossAttn" in t for t in config["up_block_types"]]
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        out[ldm_unet_key(key, per_level, up_attn)] = value
    return out


def vae_to_ldm(state: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    """AutoencoderKL state dict -> LDM `first_stage_model.*` keys (no prefix here)."""
    levels = len(config["up_block_types"])
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = _vae_key(key, levels)
        if ".mid.attn_1." in new and new.endswith("weight") and value.ndim == 2:
            value = value[:, :, None, None]  # LDM's VAE attention uses 1x1 convolutions
        out[new] = value
    return out


def _vae_key(key: str, levels: int) -> str:
    for src, dst in _VAE_FIXED.items():
        if key.startswith(src + "."):
            return dst + key[len(src) :]
    resnet = {"conv_shortcut": "nin_shortcut"}
    if m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"encoder.down.{m[1]}.block.{m[2]}.{resnet_key(m[3], resnet)}"
    if m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
    if m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
        return f"decoder.up.{levels - 1 - int(m[1])}.block.{m[2]}.{resnet_key(m[3], resnet)}"
    if m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        return f"decoder.up.{levels - 1 - int(m[1])}.upsample.conv.{m[2]}"
    if m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d)\.(.+)", key):
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{resnet_key(m[3], resnet)}"
    if m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(weight|bias)", key):
        return f"{m[1]}.mid.attn_1.{_VAE_ATTN[m[2]]}.{m[3]}"
    if key.split(".")[0] in {"encoder", "decoder", "quant_conv", "post_quant_conv"}:
        return key  # conv_in / conv_out / quant convs keep their names
    raise KeyError(f"no LDM name for VAE key {key!r}")


def _clip_state(encoder: Any) -> dict[str, torch.Tensor]:
    """A transformers CLIP text model's weights as `text_model.*` keys (>= 5.6 dropped that
    level on CLIPTextModel; LDM files and CLIPTextModelWithProjection keep it)."""
    out = {}
    for key, value in encoder.state_dict().items():
        if not key.endswith("position_ids"):  # a buffer, not a weight
            out[
                key if key.startswith(("text_model.", "text_projection")) else "text_model." + key
            ] = value
    return out


_OPEN_CLIP = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}


def open_clip_layout(encoder: Any, extra_layer: bool = False) -> dict[str, torch.Tensor]:
    """A CLIP text model in OpenCLIP's key layout (`transformer.resblocks.N.attn.in_proj_*` with
    q, k, v stacked, `ln_final`, `positional_embedding`, `text_projection` as a matrix to
    multiply by), as SD 2.x (`cond_stage_model.model.`) and SDXL (`conditioner.embedders.1.
    model.`) files hold it. `extra_layer`: SD 2.x files carry the last block, which SD 2.x does
    not use (it takes the penultimate layer): written as a copy of the last one."""
    state = _clip_state(encoder)
    width = int(encoder.config.hidden_size)
    out: dict[str, torch.Tensor] = {
        "token_embedding.weight": state["text_model.embeddings.token_embedding.weight"],
        "positional_embedding": state["text_model.embeddings.position_embedding.weight"],
        "ln_final.weight": state["text_model.final_layer_norm.weight"],
        "ln_final.bias": state["text_model.final_layer_norm.bias"],
    }
    if "text_projection.weight" in state:
        out["text_projection"] = state["text_projection.weight"].T
    else:  # SD 2.x files have one although SD 2.x never uses it
        out["text_projection"] = torch.eye(width)
    layers = int(encoder.config.num_hidden_layers)
    for i in range(layers + (1 if extra_layer else 0)):
        src = f"text_model.encoder.layers.{min(i, layers - 1)}."
        dst = f"transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[dst + f"attn.in_proj_{kind}"] = torch.cat(
                [state[src + f"self_attn.{p}_proj.{kind}"] for p in "qkv"]
            )
            for hf, oc in _OPEN_CLIP.items():
                out[dst + f"{oc}.{kind}"] = state[src + f"{hf}.{kind}"]
    return out


def to_ldm_state_dict(pipe: Any, arch: str = "sd1") -> dict[str, torch.Tensor]:
    """The whole pipeline's weights in the single-file layout webui checkpoints use: SD 1.x
    (`cond_stage_model.transformer.`), SD 2.x (`cond_stage_model.model.`, OpenCLIP) or SDXL
    (`conditioner.embedders.0.transformer.` CLIP + `conditioner.embedders.1.model.` OpenCLIP)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config).items():
        out[UNET_PREFIX + key] = value
    for key, value in vae_to_ldm(pipe.vae.state_dict(), pipe.vae.config).items():
        out[VAE_PREFIX + key] = value
    if arch == "sd1":
        for key, value in _clip_state(pipe.text_encoder).items():
            out["cond_stage_model.transformer." + key] = value
    elif arch == "sd2":
        for key, value in open_clip_layout(pipe.text_encoder, extra_layer=True).items():
            out["cond_stage_model.model." + key] = value
    elif arch == "sdxl":
        for key, value in _clip_state(pipe.text_encoder).items():
            out["conditioner.embedders.0.transformer." + key] = value
        for key, value in open_clip_layout(pipe.text_encoder_2).items():
            out["conditioner.embedders.1.model." + key] = value
    else:
        raise ValueError(f"unknown architecture {arch!r}")
    # safetensors refuses shared or non-contiguous storage
    return {k: v.detach().contiguous().clone() for k, v in out.items()}


def describe(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return {"path": str(path), "size": path.stat().st_size, "sha256": digest.hexdigest()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the tiny random-weight SD 1.x demo model.")
    parser.add_argument("--out", type=Path, required=True, help="directory or target file")
    parser.add_argument("--format", choices=("single-file", "diffusers-tar"), default="single-file")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.format == "single-file":
        path = save_single_file(args.out, args.seed)
    else:
        path = save_diffusers_tar(args.out, args.seed)
    print(json.dumps(describe(path)))


if __name__ == "__main__":
    main()


__all__ = [
    "CONFIG_DIR",
    "build_pipeline",
    "save_diffusers",
    "save_diffusers_tar",
    "save_single_file",
    "to_ldm_state_dict",
]
