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
  (CLIP + OpenCLIP); or a diffusers StableDiffusion(XL)Pipeline folder (`model_index.json`;
  unet, vae, text encoders in safetensors). Its architecture goes in the listing's details.
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
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle  # noqa: S403 (a restricted unpickler: shapes only, see _ShapeUnpickler)
import struct
import tarfile
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from sdcore.domain.models import ModelFormat, ModelType

MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header
MAX_JSON = 1024 * 1024  # a config.json / model_index.json bigger than this is not a config
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2,
    "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
LORA_MARKERS = (
    "lora_down", "lora_up", "lora_A", "lora_B", "lora.down", "lora.up", "lora_mid",
    "hada_w", "hada_t", "lokr_w", "lokr_t", ".alpha", "dora_scale",
)  # fmt: skip
BASE_PREFIXES = ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.")


MAX_PICKLE = 256 * 1024 * 1024  # a checkpoint's data.pkl (its structure, no weights) is ~1 MB


class ModelFileError(Exception):
    """The file is not a usable model of the claimed type; the message says why. `sha256` and
    `size` are those of the whole file (read to its end even after the fault is found)."""

    sha256: str = ""
    size: int = 0


@dataclass
class Inspection:
    format: ModelFormat
    sha256: str
    size: int
    tensors: int = 0  # how many tensors the weights hold (all files of a folder)
    details: dict[str, Any] = field(default_factory=dict)  # per type: rank, vectors, scale


Shapes = dict[str, list[int]]


class _Stream(io.RawIOBase):
    """A read-once file over byte chunks that hashes and counts everything read through it."""

    def __init__(self, chunks: Iterable[bytes], on_bytes: Callable[[int], None] | None) -> None:
        self._chunks: Iterator[bytes] = iter(chunks)
        self._buf = b""
        self.digest = hashlib.sha256()
        self.size = 0
        self.on_bytes = on_bytes

    def readable(self) -> bool:
        return True

    def _fill(self, n: int) -> None:
        while len(self._buf) < n:
            chunk = next(self._chunks, None)
            if chunk is None:
                return
            self._buf += chunk

    def peek(self, n: int) -> bytes:
        self._fill(n)
        return self._buf[:n]

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        if not self._buf:
            self._fill(1)
        data, self._buf = self._buf[: len(view)], self._buf[len(view) :]
        view[: len(data)] = data
        if data:
            self.digest.update(data)
            self.size += len(data)
            if self.on_bytes:
                self.on_bytes(self.size)
        return len(data)

    def drain(self) -> None:
        while self.read(8 * 1024 * 1024):
            pass


def _is_safetensors(head: bytes) -> bool:
    if len(head) < 9:
        return False
    (length,) = struct.unpack("<Q", head[:8])
    return 2 <= length <= MAX_HEADER and head[8:9] == b"{"


def _parse_header(raw: bytes, what: str) -> tuple[Shapes, int]:
    """Tensor shapes and the byte length of the data section, from a safetensors JSON header."""
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise ModelFileError(f"{what}: the safetensors header is not valid JSON") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{what}: the safetensors header is not a JSON object")
    shapes: Shapes = {}
    end = 0
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, stop) = info["dtype"], info["shape"], info["data_offsets"]
            ok = (
                dtype in DTYPE_BYTES
                and all(isinstance(d, int) and d >= 0 for d in shape)
                and isinstance(start, int)
                and isinstance(stop, int)
                and 0 <= start <= stop
            )
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok:
            raise ModelFileError(f"{what}: tensor {name!r} has a malformed entry")
        count = 1
        for d in shape:
            count *= d
        if stop - start != count * DTYPE_BYTES[dtype]:
            raise ModelFileError(f"{what}: tensor {name!r}: its byte range does not fit its shape")
        shapes[name] = list(shape)
        spans.append((start, stop))
        end = max(end, stop)
    if not shapes:
        raise ModelFileError(f"{what}: holds no tensors")
    spans.sort()
    position = 0
    for start, stop in spans:  # safetensors requires the data section to be tiled exactly
        if start != position:
            raise ModelFileError(f"{what}: tensor data overlaps or leaves holes")
        position = stop
    return shapes, end


def _read(stream: Any, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = stream.read(min(n - len(out), 8 * 1024 * 1024))
        if not chunk:
            break
        out += chunk
    return bytes(out)


def _digest_rest(stream: Any) -> str:
    """The SHA-256 of everything left in `stream` (read to its end)."""
    digest = hashlib.sha256()
    while chunk := stream.read(8 * 1024 * 1024):
        digest.update(chunk)
    return digest.hexdigest()


def _read_safetensors_header(
    stream: Any, what: str, metadata: dict[str, Any] | None = None
) -> tuple[Shapes, int, int]:
    """(shapes, header bytes incl. the length prefix, data bytes) read from `stream`; the
    header's `__metadata__` strings go into `metadata` when one is given."""
    prefix = _read(stream, 8)
    if len(prefix) < 8:
        raise ModelFileError(f"{what}: truncated safetensors file")
    (length,) = struct.unpack("<Q", prefix)
    if not 2 <= length <= MAX_HEADER:
        raise ModelFileError(f"{what}: not a safetensors file (bad header length)")
    raw = _read(stream, length)
    if len(raw) < length:
        raise ModelFileError(f"{what}: truncated safetensors header")
    shapes, data = _parse_header(raw, what)
    if metadata is not None:
        found = json.loads(raw).get("__metadata__")
        if isinstance(found, dict):
            metadata.update({str(k): v for k, v in found.items() if isinstance(v, str)})
    return shapes, 8 + length, data


# --- what a set of tensors looks like ------------------------------------------------------------


def _has(shapes: Shapes, prefix: str) -> bool:
    return any(k.startswith(prefix) for k in shapes)


def _conv(shapes: Shapes, key: str) -> list[int] | None:
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


def _looks_like(shapes: Shapes) -> ModelType | None:
    """The type a set of tensors most resembles (for a clear refusal), or None."""
    keys = list(shapes)
    if _has(shapes, "control_model.") or _has(shapes, "controlnet_cond_embedding."):
        return ModelType.CONTROLNET
    if _has(shapes, "model.diffusion_model."):
        return ModelType.CHECKPOINT
    if any(m in k for k in keys for m in LORA_MARKERS):
        return ModelType.LORA
    if _has(shapes, "encoder.") and _has(shapes, "decoder."):
        return ModelType.VAE
    if any(_conv(shapes, k) for k in ("conv_first.weight", "model.0.weight", "body.0.weight")):
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


def _context_width(shapes: Shapes) -> int | None:
    """The width of the text embeddings the UNet's cross-attention takes (768 SD 1.x, 1024
    SD 2.x, 2048 SDXL)."""
    for key, shape in shapes.items():
        if key.startswith("model.diffusion_model.") and key.endswith("attn2.to_k.weight"):
            return shape[1] if len(shape) == 2 else None
    return None


def _check_checkpoint(shapes: Shapes, config: dict[str, Any] | None) -> None:
    missing = [p for p in ("model.diffusion_model.", "first_stage_model.") if not _has(shapes, p)]
    if not (_has(shapes, "cond_stage_model.") or _has(shapes, "conditioner.")):
        missing.append("cond_stage_model. (or conditioner.)")
    if missing:
        raise ModelFileError(
            "not a single-file checkpoint in the webui (LDM) layout: no tensors under "
            + ", ".join(missing)
        )
    arch = checkpoint_architecture(shapes)
    conv_in = _conv(shapes, "model.diffusion_model.input_blocks.0.0.weight")
    if conv_in is None or conv_in[1] not in (4, 8, 9):
        raise ModelFileError("the UNet's first conv (input_blocks.0.0) is missing or odd")
    conv_out = _conv(shapes, "first_stage_model.decoder.conv_out.weight")
    if conv_out is None or conv_out[0] != 3:
        raise ModelFileError("the VAE's decoder.conv_out is missing or does not give RGB")
    if config is not None:  # the architecture the checkpoint will be loaded as
        want = config.get("block_out_channels", [None])[0]
        if want is not None and conv_in[0] != want:
            raise ModelFileError(
                f"its UNet has {conv_in[0]} base channels, the config expects {want}: "
                "pick the config of its architecture (or auto)"
            )
        width, want = _context_width(shapes), config.get("cross_attention_dim")
        if width is not None and want is not None and width != want:
            raise ModelFileError(
                f"it is {ARCHITECTURE_LABELS[arch]} (text embeddings {width} wide), the config "
                f"expects {want}: pick the config of its architecture (or auto)"
            )


def _check_vae(shapes: Shapes) -> None:
    if _has(shapes, "model.diffusion_model."):
        raise ModelFileError("this is a whole checkpoint, not a VAE")
    conv_in = _conv(shapes, "encoder.conv_in.weight")
    conv_out = _conv(shapes, "decoder.conv_out.weight")
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
        if (s := _conv(shapes, k)) is not None
    ]
    if not first or first[0][1] != 3:
        raise ModelFileError("an upscaler's first conv (conv_first, model.0 or body.0) takes RGB")
    outs = {s[0] for s in shapes.values() if len(s) == 4}
    if not outs & {3, 12, 27, 48}:
        raise ModelFileError("no conv gives RGB (3 x scale^2 channels)")


def _check_controlnet(shapes: Shapes) -> None:
    hint = _conv(shapes, "control_model.input_hint_block.0.weight")
    if hint is None or not _has(shapes, "control_model.zero_convs."):
        hint = _conv(shapes, "controlnet_cond_embedding.conv_in.weight")
        if hint is None or not _has(shapes, "controlnet_down_blocks."):
            raise ModelFileError(
                "a ControlNet needs input_hint_block + zero_convs (LDM) or "
                "controlnet_cond_embedding + controlnet_down_blocks (diffusers)"
            )
    if hint[1] != 3:
        raise ModelFileError("the ControlNet's hint conv does not take an RGB image")


def _a(noun: str) -> str:
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
    if model_type is ModelType.CHECKPOINT:
        conv_in = _conv(shapes, "model.diffusion_model.input_blocks.0.0.weight") or [0, 0]
        return {"architecture": checkpoint_architecture(shapes), "inpainting": conv_in[1] == 9}
    return {}


def check_tensors(shapes: Shapes, model_type: ModelType, config: dict[str, Any] | None) -> None:
    """Refuse `shapes` unless they have the key layout of `model_type`.

    Raises
    ------
    ModelFileError
        With the reason; naming the type the file looks like when it is another one.
    """
    seems = _looks_like(shapes)
    if seems is not None and seems is not model_type:
        raise ModelFileError(f"this file looks like {_a(seems.value)}, not {_a(model_type.value)}")
    checks: dict[ModelType, Callable[[Shapes], None]] = {
        ModelType.VAE: _check_vae,
        ModelType.LORA: _check_lora,
        ModelType.EMBEDDING: _check_embedding,
        ModelType.UPSCALER: _check_upscaler,
        ModelType.CONTROLNET: _check_controlnet,
    }
    if model_type is ModelType.CHECKPOINT:
        _check_checkpoint(shapes, config)
    else:
        checks[model_type](shapes)


# --- diffusers folders in a tar ------------------------------------------------------------------


@dataclass
class _Folder:
    files: set[str] = field(default_factory=set)
    json: dict[str, Any] = field(default_factory=dict)
    shapes: dict[str, Shapes] = field(default_factory=dict)  # folder -> merged tensor shapes


def _member_path(member: tarfile.TarInfo) -> PurePosixPath:
    path = PurePosixPath(member.name.lstrip("./") or ".")
    if member.name.startswith("/") or ".." in path.parts:
        raise ModelFileError(f"tar entry {member.name!r} points outside the folder")
    if not (member.isfile() or member.isdir()):
        raise ModelFileError(f"tar entry {member.name!r} is a link or device (only files)")
    return path


def _read_tar(stream: _Stream) -> _Folder:
    folder = _Folder()
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                path = _member_path(member)
                if member.isdir():
                    continue
                name = path.as_posix()
                if name.lower().endswith(PICKLE_SUFFIXES):
                    raise ModelFileError(
                        f"{name} is a pickle file (loading it runs code): "
                        "save the weights as .safetensors"
                    )
                folder.files.add(name)
                handle = tar.extractfile(member)
                if handle is None:
                    continue
                if name.endswith(".json") and member.size <= MAX_JSON:
                    try:
                        folder.json[name] = json.loads(handle.read())
                    except (UnicodeDecodeError, ValueError):
                        raise ModelFileError(f"{name} is not valid JSON") from None
                elif name.endswith(".safetensors"):
                    shapes, header, data = _read_safetensors_header(handle, name)
                    if header + data != member.size:
                        raise ModelFileError(f"{name}: truncated or padded safetensors file")
                    parent = path.parent.as_posix()
                    folder.shapes.setdefault(parent, {}).update(shapes)
    except tarfile.TarError as exc:
        raise ModelFileError(f"not a readable tar: {exc}") from None
    return _strip_root(folder)


def _strip_root(folder: _Folder) -> _Folder:
    """A tar of `name/` rather than of its contents: drop the common first folder."""
    roots = {name.split("/", 1)[0] for name in folder.files}
    if len(roots) != 1 or all("/" not in n for n in folder.files):
        return folder
    (root,) = roots
    if f"{root}/model_index.json" not in folder.files and f"{root}/config.json" not in (
        folder.files
    ):
        return folder

    def strip(name: str) -> str:
        return name[len(root) + 1 :] if name.startswith(root + "/") else "."

    return _Folder(
        files={strip(n) for n in folder.files},
        json={strip(k): v for k, v in folder.json.items()},
        shapes={strip(k) if k != root else ".": v for k, v in folder.shapes.items()},
    )


def _component(folder: _Folder, sub: str, what: str) -> Shapes:
    if f"{sub}/config.json" not in folder.json:
        raise ModelFileError(f"the diffusers folder has no {sub}/config.json ({what})")
    shapes = folder.shapes.get(sub)
    if not shapes:
        raise ModelFileError(f"{sub}/ holds no .safetensors weights ({what})")
    return shapes


FOLDER_PIPELINES = ("StableDiffusionPipeline", "StableDiffusionXLPipeline")


def folder_architecture(folder: _Folder) -> str | None:
    """`sd1`, `sd2` or `sdxl` for a diffusers checkpoint folder; None for other pipelines."""
    index = folder.json.get("model_index.json")
    name = index.get("_class_name") if isinstance(index, dict) else None
    if name == "StableDiffusionXLPipeline":
        return "sdxl"
    if name != "StableDiffusionPipeline":
        return None
    text = folder.json.get("text_encoder/config.json")
    return "sd2" if isinstance(text, dict) and text.get("hidden_size") == 1024 else "sd1"


def check_folder(folder: _Folder, model_type: ModelType) -> None:
    """Refuse a diffusers folder unless it is a `model_type` the engine's loaders take."""
    if model_type is ModelType.CHECKPOINT:
        index = folder.json.get("model_index.json")
        if not isinstance(index, dict) or not str(index.get("_class_name", "")).endswith(
            "Pipeline"
        ):
            raise ModelFileError("no model_index.json naming a pipeline: not a diffusers folder")
        if folder_architecture(folder) is None:
            raise ModelFileError(
                f"model_index.json names {index['_class_name']!r}: a checkpoint folder is a "
                f"{' or '.join(FOLDER_PIPELINES)}"
            )
        unet = _component(folder, "unet", "the UNet")
        vae = _component(folder, "vae", "the VAE")
        _component(folder, "text_encoder", "the text encoder")
        if folder_architecture(folder) == "sdxl":
            _component(folder, "text_encoder_2", "SDXL's second text encoder")
        if _conv(unet, "conv_in.weight") is None:
            raise ModelFileError("unet/ weights have no conv_in: not a diffusers UNet")
        _check_vae(vae)
        return
    expected = {ModelType.VAE: "AutoencoderKL", ModelType.CONTROLNET: "ControlNetModel"}
    if model_type not in expected:
        raise ModelFileError(f"{_a(model_type.value)} must be one .safetensors file, not a folder")
    config = folder.json.get("config.json")
    if not isinstance(config, dict):
        raise ModelFileError(f"no config.json at the top: not a diffusers {model_type.value}")
    if config.get("_class_name") != expected[model_type]:
        raise ModelFileError(
            f"config.json names {config.get('_class_name')!r}, a {model_type.value} is "
            f"{expected[model_type]!r}"
        )
    shapes = folder.shapes.get(".")
    if not shapes:
        raise ModelFileError("no .safetensors weights beside config.json")
    check_tensors(shapes, model_type, None)


# --- torch zip pickles (.ckpt), when allowed ----------------------------------------------------


@dataclass(frozen=True)
class _TensorStub:
    shape: list[int]


def _rebuild_tensor(storage: Any, offset: Any, size: Any, *rest: Any) -> _TensorStub:
    return _TensorStub([int(n) for n in size])


class _ShapeUnpickler(pickle.Unpickler):
    """Reads a torch checkpoint's structure: dicts, plain values and tensor shapes. Every
    global but the few a state dict needs is refused (the same idea as torch's weights_only
    loading), and those few are stand-ins: nothing of the file runs."""

    _GLOBALS: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): lambda data, *rest: data,
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._GLOBALS:
            return self._GLOBALS[(module, name)]
        if module in ("torch", "torch.storage") and name.endswith("Storage"):
            return name  # a storage type, only ever passed along
        raise ModelFileError(
            f"the pickle references {module}.{name}: only plain state dicts are loaded"
        )

    def persistent_load(self, pid: Any) -> Any:
        return pid  # a storage reference: the weights themselves are never read


class _Capped(io.RawIOBase):
    """At most `limit` bytes of `stream`, for the unpickler."""

    def __init__(self, stream: _Stream, limit: int) -> None:
        self.stream, self.left = stream, limit

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self.left <= 0:
            raise ModelFileError(f"data.pkl is larger than {MAX_PICKLE} bytes")
        view = memoryview(b).cast("B")[: self.left]
        n = self.stream.readinto(view)
        self.left -= n
        return n


def _read_torch_zip(stream: _Stream) -> Shapes:
    """The tensor shapes of a torch zip checkpoint (its `state_dict` when it has one), from
    `data.pkl`, which torch writes first. Raises ModelFileError for anything else."""
    head = _read(stream, 30)
    if head[:4] != b"PK\x03\x04":
        raise ModelFileError("not a zip file")
    (method,) = struct.unpack("<H", head[8:10])
    name_len, extra_len = struct.unpack("<HH", head[26:30])
    name = _read(stream, name_len).decode("utf-8", "replace")
    _read(stream, extra_len)
    if not name.endswith("data.pkl") or method != 0:
        raise ModelFileError(
            f"a zip whose first entry is {name!r}: not a checkpoint written by torch.save"
        )
    try:
        # pickle is self-delimiting: it reads exactly to its STOP opcode
        loaded = _ShapeUnpickler(io.BufferedReader(_Capped(stream, MAX_PICKLE))).load()
    except ModelFileError:
        raise
    except Exception as exc:  # a damaged pickle: any error of the pickle machine
        raise ModelFileError(f"data.pkl could not be read: {exc}") from exc
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise ModelFileError("the pickle holds no state dict")
    return {str(k): v.shape for k, v in loaded.items() if isinstance(v, _TensorStub)}


# --- entry point ---------------------------------------------------------------------------------


def inspect_stream(
    chunks: Iterable[bytes],
    model_type: ModelType,
    config: dict[str, Any] | None = None,
    on_bytes: Callable[[int], None] | None = None,
    allow_pickle: bool = False,
) -> Inspection:
    """Read a whole model file once: its SHA-256, its size and whether it is a `model_type`.

    `config`: the UNet config a single-file checkpoint will be loaded with (its base channels
    are compared). `on_bytes(total)` is called as bytes are read (progress). `allow_pickle`:
    a checkpoint may be a torch zip pickle (`.ckpt`).

    Raises
    ------
    ModelFileError
        The file is not a safetensors file nor an uncompressed tar of a diffusers folder, is
        truncated, is a pickle, or does not have the key layout of `model_type`.
    """
    stream = _Stream(chunks, on_bytes)
    try:
        return _inspect(stream, model_type, config, allow_pickle)
    except ModelFileError as exc:
        stream.drain()  # the digest and size of the whole file, for the caller's report
        exc.sha256, exc.size = stream.digest.hexdigest(), stream.size
        raise


def _inspect(
    stream: _Stream, model_type: ModelType, config: dict[str, Any] | None, allow_pickle: bool
) -> Inspection:
    head = stream.peek(512)
    if _is_safetensors(head):
        fmt = ModelFormat.SAFETENSORS
        metadata: dict[str, str] = {}
        shapes, header, data = _read_safetensors_header(stream, "the file", metadata)
        check_tensors(shapes, model_type, config)
        details = describe(shapes, model_type)
        if model_type is ModelType.LORA:
            # the webui's LoRA hash: kohya's own (`sshs_model_hash`), else the SHA-256 of the
            # tensor data without the header (the "addnet" hash), as its "Lora hashes" show
            data_digest = _digest_rest(stream)
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
        folder = _read_tar(stream)
        check_folder(folder, model_type)
        arch = folder_architecture(folder) if model_type is ModelType.CHECKPOINT else None
        details = {"architecture": arch} if arch else {}
        stream.drain()
        count = sum(len(s) for s in folder.shapes.values())
    elif head[:2] == b"PK" and allow_pickle and model_type is ModelType.CHECKPOINT:
        fmt = ModelFormat.PICKLE
        shapes = _read_torch_zip(stream)
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
