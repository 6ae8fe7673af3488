"""Batches: one ordinary task per template (the caller's quota, caps and history apply to each),
followed as one, cancelled as one, and compared in a grid once every task has ended.

The grid is drawn lazily: by the first read of the batch that finds every task ended. Its object
key is fixed by the batch id and the batch store keeps the first key recorded, so two readers
racing draw the same picture and both answer it; no process has to be told that a task ended."""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from typing import Any

from PIL import Image

from sdcore.domain.models import Task, TaskStatus
from sdcore.domain.templates import Batch, BatchEntry, Template
from sdcore.errors import InvalidInputError, NotFoundError
from sdcore.ports.templates import BatchStore
from sdcore.services import Services
from sdcore.usecases.auth import Principal
from sdcore.usecases.idempotency import submit_once
from sdcore.usecases.styles import apply_styles
from sdcore.usecases.submit import Idempotency, Submission, submit
from sdcore.usecases.tasks import request_cancel
from sdcore.usecases.templates import Build, get_template, list_templates, template_request
from sdcore.webui.grids import captioned_grid

MAX_BATCH = 16  # templates in one batch
BATCH_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # ids are made here (IdFactory: 32 hex digits)
GRID_COLUMNS = 4
_LABEL_VALUE_CHARS = 40
# fields never compared in a label: images, and what the caller gave every task alike
_UNLABELLED = frozenset({"prompt", "init_images", "mask", "controlnet", "webhook", "infotext"})


def _batches(svc: Services) -> BatchStore:
    if svc.batches is None:
        raise RuntimeError("this deployment has no batch store")
    return svc.batches


def _short(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= _LABEL_VALUE_CHARS else text[: _LABEL_VALUE_CHARS - 3] + "..."


def labels(templates: list[Template]) -> list[str]:
    """Each template's name and, a line each, the fields in which the templates differ (the
    type too, when they differ in it); a field a template leaves out reads "default"."""
    keys = sorted({k for t in templates for k in t.fields} - _UNLABELLED)
    differing = [k for k in keys if len({json.dumps(t.fields.get(k)) for t in templates}) > 1]
    kinds = {t.kind for t in templates}
    out = []
    for t in templates:
        lines = [t.name] + ([t.kind.value] if len(kinds) > 1 else [])
        lines += [f"{k}: {_short(t.fields[k]) if k in t.fields else 'default'}" for k in differing]
        out.append("\n".join(lines))
    return out


def _resolve(
    svc: Services, who: Principal, names: list[str] | None, folder: str | None
) -> list[Template]:
    if (names is None) == (folder is None):
        raise InvalidInputError("templates", "give either `templates` (names) or `folder`")
    if names is not None:
        if len(set(names)) != len(names):
            raise InvalidInputError("templates", "a template is named twice")
        found = []
        for name in names:
            try:
                found.append(get_template(svc, who, name))
            except NotFoundError:
                raise InvalidInputError("templates", f"no template named {name}") from None
    else:
        mine: dict[str, Template] = {}
        for t in list_templates(svc, who):  # the caller's first: they hide shared namesakes
            if t.folder == folder and t.name not in mine:
                mine[t.name] = t
        found = sorted(mine.values(), key=lambda t: t.name)
        if not found:
            raise InvalidInputError("folder", f"no template in folder {folder!r}")
    if not 1 <= len(found) <= MAX_BATCH:
        raise InvalidInputError("templates", f"1 to {MAX_BATCH} templates")
    return found


def create_batch(
    svc: Services,
    who: Principal,
    prompt: str,
    build: Build,
    names: list[str] | None = None,
    folder: str | None = None,
    init_images: list[str] | None = None,
    grid: bool = True,
    overrides: dict[str, Any] | None = None,
    idempotency: Idempotency | None = None,
) -> BatchState:
    """One task per template (`names`, or every template in `folder`, the caller's hiding the
    shared of the same name), each with `prompt` merged in and `overrides` applied. Every
    request is checked before the first task is recorded; a task refused at submit (quota, cap)
    cancels those before it. An `idempotency` key makes a repeat answer the first batch.

    Raises
    ------
    InvalidInputError
        No or too many templates, an unknown name, an empty folder, a request a template makes
        that its schema refuses (an override's named `overrides.<field>`), a bad key.
    OverCapError
        The caller's quota ran out part way (the batch's tasks so far are cancelled).
    ConflictError
        The Idempotency-Key was used with another body.
    """
    if idempotency is None:
        return _create(svc, who, prompt, build, names, folder, init_images, grid, overrides)
    if not 1 <= len(idempotency.key) <= 255:
        raise InvalidInputError("Idempotency-Key", "1 to 255 characters")

    def run() -> str:
        made = _create(svc, who, prompt, build, names, folder, init_images, grid, overrides)
        return made.batch.batch_id

    # batch keys apart from task keys: the same key may name a task and a batch
    batch_id = submit_once(svc, who.user, f"batch:{idempotency.key}", idempotency.body, run)
    return get_batch(svc, who, batch_id)


def _create(
    svc: Services,
    who: Principal,
    prompt: str,
    build: Build,
    names: list[str] | None,
    folder: str | None,
    init_images: list[str] | None,
    grid: bool,
    overrides: dict[str, Any] | None,
) -> BatchState:
    templates = _resolve(svc, who, names, folder)
    requests: list[Submission] = []
    for t in templates:
        try:
            request, styles = template_request(t, prompt, build, init_images, overrides)
            requests.append(apply_styles(svc, who, request, styles))
        except InvalidInputError as exc:
            raise InvalidInputError(exc.field, f"template {t.name}: {exc.message}") from None
    tasks: list[Task] = []
    try:
        for request in requests:
            tasks.append(submit(svc, who, request))
    except Exception:
        for task in tasks:
            request_cancel(svc, task.task_id)
        raise
    now = svc.clock.now()
    batch = Batch(
        batch_id=svc.ids.new_id(),
        owner=who.user,
        prompt=prompt,
        entries=[
            BatchEntry(template=t.name, task_id=task.task_id, label=label)
            for t, task, label in zip(templates, tasks, labels(templates), strict=True)
        ],
        grid=grid,
        created_at=now,
        expires_at=int(now + svc.settings.task_ttl_days * 86400),
    )
    _batches(svc).create(batch)
    return BatchState(batch, tasks, None)


@dataclass(frozen=True)
class BatchState:
    """A batch, its tasks as they are now, and its grid's URL once drawn."""

    batch: Batch
    tasks: list[Task]
    grid_url: str | None

    @property
    def ended(self) -> bool:
        return all(t.status.terminal for t in self.tasks)

    @property
    def progress(self) -> float:
        """Every task's progress together, 0..1 (an ended task counts whole)."""
        done = [1.0 if t.status.terminal else t.progress for t in self.tasks]
        return sum(done) / len(done) if done else 1.0

    @property
    def status(self) -> str:
        """running until every task ended; then succeeded (all did), cancelled (all were),
        failed (none succeeded) or partial."""
        if not self.ended:
            return "running"
        statuses = {t.status for t in self.tasks}
        if statuses == {TaskStatus.SUCCEEDED}:
            return "succeeded"
        if statuses == {TaskStatus.CANCELLED}:
            return "cancelled"
        return "partial" if TaskStatus.SUCCEEDED in statuses else "failed"


def _owned(svc: Services, who: Principal, batch_id: str) -> Batch:
    if not BATCH_ID.fullmatch(batch_id):  # not one this API made
        raise NotFoundError(f"batch {batch_id[:64]} not found")
    batch = _batches(svc).get(batch_id)
    if batch.owner != who.user and not who.is_admin:
        raise NotFoundError(f"batch {batch_id} not found")  # not theirs to know it exists
    return batch


def grid_key(batch: Batch) -> str:
    """Where a batch's grid is stored: with its owner's results."""
    return f"outputs/{batch.owner}/batches/{batch.batch_id}/grid.png"


def draw_grid(svc: Services, batch: Batch, tasks: list[Task]) -> bytes:
    """The comparison grid: each task's first picture (black where it gave none) under its
    template's label, `GRID_COLUMNS` a row."""
    cells: list[Image.Image | None] = []
    captions = []
    for entry, task in zip(batch.entries, tasks, strict=True):
        cell = None
        if task.status is TaskStatus.SUCCEEDED and task.images:
            cell = Image.open(io.BytesIO(svc.blobs.get(task.images[0])))
            cell.load()
        cells.append(cell)
        ended = "" if task.status is TaskStatus.SUCCEEDED else f"\n({task.status.value})"
        captions.append(entry.label + ended)
    picture = captioned_grid(cells, captions, min(GRID_COLUMNS, len(cells)))
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()


def get_batch(svc: Services, who: Principal, batch_id: str) -> BatchState:
    """The batch and its tasks; the first read after every task ended draws and stores the grid
    (when the batch asked for one).

    Raises NotFoundError, also for another caller's batch (an admin sees every batch)."""
    batch = _owned(svc, who, batch_id)
    tasks = [svc.tasks.get(e.task_id) for e in batch.entries]
    state = BatchState(batch, tasks, None)
    if batch.grid and batch.grid_key is None and state.ended:
        key = grid_key(batch)
        svc.blobs.put(key, draw_grid(svc, batch, tasks), "image/png")
        batch = _batches(svc).set_grid(batch.batch_id, key)
    url = svc.blobs.url(batch.grid_key, svc.settings.url_expires_s) if batch.grid_key else None
    return BatchState(batch, tasks, url)


def cancel_batch(svc: Services, who: Principal, batch_id: str) -> BatchState:
    """Cancel every task of the batch not ended yet (idempotent). Raises NotFoundError."""
    batch = _owned(svc, who, batch_id)
    for entry in batch.entries:
        request_cancel(svc, entry.task_id)
    return get_batch(svc, who, batch_id)
