"""Removals (`POST /edits/remove`, the webui's `remove people` script): checked at submit
against the segmenter they name, so an unknown class label is a 422, not a failed task."""

from __future__ import annotations

from sdcore.domain.models import GenerationParams, ModelType, TaskKind
from sdcore.domain.removal import BUILTIN_LABELS, BUILTIN_SEGMENTER
from sdcore.errors import InvalidInputError
from sdcore.services import Services
from sdcore.usecases.networks import resolve_network


def segmenter_labels(svc: Services, name: str | None) -> tuple[str, ...]:
    """The class labels of the segmenter `name` (None: the built-in person segmenter).

    Raises
    ------
    InvalidInputError
        `name` is not a registered segmenter (field `segmenter`).
    ConflictError
        It is not ready.
    """
    if name is None or name == BUILTIN_SEGMENTER:
        return BUILTIN_LABELS
    model = resolve_network(svc, name, ModelType.SEGMENTER, "segmenter")
    return tuple(str(label) for label in model.details.get("labels") or [])


def check_removal(svc: Services, params: GenerationParams, has_mask: bool = False) -> None:
    """A removal's segmenter and target, checked before it waits for a worker.

    Raises
    ------
    InvalidInputError
        Not an img2img task, a mask given, an unknown segmenter, or a target it does not know
        (listing them).
    """
    spec = params.remove
    if spec is None:
        return
    if params.kind is not TaskKind.IMG2IMG:
        raise InvalidInputError("target", "a removal is an img2img task")
    if has_mask:
        raise InvalidInputError("mask", "a removal draws its own mask: send none")
    labels = segmenter_labels(svc, spec.segmenter)
    if spec.target not in labels:
        raise InvalidInputError(
            "target", f"unknown target {spec.target!r} for {spec.segmenter_name}; "
            f"valid: {', '.join(labels)}"
        )  # fmt: skip
