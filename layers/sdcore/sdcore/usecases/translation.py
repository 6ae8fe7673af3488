"""Chinese prompts on the generation routes: `translate` (or the deployment's SD_TRANSLATE) puts
a prompt's Chinese into English before the task is recorded, so the prompt filter, the quota's
checks and the encoder all see the translation; the task keeps what the caller wrote."""

from __future__ import annotations

from typing import Any

from sdcore.domain.cjk import has_cjk
from sdcore.domain.models import GenerationParams
from sdcore.errors import InvalidInputError
from sdcore.services import Services

FIELDS = ("prompt", "negative_prompt")


def translate_prompts(
    svc: Services, params: GenerationParams, requested: bool | None
) -> GenerationParams:
    """`params` with the Chinese of its prompts (and of a script's jobs' prompts) in English,
    the originals kept in `original_prompt` / `original_negative_prompt`, when `requested` (None:
    as SD_TRANSLATE says). Text without Chinese is left as it is, so a pasted infotext (which
    holds the translation) is never translated twice.

    Raises
    ------
    InvalidInputError
        `translate`: no translator is configured, and the request asked for one or (by the
        deployment's default) has Chinese to translate.
    """
    wanted = requested if requested is not None else svc.settings.translate == "cjk"
    if not wanted:
        return params
    chinese = {f: getattr(params, f) for f in FIELDS if has_cjk(getattr(params, f))}
    jobs = params.script.jobs if params.script is not None else []
    in_jobs = any(has_cjk(str(job.get(f, ""))) for job in jobs for f in FIELDS)
    translator = svc.translator
    if translator is None:
        if requested or chinese or in_jobs:
            raise InvalidInputError(
                "translate",
                "no translator is configured on this deployment: send the prompt in English, "
                "or translate: false to send it as written",
            )
        return params
    update: dict[str, Any] = {f: translator.translate(text) for f, text in chinese.items()}
    update.update({f"original_{f}": text for f, text in chinese.items()})
    if in_jobs and params.script is not None:  # e.g. the x/y plot's Prompt S/R
        translated = [
            {k: translator.translate(v) if k in FIELDS and isinstance(v, str) else v
             for k, v in job.items()}
            for job in jobs
        ]  # fmt: skip
        update["script"] = params.script.model_copy(update={"jobs": translated})
    return params.model_copy(update=update) if update else params
