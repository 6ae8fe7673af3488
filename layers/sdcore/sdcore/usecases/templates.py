"""Templates: a user's named, versioned generation requests (and the shared ones an admin keeps),
saved once validated, and run with a caller's prompt merged in as one ordinary task.

The API edge parses a template's fields (webui wire names) into a request: the use cases take
that parser as `Build`, so a template is checked by the very schema a request is."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from sdcore.domain.params import TaskKind
from sdcore.domain.templates import SHARED, TEMPLATE_NAME, Template
from sdcore.errors import ConflictError, ForbiddenError, InvalidInputError, NotFoundError
from sdcore.ports.templates import TemplateStore
from sdcore.services import Services
from sdcore.usecases.auth import Principal
from sdcore.usecases.styles import apply_styles, merge_prompt
from sdcore.usecases.submit import Idempotency, Submission, submit_and_wait
from sdcore.usecases.tasks import TaskOutcome

MAX_TEMPLATES = 200  # per owner
MAX_TEMPLATE_BYTES = 64 * 1024  # one template, as JSON

# (kind, wire fields) -> the request they make and the prompt styles they name. Raises
# InvalidInputError naming the field, as the request schema would.
Build = Callable[[TaskKind, dict[str, Any]], tuple[Submission, list[str]]]


def _store(svc: Services) -> TemplateStore:
    if svc.templates is None:
        raise RuntimeError("this deployment has no template store")
    return svc.templates


def _owner(who: Principal, shared: bool) -> str:
    if shared and not who.is_admin:
        raise ForbiddenError("shared templates are an admin's to change")
    return SHARED if shared else who.user


def list_templates(svc: Services, who: Principal) -> list[Template]:
    """The caller's templates, then the shared ones, each by name."""
    return _store(svc).list(who.user) + _store(svc).list(SHARED)


def get_template(svc: Services, who: Principal, name: str, shared: bool | None = None) -> Template:
    """The caller's template `name`, else the shared one (`shared`: only that one, True, or only
    the caller's, False).

    Raises
    ------
    NotFoundError
        Neither exists.
    """
    if not re.fullmatch(TEMPLATE_NAME, name):  # no such name can be stored
        raise NotFoundError(f"template {name} not found")
    owners = [who.user, SHARED] if shared is None else [SHARED if shared else who.user]
    for owner in owners:
        try:
            return _store(svc).get(owner, name)
        except NotFoundError:
            continue
    raise NotFoundError(f"template {name} not found")


def save_template(
    svc: Services,
    who: Principal,
    template: Template,
    create: bool,
    shared: bool = False,
    expected_version: int | None = None,
) -> Template:
    """Store `template` (its fields validated by the caller with the request schema) as the next
    version of the caller's (`shared`: the shared) template of its name; its owner, version and
    time are set here.

    Raises
    ------
    ConflictError
        `create` and the template exists.
    StaleWriteError
        `expected_version` is not the stored one, or another writer won the race.
    ForbiddenError
        A shared template, by a caller who is not an admin.
    InvalidInputError
        Over the count or size bound.
    """
    if not re.fullmatch(TEMPLATE_NAME, template.name):
        raise InvalidInputError(
            "name", "1-64 letters, digits, '.', '_' or '-', not first '.' or '-'"
        )
    owner = _owner(who, shared)
    store = _store(svc)
    try:
        current: Template | None = store.get(owner, template.name)
    except NotFoundError:
        current = None
    if current is not None and create:
        raise ConflictError(f"template {template.name} exists")
    stored_version = current.version if current is not None else 0
    if expected_version is not None and expected_version != stored_version:
        raise ConflictError(
            f"template {template.name} is at version {stored_version}, not {expected_version}"
        )
    if current is None and len(store.list(owner)) >= MAX_TEMPLATES:
        raise InvalidInputError("name", f"at most {MAX_TEMPLATES} templates")
    saved = template.model_copy(
        update={"owner": owner, "version": stored_version + 1, "updated_at": svc.clock.now()}
    )
    if len(saved.model_dump_json()) > MAX_TEMPLATE_BYTES:
        raise InvalidInputError("name", f"the template exceeds {MAX_TEMPLATE_BYTES} bytes")
    store.put(saved, stored_version)
    return saved


def delete_template(svc: Services, who: Principal, name: str, shared: bool = False) -> None:
    """Remove the caller's (or the shared) template `name`.

    Raises NotFoundError; ForbiddenError for a shared one, by a caller who is not an admin."""
    owner = _owner(who, shared)
    if not re.fullmatch(TEMPLATE_NAME, name):
        raise NotFoundError(f"template {name} not found")
    _store(svc).delete(owner, name)


def template_request(
    template: Template,
    prompt: str,
    build: Build,
    init_images: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> tuple[Submission, list[str]]:
    """The request `template` makes with the caller's `prompt` merged into its prompt (in place
    of `{prompt}`, else before it after ", "), its `init_images` and `overrides` applied.

    Raises InvalidInputError naming the field (`overrides.<field>` for an override's)."""
    overrides = overrides or {}
    if "prompt" in overrides:
        raise InvalidInputError("overrides.prompt", "give the prompt as `prompt`")
    fields = {**template.fields, "prompt": merge_prompt(template.base_prompt, prompt)}
    if init_images:
        if template.kind is not TaskKind.IMG2IMG:
            raise InvalidInputError("init_images", "a txt2img template takes no input images")
        fields["init_images"] = init_images
    try:
        return build(template.kind, {**fields, **overrides})
    except InvalidInputError as exc:
        top = exc.field.split(".")[0].split("[")[0]
        if top in overrides:
            raise InvalidInputError(f"overrides.{exc.field}", exc.message) from None
        raise


def run_template(
    svc: Services,
    who: Principal,
    name: str,
    prompt: str,
    build: Build,
    init_images: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
    idempotency: Idempotency | None = None,
    wait_s: float = 0,
) -> TaskOutcome:
    """One task of the template `name` (the caller's, else the shared one) with `prompt` merged
    in, then a wait of up to `wait_s` for its end, as `submit_and_wait`.

    Raises
    ------
    NotFoundError
        No such template.
    InvalidInputError
        A bad override or input image, and what `submit_and_wait` raises.
    """
    template = get_template(svc, who, name)
    request, styles = template_request(template, prompt, build, init_images, overrides)
    request = apply_styles(svc, who, request, styles)
    return submit_and_wait(svc, who, request, idempotency, wait_s)


def run_simple(
    svc: Services,
    who: Principal,
    prompt: str,
    build: Build,
    fields: dict[str, Any],
    style: str | None = None,
    wait_s: float = 0,
) -> TaskOutcome:
    """The simple API's txt2img: the template `style` run with `prompt` and `fields` as its
    overrides, or without one a txt2img request of `prompt` and `fields`; then a wait of up to
    `wait_s`. Raises as `run_template` (InvalidInputError `style` for an unknown template)."""
    if style is None:
        request, styles = build(TaskKind.TXT2IMG, {**fields, "prompt": prompt})
        return submit_and_wait(svc, who, apply_styles(svc, who, request, styles), None, wait_s)
    try:
        get_template(svc, who, style)
    except NotFoundError:
        raise InvalidInputError("style", f"no template named {style}") from None
    return run_template(svc, who, style, prompt, build, overrides=fields, wait_s=wait_s)
