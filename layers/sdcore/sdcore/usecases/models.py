"""Model management (the admin function's use cases): multipart upload, verify, list, delete."""

from __future__ import annotations

import hashlib
import math
import re
import struct
from dataclasses import dataclass

from sdcore.domain.models import Model, ModelFormat, ModelStatus, ModelType
from sdcore.errors import ConflictError, InvalidInputError, NotFoundError
from sdcore.ports import UploadedPart
from sdcore.services import Services

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_PARTS = 10_000


@dataclass
class UploadPlan:
    model: Model
    upload_id: str
    part_size: int
    part_urls: list[str]


def _key(name: str, model_type: ModelType, sha256: str) -> str:
    return f"models/{model_type.value}/{name}/{sha256}"


def start_upload(
    svc: Services, name: str, model_type: ModelType, size: int, sha256: str, config: str = "sd15"
) -> UploadPlan:
    """Register a model as `registering` and hand out presigned part URLs.

    Raises
    ------
    InvalidInputError
        A bad name, size or digest.
    ConflictError
        A usable model of that name exists (delete it first).
    """
    if not NAME_RE.match(name):
        raise InvalidInputError("name", "letters, digits, '.', '_' and '-', at most 128")
    if size <= 0:
        raise InvalidInputError("size", "must be positive")
    sha256 = sha256.lower()
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise InvalidInputError("sha256", "must be 64 hex digits")
    try:
        existing = svc.models.get(name)
    except NotFoundError:
        existing = None
    if existing is not None:
        resumable = (
            existing.status is ModelStatus.REGISTERING
            and existing.upload_id is not None
            and existing.error is None
            and (existing.sha256, existing.size, existing.type) == (sha256, size, model_type)
        )
        if resumable:  # the same file again: the same upload, with fresh part URLs
            return _plan(svc, existing)
        if existing.error is None:
            raise ConflictError(f"model {name} exists ({existing.status.value})")
        _forget(svc, existing)  # a failed upload may be retried under the same name
    part_size = max(svc.settings.part_size, math.ceil(size / MAX_PARTS))
    key = _key(name, model_type, sha256)
    upload_id = svc.blobs.create_multipart(key)
    now = svc.clock.now()
    model = Model(
        name=name,
        type=model_type,
        status=ModelStatus.REGISTERING,
        sha256=sha256,
        size=size,
        key=key,
        config=config,
        upload_id=upload_id,
        part_size=part_size,
        registered_at=now,
        modified_at=now,
    )
    svc.models.create(model)
    return _plan(svc, model)


def _plan(svc: Services, model: Model) -> UploadPlan:
    assert model.upload_id is not None
    parts = max(1, math.ceil(model.size / model.part_size))
    expires = max(svc.settings.url_expires_s, 6 * 3600)
    urls = [svc.blobs.part_url(model.key, model.upload_id, n, expires) for n in range(1, parts + 1)]
    return UploadPlan(
        model=model, upload_id=model.upload_id, part_size=model.part_size, part_urls=urls
    )


def upload_status(svc: Services, name: str) -> tuple[Model, list[UploadedPart]]:
    """An upload in progress and the parts received so far (to resume it).

    Raises NotFoundError, or ConflictError when the model has no upload in progress.
    """
    model = svc.models.get(name)
    if model.status is not ModelStatus.REGISTERING or model.upload_id is None:
        raise ConflictError(f"model {name} has no upload in progress")
    return model, svc.blobs.list_parts(model.key, model.upload_id)


def _detect_format(head: bytes) -> ModelFormat | None:
    if len(head) >= 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if head[8:9] == b"{" and 0 < header_len < 100_000_000:
            return ModelFormat.SAFETENSORS
    if len(head) >= 262 and head[257:262] == b"ustar":
        return ModelFormat.DIFFUSERS
    return None


def complete_upload(svc: Services, name: str, parts: list[UploadedPart]) -> Model:
    """Join the parts, check size and SHA-256, and make the model usable.

    Raises
    ------
    NotFoundError
        No such model.
    ConflictError
        The model has no upload in progress, or the file fails verification; in the latter case
        the model stays unusable with the reason in its `error`.
    InvalidInputError
        A part is missing or its ETag does not match.
    """
    model = svc.models.get(name)
    if model.status is not ModelStatus.REGISTERING or model.upload_id is None:
        raise ConflictError(f"model {name} has no upload in progress")
    svc.blobs.complete_multipart(model.key, model.upload_id, parts)
    digest = hashlib.sha256()
    size = 0
    head = b""
    for chunk in svc.blobs.iter_chunks(model.key):
        if len(head) < 512:
            head += chunk[: 512 - len(head)]
        digest.update(chunk)
        size += len(chunk)
    error = None
    fmt = _detect_format(head)
    if size != model.size:
        error = f"size mismatch: registered {model.size} bytes, received {size}"
    elif digest.hexdigest() != model.sha256:
        error = f"sha256 mismatch: registered {model.sha256}, received {digest.hexdigest()}"
    elif fmt is None:
        error = "not a .safetensors file nor a tar of a diffusers folder"
    if error is not None:
        svc.blobs.delete_prefix(model.key)
        svc.models.update(name, upload_id=None, error=error, modified_at=svc.clock.now())
        raise ConflictError(f"model {name} is unusable: {error}")
    return svc.models.update(
        name,
        {ModelStatus.REGISTERING},
        status=ModelStatus.UNLOADED,
        format=fmt,
        upload_id=None,
        error=None,
        modified_at=svc.clock.now(),
    )


def list_models(svc: Services) -> list[Model]:
    return svc.models.list()


def _forget(svc: Services, model: Model) -> None:
    if model.upload_id:
        svc.blobs.abort_multipart(model.key, model.upload_id)
    svc.blobs.delete_prefix(model.key)
    svc.models.update(
        model.name, status=ModelStatus.DELETED, upload_id=None, modified_at=svc.clock.now()
    )


def delete_model(svc: Services, name: str) -> Model:
    """Delete a model, its stored file and its inference function. Raises NotFoundError."""
    model = svc.models.get(name)
    svc.fleet.delete(name)
    _forget(svc, model)
    return model.model_copy(update={"status": ModelStatus.DELETED})
