"""What `/sdapi/v1/script-info` says of each script: its arguments in `script_args` order,
with the webui's labels, defaults, bounds and choices."""

from __future__ import annotations

from typing import Any

from sdcore.domain.models import TaskKind
from sdcore.domain.removal import DEFAULT_BLUR, DEFAULT_DILATE, MAX_BLUR, MAX_DILATE
from sdcore.webui.script_axes import axis_options
from sdcore.webui.scripts import (
    PROMPT_MATRIX,
    PROMPTS_FROM_FILE,
    REMOVE_PEOPLE,
    SD_UPSCALE,
    XYZ_PLOT,
    script_names,
)


def _arg(label: str | None, value: Any, **more: Any) -> dict[str, Any]:
    return {"label": label, "value": value, **more}


def _xyz(kind: TaskKind) -> list[dict[str, Any]]:
    types = axis_options(kind)
    axes = []
    for axis, default in (("X", 1), ("Y", 0), ("Z", 0)):
        axes += [
            _arg(f"{axis} type", default, choices=types),
            _arg(f"{axis} values", ""),
            _arg(f"{axis} values", None),
        ]
    return [
        *axes,
        _arg("Draw legend", True),
        _arg("Include Sub Images", False),
        _arg("Include Sub Grids", False),
        _arg("Keep -1 for seeds", False),
        _arg("Vary seeds for X", False),
        _arg("Vary seeds for Y", False),
        _arg("Vary seeds for Z", False),
        _arg("Grid margins (px)", 0, minimum=0, maximum=500, step=2),
        _arg("Use text inputs instead of dropdowns", False),
    ]


def _args(name: str, kind: TaskKind) -> list[dict[str, Any]]:
    if name == PROMPTS_FROM_FILE:
        return [
            _arg("Iterate seed every line", False),
            _arg("Use same random seed for all lines", False),
            _arg("Insert prompts at the", "start", choices=["start", "end"]),
            _arg("List of prompt inputs", ""),
        ]
    if name == PROMPT_MATRIX:
        return [
            _arg("Put variable parts at start of prompt", False),
            _arg("Use different seed for each picture", False),
            _arg("Select prompt", "positive", choices=["positive", "negative"]),
            _arg("Select joining char", "comma", choices=["comma", "space"]),
            _arg("Grid margins (px)", 0, minimum=0, maximum=500, step=2),
        ]
    if name == XYZ_PLOT:
        return _xyz(kind)
    if name == REMOVE_PEOPLE:
        return [
            _arg("Target", "person"),
            _arg("Mask mode", "mask", choices=["mask", "box"]),
            _arg("Dilate (px)", DEFAULT_DILATE, minimum=0, maximum=MAX_DILATE, step=1),
            _arg("Blur (px)", DEFAULT_BLUR, minimum=0, maximum=MAX_BLUR, step=1),
            _arg("Segmenter", ""),
        ]
    assert name == SD_UPSCALE
    return [
        _arg(None, None),  # the webui's info text: no value
        _arg("Tile overlap", 64, minimum=0, maximum=256, step=16),
        _arg("Upscaler", "Lanczos", choices=["None", "Lanczos", "Nearest"]),
        _arg("Scale Factor", 2.0, minimum=1.0, maximum=4.0, step=0.05),
    ]


def scripts_info() -> list[dict[str, Any]]:
    """Each script of each tab (txt2img, then img2img), as the webui lists them."""
    return [
        {
            "name": name,
            "is_alwayson": False,
            "is_img2img": kind is TaskKind.IMG2IMG,
            "args": _args(name, kind),
        }
        for kind in (TaskKind.TXT2IMG, TaskKind.IMG2IMG)
        for name in script_names(kind)
    ]
