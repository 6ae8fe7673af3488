"""Interrogation (the webui's `POST /sdapi/v1/interrogate`): a task like extras, run by the
caller's checkpoint's function (`sd_model_checkpoint`, else the default one), with the
registered captioner (`clip`) or tagger (`deepdanbooru`) fetched for it as a network; waited on
synchronously as the webui does. When several of the type are registered, the first by name
runs."""

from __future__ import annotations

from sdcore.domain.interrogate import InterrogateMethod, InterrogateSpec
from sdcore.domain.models import GenerationParams, ImageInput, Model, TaskKind
from sdcore.errors import InvalidInputError
from sdcore.services import Services
from sdcore.usecases.auth import Principal
from sdcore.usecases.networks import INTERROGATOR_TYPES
from sdcore.usecases.submit import Submission
from sdcore.usecases.webui import generate, usable, user_options
from sdcore.webui.options import effective


def interrogator(svc: Services, method: InterrogateMethod) -> Model:
    """The registered model `method` runs on: the first usable one of its type by name.

    Raises InvalidInputError naming `model` when none is registered."""
    kind = INTERROGATOR_TYPES[method]
    found = sorted((m for m in usable(svc, kind) if m.format is not None), key=lambda m: m.name)
    if not found:
        raise InvalidInputError(
            "model", f"interrogate {method.value} needs a registered {kind.value} model: "
            f"register one (see the models documentation)",
        )  # fmt: skip
    return found[0]


def spec_for(svc: Services, who: Principal, method: InterrogateMethod) -> InterrogateSpec:
    """The interrogation `method` asks for, with the caller's webui options."""
    options = effective(user_options(svc, who))
    filter_tags = str(options["deepbooru_filter_tags"]).split(",")
    return InterrogateSpec(
        method=method,
        model=interrogator(svc, method).name,
        return_ranks=bool(options["interrogate_return_ranks"]),
        num_beams=int(options["interrogate_clip_num_beams"]),
        min_length=int(options["interrogate_clip_min_length"]),
        max_length=int(options["interrogate_clip_max_length"]),
        dict_limit=max(0, int(options["interrogate_clip_dict_limit"])),
        skip_categories=[str(c) for c in options["interrogate_clip_skip_categories"] or []],
        score_threshold=float(options["interrogate_deepbooru_score_threshold"]),
        sort_alpha=bool(options["deepbooru_sort_alpha"]),
        use_spaces=bool(options["deepbooru_use_spaces"]),
        escape=bool(options["deepbooru_escape"]),
        filter_tags=[t.strip() for t in filter_tags if t.strip()],
    )


def interrogate(svc: Services, who: Principal, image: ImageInput, model: str, wait_s: float) -> str:
    """The caption (`clip`) or tags (`deepdanbooru`) of `image`, as the webui writes them.

    Raises
    ------
    InvalidInputError
        `model` is neither method, or no model of its type is registered (naming `model`);
        the image is unreadable (naming `image`).
    TaskTimeoutError, TaskFailedError, NotFoundError, ConflictError, OverCapError
        As `sdcore.usecases.webui.generate`.
    """
    try:
        method = InterrogateMethod(model)
    except ValueError:
        valid = ", ".join(m.value for m in InterrogateMethod)
        raise InvalidInputError(
            "model", f"unknown interrogate model {model!r}; valid: {valid}"
        ) from None
    params = GenerationParams(kind=TaskKind.INTERROGATE, interrogate=spec_for(svc, who, method))
    checkpoint = effective(user_options(svc, who))["sd_model_checkpoint"]
    request = Submission(params=params, images=[image], model=checkpoint or None)
    done = generate(svc, who, request, wait_s)
    return str(done.task.info.get("caption", ""))
