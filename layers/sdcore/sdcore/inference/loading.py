"""Bring a registered checkpoint onto local disk and load it into an engine, offline."""

from __future__ import annotations

import logging
import shutil
import tarfile
from pathlib import Path

from sdcore.domain.models import ModelFormat, ModelStatus
from sdcore.errors import ConflictError
from sdcore.inference.port import Engine
from sdcore.services import Services

log = logging.getLogger(__name__)
CONFIGS = Path(__file__).parent / "configs"


def _fetch(svc: Services, key: str, dest: Path) -> Path:
    local = svc.blobs.local_path(key)
    if local is not None:
        return local
    if not dest.exists():
        tmp = dest.with_name(dest.name + ".part")
        svc.blobs.download(key, tmp)
        tmp.replace(dest)
    return dest


def materialise(svc: Services, model_name: str) -> tuple[Path, str, str, Path]:
    """The model's local path, hash and config folder. Raises ConflictError if unusable."""
    model = svc.models.get(model_name)
    if not model.usable or model.format is None:
        raise ConflictError(f"model {model_name} is not ready: {model.error or model.status.value}")
    cache = svc.settings.model_cache_dir / model.sha256
    cache.mkdir(parents=True, exist_ok=True)
    blob = _fetch(svc, model.key, cache / "model.bin")
    config_dir = CONFIGS / model.config
    if model.format is ModelFormat.SAFETENSORS:
        path = cache / "model.safetensors"
        if not path.exists():
            path.symlink_to(blob.resolve())
        if not config_dir.is_dir():
            raise ConflictError(f"model {model_name}: unknown config {model.config!r}")
        return path, model.name, model.sha256, config_dir
    folder = cache / "diffusers"
    if not (folder / "model_index.json").is_file():
        tmp = cache / "diffusers.part"
        shutil.rmtree(tmp, ignore_errors=True)
        with tarfile.open(blob) as tar:
            tar.extractall(tmp, filter="data")  # refuses absolute paths, links out, devices
        roots = [p for p in tmp.iterdir()]
        if not (tmp / "model_index.json").is_file() and len(roots) == 1 and roots[0].is_dir():
            roots[0].rename(cache / "diffusers.root")
            shutil.rmtree(tmp)
            tmp = cache / "diffusers.root"
        if not (tmp / "model_index.json").is_file():
            raise ConflictError(f"model {model_name}: the tar holds no diffusers folder")
        tmp.rename(folder)
    return folder, model.name, model.sha256, config_dir


def load_engine(svc: Services, model_name: str) -> Engine:
    """Load the checkpoint this execution environment serves, updating the model's status."""
    from sdcore.inference.engine import DiffusersEngine

    path, name, sha256, config_dir = materialise(svc, model_name)
    svc.models.update(model_name, status=ModelStatus.LOADING)
    engine = DiffusersEngine(path, name, sha256, config_dir=config_dir, device=svc.settings.device)
    engine.load()
    svc.models.update(model_name, status=ModelStatus.LOADED)
    log.info("loaded model %s from %s", model_name, path)
    return engine
