"""The inference function's model cache: registered models (checkpoints and the networks a task
names) brought onto local disk once, by content hash, least recently used evicted; and the
checkpoint this function serves loaded into an engine from there, offline."""

from __future__ import annotations

import logging
import shutil
import tarfile
from pathlib import Path

from sdcore import configs
from sdcore.domain.models import (
    AUTO_CONFIG,
    Model,
    ModelChanges,
    ModelFormat,
    ModelStatus,
    ModelType,
)
from sdcore.errors import ConflictError
from sdcore.metric_names import (
    CACHE_EVICTIONS,
    CACHE_HITS,
    CACHE_MISSES,
    MODEL_LOAD_TIME,
    MODEL_LOADS,
)
from sdcore.ports import Engine, EngineFactory, NetworkFile
from sdcore.services import Services
from sdcore.usecases.measure import fleet_of
from sdcore.usecases.networks import resolve_network

log = logging.getLogger(__name__)


def _fetch(svc: Services, key: str, dest: Path) -> tuple[Path, bool]:
    """The object as a local file, and whether it was downloaded just now."""
    local = svc.blobs.local_path(key)
    if local is not None:
        return local, False
    if dest.exists():
        return dest, False
    tmp = dest.with_name(dest.name + ".part")
    svc.blobs.download(key, tmp)
    tmp.replace(dest)
    return dest, True


def _entry_size(entry: Path) -> int:
    return sum(f.lstat().st_size for f in entry.rglob("*") if not f.is_symlink() and f.is_file())


def evict(cache_root: Path, keep: Path, limit_bytes: int) -> list[str]:
    """Delete least recently used cache entries (one folder per content hash) until the cache
    holds at most `limit_bytes`; `keep` (the entry just used) always stays. Returns the hashes
    evicted. A limit of 0 means unbounded."""
    if limit_bytes <= 0 or not cache_root.is_dir():
        return []
    entries = []
    for entry in cache_root.iterdir():
        if entry.is_dir():
            marker = entry / ".used"
            used = (marker if marker.exists() else entry).stat().st_mtime
            entries.append((used, entry, _entry_size(entry)))
    total = sum(size for _, _, size in entries)
    evicted = []
    for _, entry, size in sorted(entries, key=lambda e: e[0]):
        if total <= limit_bytes:
            break
        if entry == keep:
            continue
        shutil.rmtree(entry, ignore_errors=True)
        total -= size
        evicted.append(entry.name)
    if evicted:
        log.info("model cache over %d bytes: evicted %s", limit_bytes, ", ".join(evicted))
    return evicted


def materialise(svc: Services, model_name: str) -> tuple[Path, str, str, Path | None]:
    """The model's local path, hash and config folder (None: `auto`, the engine picks the
    shipped one of the file's architecture). Raises ConflictError if unusable."""
    model = svc.models.get(model_name)
    if not model.usable or model.format is None:
        raise ConflictError(f"model {model_name} is not ready: {model.error or model.status.value}")
    config_dir = None if model.config == AUTO_CONFIG else configs.config_dir(model.config)
    single_file = model.format in (ModelFormat.SAFETENSORS, ModelFormat.PICKLE)
    if single_file and config_dir and not config_dir.is_dir():
        raise ConflictError(f"model {model_name}: unknown config {model.config!r}")
    return _local_copy(svc, model), model.name, model.sha256, config_dir


def network_file(svc: Services, name: str, kind: ModelType, field: str) -> NetworkFile:
    """A registered LoRA, VAE or embedding on local disk, through the same cache as checkpoints.

    Raises
    ------
    InvalidInputError, ConflictError
        As `resolve_network`: unknown or of another type (naming `field`); not ready.
    """
    model = resolve_network(svc, name, kind, field)
    webui_hash = str(model.details.get("webui_hash", ""))
    return NetworkFile(model.name, model.sha256, _local_copy(svc, model), webui_hash)


def _local_copy(svc: Services, model: Model) -> Path:
    """`model.safetensors` or an extracted diffusers folder under the cache, by content hash."""
    cache = svc.settings.model_cache_dir / model.sha256
    cache.mkdir(parents=True, exist_ok=True)
    (cache / ".used").touch()  # the cache's recency: least recently used entries go first
    blob, downloaded = _fetch(svc, model.key, cache / "model.bin")
    svc.metrics.count(CACHE_MISSES if downloaded else CACHE_HITS, type=model.type.value)
    if downloaded:
        evicted = evict(svc.settings.model_cache_dir, cache, svc.settings.model_cache_bytes)
        if evicted:
            svc.metrics.count(CACHE_EVICTIONS, len(evicted))
    if model.format in (ModelFormat.SAFETENSORS, ModelFormat.PICKLE):
        # the engine tells the formats by suffix (a pickle loads only when allowed)
        suffix = "ckpt" if model.format is ModelFormat.PICKLE else "safetensors"
        path = cache / f"model.{suffix}"
        if path.is_symlink() and path.resolve() != blob.resolve():
            path.unlink()  # left by a store since moved (same content hash, another place)
        if not path.exists():
            path.symlink_to(blob.resolve())
        return path
    folder = cache / "diffusers"
    # a pipeline folder has model_index.json at its top; a lone model (a VAE) config.json
    marker = "model_index.json" if model.type is ModelType.CHECKPOINT else "config.json"
    if not (folder / marker).is_file():
        tmp = cache / "diffusers.part"
        shutil.rmtree(tmp, ignore_errors=True)
        with tarfile.open(blob) as tar:
            tar.extractall(tmp, filter="data")  # refuses absolute paths, links out, devices
        roots = [p for p in tmp.iterdir()]
        if not (tmp / marker).is_file() and len(roots) == 1 and roots[0].is_dir():
            roots[0].rename(cache / "diffusers.root")
            shutil.rmtree(tmp)
            tmp = cache / "diffusers.root"
        if not (tmp / marker).is_file():
            raise ConflictError(f"model {model.name}: the tar holds no diffusers folder")
        tmp.rename(folder)
    return folder


def load_engine(svc: Services, model_name: str, make: EngineFactory) -> Engine:
    """Load the checkpoint this execution environment serves with the engine `make` builds,
    updating the model's status.

    Raises
    ------
    NotFoundError, ConflictError
        The model is gone, or not usable.
    """
    labels = {"model": model_name, "fleet": fleet_of(svc, model_name)}
    started = svc.clock.now()
    try:
        with svc.tracing.span("model load"):
            path, name, sha256, config_dir = materialise(svc, model_name)
            svc.models.update(model_name, ModelChanges(status=ModelStatus.LOADING))
            engine = make(
                path,
                name,
                sha256,
                config_dir=config_dir,
                device=svc.settings.device,
                allow_pickle=svc.settings.allow_pickle,
            )
            engine.load()
    except BaseException:
        svc.metrics.count(MODEL_LOADS, outcome="failed", **labels)
        raise
    svc.metrics.count(MODEL_LOADS, outcome="loaded", **labels)
    svc.metrics.observe(MODEL_LOAD_TIME, svc.clock.now() - started, **labels)
    svc.models.update(model_name, ModelChanges(status=ModelStatus.LOADED))
    log.info("loaded model %s from %s", model_name, path)
    return engine
