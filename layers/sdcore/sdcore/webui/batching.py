"""Which tasks can run as one pipeline call (dynamic batching): txt2img tasks of the same
checkpoint whose every setting but the prompts and seeds is the same. Each image keeps its own
seed's generator and noise, so a task's pixels do not depend on what it ran with."""

from __future__ import annotations

from typing import Any

from sdcore.domain.params import GenerationParams, TaskKind
from sdcore.errors import InvalidInputError
from sdcore.webui.prompt_syntax import lora_tags

# what may differ between the tasks of one batch: the prompts, the seeds, how many images
PER_TASK = frozenset(
    {
        "prompt",
        "negative_prompt",
        "seed",
        "subseed",
        "batch_size",
        "original_prompt",
        "original_negative_prompt",
    }
)


def batch_key(params: GenerationParams) -> tuple[Any, ...] | None:
    """A key equal for exactly the tasks that can be batched together; None for a task that
    always runs alone (img2img, extras, interrogate, scripts, ControlNet, several `n_iter`
    jobs, a prompt whose LoRA tags cannot be read).

    The LoRA set and weights are part of the key: the adapters are switched on for the whole
    call. Embeddings are not: each prompt reaches only the tokens of the embeddings it names.
    """
    if (
        params.kind is not TaskKind.TXT2IMG
        or params.script is not None
        or params.controlnet
        or params.batches != 1
    ):
        return None
    try:
        loras = sorted((t.name, t.te, t.unet) for t in lora_tags(params.prompt, "prompt"))
    except InvalidInputError:
        return None
    shared = params.model_dump(exclude=set(PER_TASK))
    return (tuple(sorted((k, repr(v)) for k, v in shared.items())), tuple(loras))
