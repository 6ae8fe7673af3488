"""A caller's prompt styles: kept on the user record (bounded in count and size), listed,
changed, and applied to a request's prompts at submit by name, as the webui applies them."""

from __future__ import annotations

import dataclasses
import json

from sdcore.domain.models import GenerationParams, PromptStyle, User, UserChanges
from sdcore.errors import ConflictError, InvalidInputError, NotFoundError
from sdcore.services import Services
from sdcore.usecases.auth import Principal
from sdcore.usecases.submit import Idempotency, Submission, submit_and_wait
from sdcore.usecases.tasks import TaskOutcome

PLACEHOLDER = "{prompt}"
MAX_STYLES = 64
STYLES_MAX_BYTES = 64 * 1024  # all of a caller's styles, as JSON


def merge_prompt(style: str, prompt: str) -> str:
    """`prompt` with a style's text applied: in place of `{prompt}` when the style has it, else
    appended after ", " (empty parts left out), as the webui merges them."""
    if PLACEHOLDER in style:
        return style.replace(PLACEHOLDER, prompt)
    return ", ".join(part for part in (prompt.strip(), style.strip()) if part)


def _user(svc: Services, who: Principal) -> User:
    try:
        return svc.users.get(who.user)
    except NotFoundError:
        raise InvalidInputError("styles", "styles need a user key") from None


def _stored(svc: Services, who: Principal) -> list[PromptStyle]:
    try:
        return svc.users.get(who.user).styles
    except NotFoundError:  # auth off: the anonymous caller has no record, so no styles
        return []


def list_styles(svc: Services, who: Principal) -> list[PromptStyle]:
    """The caller's styles, in the order they were created."""
    return _stored(svc, who)


def get_style(svc: Services, who: Principal, name: str) -> PromptStyle:
    """One of the caller's styles.

    Raises
    ------
    NotFoundError
        The caller has no style of that name.
    """
    for style in _stored(svc, who):
        if style.name == name:
            return style
    raise NotFoundError(f"style {name} not found")


def _save(svc: Services, who: Principal, styles: list[PromptStyle]) -> None:
    if len(styles) > MAX_STYLES:
        raise InvalidInputError("styles", f"at most {MAX_STYLES} styles")
    if len(json.dumps([s.model_dump() for s in styles])) > STYLES_MAX_BYTES:
        raise InvalidInputError("styles", f"the styles exceed {STYLES_MAX_BYTES} bytes")
    svc.users.update(who.user, UserChanges(styles=styles))


def create_style(svc: Services, who: Principal, style: PromptStyle) -> PromptStyle:
    """Add a style.

    Raises
    ------
    ConflictError
        The caller has a style of that name.
    InvalidInputError
        Over the count or size bound; styles need a user (auth is off).
    """
    styles = _user(svc, who).styles
    if any(s.name == style.name for s in styles):
        raise ConflictError(f"style {style.name} exists")
    _save(svc, who, [*styles, style])
    return style


def put_style(svc: Services, who: Principal, style: PromptStyle) -> PromptStyle:
    """Replace the style of that name, or add it.

    Raises InvalidInputError as `create_style`."""
    styles = _user(svc, who).styles
    kept = [style if s.name == style.name else s for s in styles]
    _save(svc, who, kept if any(s.name == style.name for s in styles) else [*styles, style])
    return style


def delete_style(svc: Services, who: Principal, name: str) -> None:
    """Remove a style.

    Raises
    ------
    NotFoundError
        The caller has no style of that name.
    """
    styles = _stored(svc, who)
    kept = [s for s in styles if s.name != name]
    if len(kept) == len(styles):
        raise NotFoundError(f"style {name} not found")
    _save(svc, who, kept)


def styled_params(styles: list[PromptStyle], params: GenerationParams) -> GenerationParams:
    """`params` with `styles` applied in order to the prompts (and to the hires fix's own
    prompts when it has them), as the webui applies a request's styles."""
    prompt, negative = params.prompt, params.negative_prompt
    hr_prompt, hr_negative = params.hr_prompt, params.hr_negative_prompt
    for style in styles:
        prompt = merge_prompt(style.prompt, prompt)
        negative = merge_prompt(style.negative_prompt, negative)
        hr_prompt = merge_prompt(style.prompt, hr_prompt) if hr_prompt else ""
        hr_negative = merge_prompt(style.negative_prompt, hr_negative) if hr_negative else ""
    update = {"prompt": prompt, "negative_prompt": negative}
    update |= {"hr_prompt": hr_prompt, "hr_negative_prompt": hr_negative}
    return params.model_copy(update=update)


def apply_styles(
    svc: Services, who: Principal, request: Submission, names: list[str]
) -> Submission:
    """`request` with the caller's styles `names` applied to its prompts: the task records the
    prompts as applied (so its infotext carries them), as the webui does.

    Raises
    ------
    InvalidInputError
        A name the caller has no style of (field `styles`).
    """
    if not names:
        return request
    by_name = {s.name: s for s in _stored(svc, who)}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise InvalidInputError("styles", f"no style named {', '.join(unknown)}")
    params = styled_params([by_name[n] for n in names], request.params)
    return dataclasses.replace(request, params=params)


def submit_styled(
    svc: Services,
    who: Principal,
    request: Submission,
    styles: list[str],
    idempotency: Idempotency | None,
    wait_s: float,
) -> TaskOutcome:
    """`submit_and_wait` of `request` with the caller's `styles` applied to its prompts.

    Raises InvalidInputError for an unknown style, else as `submit_and_wait`."""
    return submit_and_wait(svc, who, apply_styles(svc, who, request, styles), idempotency, wait_s)
