"""What each model type looks like, from its tensors' names and shapes alone (the key layouts
the webui and diffusers write), and which architecture (SD 1.x, 2.x, XL) a checkpoint or a config
folder is. The types are described in `modelfiles`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sdcore.domain.models import ModelType
from sdcore.guards import face_layouts
from sdcore.guards.checkpoint_fit import check_fit
from sdcore.guards.model_bytes import ModelFileError, Shapes

LORA_MARKERS = (
    "lora_down", "lora_up", "lora_A", "lora_B", "lora.down", "lora.up", "lora_mid",
    "hada_w", "hada_t", "lokr_w", "lokr_t", ".alpha", "dora_scale",
)  # fmt: skip
BASE_PREFIXES = ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.")
ConfigFor = Callable[[str], Path]  # architecture -> the config folder a checkpoint loads with


# --- what a set of tensors looks like ------------------------------------------------------------


def _has(shapes: Shapes, prefix: str) -> bool:
    return any(k.startswith(prefix) for k in shapes)


def conv(shapes: Shapes, key: str) -> list[int] | None:
    shape = shapes.get(key)
    return shape if shape is not None and len(shape) == 4 else None


def _lora_pairs(shapes: Shapes) -> list[tuple[str, list[int], list[int]]]:
    pairs = []
    for down_tag, up_tag in (
        ("lora_down.weight", "lora_up.weight"),
        ("lora_A.weight", "lora_B.weight"),
        ("lora.down.weight", "lora.up.weight"),
        ("lora_A.default.weight", "lora_B.default.weight"),
    ):
        for key, down in shapes.items():
            if key.endswith(down_tag):
                up = shapes.get(key[: -len(down_tag)] + up_tag)
                pairs.append((key[: -len(down_tag)], down, up or []))
    return pairs


def looks_like(shapes: Shapes) -> ModelType | None:
    """The type a set of tensors most resembles (for a clear refusal), or None."""
    keys = list(shapes)
    if _has(shapes, "control_model.") or _has(shapes, "controlnet_cond_embedding."):
        return ModelType.CONTROLNET
    if _has(shapes, "model.diffusion_model."):
        return ModelType.CHECKPOINT
    if any(m in k for k in keys for m in LORA_MARKERS):
        return ModelType.LORA
    if face_layouts.architecture(shapes) is not None:
        return ModelType.FACE_RESTORER
    if _has(shapes, "encoder.") and _has(shapes, "decoder."):
        return ModelType.VAE
    if any(conv(shapes, k) for k in ("conv_first.weight", "model.0.weight", "body.0.weight")):
        return ModelType.UPSCALER
    if len(shapes) <= 16 and all(1 <= len(s) <= 2 for s in shapes.values()):
        return ModelType.EMBEDDING
    return None


# architecture -> the config folder shipped for it (SD 2.x: 768 px v-prediction; the engine tests
# a single file's UNet for v-prediction, as the webui does, when the model's config is "auto")
ARCHITECTURE_CONFIGS = {"sd1": "sd15", "sd2": "sd2", "sdxl": "sdxl"}
ARCHITECTURE_LABELS = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL"}


def checkpoint_architecture(shapes: Shapes) -> str:
    """`sd1`, `sd2` or `sdxl`: a single-file checkpoint's architecture, told apart by its text
    encoders' key layout as the webui and diffusers do.

    Raises
    ------
    ModelFileError
        An SDXL refiner, or no text-encoder layout of SD 1.x, 2.x or XL.
    """
    if _has(shapes, "conditioner.embedders.1.model."):
        return "sdxl"
    if _has(shapes, "conditioner.embedders.0.model."):
        raise ModelFileError(
            "an SDXL refiner checkpoint (one OpenCLIP encoder): refiners are not supported, "
            "use an SDXL base model"
        )
    if _has(shapes, "cond_stage_model.model."):
        return "sd2"
    if _has(shapes, "cond_stage_model.transformer."):
        return "sd1"
    raise ModelFileError(
        "not a Stable Diffusion 1.x, 2.x or XL checkpoint: no text encoder under "
        "cond_stage_model.transformer. (SD 1.x), cond_stage_model.model. (SD 2.x) or "
        "conditioner.embedders. (SDXL)"
    )


def config_architecture(folder: Path) -> str | None:
    """`sd1`, `sd2` or `sdxl`: the architecture a diffusers-style config folder describes (XL by
    its pipeline, SD 2.x by its OpenCLIP text encoder's plain GELU); None if it is none."""
    index = folder / "model_index.json"
    text = folder / "text_encoder" / "config.json"
    if not index.is_file() or not text.is_file():
        return None
    if json.loads(index.read_text()).get("_class_name") == "StableDiffusionXLPipeline":
        return "sdxl"
    return "sd2" if json.loads(text.read_text()).get("hidden_act") == "gelu" else "sd1"


def architecture_mismatch(found: str, folder: Path) -> str | None:
    """Why a checkpoint of architecture `found` cannot load with the config `folder`, or None."""
    wanted = config_architecture(folder)
    if wanted is None or wanted == found:
        return None
    return (
        f"it is {ARCHITECTURE_LABELS[found]}, the config {folder.name!r} is for "
        f"{ARCHITECTURE_LABELS[wanted]}: pick the config of its architecture (or auto)"
    )


def _check_checkpoint(shapes: Shapes, config: ConfigFor | None) -> None:
    missing = [p for p in ("model.diffusion_model.", "first_stage_model.") if not _has(shapes, p)]
    if not (_has(shapes, "cond_stage_model.") or _has(shapes, "conditioner.")):
        missing.append("cond_stage_model. (or conditioner.)")
    if missing:
        raise ModelFileError(
            "not a single-file checkpoint in the webui (LDM) layout: no tensors under "
            + ", ".join(missing)
        )
    arch = checkpoint_architecture(shapes)
    conv_in = conv(shapes, "model.diffusion_model.input_blocks.0.0.weight")
    if conv_in is None or conv_in[1] not in (4, 8, 9):
        raise ModelFileError("the UNet's first conv (input_blocks.0.0) is missing or odd")
    conv_out = conv(shapes, "first_stage_model.decoder.conv_out.weight")
    if conv_out is None or conv_out[0] != 3:
        raise ModelFileError("the VAE's decoder.conv_out is missing or does not give RGB")
    if config is not None:  # the config folder it will be loaded with
        folder = config(arch)
        why = architecture_mismatch(arch, folder)
        if why is not None:
            raise ModelFileError(why)
        check_fit(shapes, folder, arch)


def check_vae(shapes: Shapes) -> None:
    if _has(shapes, "model.diffusion_model."):
        raise ModelFileError("this is a whole checkpoint, not a VAE")
    conv_in = conv(shapes, "encoder.conv_in.weight")
    conv_out = conv(shapes, "decoder.conv_out.weight")
    if conv_in is None or conv_out is None:
        raise ModelFileError("a VAE needs encoder.conv_in and decoder.conv_out weights")
    if conv_in[1] != 3 or conv_out[0] != 3:
        raise ModelFileError("the VAE's encoder does not take RGB or its decoder does not give it")


def _check_lora(shapes: Shapes) -> None:
    base = [k for k in shapes if k.startswith(BASE_PREFIXES)]
    if base:
        raise ModelFileError(f"holds base-model weights ({base[0]}), not a LoRA")
    pairs = _lora_pairs(shapes)
    lycoris = any(m in k for k in shapes for m in ("hada_w", "lokr_w"))
    if not pairs and not lycoris:
        raise ModelFileError("no LoRA factor pairs (lora_down/lora_up or lora_A/lora_B)")
    for prefix, down, up in pairs:
        if not up:
            raise ModelFileError(f"{prefix}: a down factor without its up factor")
        if len(down) < 2 or len(up) < 2 or down[0] != up[1]:
            raise ModelFileError(f"{prefix}: the factors' ranks do not match ({down} x {up})")


def _check_embedding(shapes: Shapes) -> None:
    if len(shapes) > 16:
        raise ModelFileError(f"{len(shapes)} tensors: an embedding holds a few vectors")
    for name, shape in shapes.items():
        if not 1 <= len(shape) <= 2:
            raise ModelFileError(f"{name}: shape {shape}, an embedding holds vectors (1-D or 2-D)")
        if len(shape) == 2 and not 1 <= shape[0] <= 75:
            raise ModelFileError(f"{name}: {shape[0]} vectors (at most 75)")
        if shape[-1] < 8:
            raise ModelFileError(f"{name}: vectors of width {shape[-1]} fit no text encoder")


def _check_upscaler(shapes: Shapes) -> None:
    if any(k.startswith(BASE_PREFIXES) for k in shapes):
        raise ModelFileError("holds Stable Diffusion weights, not an upscaler")
    first = [
        s
        for k in ("conv_first.weight", "model.0.weight", "body.0.weight")
        if (s := conv(shapes, k)) is not None
    ]
    if not first or first[0][1] != 3:
        raise ModelFileError("an upscaler's first conv (conv_first, model.0 or body.0) takes RGB")
    outs = {s[0] for s in shapes.values() if len(s) == 4}
    if not outs & {3, 12, 27, 48}:
        raise ModelFileError("no conv gives RGB (3 x scale^2 channels)")


def _check_face_restorer(shapes: Shapes) -> None:
    why = face_layouts.layout_mismatch(shapes)
    if why is not None:
        raise ModelFileError(why)


def _check_controlnet(shapes: Shapes) -> None:
    hint = conv(shapes, "control_model.input_hint_block.0.weight")
    if hint is None or not _has(shapes, "control_model.zero_convs."):
        hint = conv(shapes, "controlnet_cond_embedding.conv_in.weight")
        if hint is None or not _has(shapes, "controlnet_down_blocks."):
            raise ModelFileError(
                "a ControlNet needs input_hint_block + zero_convs (LDM) or "
                "controlnet_cond_embedding + controlnet_down_blocks (diffusers)"
            )
    if hint[1] != 3:
        raise ModelFileError("the ControlNet's hint conv does not take an RGB image")


def a_or_an(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"


def describe(shapes: Shapes, model_type: ModelType) -> dict[str, Any]:
    """What listings show about a checked file (the webui's fields): a LoRA's rank, an
    embedding's vectors and width, an upscaler's scale when its last conv tells it."""
    if model_type is ModelType.LORA:
        ranks = sorted(down[0] for _, down, _ in _lora_pairs(shapes) if down)
        return {"rank": ranks[len(ranks) // 2]} if ranks else {}
    if model_type is ModelType.EMBEDDING:
        first = next(iter(shapes.values()))
        return {"vectors": first[0] if len(first) == 2 else 1, "shape": first[-1]}
    if model_type is ModelType.UPSCALER:
        outs = {s[0] for s in shapes.values() if len(s) == 4} & {12, 27, 48}
        return {"scale": {12: 2, 27: 3, 48: 4}[max(outs)]} if outs else {}
    if model_type is ModelType.FACE_RESTORER:
        return {"architecture": face_layouts.architecture(shapes)}
    if model_type is ModelType.CONTROLNET:  # its architecture by the prompt embeddings' width
        widths = {
            s[1] for k, s in shapes.items() if k.endswith("attn2.to_k.weight") and len(s) == 2
        }
        arch = {768: "sd1", 1024: "sd2", 2048: "sdxl"}.get(max(widths)) if widths else None
        return {"architecture": arch} if arch else {}
    if model_type is ModelType.CHECKPOINT:
        conv_in = conv(shapes, "model.diffusion_model.input_blocks.0.0.weight") or [0, 0]
        return {"architecture": checkpoint_architecture(shapes), "inpainting": conv_in[1] == 9}
    return {}


def check_tensors(shapes: Shapes, model_type: ModelType, config: ConfigFor | None) -> None:
    """Refuse `shapes` unless they have the key layout of `model_type`.

    Raises
    ------
    ModelFileError
        With the reason; naming the type the file looks like when it is another one.
    """
    if model_type in (
        ModelType.CAPTIONER,
        ModelType.TAGGER,
        ModelType.SEGMENTER,
        ModelType.PREPROCESSOR,
    ):
        raise ModelFileError(
            f"{a_or_an(model_type.value)} is a transformers folder: upload it as an "
            "uncompressed tar"
        )
    seems = looks_like(shapes)
    if seems is not None and seems is not model_type:
        raise ModelFileError(
            f"this file looks like {a_or_an(seems.value)}, not {a_or_an(model_type.value)}"
        )
    checks: dict[ModelType, Callable[[Shapes], None]] = {
        ModelType.VAE: check_vae,
        ModelType.LORA: _check_lora,
        ModelType.EMBEDDING: _check_embedding,
        ModelType.UPSCALER: _check_upscaler,
        ModelType.CONTROLNET: _check_controlnet,
        ModelType.FACE_RESTORER: _check_face_restorer,
    }
    if model_type is ModelType.CHECKPOINT:
        _check_checkpoint(shapes, config)
    else:
        checks[model_type](shapes)
