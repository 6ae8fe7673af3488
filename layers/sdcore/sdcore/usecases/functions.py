"""Inference function admin (the admin function's use cases): list, batch update, delete."""

from __future__ import annotations

import re

from sdcore.domain.models import FunctionChanges, FunctionRecord
from sdcore.errors import InvalidInputError, NotFoundError
from sdcore.services import Services


def list_functions(svc: Services) -> list[FunctionRecord]:
    """Every inference function, by name, with its status as the backend sees it now."""
    return svc.fleet.list()


def _targets(svc: Services, models: list[str] | None, moving: bool = False) -> list[str]:
    existing = {record.model for record in svc.fleet.list()}
    if models is None:
        return sorted(existing)
    if moving:  # a model is put on a fleet before its first task, too: it needs only to exist
        existing |= {model.name for model in svc.models.list()}
    missing = sorted(set(models) - existing)
    if missing:
        raise NotFoundError(f"no inference function for model(s): {', '.join(missing)}")
    return list(dict.fromkeys(models))  # in the caller's order, once each


def update_functions(
    svc: Services, models: list[str] | None, changes: FunctionChanges
) -> list[FunctionRecord]:
    """Apply `changes` to the functions of `models` (None: every function).

    Every named model is checked before any function changes, so a typo changes nothing.
    `changes.fleet` moves each model's function to that fleet (made there now, with these
    changes); a model without a function may be named then.

    Raises
    ------
    NotFoundError
        A named model has no inference function (functions are created on first use), or
        with a fleet named, no such model.
    InvalidInputError
        An image outside the inference repository; a setting the model's fleet does not
        have; a value the backend refused.
    """
    if changes.image is not None:
        check_image(svc.settings.inference_repository, changes.image)
    targets = _targets(svc, models, moving=changes.fleet is not None)
    for model in targets:
        svc.fleet.check(model, changes)
    return [svc.fleet.update(model, changes) for model in targets]


def delete_all_functions(svc: Services) -> list[str]:
    """Delete every inference function of this deployment (the stack is going away); returns
    their names."""
    return svc.fleet.delete_all()


def delete_functions(svc: Services, models: list[str]) -> list[str]:
    """Delete the functions of `models`; returns the names of those that existed. A model
    without a function is skipped (a later task for it creates one again)."""
    by_model = {record.model: record.name for record in svc.fleet.list()}
    deleted = []
    for model in dict.fromkeys(models):
        if model in by_model:
            svc.fleet.delete(model)
            deleted.append(by_model[model])
    return deleted


def check_image(repository: str, image: str) -> None:
    """An inference function runs as the inference role: it may run only an image of the
    project's ECR repository (by tag or digest). No repository set (locally): any image.

    Raises InvalidInputError (field `image`)."""
    if not repository:
        return
    pattern = (
        rf"\d{{12}}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/{re.escape(repository)}"
        r"(:[\w][\w.-]{0,127}|@sha256:[0-9a-f]{64})"
    )
    if not re.fullmatch(pattern, image):
        raise InvalidInputError(
            "image", f"must be an image of the ECR repository {repository!r} (by tag or digest)"
        )
