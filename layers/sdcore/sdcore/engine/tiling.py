"""The webui's tiling (seamless textures): while a task asking for it runs, every Conv2d of the
UNet and the VAE pads circularly, so each layer sees the picture's left edge next to its right
edge and its top next to its bottom, and the picture tiles without a seam. The layers' own
padding comes back when the task ends, however it ends (done, failed, cancelled)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Concatenate, Literal, ParamSpec, TypeVar

from torch import nn

from sdcore.domain.models import GenerationParams
from sdcore.engine.model import LoadedModel

P = ParamSpec("P")
R = TypeVar("R")
PaddingMode = Literal["zeros", "reflect", "replicate", "circular"]


def conv_layers(model: LoadedModel) -> list[nn.Conv2d]:
    """Every Conv2d of the UNet and the VAE, each once (the three pipelines share them; a LoRA
    applied for the task adds its own, which pad as the layer they adapt)."""
    layers: dict[int, nn.Conv2d] = {}
    for pipe in (model.txt2img, model.img2img, model.inpaint):
        for net in (pipe.unet, pipe.vae):
            for layer in net.modules():
                if isinstance(layer, nn.Conv2d):
                    layers.setdefault(id(layer), layer)
    return list(layers.values())


@contextmanager
def seamless(model: LoadedModel, tiling: bool) -> Iterator[None]:
    """Circular padding on the model's Conv2d layers for the block when `tiling`, as the
    webui sets `padding_mode` for a task with `tiling`; each layer's own mode afterwards."""
    if not tiling:
        yield
        return
    layers = conv_layers(model)
    before: list[PaddingMode] = [layer.padding_mode for layer in layers]
    try:
        for layer in layers:
            layer.padding_mode = "circular"
        yield
    finally:
        for layer, mode in zip(layers, before, strict=True):
            layer.padding_mode = mode


def tiled(
    run: Callable[Concatenate[LoadedModel, GenerationParams, P], R],
) -> Callable[Concatenate[LoadedModel, GenerationParams, P], R]:
    """`run(model, params, ...)` inside `seamless(model, params.tiling)`: every pass of the
    task (txt2img, img2img, inpainting, the hires fix's second pass, VAE encode and decode)."""

    @functools.wraps(run)
    def wrapper(
        model: LoadedModel, params: GenerationParams, /, *args: P.args, **kwargs: P.kwargs
    ) -> R:
        with seamless(model, params.tiling):
            return run(model, params, *args, **kwargs)

    return wrapper
