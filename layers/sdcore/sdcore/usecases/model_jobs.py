"""Model jobs: verify a version that came in (join its parts, read it back: size, SHA-256, and
that it loads as what it claims to be), import one from a URL, and the schedule's clean-up (the
sweep of abandoned uploads and dead jobs, and `unloaded` for models no worker holds).

Jobs run from a queue (the admin function on AWS, whose 15 minutes fit a multi-GB checkpoint;
a thread of the local stack locally), so the admin API answers at once.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sdcore import configs
from sdcore.domain.models import (
    AUTO_CONFIG,
    Model,
    ModelChanges,
    ModelStage,
    ModelStatus,
    ModelType,
    PendingVersion,
)
from sdcore.errors import InvalidInputError, NotFoundError, StaleWriteError
from sdcore.guards.modelfiles import (
    ARCHITECTURE_CONFIGS,
    ConfigFor,
    Inspection,
    ModelFileError,
    inspect_stream,
)
from sdcore.guards.netguard import stream_url
from sdcore.metric_names import UPLOAD_BYTES, VERIFICATION_TIME
from sdcore.services import Services
from sdcore.usecases.models import (
    BUSY,
    MAX_MODEL_BYTES,
    drop_cache,
    find_model,
)

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 2.0  # a job writes its progress at most this often (table writes cost)


class _JobProgress:
    """Writes a job's progress at most every PROGRESS_EVERY_S; a write that finds the pending
    version gone or replaced raises StaleWriteError, which stops the job."""

    def __init__(self, svc: Services, name: str, pending: PendingVersion) -> None:
        self.svc, self.name, self.pending = svc, name, pending
        self.last = svc.clock.now()

    def __call__(self, done: int) -> None:
        now = self.svc.clock.now()
        if now - self.last < PROGRESS_EVERY_S:
            return
        self.last = now
        self.write(bytes_done=done)

    def write(self, **fields: Any) -> None:
        self.pending = self.pending.model_copy(
            update={**fields, "updated_at": self.svc.clock.now()}
        )
        self.svc.models.update(
            self.name, ModelChanges(pending=self.pending), pending_key=self.pending.key
        )


def run_job(svc: Services, body: dict[str, Any]) -> str:
    """Run one model job (`{"job": "verify"|"import", "name", "key"}`); returns its outcome.

    A job whose pending version is gone or was replaced does nothing ("stale"), so a
    redelivered message is harmless. A model that fails verification is not an error of the
    job: its reason is recorded. Other exceptions propagate (the queue retries the job).
    """
    name, key, job = str(body["name"]), str(body["key"]), str(body["job"])
    model = find_model(svc, name)
    if model is None or model.pending is None or model.pending.key != key:
        return "stale"
    pending = model.pending
    want = ModelStage.IMPORTING if job == "import" else ModelStage.VERIFYING
    if pending.stage is not want or pending.error is not None:
        return "stale"
    try:
        if job == "import":
            pending = _download(svc, model, pending)
        return _measured_verify(svc, model, pending)
    except _Ended:
        return "failed"
    except StaleWriteError:
        log.info("model %s: pending version %s was aborted or replaced", name, key)
        current = find_model(svc, name)
        mine = current is not None and key in (current.key, current.pending and current.pending.key)
        if not mine:
            svc.blobs.delete_prefix(key)  # what the job wrote after the abort cleaned up
        return "stale"


def _download(svc: Services, model: Model, pending: PendingVersion) -> PendingVersion:
    assert pending.source is not None
    progress = _JobProgress(svc, model.name, pending)
    done = 0

    def counted(chunks: Any) -> Any:
        nonlocal done
        for chunk in chunks:
            done += len(chunk)
            progress(done)
            yield chunk

    try:
        with stream_url(
            pending.source,
            allow_private=svc.settings.allow_private_urls,
            max_bytes=MAX_MODEL_BYTES,
            timeout_s=svc.settings.import_timeout_s,
            field="url",
        ) as (length, chunks):
            if length is not None:
                progress.write(size=length)
            size = svc.blobs.put_stream(pending.key, counted(chunks))
    except InvalidInputError as exc:
        _fail(svc, model, progress.pending, f"import failed: {exc}")
        raise _Ended() from None
    progress.write(stage=ModelStage.VERIFYING, size=size, bytes_done=0)
    return progress.pending


class _Ended(Exception):
    """The job ended with its reason recorded on the model."""


def _measured_verify(svc: Services, model: Model, pending: PendingVersion) -> str:
    """`_verify`, timed; a verified version's size recorded."""
    started = svc.clock.now()
    with svc.tracing.span("verify upload"):
        outcome = _verify(svc, model, pending)
    kind = model.type.value
    seconds = svc.clock.now() - started
    svc.metrics.observe(VERIFICATION_TIME, seconds, type=kind, outcome=outcome)
    if outcome == "verified":
        svc.metrics.observe(UPLOAD_BYTES, svc.blobs.size(pending.key), type=kind)
    return outcome


def _verify(svc: Services, model: Model, pending: PendingVersion) -> str:
    progress = _JobProgress(svc, model.name, pending)
    if pending.upload_id is not None:  # an upload: join its parts first
        try:
            parts = svc.blobs.list_parts(pending.key, pending.upload_id)
            svc.blobs.complete_multipart(pending.key, pending.upload_id, parts)
        except NotFoundError as exc:
            # joined already by a run of this job that stopped before it could say so
            if not svc.blobs.exists(pending.key):
                _fail(svc, model, progress.pending, f"the parts could not be joined: {exc}")
                return "failed"
        except InvalidInputError as exc:
            _fail(svc, model, progress.pending, f"the parts could not be joined: {exc}")
            return "failed"
        progress.write(upload_id=None)
    received = svc.blobs.size(pending.key)
    if pending.size and received != pending.size:
        _fail(
            svc,
            model,
            progress.pending,
            f"size mismatch: registered {pending.size} bytes, received {received}",
        )
        return "failed"
    try:
        found = inspect_stream(
            svc.blobs.iter_chunks(pending.key),
            model.type,
            _loads_with(pending.config) if model.type is ModelType.CHECKPOINT else None,
            on_bytes=progress,
            allow_pickle=svc.settings.allow_pickle,
        )
    except ModelFileError as exc:
        if pending.sha256 and exc.sha256 != pending.sha256:
            reason = f"sha256 mismatch: registered {pending.sha256}, received {exc.sha256}"
        else:
            reason = f"not a valid {model.type.value}: {exc}"
        _fail(svc, model, progress.pending, reason)
        return "failed"
    if pending.sha256 and found.sha256 != pending.sha256:
        reason = f"sha256 mismatch: registered {pending.sha256}, received {found.sha256}"
        _fail(svc, model, progress.pending, reason)
        return "failed"
    _promote(svc, model, progress.pending, found)
    return "verified"


def _loads_with(config: str) -> ConfigFor:
    """The config folder a single-file checkpoint registered with `config` loads with: that
    one, or with `auto` the shipped config of its architecture (as the engine picks it)."""

    def folder(architecture: str) -> Path:
        return configs.config_dir(
            ARCHITECTURE_CONFIGS[architecture] if config == AUTO_CONFIG else config
        )

    return folder


def _fail(svc: Services, model: Model, pending: PendingVersion, reason: str) -> None:
    """Record why a pending version was refused and drop its file. A model that never became
    usable stays unusable with the reason (tasks naming it get 409); a model being updated
    keeps serving its current version."""
    if pending.upload_id:
        svc.blobs.abort_multipart(pending.key, pending.upload_id)
    svc.blobs.delete_prefix(pending.key)
    failed = pending.model_copy(
        update={"error": reason, "upload_id": None, "updated_at": svc.clock.now()}
    )
    fields: dict[str, Any] = {"pending": failed, "modified_at": svc.clock.now()}
    if model.status is ModelStatus.REGISTERING:
        fields["error"] = reason
    svc.models.update(model.name, ModelChanges(**fields), pending_key=pending.key)
    log.warning("model %s: version refused: %s", model.name, reason)


def _promote(svc: Services, model: Model, pending: PendingVersion, found: Inspection) -> None:
    """Make the verified version current. Tasks running on the old one finish on it (a worker
    holds it in memory); a worker picks the new one up before its next task."""
    fields: dict[str, Any] = {
        "sha256": found.sha256,
        "size": found.size,
        "key": pending.key,
        "format": found.format,
        "details": found.details,
        "config": pending.config,
        "pending": None,
        "error": None,
        # the current version is loaded nowhere yet (a worker reloads on its next task)
        "status": ModelStatus.UNLOADED,
        "modified_at": svc.clock.now(),
    }
    first = model.status is ModelStatus.REGISTERING
    if not first:
        fields["version"] = model.version + 1
    svc.models.update(model.name, ModelChanges(**fields), pending_key=pending.key)
    if not first and model.key != pending.key:
        svc.blobs.delete_prefix(model.key)
        drop_cache(svc, model.sha256)
    log.info("model %s: version %s verified (%s)", model.name, found.sha256[:12], found.format)


def job_dead_lettered(svc: Services, body: dict[str, Any], receives: int) -> str:
    """A model job whose message failed `receives` times and was dead-lettered: its version is
    refused with the reason (at once, not when the sweep finds the job silent)."""
    name, key = str(body.get("name", "")), str(body.get("key", ""))
    model = find_model(svc, name)
    if model is None or model.pending is None or model.pending.key != key:
        return "stale"
    if model.pending.error is not None:
        return "stale"
    job = str(body.get("job", "job"))
    try:
        _fail(svc, model, model.pending, f"the {job} job failed {receives} times")
    except StaleWriteError:
        return "stale"
    return "failed"


# --- the schedule --------------------------------------------------------------------------


def sweep_uploads(svc: Services) -> list[str]:
    """Clean up what was abandoned (run on control's schedule): uploads not completed within
    SD_UPLOAD_EXPIRY_SECONDS (aborted; a new model is left unusable with the reason), jobs
    silent for SD_JOB_STALE_SECONDS (they died: the version is refused), and multipart uploads
    under models/ that no model refers to. Returns what it cleaned (names and keys)."""
    now = svc.clock.now()
    expiry, stale = svc.settings.upload_expiry_s, svc.settings.job_stale_s
    swept: list[str] = []
    live: set[str] = set()
    for model in svc.models.list():
        pending = model.pending
        if pending is None or pending.error is not None:
            continue
        reason = None
        if pending.stage is ModelStage.UPLOADING and pending.started_at < now - expiry:
            reason = f"upload abandoned: not completed within {expiry / 3600:g} h"
        elif pending.stage in BUSY and pending.updated_at < now - stale:
            reason = f"{pending.stage.value} stopped: no progress for {stale:g} s (the job died)"
        if reason is None:
            if pending.upload_id:
                live.add(pending.upload_id)
            continue
        try:
            _fail(svc, model, pending, reason)
        except StaleWriteError:
            continue
        swept.append(model.name)
    for upload in svc.blobs.list_multipart("models/"):
        if upload.upload_id not in live and upload.initiated < now - expiry:
            svc.blobs.abort_multipart(upload.key, upload.upload_id)
            swept.append(upload.key)
    return swept


def reconcile_loaded(svc: Services) -> list[str]:
    """Mark `unloaded` the models no execution environment holds any more (run on control's
    schedule): their function is gone or stopped (a local worker that idled out or died), or
    was not invoked for SD_IDLE_SECONDS (Lambda reclaims idle environments without telling;
    this is the estimate). Returns the names changed."""
    now = svc.clock.now()
    records = {r.model: r for r in svc.fleet.list()}
    busy = {lease.model for lease in svc.slots.active(now)}  # a task runs on it right now
    changed = []
    for model in svc.models.list():
        if model.status not in (ModelStatus.LOADING, ModelStatus.LOADED) or model.name in busy:
            continue
        record = records.get(model.name)
        # last_used is written at most once a minute, hence the margin
        last = record.last_used if record is not None else None
        idle = last is not None and now - last > svc.settings.idle_s + 60
        if record is None or record.status not in ("active", "pending") or idle:
            try:
                svc.models.update(
                    model.name,
                    ModelChanges(status=ModelStatus.UNLOADED),
                    {ModelStatus.LOADING, ModelStatus.LOADED},
                )
            except (StaleWriteError, NotFoundError):
                continue
            changed.append(model.name)
    return changed
