"""The webui's built-in scripts, as its API takes them (`script_name` + `script_args`, the
positional values of the script's UI): each becomes a plan of jobs and grids (see
`sdcore.domain.scripts`), parsed here without torch so that a bad request is a 422 at submit.

- "Prompts from file or textbox": one job per line; a line may carry `--prompt "..." --steps N`
  options, parsed as the webui parses them.
- "Prompt matrix": every combination of the `|`-separated parts of the prompt, one job each,
  laid out in a labelled grid.
- "X/Y/Z plot": a job per cell of up to three axes (seed, steps, CFG scale, sampler, schedule
  type, prompt S/R, denoising...), values as the webui parses them (`1-5`, `1-10 (+2)`,
  `1-10 [4]`), a labelled grid per z value.
- "SD upscale" (img2img): the image upscaled, then redrawn tile by tile and blended back.
"""

from __future__ import annotations

import math
import random
import shlex
from collections.abc import Callable
from typing import Any

from sdcore.domain.models import GenerationParams, TaskKind
from sdcore.domain.removal import (
    DEFAULT_BLUR,
    DEFAULT_DILATE,
    MAX_BLUR,
    MAX_DILATE,
    MaskMode,
    RemoveSpec,
)
from sdcore.domain.scripts import ScriptGrid, ScriptPlan, TileUpscale
from sdcore.errors import InvalidInputError
from sdcore.webui.prompt_syntax import lora_tags
from sdcore.webui.samplers import NO_UPSCALER, SAMPLERS, check_sampler, resolve
from sdcore.webui.script_axes import AXES, Axis, axis_options, axis_values

PROMPTS_FROM_FILE = "prompts from file or textbox"
PROMPT_MATRIX = "prompt matrix"
XYZ_PLOT = "x/y/z plot"
SD_UPSCALE = "sd upscale"
REMOVE_PEOPLE = "remove people"  # POST /edits/remove on the webui's img2img (domain.removal)
# SD upscale's resamplers (the webui's first three upscalers); any other name is a registered
# upscaler model, fetched for the task
SD_UPSCALE_RESAMPLERS = (NO_UPSCALER, "Lanczos", "Nearest")
TXT2IMG_SCRIPTS = (PROMPT_MATRIX, PROMPTS_FROM_FILE, XYZ_PLOT)
IMG2IMG_SCRIPTS = (*TXT2IMG_SCRIPTS, SD_UPSCALE, REMOVE_PEOPLE)
MAX_JOBS = 256  # a bound on one task's plan; the work budget bounds its cost
MAX_SEED = 2**32 - 1
ARGS = "script_args"

# a job's fields, with the webui's bounds (a line or an axis value outside them is a 422)
_BOUNDS: dict[str, tuple[float, float]] = {
    "seed": (-1, MAX_SEED), "subseed": (-1, MAX_SEED), "subseed_strength": (0, 1),
    "steps": (1, 150), "guidance": (0, 30), "width": (8, 2048), "height": (8, 2048),
    "batch_size": (1, 8), "batches": (1, 16), "denoising_strength": (0, 1),
    "clip_skip": (1, 12), "hr_second_pass_steps": (0, 150), "s_noise": (0, 100),
    "seed_resize_from_w": (0, 2048), "seed_resize_from_h": (0, 2048),
}  # fmt: skip


def script_names(kind: TaskKind) -> tuple[str, ...]:
    """The scripts a txt2img or img2img request may name (lower case, as the webui's API)."""
    return IMG2IMG_SCRIPTS if kind is TaskKind.IMG2IMG else TXT2IMG_SCRIPTS


def plan_script(
    name: str, args: list[Any], params: GenerationParams, asked_scheduler: str | None = None
) -> GenerationParams:
    """`params` with the plan of script `name` run with `args`; `asked_scheduler`: the
    request's own `scheduler` (a sampler an axis sets resolves against it, as a request would).

    Raises
    ------
    InvalidInputError
        `script_name` for a script this kind of task does not run; `script_args` for args
        the script cannot take (or a job outside the request bounds), naming the argument.
    """
    key = name.strip().lower()
    if key not in script_names(params.kind):
        valid = ", ".join(script_names(params.kind))
        raise InvalidInputError("script_name", f"unknown script {name!r}; valid: {valid}")
    if key == REMOVE_PEOPLE:  # no jobs: the worker draws the mask, then inpaints
        return params.model_copy(update={"remove": _remove_people(list(args))})
    planner: Callable[[list[Any], GenerationParams, str | None], ScriptPlan] = {
        PROMPTS_FROM_FILE: _prompts_from_file,
        PROMPT_MATRIX: _prompt_matrix,
        XYZ_PLOT: _xyz_plot,
        SD_UPSCALE: _sd_upscale,
    }[key]
    plan = planner(list(args), params, asked_scheduler)
    if len(plan.jobs) > MAX_JOBS:
        raise InvalidInputError(ARGS, f"{len(plan.jobs)} jobs; at most {MAX_JOBS} per task")
    planned = params.model_copy(update={"script": plan})
    for job in planned.script_jobs():
        _check_job(job, params)
    return planned


def _remove_people(args: list[Any]) -> RemoveSpec:
    """script_args: target, mask mode (mask|box), dilate px, blur px, segmenter ("": built-in)."""
    target = str(_arg(args, 0, "person", "Target")).strip()
    mode = _arg(args, 1, MaskMode.MASK.value, "Mask mode")
    if mode not in tuple(MaskMode):
        raise InvalidInputError(ARGS, f"Mask mode (script_args[1]) is mask or box, not {mode!r}")
    dilate, blur = _arg(args, 2, DEFAULT_DILATE, "Dilate"), _arg(args, 3, DEFAULT_BLUR, "Blur")
    for n, (value, high) in enumerate(((dilate, MAX_DILATE), (blur, MAX_BLUR)), start=2):
        if not 0 <= value <= high:
            raise InvalidInputError(ARGS, f"script_args[{n}] {value} is outside 0..{high}")
    segmenter = str(_arg(args, 4, "", "Segmenter")).strip() or None
    return RemoveSpec(target=target or "person", mask_mode=MaskMode(mode), dilate=int(dilate),
                      blur=int(blur), segmenter=segmenter)  # fmt: skip


def _check_job(job: GenerationParams, base: GenerationParams) -> None:
    for field, (low, high) in _BOUNDS.items():
        value = getattr(job, field)
        if value is not None and not low <= value <= high:
            raise InvalidInputError(ARGS, f"a job's {field} {value} is outside {low}..{high}")
    for field in ("width", "height"):
        value = getattr(job, field)
        if value is not None and value % 8:
            raise InvalidInputError(ARGS, f"a job's {field} {value} is not a multiple of 8")
    # the task fetches and applies the LoRAs its own prompt names, once for all its jobs
    if lora_tags(job.prompt) != lora_tags(base.prompt):
        raise InvalidInputError(ARGS, "a job's <lora:...> tags must be the request prompt's")


def _arg(args: list[Any], index: int, default: Any, label: str) -> Any:
    value = args[index] if index < len(args) and args[index] is not None else default
    if isinstance(default, bool):
        if not isinstance(value, bool | int):
            raise InvalidInputError(ARGS, f"{label} (script_args[{index}]) must be a boolean")
        return bool(value)
    if isinstance(default, int | float) and not isinstance(value, int | float):
        try:
            return type(default)(value)
        except (TypeError, ValueError):
            raise InvalidInputError(
                ARGS, f"{label} (script_args[{index}]) must be a number"
            ) from None
    if isinstance(default, str) and not isinstance(value, str):
        raise InvalidInputError(ARGS, f"{label} (script_args[{index}]) must be a string")
    return value


def _fixed(seed: int) -> int:
    """The webui's fix_seed: -1 drawn once, so every job shares it."""
    return random.randrange(4294967294) if seed in (-1, None) else seed


# --- prompts from file or textbox -------------------------------------------------------------

# the webui's line options: (domain field, parser); None: accepted and ignored because it only
# says where the webui saves files (every result is stored with its task here)
_LINE_OPTIONS: dict[str, tuple[str, Callable[[str], Any]] | None] = {
    "prompt": ("prompt", str), "negative_prompt": ("negative_prompt", str),
    "seed": ("seed", int), "subseed": ("subseed", int),
    "subseed_strength": ("subseed_strength", float),
    "seed_resize_from_h": ("seed_resize_from_h", int),
    "seed_resize_from_w": ("seed_resize_from_w", int),
    "sampler_name": ("sampler", str), "sampler_index": ("sampler", str),
    "batch_size": ("batch_size", int), "n_iter": ("batches", int), "steps": ("steps", int),
    "cfg_scale": ("guidance", float), "width": ("width", int), "height": ("height", int),
    "tiling": ("tiling", lambda v: v == "true"),
    "denoising_strength": ("denoising_strength", float),
    "outpath_samples": None, "outpath_grids": None, "prompt_for_display": None,
    "do_not_save_samples": None, "do_not_save_grid": None,
}  # fmt: skip


def line_options(line: str) -> dict[str, Any]:
    """A line's `--option value` pairs as the webui's cmdargs parses them (shlex words; a
    prompt runs on to the next `--`), in domain names.

    Raises InvalidInputError (`script_args`) for an option this service cannot honour."""
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise InvalidInputError(ARGS, f"line {line!r}: {exc}") from None
    out: dict[str, Any] = {}
    pos = 0
    while pos < len(words):
        word = words[pos]
        if not word.startswith("--") or pos + 1 >= len(words):
            raise InvalidInputError(ARGS, f"line {line!r}: {word!r} needs --option value")
        tag = word[2:]
        if tag in ("prompt", "negative_prompt"):
            pos += 1
            text = [words[pos]]
            pos += 1
            while pos < len(words) and not words[pos].startswith("--"):
                text.append(words[pos])
                pos += 1
            out[tag] = " ".join(text)
            continue
        if tag not in _LINE_OPTIONS:
            raise InvalidInputError(ARGS, f"line {line!r}: option --{tag} is not run here")
        option, value = _LINE_OPTIONS[tag], words[pos + 1]
        pos += 2
        if option is None:
            continue
        field, parse = option
        try:
            out[field] = parse(value)
        except ValueError:
            raise InvalidInputError(ARGS, f"line {line!r}: --{tag} {value!r}") from None
        if tag == "sampler_index" and value.isdigit() and int(value) < len(SAMPLERS):
            out[field] = SAMPLERS[int(value)]
    if "sampler" in out:
        sampler, suffix = check_sampler(str(out["sampler"]))
        out["sampler"] = sampler
        out["scheduler"] = suffix or resolve(sampler)[1]
    return out


def _prompts_from_file(args: list[Any], params: GenerationParams, _: str | None) -> ScriptPlan:
    """Args: iterate seed every line, same random seed for all lines, [prompt position (start
    or end: where a line's prompt joins the request's; without it a line's replaces it)],
    the text."""
    iterate = _arg(args, 0, False, "checkbox_iterate")
    same = _arg(args, 1, False, "checkbox_iterate_batch")
    position = _arg(args, 2, "start", "prompt_position") if len(args) >= 4 else None
    text = _arg(args, 3 if len(args) >= 4 else 2, "", "prompt_txt")
    if position not in (None, "start", "end"):
        raise InvalidInputError(ARGS, "prompt_position (script_args[2]) must be start or end")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise InvalidInputError(ARGS, "prompt_txt: no lines")
    seed = _fixed(params.seed) if iterate or same else params.seed
    jobs: list[dict[str, Any]] = []
    for line in lines:
        changes = line_options(line) if "--" in line else {"prompt": line}
        for field in ("prompt", "negative_prompt"):
            own, base = changes.get(field), getattr(params, field)
            if position is not None and own and base:
                changes[field] = f"{own} {base}" if position == "start" else f"{base} {own}"
        jobs.append({"seed": seed, **changes})
        if iterate:
            seed += params.batch_size * params.batches
    return ScriptPlan(name=PROMPTS_FROM_FILE, jobs=jobs)


# --- prompt matrix ----------------------------------------------------------------------------


def _prompt_matrix(args: list[Any], params: GenerationParams, _: str | None) -> ScriptPlan:
    """Args: put variable parts at start, use different seed for each picture, prompt type
    (positive or negative), joining delimiter (comma or space), grid margin (px)."""
    at_start = _arg(args, 0, False, "put_at_start")
    different = _arg(args, 1, False, "different_seeds")
    which = _arg(args, 2, "positive", "prompt_type")
    delimiter = _arg(args, 3, "comma", "variations_delimiter")
    margin = _arg(args, 4, 0, "margin_size")
    if not 0 <= margin <= 500:
        raise InvalidInputError(ARGS, "margin_size must be within 0..500 px")
    if which not in ("positive", "negative"):
        raise InvalidInputError(ARGS, "prompt_type (script_args[2]) must be positive or negative")
    if delimiter not in ("comma", "space"):
        raise InvalidInputError(ARGS, "variations_delimiter (script_args[3]): comma or space")
    if params.batches > 1:  # the webui sets n_iter itself: one picture per combination
        raise InvalidInputError("n_iter", "the prompt matrix makes one picture per combination")
    field = "prompt" if which == "positive" else "negative_prompt"
    parts = str(getattr(params, field)).split("|")
    variable = parts[1:]
    if not variable:
        raise InvalidInputError(ARGS, f"the {field} has no |-separated parts to combine")
    joiner = ", " if delimiter == "comma" else " "
    seed = _fixed(params.seed)
    jobs: list[dict[str, Any]] = []
    if 2 ** len(variable) > MAX_JOBS:
        raise InvalidInputError(ARGS, f"{len(variable)} variable parts; at most 8 per task")
    for n in range(2 ** len(variable)):
        chosen = [text.strip().strip(",") for i, text in enumerate(variable) if n & (1 << i)]
        chosen = [*chosen, parts[0]] if at_start else [parts[0], *chosen]
        jobs.append(
            {
                field: joiner.join(chosen),
                "seed": seed + (n if different else 0),
                "batch_size": 1,
                "batches": 1,
            }
        )
    across = variable[: math.ceil(len(variable) / 2)]
    down = variable[len(across) :]

    def labels(texts: list[str]) -> list[str]:
        return [
            "\n".join(("+ " if pos & (1 << i) else "- ") + t.strip() for i, t in enumerate(texts))
            for pos in range(1 << len(texts))
        ]

    grid = ScriptGrid(
        cells=list(range(len(jobs))),
        columns=1 << len(across),
        column_labels=labels(across),
        row_labels=labels(down),
        margin=margin,
    )
    return ScriptPlan(name=PROMPT_MATRIX, jobs=jobs, grids=[grid])


# --- x/y/z plot -------------------------------------------------------------------------------


def _pick_axis(value: Any, kind: TaskKind, index: int) -> Axis:
    options = axis_options(kind)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(options):
        label = options[value]
    elif isinstance(value, str) and value.strip().lower() in {o.lower() for o in options}:
        label = next(o for o in options if o.lower() == value.strip().lower())
    else:
        raise InvalidInputError(ARGS, f"script_args[{index}]: no axis type {value!r}")
    axis = AXES.get(label)
    if axis is None or axis.why:
        why = axis.why if axis is not None else "not run here"
        raise InvalidInputError(ARGS, f"script_args[{index}]: axis {label!r}: {why}")
    return axis


def _xyz_plot(args: list[Any], params: GenerationParams, scheduler: str | None) -> ScriptPlan:
    """Args (the webui's order): x type, x values, x values (dropdown), the same for y and z,
    draw legend, include lone images, include sub grids, keep -1 for seeds, vary seeds x, y
    and z, grid margins (px), csv mode. A type is an index into the webui's list of axis
    types (`/sdapi/v1/script-info`) or its label."""
    if params.batch_size * params.batches > 1:  # the webui's cell is then a grid of its own
        raise InvalidInputError("batch_size", "an x/y/z plot cell is one picture: 1 x 1")
    legend = _arg(args, 9, True, "draw_legend")
    lone = _arg(args, 10, False, "include_lone_images")
    subgrids = _arg(args, 11, False, "include_sub_grids")
    keep_random = _arg(args, 12, False, "no_fixed_seeds")
    vary = [_arg(args, 13 + i, False, f"vary_seeds_{a}") for i, a in enumerate("xyz")]
    margin = _arg(args, 16, 0, "margin_size")
    if not 0 <= margin <= 500:
        raise InvalidInputError(ARGS, "margin_size must be within 0..500 px")
    axes: list[tuple[Axis, list[Any]]] = []
    for i in range(3):
        axis = _pick_axis(args[3 * i] if 3 * i < len(args) else 0, params.kind, 3 * i)
        text = args[3 * i + 1] if 3 * i + 1 < len(args) else ""
        dropdown = args[3 * i + 2] if 3 * i + 2 < len(args) else None
        if isinstance(dropdown, list) and dropdown and not (isinstance(text, str) and text):
            text = ",".join(f'"{v}"' for v in dropdown)
        values = [0] if axis.label == "Nothing" else axis_values(axis, str(text or ""))
        if not values:
            raise InvalidInputError(ARGS, f"script_args[{3 * i + 1}]: no {axis.label} values")
        if axis.label in ("Seed", "Var. seed") and not keep_random:
            values = [_fixed(v) for v in values]
        axes.append((axis, values))
    (xa, xs), (ya, ys), (za, zs) = axes
    if xa.label == "Prompt S/R" or ya.label == "Prompt S/R" or za.label == "Prompt S/R":
        for axis, values in axes:
            if (
                axis.label == "Prompt S/R"
                and values[0] not in params.prompt + params.negative_prompt
            ):
                raise InvalidInputError(
                    ARGS, f"Prompt S/R did not find {values[0]!r} in the prompts"
                )
    base_seed = params.seed if keep_random else _fixed(params.seed)
    jobs = []
    for iz, z in enumerate(zs):
        for iy, y in enumerate(ys):
            for ix, x in enumerate(xs):
                cell: dict[str, Any] = {
                    "seed": base_seed,
                    "prompt": params.prompt,
                    "negative_prompt": params.negative_prompt,
                    "sampler_name": params.sampler,
                    "scheduler": scheduler,
                }
                for axis, value, values in ((xa, x, xs), (ya, y, ys), (za, z, zs)):
                    axis.apply(cell, value, values)
                cell["seed"] += sum(i for i, v in zip((ix, iy, iz), vary, strict=True) if v)
                named = (cell.pop("sampler_name"), cell.pop("scheduler"))
                # no axis changed them: the request's own, as resolved
                same = named == (params.sampler, scheduler)
                sampler, schedule = (params.sampler, params.scheduler) if same else resolve(*named)
                jobs.append({**cell, "sampler": sampler, "scheduler": schedule})

    def labels(axis: Axis, values: list[Any]) -> list[str]:
        return [axis.label_of(v) for v in values] if legend else []

    per = len(xs) * len(ys)
    grids = [
        ScriptGrid(
            cells=list(range(iz * per, (iz + 1) * per)),
            columns=len(xs),
            column_labels=labels(xa, xs),
            row_labels=labels(ya, ys),
            margin=margin,
        )
        for iz in range(len(zs))
    ]
    titles = labels(za, zs) or [""] * len(zs) if len(zs) > 1 else []
    return ScriptPlan(
        name=XYZ_PLOT,
        jobs=jobs,
        grids=grids,
        titles=titles,
        sub_grids=subgrids or len(zs) == 1,
        cells=lone,
    )


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Where the webui's SD upscale starts its tiles along one side of `size` px: as few as
    cover it sharing at least `overlap` px, spread evenly, the last flush with the edge."""
    count = max(1, math.ceil((size - overlap) / (tile - overlap)))
    step = (size - tile) / (count - 1) if count > 1 else 0
    return [min(int(i * step), size - tile) for i in range(count)]


def upscaled_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """The size SD upscale redraws an image at: `scale` times, rounded down to 8 px."""
    return int(width * scale) // 8 * 8, int(height * scale) // 8 * 8


def with_tiles(params: GenerationParams, source: tuple[int, int]) -> GenerationParams:
    """An SD upscale task's params with its tile count, from its image's size.

    Raises InvalidInputError (`script_args`) when the upscaled image is smaller than a tile."""
    plan = params.script
    if plan is None or plan.tile_upscale is None:
        return params
    up = plan.tile_upscale
    width, height = upscaled_size(*source, up.scale)
    tile_w, tile_h = params.width or 512, params.height or 512
    if width < tile_w or height < tile_h:
        raise InvalidInputError(
            ARGS,
            f"the upscaled image {width}x{height} is smaller than "
            f"a {tile_w}x{tile_h} tile (width x height)",
        )
    overlap = min(up.overlap, tile_w - 8, tile_h - 8)
    tiles = len(tile_starts(width, tile_w, overlap)) * len(tile_starts(height, tile_h, overlap))
    upscale = up.model_copy(update={"tiles": tiles})
    script = plan.model_copy(update={"tile_upscale": upscale})
    return params.model_copy(update={"script": script, "width": tile_w, "height": tile_h})


# --- sd upscale -------------------------------------------------------------------------------


def _sd_upscale(args: list[Any], params: GenerationParams, _: str | None) -> ScriptPlan:
    """Args: (an info text, unused), tile overlap (px), upscaler (an index into
    `/sdapi/v1/upscalers` or its name), scale factor."""
    overlap = _arg(args, 1, 64, "overlap")
    chosen = args[2] if len(args) > 2 and args[2] is not None else "Lanczos"
    scale = _arg(args, 3, 2.0, "scale_factor")
    if isinstance(chosen, int) and not isinstance(chosen, bool):
        names = SD_UPSCALE_RESAMPLERS
        if not 0 <= chosen < len(names):
            raise InvalidInputError(ARGS, "upscaler_index (script_args[2]): give a name")
        chosen = names[chosen]
    if not isinstance(chosen, str) or not chosen.strip():
        raise InvalidInputError(ARGS, "upscaler_index (script_args[2]): an upscaler name")
    if not 1 <= scale <= 4:
        raise InvalidInputError(ARGS, "scale_factor (script_args[3]) must be within 1..4")
    if not 0 <= overlap <= 256:
        raise InvalidInputError(ARGS, "overlap (script_args[1]) must be within 0..256")
    if params.batch_size > 1 or params.mask is not None:
        raise InvalidInputError("batch_size", "SD upscale redraws one image: batch size 1, no mask")
    seed = _fixed(params.seed)  # every tile of picture n is drawn with seed + n, as the webui
    jobs: list[dict[str, Any]] = [{"seed": seed + n, "batches": 1} for n in range(params.batches)]
    upscale = TileUpscale(upscaler=chosen, scale=scale, overlap=overlap)
    return ScriptPlan(name=SD_UPSCALE, jobs=jobs, tile_upscale=upscale)
