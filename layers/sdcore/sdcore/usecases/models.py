"""Model management (the admin function's use cases): multipart upload, import from a URL,
update, rename, delete. The jobs that verify and import are in `model_jobs`.

A version on its way in is the model's `pending` version. It becomes the current one only once
a job has read it back in full (size, SHA-256, and that it loads as what it claims to be: see
`sdcore.guards.modelfiles`). Until then a new model is `registering` and unusable; an existing model
keeps serving its current version, so tasks already running or queued are not disturbed.
"""

from __future__ import annotations

import logging
import math
import re
import shutil
from dataclasses import dataclass
from typing import Any

from sdcore import configs
from sdcore.domain.models import (
    AUTO_CONFIG,
    READY,
    Model,
    ModelChanges,
    ModelStage,
    ModelStatus,
    ModelType,
    PendingVersion,
)
from sdcore.errors import (
    ConflictError,
    DomainError,
    InvalidInputError,
    NotFoundError,
    StaleWriteError,
)
from sdcore.guards.netguard import check_url
from sdcore.ports import UploadedPart
from sdcore.services import Services
from sdcore.usecases.control import unpark_model

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_PARTS = 10_000
MAX_MODEL_BYTES = 64 * 1024**3
BUSY = (ModelStage.VERIFYING, ModelStage.IMPORTING)


@dataclass
class UploadPlan:
    model: Model
    upload_id: str
    part_size: int
    part_urls: list[str]


def _check_name(name: str, field: str = "name") -> None:
    if not NAME_RE.match(name):
        raise InvalidInputError(field, "letters, digits, '.', '_' and '-', at most 128")


def _check_config(model_type: ModelType, config: str) -> None:
    if model_type is not ModelType.CHECKPOINT or config == AUTO_CONFIG:
        return
    known = configs.checkpoint_configs()
    if config not in known:
        raise InvalidInputError(
            "config", f"unknown config {config!r}; {AUTO_CONFIG} or one of {', '.join(known)}"
        )


def find_model(svc: Services, name: str) -> Model | None:
    try:
        return svc.models.get(name)
    except NotFoundError:
        return None


def _new_key(svc: Services, name: str, model_type: ModelType) -> str:
    # a fresh key per version: a renamed model and a new one of its old name never share a file
    return f"models/{model_type.value}/{name}/{svc.ids.new_id()}"


def _admit(
    svc: Services, name: str, model_type: ModelType, sha256: str, update: bool
) -> Model | None:
    """Decide what becomes of an existing model of this name before a new version comes in:
    None if there is none (or a failed one was cleared); the model if the new version is an
    update of it. Raises ConflictError / InvalidInputError when the new version cannot come."""
    existing = find_model(svc, name)
    if existing is None:
        return None
    pending = existing.pending
    if pending is not None and pending.error is None and pending.stage in BUSY:
        raise ConflictError(
            f"model {name}: a new version is {pending.stage.value}; wait for it or abort it "
            f"(DELETE /admin/models/{name}/upload)"
        )
    if existing.usable:
        if not update:
            raise ConflictError(
                f'model {name} exists ({existing.status.value}); send "update": true to '
                "upload a new version, or delete it first"
            )
        if model_type is not existing.type:
            raise InvalidInputError("type", f"{name} is a {existing.type.value}")
        if sha256 and sha256 == existing.sha256:
            raise ConflictError(f"model {name}: that file is already its current version")
    if pending is not None and pending.error is None:
        raise ConflictError(
            f"model {name}: an upload of another file is in progress; abort it first "
            f"(DELETE /admin/models/{name}/upload)"
        )
    if existing.usable:
        if pending is not None:  # a failed update: replaced by this one
            _drop_pending(svc, existing, pending)
        return existing
    _forget(svc, existing)  # a model that never became usable may be registered afresh
    return None


def _pending(
    svc: Services, stage: ModelStage, key: str, config: str, **fields: Any
) -> PendingVersion:
    now = svc.clock.now()
    return PendingVersion(
        stage=stage, key=key, config=config, started_at=now, updated_at=now, **fields
    )


def _register(
    svc: Services, name: str, model_type: ModelType, existing: Model | None, pending: PendingVersion
) -> Model:
    """Record the pending version: on the existing model (an update) or as a new model."""
    now = svc.clock.now()
    if existing is not None:
        try:
            changes = ModelChanges(pending=pending, modified_at=now)
            return svc.models.update(name, changes, set(READY))
        except (StaleWriteError, NotFoundError):
            raise ConflictError(f"model {name} changed meanwhile; try again") from None
    model = Model(
        name=name,
        type=model_type,
        status=ModelStatus.REGISTERING,
        sha256=pending.sha256,
        size=pending.size,
        key=pending.key,
        config=pending.config,
        pending=pending,
        registered_at=now,
        modified_at=now,
    )
    svc.models.create(model)
    return model


def start_upload(
    svc: Services,
    name: str,
    model_type: ModelType,
    size: int,
    sha256: str,
    config: str = AUTO_CONFIG,
    update: bool = False,
) -> UploadPlan:
    """Start a multipart upload of a model file (a new model, or with `update` a new version
    of an existing one) and hand out presigned part URLs. The same file again (name, type,
    size, sha256) resumes the upload in progress, with fresh URLs.

    Raises
    ------
    InvalidInputError
        A bad name, size, digest or config; an update of another type.
    ConflictError
        A usable model of that name exists and `update` is not set; another upload or a job
        is in progress for it.
    """
    _check_name(name)
    if not 0 < size <= MAX_MODEL_BYTES:
        raise InvalidInputError("size", f"must be 1..{MAX_MODEL_BYTES}")
    sha256 = sha256.lower()
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise InvalidInputError("sha256", "must be 64 hex digits")
    _check_config(model_type, config)
    current = find_model(svc, name)
    pending = current.pending if current else None
    if (
        current is not None
        and pending is not None
        and pending.stage is ModelStage.UPLOADING
        and pending.error is None
        and (pending.sha256, pending.size, current.type) == (sha256, size, model_type)
    ):
        return _plan(svc, current)
    existing = _admit(svc, name, model_type, sha256, update)
    part_size = max(svc.settings.part_size, math.ceil(size / MAX_PARTS))
    key = _new_key(svc, name, model_type)
    upload_id = svc.blobs.create_multipart(key)
    pending = _pending(
        svc,
        ModelStage.UPLOADING,
        key,
        config,
        sha256=sha256,
        size=size,
        upload_id=upload_id,
        part_size=part_size,
    )
    try:
        model = _register(svc, name, model_type, existing, pending)
    except DomainError:
        svc.blobs.abort_multipart(key, upload_id)
        raise
    return _plan(svc, model)


def _plan(svc: Services, model: Model) -> UploadPlan:
    pending = model.pending
    assert pending is not None and pending.upload_id is not None
    parts = max(1, math.ceil(pending.size / pending.part_size))
    expires = max(svc.settings.url_expires_s, 6 * 3600)
    urls = [
        svc.blobs.part_url(pending.key, pending.upload_id, n, expires) for n in range(1, parts + 1)
    ]
    return UploadPlan(
        model=model, upload_id=pending.upload_id, part_size=pending.part_size, part_urls=urls
    )


def _uploading(svc: Services, name: str) -> tuple[Model, PendingVersion]:
    model = svc.models.get(name)
    pending = model.pending
    if (
        pending is None
        or pending.stage is not ModelStage.UPLOADING
        or pending.error is not None
        or pending.upload_id is None
    ):
        raise ConflictError(f"model {name} has no upload in progress")
    return model, pending


def upload_status(svc: Services, name: str) -> tuple[Model, list[UploadedPart]]:
    """An upload in progress and the parts received so far (to resume it).

    Raises NotFoundError, or ConflictError when the model has no upload in progress.
    """
    model, pending = _uploading(svc, name)
    assert pending.upload_id is not None
    return model, svc.blobs.list_parts(pending.key, pending.upload_id)


def complete_upload(svc: Services, name: str, parts: list[UploadedPart]) -> Model:
    """Check the part list against what storage received and queue the verification job,
    which joins the parts, reads the file back and makes the version current (or records why
    not). The model is answered at once, its pending version `verifying`.

    Raises
    ------
    NotFoundError
        No such model.
    ConflictError
        The model has no upload in progress.
    InvalidInputError
        The part list is out of order, names a part never received, or an ETag that does not
        match (field `parts`); the upload stays open to fix it.
    """
    model, pending = _uploading(svc, name)
    assert pending.upload_id is not None
    numbers = [p.part_number for p in parts]
    if not parts or numbers != sorted(set(numbers)):
        raise InvalidInputError("parts", "must list each part once, in ascending order")
    received = {p.part_number: p.etag.strip('"') for p in svc.blobs.list_parts(
        pending.key, pending.upload_id
    )}  # fmt: skip
    for part in parts:
        if part.part_number not in received:
            raise InvalidInputError("parts", f"part {part.part_number} was never uploaded")
        if received[part.part_number] != part.etag.strip('"'):
            raise InvalidInputError("parts", f"part {part.part_number}: ETag does not match")
    if sorted(received) != numbers:
        extra = sorted(set(received) - set(numbers))
        raise InvalidInputError("parts", f"parts {extra} were uploaded but are not listed")
    verifying = pending.model_copy(
        update={"stage": ModelStage.VERIFYING, "bytes_done": 0, "updated_at": svc.clock.now()}
    )
    try:
        changes = ModelChanges(pending=verifying, modified_at=svc.clock.now())
        model = svc.models.update(name, changes, pending_key=pending.key)
    except StaleWriteError:
        raise ConflictError(f"model {name}: the upload changed meanwhile") from None
    _queue_job(svc, "verify", name, pending.key)
    return model


def start_import(
    svc: Services,
    name: str,
    model_type: ModelType,
    url: str,
    sha256: str | None = None,
    config: str = AUTO_CONFIG,
    update: bool = False,
) -> Model:
    """Import a model file from an http(s) URL, as a job: download (progress in the pending
    version's `bytes_done`), then the same verification as an upload. `sha256`, if given, must
    match what arrives.

    Raises
    ------
    InvalidInputError
        A bad name, URL (not http(s), or an address the guard refuses), digest or config.
    ConflictError
        As `start_upload`.
    """
    _check_name(name)
    check_url(url, allow_private=svc.settings.allow_private_urls, field="url")
    digest = (sha256 or "").lower()
    if digest and not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise InvalidInputError("sha256", "must be 64 hex digits")
    _check_config(model_type, config)
    existing = _admit(svc, name, model_type, digest, update)
    key = _new_key(svc, name, model_type)
    pending = _pending(svc, ModelStage.IMPORTING, key, config, sha256=digest, source=url)
    model = _register(svc, name, model_type, existing, pending)
    _queue_job(svc, "import", name, key)
    return model


def abort_upload(svc: Services, name: str) -> Model:
    """Abort the version on its way in (an upload, or a job in progress, which then stops at
    its next progress write). A model that never became usable goes away with it.

    Raises NotFoundError, or ConflictError when nothing is pending.
    """
    model = svc.models.get(name)
    pending = model.pending
    if pending is None:
        raise ConflictError(f"model {name} has no upload in progress")
    _drop_pending(svc, model, pending)
    if model.status is ModelStatus.REGISTERING:
        return _forget(svc, svc.models.get(name))
    return svc.models.get(name)


def _drop_pending(svc: Services, model: Model, pending: PendingVersion) -> None:
    try:
        changes = ModelChanges(pending=None, modified_at=svc.clock.now())
        svc.models.update(model.name, changes, pending_key=pending.key)
    except StaleWriteError:
        pass  # someone else replaced or removed it
    if pending.upload_id:
        svc.blobs.abort_multipart(pending.key, pending.upload_id)
    if pending.key != model.key or model.status is ModelStatus.REGISTERING:
        svc.blobs.delete_prefix(pending.key)


# --- jobs ----------------------------------------------------------------------------------


def _queue_job(svc: Services, job: str, name: str, key: str) -> None:
    if svc.jobs is None:
        raise RuntimeError("no model job queue configured (SD_JOBS_QUEUE_URL)")
    svc.jobs.send({"job": job, "name": name, "key": key})


# --- reading -------------------------------------------------------------------------------


def get_model(svc: Services, name: str) -> Model:
    """Raises NotFoundError."""
    return svc.models.get(name)


def list_models(svc: Services, model_type: ModelType | None = None) -> list[Model]:
    """Every model (of `model_type`), by name."""
    models = svc.models.list()
    return models if model_type is None else [m for m in models if m.type is model_type]


# --- rename and delete ---------------------------------------------------------------------


def rename_model(svc: Services, name: str, new_name: str) -> Model:
    """Give a usable model another name. Its function (which serves the old name) goes; the
    next task under the new name starts one. Tasks still queued under the old name fail.

    Raises
    ------
    InvalidInputError
        A bad new name (field `newName`).
    NotFoundError
        No such model.
    ConflictError
        The model is not usable, has a version on its way in, or the new name is taken.
    """
    _check_name(new_name, "newName")
    model = svc.models.get(name)
    if not model.usable or (model.pending is not None and model.pending.error is None):
        raise ConflictError(f"model {name} cannot be renamed while it is not usable or busy")
    if new_name == name:
        return model
    now = svc.clock.now()
    renamed = model.model_copy(
        update={
            "name": new_name,
            "status": ModelStatus.UNLOADED,
            "pending": None,
            "modified_at": now,
        }
    )
    svc.models.create(renamed)  # ConflictError if the new name is taken
    svc.fleet.delete(name)
    svc.models.update(name, ModelChanges(status=ModelStatus.DELETED, pending=None, modified_at=now))
    return renamed


def drop_cache(svc: Services, sha256: str) -> None:
    """Remove this machine's cached copy of a model file (the local stack's workers share the
    cache; on AWS a function's copies live in its /tmp and go with it)."""
    if any(m.sha256 == sha256 for m in svc.models.list()):
        return  # the same file registered under another name
    shutil.rmtree(svc.settings.model_cache_dir / sha256, ignore_errors=True)


def _forget(svc: Services, model: Model) -> Model:
    if model.pending is not None:
        if model.pending.upload_id:
            svc.blobs.abort_multipart(model.pending.key, model.pending.upload_id)
        svc.blobs.delete_prefix(model.pending.key)
    svc.blobs.delete_prefix(model.key)
    changes = ModelChanges(status=ModelStatus.DELETED, pending=None, modified_at=svc.clock.now())
    deleted = svc.models.update(model.name, changes)
    if model.status is not ModelStatus.REGISTERING:
        drop_cache(svc, model.sha256)
    return deleted


def delete_model(svc: Services, name: str) -> Model:
    """Delete a model: its inference function, its stored file(s), an upload in progress and
    the cached copies. Raises NotFoundError."""
    model = svc.models.get(name)
    svc.fleet.delete(name)
    deleted = _forget(svc, model)
    unpark_model(svc, name)  # its waiting tasks end now, saying why, instead of never
    return deleted


def not_ready(svc: Services) -> str | None:
    """Why the service cannot take a request that names no model yet: its default model's
    first version is still being uploaded or verified (a request would get 409). None: ready,
    also when there is no default model or it was refused (requests then say why)."""
    try:
        model = svc.models.get(svc.settings.default_model)
    except NotFoundError:
        return None
    if model.status is ModelStatus.REGISTERING and model.error is None:
        stage = model.pending.stage.value if model.pending else "registering"
        return f"the default model {model.name} is not ready yet ({stage})"
    return None
