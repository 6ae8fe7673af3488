"""Check that a model file is what it claims to be, without running any of it.

One pass over the bytes (a stream: an object in S3 may be many GB) computes the SHA-256 and size
and reads only what describes the weights: a `.safetensors` header (JSON: tensor names, dtypes,
shapes, offsets), or the member list, JSON configs and safetensors headers of an uncompressed tar
of a diffusers folder. Pickle files (`.ckpt`, `.pt`, `.bin`) are refused: loading one can run code.
With `allow_pickle` (`SD_ALLOW_PICKLE`) a checkpoint may be a torch zip pickle (`.ckpt`): its
`data.pkl` is read by an unpickler that builds nothing but dicts and tensor shapes and refuses
every other global (no code of the file runs), and checked like a single file.

What each type must look like (the key layouts the webui and diffusers write):

- checkpoint: the original (LDM/webui) single-file layout, `model.diffusion_model.*` (UNet),
  `first_stage_model.*` (VAE) and the text encoders: SD 1.x `cond_stage_model.transformer.*`
  (CLIP), SD 2.x `cond_stage_model.model.*` (OpenCLIP), SDXL `conditioner.embedders.0/1.*`
  (CLIP + OpenCLIP), with every tensor the config it loads with takes (`checkpoint_fit`);
  or a diffusers StableDiffusion(XL)Pipeline folder (`model_index.json`; unet, vae, text
  encoders in safetensors), which carries its own configs. Its architecture goes in the
  listing's details.
- vae: `encoder.*` and `decoder.*` (webui `.vae.safetensors` and diffusers AutoencoderKL), or a
  diffusers AutoencoderKL folder.
- lora: pairs of low-rank factors (kohya `lora_down`/`lora_up`, PEFT `lora_A`/`lora_B`, diffusers
  `lora.down`/`lora.up`, LyCORIS `hada_`/`lokr_`) of matching rank, and no base-model weights.
- embedding: a few 1-D/2-D vectors (webui `emb_params`, SDXL `clip_l`/`clip_g`, diffusers
  `{token: vector}`), at most 75 rows each.
- upscaler: an image-to-image conv net (ESRGAN/Real-ESRGAN/SwinIR layouts): a first conv that takes
  RGB (`conv_first`, `model.0`, `body.0`) and a conv that gives 3 x scale^2 channels.
- controlnet: `control_model.input_hint_block.*` + `zero_convs` (LDM) or
  `controlnet_cond_embedding.*` + `controlnet_down_blocks.*` (diffusers), or a diffusers
  ControlNetModel folder.
- captioner, tagger: transformers folders only (a BLIP captioner with its CLIP model in `clip/`;
  a multi-label image classifier whose labels are the tags), see `interrogator_folders`.
- segmenter: a transformers semantic segmentation folder only (its classes in `id2label`), see
  `interrogator_folders`.
- preprocessor: a transformers depth estimation folder only (DPT or Depth Anything), see
  `interrogator_folders`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sdcore.domain.models import ModelFormat, ModelType
from sdcore.guards.model_archives import check_folder, read_tar, read_torch_zip
from sdcore.guards.model_bytes import (
    ModelFileError,
    Stream,
    digest_rest,
    is_safetensors,
    read_safetensors_header,
)
from sdcore.guards.model_layouts import (
    ARCHITECTURE_CONFIGS,
    ConfigFor,
    architecture_mismatch,
    check_tensors,
    checkpoint_architecture,
    config_architecture,
    describe,
)

__all__ = [
    "ARCHITECTURE_CONFIGS",
    "ConfigFor",
    "Inspection",
    "ModelFileError",
    "architecture_mismatch",
    "checkpoint_architecture",
    "config_architecture",
    "inspect_stream",
]


@dataclass
class Inspection:
    format: ModelFormat
    sha256: str
    size: int
    tensors: int = 0  # how many tensors the weights hold (all files of a folder)
    details: dict[str, Any] = field(default_factory=dict)  # per type: rank, vectors, scale


# --- entry point ---------------------------------------------------------------------------------


def inspect_stream(
    chunks: Iterable[bytes],
    model_type: ModelType,
    config: ConfigFor | None = None,
    on_bytes: Callable[[int], None] | None = None,
    allow_pickle: bool = False,
) -> Inspection:
    """Read a whole model file once: its SHA-256, its size and whether it is a `model_type`.

    `config(architecture)`: the config folder a single-file checkpoint of that architecture
    will be loaded with; every tensor the loader takes (UNet, VAE, text encoders) is held
    against it by name and shape. None checks the key layout alone.
    `on_bytes(total)` is called as bytes are read (progress). `allow_pickle`:
    a checkpoint may be a torch zip pickle (`.ckpt`).

    Raises
    ------
    ModelFileError
        The file is not a safetensors file nor an uncompressed tar of a diffusers folder, is
        truncated, is a pickle, or does not have the key layout of `model_type`.
    """
    stream = Stream(chunks, on_bytes)
    try:
        return _inspect(stream, model_type, config, allow_pickle)
    except ModelFileError as exc:
        stream.drain()  # the digest and size of the whole file, for the caller's report
        exc.sha256, exc.size = stream.digest.hexdigest(), stream.size
        raise


def _inspect(
    stream: Stream, model_type: ModelType, config: ConfigFor | None, allow_pickle: bool
) -> Inspection:
    head = stream.peek(512)
    if is_safetensors(head):
        fmt = ModelFormat.SAFETENSORS
        metadata: dict[str, str] = {}
        shapes, header, data = read_safetensors_header(stream, "the file", metadata)
        check_tensors(shapes, model_type, config)
        details = describe(shapes, model_type)
        if model_type is ModelType.LORA:
            # the webui's LoRA hash: kohya's own (`sshs_model_hash`), else the SHA-256 of the
            # tensor data without the header (the "addnet" hash), as its "Lora hashes" show
            data_digest = digest_rest(stream)
            details["webui_hash"] = metadata.get("sshs_model_hash") or data_digest
        stream.drain()
        if stream.size != header + data:
            state = "truncated" if stream.size < header + data else "longer than its header says"
            raise ModelFileError(
                f"the safetensors file is {state}: {stream.size} bytes, expected {header + data}"
            )
        count = len(shapes)
    elif len(head) >= 262 and head[257:262] == b"ustar":
        fmt = ModelFormat.DIFFUSERS
        folder = read_tar(stream)
        details = check_folder(folder, model_type)
        stream.drain()
        count = sum(len(s) for s in folder.shapes.values())
    elif head[:2] == b"PK" and allow_pickle and model_type is ModelType.CHECKPOINT:
        fmt = ModelFormat.PICKLE
        shapes = read_torch_zip(stream)
        check_tensors(shapes, model_type, config)
        details = describe(shapes, model_type)
        stream.drain()
        count = len(shapes)
    elif head[:2] == b"PK" or head[:1] == b"\x80":
        why = "a pickle (.ckpt/.pt) can run code when loaded: convert it to .safetensors"
        if allow_pickle and model_type is ModelType.CHECKPOINT:
            why = "an old-format torch pickle: save it again with torch.save, or as .safetensors"
        elif model_type is ModelType.CHECKPOINT:
            why += " (or allow pickle checkpoints: SD_ALLOW_PICKLE=1)"
        raise ModelFileError(why)
    elif head[:2] == b"\x1f\x8b":
        raise ModelFileError("a compressed tar: upload the diffusers folder as an uncompressed tar")
    else:
        raise ModelFileError("not a .safetensors file nor an uncompressed tar of a diffusers one")
    return Inspection(
        format=fmt,
        sha256=stream.digest.hexdigest(),
        size=stream.size,
        tensors=count,
        details=details,
    )
