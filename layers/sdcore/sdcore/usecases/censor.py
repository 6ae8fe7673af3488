"""The NSFW censor's policy, per deployment (SD_CENSOR) and per user (a user's own setting may
only tighten it): `flag` records each picture's score, `blur` returns the pictures at or over
the threshold heavily blurred, `block` returns none of them (a task left with no picture fails
with the reason). Input images are judged too when SD_CENSOR_INPUTS says so: over the threshold,
`blur` and `block` refuse the task (a picture derived from a refused one is not made), `flag`
records their scores.

`flag` changes no picture, so its scores of a task's outputs are recorded just after the task
has ended (`record_flags`): nobody's answer waits for the classifier."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageFilter

from sdcore.domain.models import TaskChanges, TaskStatus, UserChanges
from sdcore.errors import InvalidInputError, NotFoundError
from sdcore.metric_names import CENSOR_BLOCKS
from sdcore.services import Services

log = logging.getLogger(__name__)
MODES = ("off", "flag", "blur", "block")  # weakest first


def strictest(*modes: str | None) -> str:
    """The strictest of the given modes (None and unknown ones count as off)."""
    return max((m for m in modes if m in MODES), key=MODES.index, default="off")


def check_mode(value: Any, field_name: str = "censor") -> str:
    """A censor mode a caller asks for. Raises InvalidInputError naming `field_name`."""
    if value not in MODES:
        raise InvalidInputError(field_name, f"must be one of {', '.join(MODES)}, got {value!r}")
    return str(value)


def user_censor(svc: Services, user: str) -> str | None:
    """The censor mode `user` set for their own tasks (None: none, or no such user)."""
    try:
        return svc.users.get(user).censor if user else None
    except NotFoundError:
        return None


def set_user_censor(svc: Services, user: str, mode: str | None) -> None:
    """Set `user`'s own mode (None clears it). Raises InvalidInputError naming `censor`
    (also for a caller without a user record: auth is off)."""
    if mode is not None:
        check_mode(mode)
    try:
        svc.users.update(user, UserChanges(censor=mode))
    except NotFoundError:
        raise InvalidInputError("censor", "a censor setting needs a user key") from None


def blur(image: Image.Image) -> Image.Image:
    """Blurred past recognition: a radius of a tenth of the longer side (at least 8 px)."""
    radius = max(8, max(image.size) // 10)
    return image.filter(ImageFilter.GaussianBlur(radius))


@dataclass
class Judged:
    """The pictures to return (blurred or left out as the mode says) and what to record."""

    images: list[Image.Image]
    kept: list[int]  # the indices (in the engine's output) of the pictures returned
    record: dict[str, Any] = field(default_factory=dict)  # the task's info["censor"]

    @property
    def blocked_all(self) -> bool:
        return not self.images and self.record.get("blocked") is not None


def _scores(svc: Services, images: list[Image.Image]) -> list[float]:
    if svc.censor is None:
        raise RuntimeError("SD_CENSOR is on but no censor is configured")
    return [round(s, 4) for s in svc.censor.scores(images)]


def judge_outputs(svc: Services, images: list[Image.Image], mode: str) -> Judged:
    """Apply `mode` to a task's pictures. Raises RuntimeError when the classifier fails (the
    task then fails: a picture is never returned unjudged)."""
    if mode == "off" or not images:
        return Judged(images, list(range(len(images))))
    threshold = svc.settings.censor_threshold
    scores = _scores(svc, images)
    over = [i for i, s in enumerate(scores) if s >= threshold]
    record: dict[str, Any] = {
        "mode": mode,
        "classifier": svc.censor.name if svc.censor else "",
        "threshold": threshold,
        "scores": scores,
        "flagged": over,
    }
    if over and mode in ("blur", "block"):
        action = "blurred" if mode == "blur" else "blocked"
        svc.metrics.count(CENSOR_BLOCKS, len(over), stage="output", action=action)
    if mode == "blur":
        record["blurred"] = over
        out = [blur(im) if i in over else im for i, im in enumerate(images)]
        return Judged(out, list(range(len(images))), record)
    if mode == "block":
        record["blocked"] = over
        kept = [i for i in range(len(images)) if i not in over]
        return Judged([images[i] for i in kept], kept, record)
    return Judged(images, list(range(len(images))), record)


def record_flags(svc: Services, task_id: str, images: list[Image.Image]) -> None:
    """`flag` mode's scores of a succeeded task's pictures, merged into its `info.censor` (with
    its input scores, if any). The pictures are out already: a classifier that fails is
    recorded as `error` there, and logged."""
    try:
        record = judge_outputs(svc, images, "flag").record
    except Exception as exc:
        log.exception("the NSFW censor could not score task %s's pictures", task_id)
        record = {"mode": "flag", "error": f"{type(exc).__name__}: {exc}"}
    try:
        task = svc.tasks.get(task_id)
    except NotFoundError:  # deleted meanwhile: nothing to record on
        return
    censor = {**record, **(task.info.get("censor") or {})}
    info = {**task.info, "censor": censor}
    svc.tasks.update_while(task_id, TaskStatus.SUCCEEDED, TaskChanges(info=info))


def judge_inputs(svc: Services, images: list[Image.Image], mode: str) -> dict[str, Any] | None:
    """The input images' scores when SD_CENSOR_INPUTS is on (None otherwise). Raises
    InvalidInputError naming `init_images` when one is over the threshold and `mode` blurs or
    blocks."""
    if not svc.settings.censor_inputs or mode == "off" or not images:
        return None
    threshold = svc.settings.censor_threshold
    scores = _scores(svc, images)
    over = [i for i, s in enumerate(scores) if s >= threshold]
    if over and mode in ("blur", "block"):
        svc.metrics.count(CENSOR_BLOCKS, len(over), stage="input", action="refused")
        raise InvalidInputError(
            "init_images",
            f"refused by the NSFW censor (image {over[0]} scored {scores[over[0]]:.2f}, "
            f"threshold {threshold:g})",
        )
    return {"input_scores": scores, "inputs_flagged": over}
