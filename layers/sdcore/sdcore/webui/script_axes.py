"""The x/y/z plot's axis types, in the webui's order (a request names one by its index in the
list of its kind, txt2img or img2img, or by its label), and what each changes in a cell."""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from io import StringIO
from itertools import permutations
from typing import Any

from sdcore.domain.models import TaskKind
from sdcore.errors import InvalidInputError
from sdcore.webui.samplers import (
    HIRES_IMAGE_UPSCALERS,
    HIRES_LATENT_UPSCALERS,
    check_sampler,
    check_schedule,
)

MAX_VALUES = 256  # one axis's values (a task runs at most as many jobs)
Cell = dict[str, Any]  # a cell's changes: domain fields, plus the raw sampler_name and scheduler

# the webui's axis types in its order: (label, only for: "txt2img", "img2img" or "")
ORDER: tuple[tuple[str, str], ...] = (
    ("Nothing", ""), ("Seed", ""), ("Var. seed", ""), ("Var. strength", ""), ("Steps", ""),
    ("Hires steps", "txt2img"), ("CFG Scale", ""), ("Image CFG Scale", "img2img"),
    ("Prompt S/R", ""), ("Prompt order", ""), ("Sampler", "txt2img"),
    ("Hires sampler", "txt2img"), ("Sampler", "img2img"), ("Checkpoint name", ""),
    ("Negative Guidance minimum sigma", ""), ("Sigma Churn", ""), ("Sigma min", ""),
    ("Sigma max", ""), ("Sigma noise", ""), ("Schedule type", ""), ("Schedule min sigma", ""),
    ("Schedule max sigma", ""), ("Schedule rho", ""), ("Beta schedule alpha", ""),
    ("Beta schedule beta", ""), ("Eta", ""), ("Clip skip", ""), ("Denoising", ""),
    ("Initial noise multiplier", ""), ("Extra noise", ""), ("Hires upscaler", "txt2img"),
    ("Cond. Image Mask Weight", "img2img"), ("VAE", ""), ("Styles", ""), ("UniPC Order", ""),
    ("Face restore", ""), ("Token merging ratio", ""), ("Token merging ratio high-res", ""),
    ("Always discard next-to-last sigma", ""), ("SGM noise multiplier", ""),
    ("Refiner checkpoint", ""), ("Refiner switch at", ""), ("RNG source", ""),
    ("FP8 mode", ""), ("Size", ""),
)  # fmt: skip

CHECKPOINT_WHY = (
    "each inference function serves one checkpoint, so one task cannot change it; "
    "send one x/y/z plot per checkpoint (stable_diffusion_model) instead"
)


def axis_options(kind: TaskKind) -> list[str]:
    """The axis labels of a txt2img or img2img x/y/z plot, in the webui's order."""
    return [label for label, only in ORDER if only in ("", kind.value)]


def _format(value: Any) -> str:
    return str(round(value, 8)) if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Axis:
    label: str
    type: Callable[[Any], Any] = str
    apply: Callable[[Cell, Any, list[Any]], None] = lambda cell, value, values: None
    plain_label: bool = False  # the value alone (S/R, sampler), else "Label: value"
    why: str = ""  # not "": the axis cannot run here, for this reason

    def label_of(self, value: Any) -> str:
        if self.label == "Nothing":
            return ""
        if self.label == "Prompt order":
            return ", ".join(value)
        return _format(value) if self.plain_label else f"{self.label}: {_format(value)}"


def _set(name: str) -> Callable[[Cell, Any, list[Any]], None]:
    def apply(cell: Cell, value: Any, _values: list[Any]) -> None:
        cell[name] = value

    return apply


def _replace(cell: Cell, value: Any, values: list[Any]) -> None:
    cell["prompt"] = cell["prompt"].replace(values[0], value)
    cell["negative_prompt"] = cell["negative_prompt"].replace(values[0], value)


def _order(cell: Cell, value: list[str], _values: list[Any]) -> None:
    """The webui's prompt order: the tokens taken out in the order they appear, put back in
    the cell's order."""
    prompt = cell["prompt"]
    found = sorted((prompt.find(token), token) for token in value)
    parts = []
    for _, token in found:
        at = prompt.find(token)
        parts.append(prompt[:at])
        prompt = prompt[at + len(token) :]
    cell["prompt"] = "".join(part + value[i] for i, part in enumerate(parts)) + prompt


def _sampler(name: str) -> Callable[[Cell, Any, list[Any]], None]:
    def apply(cell: Cell, value: Any, _values: list[Any]) -> None:
        try:
            check_sampler(value)
        except InvalidInputError as exc:
            raise InvalidInputError("script_args", exc.message) from None
        cell[name] = value

    return apply


def _schedule(cell: Cell, value: Any, _values: list[Any]) -> None:
    try:
        cell["scheduler"] = check_schedule(value)
    except InvalidInputError as exc:
        raise InvalidInputError("script_args", exc.message) from None


def _hr_sampler(cell: Cell, value: Any, _values: list[Any]) -> None:
    try:
        cell["hr_sampler"] = check_sampler(value)[0]
    except InvalidInputError as exc:
        raise InvalidInputError("script_args", exc.message) from None


def _hr_upscaler(cell: Cell, value: Any, _values: list[Any]) -> None:
    # the built-in ones only: a registered upscaler model is fetched for the task's own
    if value not in (*HIRES_LATENT_UPSCALERS, *HIRES_IMAGE_UPSCALERS):
        raise InvalidInputError("script_args", f"Hires upscaler {value!r}: a built-in one only")
    cell["hr_upscaler"] = value


def _rng(cell: Cell, value: Any, _values: list[Any]) -> None:
    if value not in ("GPU", "CPU", "NV"):
        raise InvalidInputError("script_args", f"RNG source {value!r}: GPU, CPU or NV")
    cell["randn_source"] = value


_RUN = [
    Axis("Nothing"),
    Axis("Seed", int, _set("seed")),
    Axis("Var. seed", int, _set("subseed")),
    Axis("Var. strength", float, _set("subseed_strength")),
    Axis("Steps", int, _set("steps")),
    Axis("Hires steps", int, _set("hr_second_pass_steps")),
    Axis("CFG Scale", float, _set("guidance")),
    Axis("Prompt S/R", str, _replace, plain_label=True),
    Axis("Prompt order", str, _order),
    Axis("Sampler", str, _sampler("sampler_name"), plain_label=True),
    Axis("Hires sampler", str, _hr_sampler),
    Axis("Sigma noise", float, _set("s_noise")),
    Axis("Schedule type", str, _schedule),
    Axis("Clip skip", int, _set("clip_skip")),
    Axis("Denoising", float, _set("denoising_strength")),
    Axis("Hires upscaler", str, _hr_upscaler),
    Axis("RNG source", str, _rng),
]
AXES: dict[str, Axis] = {axis.label: axis for axis in _RUN}
AXES["Checkpoint name"] = Axis("Checkpoint name", why=CHECKPOINT_WHY)
AXES["Refiner checkpoint"] = Axis("Refiner checkpoint", why=CHECKPOINT_WHY)


_INT_RANGE = re.compile(r"\s*([+-]?\s*\d+)\s*-\s*([+-]?\s*\d+)(?:\s*\(([+-]\d+)\s*\))?\s*")
_FLOAT_RANGE = re.compile(
    r"\s*([+-]?\s*\d+(?:.\d*)?)\s*-\s*([+-]?\s*\d+(?:.\d*)?)(?:\s*\(([+-]\d+(?:.\d*)?)\s*\))?\s*"
)
_INT_COUNT = re.compile(r"\s*([+-]?\s*\d+)\s*-\s*([+-]?\s*\d+)(?:\s*\[(\d+)\s*])?\s*")
_FLOAT_COUNT = re.compile(
    r"\s*([+-]?\s*\d+(?:.\d*)?)\s*-\s*([+-]?\s*\d+(?:.\d*)?)(?:\s*\[(\d+(?:.\d*)?)\s*])?\s*"
)


def _num(text: str) -> float:
    return float(text.replace(" ", ""))


def _linspace(start: float, stop: float, num: int) -> list[float]:
    if num <= 1:
        return [start][:num]
    return [start + (stop - start) * i / (num - 1) for i in range(num)]


def _bounded(count: int, axis: Axis) -> int:
    """`count`, or a 422 when one axis alone would make more cells than a task may run."""
    if count > MAX_VALUES:
        raise InvalidInputError(
            "script_args", f"{axis.label}: {count} values; at most {MAX_VALUES}"
        )
    return count


def axis_values(axis: Axis, text: str) -> list[Any]:
    """An axis's values as the webui parses its text box: comma-separated (CSV quoting),
    numbers as ranges too: `1-5` (each), `1-10 (+2)` (a step), `1-10 [4]` (a count)."""
    values = [v.strip() for row in csv.reader(StringIO(text)) for v in row]
    values = [v for v in values if v] if axis.type is not str else values
    out: list[Any] = []
    for value in values:
        if axis.type is int:
            m, mc = _INT_RANGE.fullmatch(value), _INT_COUNT.fullmatch(value)
            if m:
                step = int(m.group(3)) if m.group(3) else 1
                span = range(int(_num(m.group(1))), int(_num(m.group(2))) + 1, step or 1)
                out += list(span[: _bounded(len(span), axis)])
            elif mc:
                num = _bounded(int(mc.group(3)) if mc.group(3) else 1, axis)
                out += [int(x) for x in _linspace(_num(mc.group(1)), _num(mc.group(2)), num)]
            else:
                out.append(value)
        elif axis.type is float:
            m, mc = _FLOAT_RANGE.fullmatch(value), _FLOAT_COUNT.fullmatch(value)
            if m:
                start, end = _num(m.group(1)), _num(m.group(2))
                by = _num(m.group(3)) if m.group(3) else 1.0
                count = max(0, math.ceil((end + by - start) / by)) if by else 0
                out += [start + i * by for i in range(_bounded(count, axis))]
            elif mc:
                num = _bounded(int(float(mc.group(3))) if mc.group(3) else 1, axis)
                out += _linspace(_num(mc.group(1)), _num(mc.group(2)), num)
            else:
                out.append(value)
        else:
            out.append(value)
    _bounded(len(out), axis)
    if axis.label == "Prompt order":
        _bounded(math.factorial(len(out)), axis)
        return [list(p) for p in permutations(out)]
    try:
        return [axis.type(v) for v in out]
    except ValueError as exc:
        raise InvalidInputError("script_args", f"{axis.label} values: {exc}") from None
