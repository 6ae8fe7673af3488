"""Inference: run one task on the loaded checkpoint, report progress, honour cancellation,
store the PNGs and end the task."""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from PIL import Image

from sdcore.domain.models import (
    CANCELLED_BY_REQUEST,
    Lease,
    ModelType,
    Task,
    TaskChanges,
    TaskKind,
    TaskStatus,
)
from sdcore.errors import DomainError, NotFoundError, StaleWriteError
from sdcore.metric_names import QUEUE_WAIT, STEPS_PER_SECOND, TASKS_STARTED
from sdcore.ports import (
    BatchItem,
    ControlInput,
    Engine,
    EngineInputs,
    EngineResult,
    NetworkFile,
    StepAction,
    StepInfo,
)
from sdcore.services import Services
from sdcore.usecases.batching import batch_record, claim_riders
from sdcore.usecases.censor import (
    judge_inputs,
    judge_outputs,
    record_flags,
    strictest,
    user_censor,
)
from sdcore.usecases.control import slot_freed
from sdcore.usecases.measure import fleet_of
from sdcore.usecases.model_cache import network_file
from sdcore.usecases.networks import (
    INTERROGATOR_TYPES,
    control_preprocessor,
    face_restorer_names,
    registered_upscalers,
    resolve_face_restorer,
)
from sdcore.usecases.notify import end_task
from sdcore.webui.png_info import png_bytes
from sdcore.webui.prompt_syntax import extract_networks, mentions

log = logging.getLogger(__name__)
PREVIEW_MAX_SIDE = 128  # px, the longest side of a live preview


class _Heartbeat:
    """Keeps the heartbeats of the tasks running (a batch's: all of them) and the slot lease
    fresh, off the diffusion loop."""

    def __init__(
        self, svc: Services, task_ids: list[str], lease: Lease | None, every_s: float
    ) -> None:
        self.svc, self.task_ids, self.lease, self.every_s = svc, task_ids, lease, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            now = self.svc.clock.now()
            try:
                for task_id in self.task_ids:  # an ended task's beat is refused: harmless
                    self.svc.tasks.update_running(task_id, TaskChanges(heartbeat_at=now))
                if self.lease is not None:
                    self.svc.slots.renew(self.lease, now + self.svc.settings.lease_s)
            except Exception:  # a missed beat is harmless; the next one retries
                log.exception("heartbeat of tasks %s failed", self.task_ids)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class _Progress:
    """The step callback: throttled progress writes (with a live preview every
    `preview_every` steps when set), cancellation and skip checks."""

    def __init__(self, svc: Services, task: Task) -> None:
        self.svc = svc
        self.task_id = task.task_id
        self.interval = svc.settings.progress_interval_s
        self.preview_every = svc.settings.preview_every
        # the running transition has just been written: the first progress write can wait
        self.last_write = svc.clock.now()
        self.last_check = 0.0
        self.cancelled = False
        self.skips_seen = task.skip_requests  # skips asked before it ran skip nothing
        self.steps_seen = 0
        self.last_preview = 0  # steps_seen at the last preview
        self.last: StepInfo | None = None
        self.started = self.last_write
        self.limit_s = svc.settings.task_time_limit_s
        self.timed_out = False

    def final(self) -> dict[str, Any]:
        """The progress fields of a finished task, written with its end transition."""
        done: dict[str, Any] = {"progress": 1.0, "eta_s": 0.0, "current_image": None}
        if self.last is not None:
            done.update(
                sampling_step=self.last.step,
                sampling_steps=self.last.steps,
                job_no=self.last.job_no,
                job_count=self.last.job_count,
            )
        return done

    def _preview(self, step: StepInfo) -> dict[str, Any]:
        if not self.preview_every or step.preview is None:
            return {}
        if self.steps_seen - self.last_preview < self.preview_every:
            return {}
        self.last_preview = self.steps_seen
        image = step.preview()
        # latent resolution is already small (64 px for 512); the cap keeps a 2048 px task's
        # row far below DynamoDB's 400 KB item limit
        image.thumbnail((PREVIEW_MAX_SIDE, PREVIEW_MAX_SIDE))
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return {"current_image": base64.b64encode(buf.getvalue()).decode()}

    def __call__(self, step: StepInfo) -> StepAction:
        self.last = step
        self.steps_seen += 1
        now = self.svc.clock.now()
        # Time-throttled only: the final state is written by the task's end transition, so a
        # write at the last step would be one more table write per task for nothing.
        if now - self.last_write >= self.interval:
            self.last_write = now
            changes = TaskChanges(
                progress=round(step.progress, 4),
                sampling_step=step.step,
                sampling_steps=step.steps,
                job_no=step.job_no,
                job_count=step.job_count,
                eta_s=None if step.eta_s is None else round(step.eta_s, 3),
                heartbeat_at=now,
                **self._preview(step),
            )
            self.svc.tasks.update_running(self.task_id, changes)
        if now - self.started > self.limit_s:
            self.timed_out = True
            return StepAction.STOP
        action = StepAction.CONTINUE
        if now - self.last_check >= min(self.interval, 0.2):
            self.last_check = now
            task = self.svc.tasks.get(self.task_id)
            self.cancelled = task.cancel_requested
            if task.skip_requests > self.skips_seen:
                self.skips_seen = task.skip_requests
                action = StepAction.SKIP
        return StepAction.STOP if self.cancelled else action


def _load_inputs(svc: Services, task: Task) -> EngineInputs:
    def load(key: str) -> Image.Image:
        img = Image.open(io.BytesIO(svc.blobs.get(key)))
        img.load()
        return img

    params = task.params
    inputs = EngineInputs(
        init_images=[load(k) for k in params.init_images],
        mask=load(params.mask) if params.mask else None,
    )
    for name, field in registered_upscalers(params):  # extras, or the hires fix's
        inputs.upscalers[name] = network_file(svc, name, ModelType.UPSCALER, field)
    for name, field in face_restorer_names(params):
        model = resolve_face_restorer(svc, name, field)
        inputs.face_restorers[name] = network_file(svc, model.name, ModelType.FACE_RESTORER, field)
    if params.interrogate is not None:
        spec = params.interrogate
        model_type = INTERROGATOR_TYPES[spec.method]
        inputs.interrogator = network_file(svc, spec.model, model_type, "model")
    if params.remove is not None and params.remove.segmenter is not None:
        name = params.remove.segmenter
        inputs.segmenter = network_file(svc, name, ModelType.SEGMENTER, "segmenter")
    if params.kind in (TaskKind.EXTRAS, TaskKind.INTERROGATE):
        return inputs
    # the task's extra networks, fetched like checkpoints (blob store -> local model cache)
    _, loras = extract_networks(params.prompt, "prompt")
    for name, _weight in loras:
        inputs.loras[name] = network_file(svc, name, ModelType.LORA, "prompt")
    if params.vae is not None:
        inputs.vae = network_file(svc, params.vae, ModelType.VAE, "sd_vae")
    texts = (params.prompt, params.negative_prompt)
    inputs.embeddings = [
        network_file(svc, m.name, ModelType.EMBEDDING, "prompt")
        for m in svc.models.list()
        if m.type is ModelType.EMBEDDING and m.usable and mentions(m.name, *texts)
    ]
    inputs.controls = [  # the ControlNet units' models and images
        ControlInput(
            network_file(svc, unit.model, ModelType.CONTROLNET, f"controlnet[{n}].model"),
            load(unit.image) if unit.image else None,
            load(unit.mask) if unit.mask else None,
            _preprocessor(svc, unit.module, f"controlnet[{n}].module"),
        )
        for n, unit in enumerate(params.controlnet)
    ]
    return inputs


def _preprocessor(svc: Services, module: str, field: str) -> NetworkFile | None:
    """A depth module's `preprocessor` model on local disk (None: a model-free module)."""
    model = control_preprocessor(svc, module, field)
    return None if model is None else network_file(svc, model.name, ModelType.PREPROCESSOR, field)


def _end(svc: Services, task: Task, to: TaskStatus, changes: TaskChanges | None = None) -> None:
    if end_task(svc, task.task_id, task.end(to, svc.clock.now(), changes)) is None:
        log.warning("task %s was ended by someone else before it finished", task.task_id)


def _started(svc: Services, task: Task) -> None:
    labels = {"model": task.model, "fleet": fleet_of(svc, task.model)}
    svc.metrics.count(TASKS_STARTED, **labels)
    waited = (task.started_at or task.created_at) - task.created_at
    svc.metrics.observe(QUEUE_WAIT, max(0.0, waited), **labels)


def run_task(svc: Services, engine: Engine, task_id: str, lease: Lease | None) -> TaskStatus:
    """Run one dispatched task to its end. Returns the status it ended in.

    With SD_MAX_BATCH over 1 the task takes along queued compatible tasks of its checkpoint
    (`usecases.batching.claim_riders`) and runs them all in one `Engine.run_batch` call under
    its lease: one slot for the batch, released once when every task of it has ended. A
    duplicate delivery of a task already running or finished changes nothing.
    """
    svc.tracing.about(task_id)
    try:
        task = svc.tasks.get(task_id)
    except NotFoundError:
        if lease:
            svc.slots.release(lease)
            slot_freed(svc, lease.model)
        return TaskStatus.FAILED
    svc.tracing.about(task_id, task.model)
    if task.status is TaskStatus.QUEUED and task.cancel_requested:
        end_task(svc, task_id, task.cancel(svc.clock.now()))
    try:
        task = svc.tasks.transition(task_id, task.start(svc.clock.now(), lease))
    except StaleWriteError:
        current = svc.tasks.get(task_id)
        if current.status.terminal and lease:
            svc.slots.release(lease)
            slot_freed(svc, lease.model)
        return current.status
    _started(svc, task)
    try:
        riders = _riders(svc, task)
        for rider in riders:
            _started(svc, rider)
        batch = batch_record(task, riders) if riders else None
        runs = [_Run(svc, t, batch) for t in (task, *riders)]
        every_s = max(1.0, svc.settings.heartbeat_stale_s / 6)
        with _Heartbeat(svc, [run.task.task_id for run in runs], lease, every_s=every_s):
            return _execute(svc, engine, runs)[0]
    finally:
        if lease:
            svc.slots.release(lease)
            slot_freed(svc, lease.model)  # a parked task gets the freed slot now


def _riders(svc: Services, leader: Task) -> list[Task]:
    """The queued tasks the leader takes along; none when looking for them failed (the leader
    then runs alone: a rider claimed before the failure is retried by the reaper)."""
    try:
        return claim_riders(svc, leader)
    except Exception:
        log.exception("task %s found no tasks to batch with: it runs alone", leader.task_id)
        return []


def censor_mode(svc: Services, owner: str) -> str:
    """The censor mode for `owner`'s tasks: the deployment's, or theirs if stricter."""
    return strictest(svc.settings.censor, user_censor(svc, owner))


class _Run:
    """One task on its way through the engine, alone or in a batch: its step callback, its
    inputs once loaded, and its batch's record (None: it runs alone)."""

    def __init__(self, svc: Services, task: Task, batch: dict[str, Any] | None) -> None:
        self.task, self.batch = task, batch
        self.progress = _Progress(svc, task)  # its time limit counts from here
        self.inputs = EngineInputs()
        self.mode = "off"
        self.judged_inputs: dict[str, Any] | None = None

    def prepare(self, svc: Services) -> None:
        """Load its inputs and judge its input images (raises what the loading raises)."""
        self.inputs = _load_inputs(svc, self.task)
        self.mode = censor_mode(svc, self.task.owner)
        self.judged_inputs = judge_inputs(svc, [*self.inputs.init_images], self.mode)

    def end(self, svc: Services, to: TaskStatus, changes: TaskChanges | None = None) -> TaskStatus:
        """End the task as `to`; a batched task's info records its batch (merged with what the
        engine said of it), whatever the end."""
        if self.batch is not None:
            fields = changes.fields() if changes else {}
            info = dict(fields.get("info", self.task.info))
            info["batch"] = {**(info.get("batch") or {}), **self.batch}
            changes = TaskChanges(**{**fields, "info": info})
        _end(svc, self.task, to, changes)
        return to

    def fail(self, svc: Services, exc: BaseException) -> TaskStatus:
        if isinstance(exc, DomainError):
            return self.end(svc, TaskStatus.FAILED, TaskChanges(error=str(exc)))
        log.error("task %s failed", self.task.task_id, exc_info=exc)
        return self.end(svc, TaskStatus.FAILED, TaskChanges(error=f"{type(exc).__name__}: {exc}"))


def _execute(svc: Services, engine: Engine, runs: list[_Run]) -> list[TaskStatus]:
    """Run the tasks (one: `Engine.run`; several: one `Engine.run_batch` call) and end each as
    it would end alone. A task whose inputs fail to load fails alone; the others run. What
    no answer waits for (`flag` mode's scores) is done once every task has ended."""
    ended: dict[int, TaskStatus] = {}
    ready: list[tuple[int, _Run]] = []
    for n, run in enumerate(runs):
        try:
            run.prepare(svc)
            ready.append((n, run))
        except Exception as exc:
            ended[n] = run.fail(svc, exc)
    if ready:
        ran_from = svc.clock.now()
        answers = _generate(svc, engine, [run for _, run in ready])
        ran_s = svc.clock.now() - ran_from
        later: list[Callable[[], None]] = []
        for (n, run), answer in zip(ready, answers, strict=True):
            if isinstance(answer, BaseException):
                ended[n] = run.fail(svc, answer)
                continue
            try:
                ended[n] = _finish(svc, run, answer, ran_s, later)
            except Exception as exc:
                ended[n] = run.fail(svc, exc)
        for step in later:  # the tasks have ended: a failure here is logged, never raised
            try:
                step()
            except Exception:
                log.exception("recording after the end of a batch's tasks failed")
    return [ended[n] for n in range(len(runs))]


def _generate(
    svc: Services, engine: Engine, runs: list[_Run]
) -> list[EngineResult | BaseException]:
    """The engine's answer for each task: its result, or what it raised."""
    try:
        with svc.tracing.span("pipeline"):
            if len(runs) == 1:
                run = runs[0]
                return [engine.run(run.task.params, run.inputs, run.progress)]
            items = [BatchItem(run.task.params, run.inputs, run.progress) for run in runs]
            answers: list[EngineResult | BaseException] = list(engine.run_batch(items))
            if len(answers) != len(items):
                raise RuntimeError(f"the engine answered {len(answers)} of {len(items)} tasks")
            return answers
    except Exception as exc:  # the whole call failed: every task of it fails with the reason
        return [exc] * len(runs)


def _finish(
    svc: Services, run: _Run, result: EngineResult, ran_s: float, later: list[Callable[[], None]]
) -> TaskStatus:
    """End a task the engine answered: censor, PNGs with their infotext, the end transition.
    In `flag` mode the censor changes no picture, so the task ends first and its scores are
    recorded after (`record_flags`, appended to `later`): its answer does not wait for them."""
    task, progress = run.task, run.progress
    if progress.steps_seen and ran_s > 0:
        rate = progress.steps_seen / ran_s
        fleet = fleet_of(svc, task.model)
        svc.metrics.observe(STEPS_PER_SECOND, rate, model=task.model, fleet=fleet)
    if progress.timed_out:
        reason = f"time limit: ran longer than {progress.limit_s:g} s (SD_TASK_TIME_LIMIT)"
        return run.end(svc, TaskStatus.FAILED, TaskChanges(error=reason))
    if result.interrupted or progress.cancelled:
        return run.end(svc, TaskStatus.CANCELLED, TaskChanges(error=CANCELLED_BY_REQUEST))
    flag_after = run.mode == "flag" and bool(result.images)
    judged = judge_outputs(svc, result.images, "off" if flag_after else run.mode)
    censored = {**judged.record, **(run.judged_inputs or {})}
    if judged.blocked_all:
        reason = f"blocked by the NSFW censor: every picture scored {judged.record['scores']}"
        changes = TaskChanges(error=reason, info={"censor": censored})
        return run.end(svc, TaskStatus.FAILED, changes)
    infotexts = [result.infotexts[i] for i in judged.kept]
    keys, md5s = [], []
    for n, (image, infotext) in enumerate(zip(judged.images, infotexts, strict=True)):
        key = f"outputs/{task.owner or 'anonymous'}/{task.task_id}/{n}.png"
        data = png_bytes(image, infotext)
        svc.blobs.put(key, data, "image/png")
        keys.append(key)
        md5s.append(hashlib.md5(data).hexdigest())
    done = TaskChanges(
        images=keys,
        image_md5=md5s,
        # which execution environment ran it: a checkpoint stays loaded in its worker
        info={
            **result.info,
            **({"infotexts": infotexts} if "infotexts" in result.info else {}),
            "worker_pid": os.getpid(),
            **({"censor": censored} if censored else {}),
        },
        **progress.final(),
    )
    if flag_after:
        later.append(lambda: record_flags(svc, task.task_id, result.images))
    return run.end(svc, TaskStatus.SUCCEEDED, done)


def abandon_task(svc: Services, task_id: str, lease: Lease | None, reason: str) -> TaskStatus:
    """End a dispatched task that cannot run here (its model failed to load)."""
    svc.tracing.about(task_id)
    try:
        task = svc.tasks.get(task_id)
        end_task(svc, task_id, task.fail(reason, svc.clock.now()))
    except NotFoundError:
        pass
    if lease:
        svc.slots.release(lease)
        slot_freed(svc, lease.model)
    return TaskStatus.FAILED
