"""The two containers a model file may be besides a single safetensors file: an uncompressed tar
of a diffusers folder (its member list, JSON configs and safetensors headers are read), and,
when allowed, a torch zip pickle (its `data.pkl` read by an unpickler that builds nothing but
dicts and tensor shapes: no code of the file runs)."""

from __future__ import annotations

import io
import json
import pickle  # noqa: S403 (a restricted unpickler: shapes only, see _ShapeUnpickler)
import struct
import tarfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from sdcore.domain.models import ModelType
from sdcore.guards import interrogator_folders
from sdcore.guards.model_bytes import (
    MAX_JSON,
    ModelFileError,
    Shapes,
    Stream,
    read_exactly,
    read_safetensors_header,
)
from sdcore.guards.model_layouts import a_or_an, check_tensors, check_vae, conv

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")
MAX_PICKLE = 256 * 1024 * 1024  # a checkpoint's data.pkl (its structure, no weights) is ~1 MB


# --- diffusers folders in a tar ------------------------------------------------------------------


@dataclass
class Folder:
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


def read_tar(stream: Stream) -> Folder:
    folder = Folder()
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
                    except (UnicodeDecodeError, ValueError, RecursionError):
                        raise ModelFileError(f"{name} is not valid JSON") from None
                elif name.endswith(".safetensors"):
                    shapes, header, data = read_safetensors_header(handle, name)
                    if header + data != member.size:
                        raise ModelFileError(f"{name}: truncated or padded safetensors file")
                    parent = path.parent.as_posix()
                    folder.shapes.setdefault(parent, {}).update(shapes)
    except tarfile.TarError as exc:
        raise ModelFileError(f"not a readable tar: {exc}") from None
    return _strip_root(folder)


def _strip_root(folder: Folder) -> Folder:
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

    return Folder(
        files={strip(n) for n in folder.files},
        json={strip(k): v for k, v in folder.json.items()},
        shapes={strip(k) if k != root else ".": v for k, v in folder.shapes.items()},
    )


def _component(folder: Folder, sub: str, what: str) -> Shapes:
    if f"{sub}/config.json" not in folder.json:
        raise ModelFileError(f"the diffusers folder has no {sub}/config.json ({what})")
    shapes = folder.shapes.get(sub)
    if not shapes:
        raise ModelFileError(f"{sub}/ holds no .safetensors weights ({what})")
    return shapes


FOLDER_PIPELINES = ("StableDiffusionPipeline", "StableDiffusionXLPipeline")


def folder_architecture(folder: Folder) -> str | None:
    """`sd1`, `sd2` or `sdxl` for a diffusers checkpoint folder; None for other pipelines."""
    index = folder.json.get("model_index.json")
    name = index.get("_class_name") if isinstance(index, dict) else None
    if name == "StableDiffusionXLPipeline":
        return "sdxl"
    if name != "StableDiffusionPipeline":
        return None
    text = folder.json.get("text_encoder/config.json")
    return "sd2" if isinstance(text, dict) and text.get("hidden_size") == 1024 else "sd1"


def check_folder(folder: Folder, model_type: ModelType) -> dict[str, Any]:
    """Refuse a diffusers (or, for interrogation, transformers) folder unless it is a
    `model_type` the engine's loaders take; what the listing's details show of it."""
    if model_type.value in interrogator_folders.CHECKS:
        return interrogator_folders.CHECKS[model_type.value](folder)
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
        if conv(unet, "conv_in.weight") is None:
            raise ModelFileError("unet/ weights have no conv_in: not a diffusers UNet")
        check_vae(vae)
        return {"architecture": folder_architecture(folder)}
    expected = {ModelType.VAE: "AutoencoderKL", ModelType.CONTROLNET: "ControlNetModel"}
    if model_type not in expected:
        raise ModelFileError(
            f"{a_or_an(model_type.value)} must be one .safetensors file, not a folder"
        )
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
    return {}


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

    def __init__(self, stream: Stream, limit: int) -> None:
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


def read_torch_zip(stream: Stream) -> Shapes:
    """The tensor shapes of a torch zip checkpoint (its `state_dict` when it has one), from
    `data.pkl`, which torch writes first. Raises ModelFileError for anything else."""
    head = read_exactly(stream, 30)
    if head[:4] != b"PK\x03\x04":
        raise ModelFileError("not a zip file")
    (method,) = struct.unpack("<H", head[8:10])
    name_len, extra_len = struct.unpack("<HH", head[26:30])
    name = read_exactly(stream, name_len).decode("utf-8", "replace")
    read_exactly(stream, extra_len)
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
