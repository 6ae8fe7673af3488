"""The webui's generation-parameters text ("infotext", the PNG `parameters` chunk): built from
a request, parsed back into fields, and turned into request fields again (torch-free).

Format, as the webui writes it::

    <prompt, possibly several lines>
    Negative prompt: <negative prompt, possibly several lines>
    Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.0, Seed: 1, Size: 512x512, ...

A value holding `,`, `:` or a newline is written as a JSON string (quoted, escaped). Fields
whose value is None are left out.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

from sdcore.domain.models import GenerationParams, TaskKind
from sdcore.errors import InvalidInputError
from sdcore.webui.options import ENSD_SAMPLERS
from sdcore.webui.samplers import AUTOMATIC, check_sampler, check_schedule

# the samplers the webui gives its `eta_ancestral` option (their k-diffusion function takes
# `eta`) and its `s_noise` option (`sampler_extra_params`: not Euler a, DPM adaptive, Restart;
# Euler, Heun and DPM2 take it for their sigma churn); the infotext records each as "Eta" and
# "Sigma noise" where it differs from 1, and a pasted infotext sets them back
ETA_SAMPLERS = frozenset({
    "Euler a", "DPM2 a", "DPM++ 2S a", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun",
    "DPM++ 3M SDE", "DPM fast", "DPM adaptive",
})  # fmt: skip
SIGMA_NOISE_SAMPLERS = frozenset({
    "Euler", "Heun", "DPM2", "DPM2 a", "DPM++ 2S a", "DPM++ SDE", "DPM++ 2M SDE",
    "DPM++ 2M SDE Heun", "DPM++ 3M SDE", "DPM fast",
})  # fmt: skip
# infotext field -> the webui option it restores (the webui's paste of settings)
_OPTION_FIELDS = {"Eta": "eta_ancestral", "Sigma noise": "s_noise"}

# the webui's pattern, with keys capped at 64 characters: unbounded, a long line without a
# colon (a pasted prompt) makes it backtrack quadratically (40,000 characters: minutes)
_PAIR = re.compile(r'\s*(\w[\w \-/]{1,63}):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_SIZE = re.compile(r"^(\d+)x(\d+)$")
NEGATIVE = "Negative prompt:"


def quote(value: Any) -> str:
    """A value as the webui writes it: JSON-quoted when it holds `,`, `:` or a newline."""
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def build_infotext(prompt: str, negative_prompt: str, fields: Iterable[tuple[str, Any]]) -> str:
    """The infotext of `fields` in order (None values left out), after the prompt lines."""
    params = ", ".join(f"{k}: {quote(v)}" for k, v in fields if v is not None)
    negative = f"\n{NEGATIVE} {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative}\n{params}".strip()


def generation_infotext(
    params: GenerationParams,
    *,
    seed: int,
    subseed: int,
    width: int,
    height: int,
    model_name: str,
    model_hash: str,
    sampler: str,
    schedule: str,
    inpaint: bool = False,
    extra: Sequence[tuple[str, Any]] = (),
) -> str:
    """One image's infotext, fields in the webui's order; `extra` (e.g. a hires fix's fields)
    goes last. `sampler`/`schedule` are the resolved names (see `sdcore.webui.samplers.resolve`)."""
    variation = params.subseed_strength > 0
    ensd, rng = params.eta_noise_seed_delta, params.randn_source
    eta, s_noise = params.eta_ancestral, params.s_noise
    resized = params.seed_resize_from_w > 0 and params.seed_resize_from_h > 0
    fields: list[tuple[str, Any]] = [
        ("Steps", params.steps),
        ("Sampler", sampler),
        ("Schedule type", None if schedule == AUTOMATIC else schedule),
        ("CFG scale", float(params.guidance)),
        ("Seed", seed),
        # the webui writes its face_restoration_model option's value
        ("Face restoration", params.face_restorers[0][0] if params.face_restorers else None),
        ("Size", f"{width}x{height}"),
        ("Model hash", model_hash[:10] or None),
        ("Model", model_name),
        ("Variation seed", subseed if variation else None),
        ("Variation seed strength", params.subseed_strength if variation else None),
        (
            "Seed resize from",
            f"{params.seed_resize_from_w}x{params.seed_resize_from_h}" if resized else None,
        ),
        (
            "Denoising strength",
            params.denoising_strength if params.kind is TaskKind.IMG2IMG else None,
        ),
        ("Clip skip", params.clip_skip if params.clip_skip > 1 else None),
        # (as the webui: not at eta 0, where no sampler draws noise as it goes)
        ("ENSD", ensd if ensd and sampler in ENSD_SAMPLERS and eta != 0 else None),
        # the webui's default source ("GPU") goes unwritten; this service's default is None
        ("RNG", rng if rng not in (None, "GPU") else None),
        ("Tiling", True if params.tiling else None),
        ("Mask blur", params.mask_blur if inpaint else None),
        # what the caller wrote, when the prompt lines hold its translation (`translate`); a
        # paste takes the prompt lines, so a pasted infotext is not translated again
        ("Original prompt", params.original_prompt),
        ("Original negative prompt", params.original_negative_prompt),
        *extra,
        # the sampler writes them, after the fields known before it runs
        ("Eta", eta if eta != 1 and sampler in ETA_SAMPLERS else None),
        ("Sigma noise", s_noise if s_noise != 1 and sampler in SIGMA_NOISE_SAMPLERS else None),
    ]
    return build_infotext(params.prompt, params.negative_prompt, fields)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        try:
            return str(json.loads(value))
        except ValueError:
            return value
    return value


def parse_infotext(text: str) -> dict[str, str]:
    """Fields of a webui infotext: "Prompt", "Negative prompt", then each `key: value` of the
    parameter line, as the webui's parse_generation_parameters reads them.

    The last line is the parameter line when it holds at least three `key: value` pairs (else
    it belongs to the prompt); lines from `Negative prompt:` on are the negative prompt. Quoted
    values are unquoted; `WxH` values become `<key>-1` and `<key>-2` (so `Size` gives `Size-1`
    and `Size-2`). As the webui: a missing `Clip skip` reads as "1", a missing `Schedule type`
    as "Automatic", and an old suffixed sampler ("DPM++ 2M Karras") is split into `Sampler` and
    `Schedule type`.
    """
    *lines, last = text.strip().split("\n")
    if len(_PAIR.findall(last)) < 3:
        lines.append(last)
        last = ""
    prompt: list[str] = []
    negative: list[str] = []
    in_negative = False
    for line in lines:
        line = line.strip()
        if line.startswith(NEGATIVE):
            in_negative = True
            line = line[len(NEGATIVE) :].strip()
        (negative if in_negative else prompt).append(line)
    out = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for key, raw in _PAIR.findall(last):
        key, value = key.strip(), _unquote(raw.strip())
        size = _SIZE.match(value)
        if size:
            out[f"{key}-1"], out[f"{key}-2"] = size.group(1), size.group(2)
        else:
            out[key] = value
    out.setdefault("Clip skip", "1")
    out.setdefault("Schedule type", AUTOMATIC)
    if "Sampler" in out:
        try:
            sampler, suffix = check_sampler(out["Sampler"])
        except InvalidInputError:
            pass  # a sampler we don't run: kept as written; a request using it gets a 422
        else:
            out["Sampler"] = sampler
            if suffix and out["Schedule type"] == AUTOMATIC:
                out["Schedule type"] = suffix
    return out


# infotext field -> (request field, type); the webui's paste fields for txt2img/img2img
_REQUEST_FIELDS: dict[str, tuple[str, type]] = {
    "Prompt": ("prompt", str),
    "Negative prompt": ("negative_prompt", str),
    "Steps": ("steps", int),
    "Sampler": ("sampler_name", str),
    "Schedule type": ("scheduler", str),
    "CFG scale": ("cfg_scale", float),
    "Seed": ("seed", int),
    "Size-1": ("width", int),
    "Size-2": ("height", int),
    "Variation seed": ("subseed", int),
    "Variation seed strength": ("subseed_strength", float),
    "Seed resize from-1": ("seed_resize_from_w", int),
    "Seed resize from-2": ("seed_resize_from_h", int),
    "Clip skip": ("clip_skip", int),
    "Tiling": ("tiling", bool),
}
_IMG2IMG_FIELDS: dict[str, tuple[str, type]] = {
    "Denoising strength": ("denoising_strength", float),
    "Mask blur": ("mask_blur", int),
}
# txt2img's hires fix: any of these in the infotext turns it on, as the webui's paste does
_HIRES_FIELDS: dict[str, tuple[str, type]] = {
    "Hires upscale": ("hr_scale", float),
    "Hires resize-1": ("hr_resize_x", int),
    "Hires resize-2": ("hr_resize_y", int),
    "Hires steps": ("hr_second_pass_steps", int),
    "Hires upscaler": ("hr_upscaler", str),
    "Hires sampler": ("hr_sampler_name", str),
    "Hires schedule type": ("hr_scheduler", str),
    "Hires prompt": ("hr_prompt", str),
    "Hires negative prompt": ("hr_negative_prompt", str),
    "Denoising strength": ("denoising_strength", float),
}


def _typed(value: str, kind: type) -> Any:
    """`value` as `kind`: ints may be written as floats ("20.0"); flags as True or False."""
    if kind is int:
        return int(float(value))
    if kind is bool:
        if value.lower() not in ("true", "false"):
            raise ValueError(value)
        return value.lower() == "true"
    return kind(value)


def request_fields(text: str, img2img: bool = False) -> dict[str, Any]:
    """The request fields a pasted infotext sets (webui names, typed). Values that do not parse
    as their type are left out; the model (`Model`, `Model hash`) is not taken from it. `Eta`
    and `Sigma noise` set the webui options `eta_ancestral` and `s_noise`, in
    `override_settings`; `Face restoration` turns `restore_faces` on with that model as the
    `face_restoration_model` option.

    Raises
    ------
    InvalidInputError
        A `Schedule type` that is not known (field `scheduler`).
    """
    parsed = parse_infotext(text)
    hires = not img2img and any(k.startswith("Hires ") for k in parsed)
    table = {
        **_REQUEST_FIELDS,
        **(_IMG2IMG_FIELDS if img2img else {}),
        **(_HIRES_FIELDS if hires else {}),
    }
    out: dict[str, Any] = {}
    for key, (name, kind) in table.items():
        if key not in parsed:
            continue
        try:
            out[name] = _typed(parsed[key], kind)
        except (ValueError, OverflowError):  # "abc", "nan", "1e999"
            continue
    options: dict[str, Any] = {}
    if parsed.get("Face restoration"):  # the picture was restored, by the webui's option's model
        out["restore_faces"] = True
        options["face_restoration_model"] = parsed["Face restoration"]
    for key, option in _OPTION_FIELDS.items():
        try:
            value = float(parsed[key]) if key in parsed else math.nan
        except ValueError:
            continue
        if math.isfinite(value):
            options[option] = value
    if options:  # webui options, as its paste sets them: into `override_settings`
        out["override_settings"] = options
    if "scheduler" in out:
        out["scheduler"] = check_schedule(out["scheduler"])
    if hires:
        out["enable_hr"] = True
    return out
