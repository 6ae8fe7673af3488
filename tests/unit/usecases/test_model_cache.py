"""The inference model cache: downloads kept by content hash, bounded in size, least recently
used evicted first (what a Lambda's /tmp holds on AWS)."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from sdcore.adapters.local.blobs import FileBlobStore
from sdcore.domain.models import Model, ModelFormat, ModelStatus
from sdcore.services import Services
from sdcore.usecases.model_cache import evict, materialise


class RemoteBlobs(FileBlobStore):
    """A store whose objects are not local files: every use downloads, as from S3."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, "http://127.0.0.1:1")
        self.downloads: list[str] = []

    def local_path(self, key: str) -> Path | None:
        return None

    def download(self, key: str, dest: Path) -> None:
        self.downloads.append(key)
        super().download(key, dest)


def _register(svc: Services, name: str, size: int) -> Model:
    data = name.encode() * (size // len(name))
    key = f"models/checkpoint/{name}.safetensors"
    svc.blobs.put(key, data)
    model = Model(name=name, status=ModelStatus.UNLOADED, sha256=hashlib.sha256(data).hexdigest(),
                  size=len(data), key=key, format=ModelFormat.SAFETENSORS, config="tiny-sd",
                  registered_at=0, modified_at=0)  # fmt: skip
    svc.models.create(model)
    return model


def test_the_cache_keeps_recent_models_and_evicts_the_least_recently_used(
    svc: Services, tmp_path: Path
) -> None:
    blobs = RemoteBlobs(tmp_path / "s3")
    svc.blobs = blobs
    svc.settings.model_cache_dir = tmp_path / "cache"
    svc.settings.model_cache_bytes = 2500  # room for two 1,000-byte models, not three
    a, b, c = (_register(svc, n, 1000) for n in ("ckpt-a", "ckpt-b", "ckpt-c"))

    materialise(svc, "ckpt-a")
    time.sleep(0.02)
    materialise(svc, "ckpt-b")
    time.sleep(0.02)
    path_a, *_ = materialise(svc, "ckpt-a")  # a is used again: b is now the least recent
    time.sleep(0.02)
    materialise(svc, "ckpt-c")

    cached = {p.name for p in svc.settings.model_cache_dir.iterdir()}
    assert cached == {a.sha256, c.sha256}
    assert path_a.read_bytes() == svc.blobs.get(a.key)  # still whole, through its link
    assert blobs.downloads == [a.key, b.key, c.key]  # a's second use came from the cache
    materialise(svc, "ckpt-b")  # evicted: downloaded again
    assert blobs.downloads[-1] == b.key
    assert len(list(svc.settings.model_cache_dir.iterdir())) == 2


def test_evict_never_removes_the_entry_in_use_and_zero_means_unbounded(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    for name in ("old", "new"):
        (root / name).mkdir(parents=True)
        (root / name / "model.bin").write_bytes(b"x" * 100)
        time.sleep(0.02)
    assert evict(root, root / "new", 0) == []
    assert evict(root, root / "old", 50) == ["new"]  # over the limit, but "old" is in use
    assert {p.name for p in root.iterdir()} == {"old"}
