"""The webui's rules for a generation's numbers, without torch: sizes, counts, img2img and
inpainting strengths and modes, and the hires fix's plan (target and cover size, steps,
strength, sampler). The proxy checks a request with them at submit, so a request that cannot
run is a 422 naming its field before it is queued; the engine plans with the same functions.

Hires target size as the webui computes it: `hr_scale` times the first pass's, or
`hr_resize_x/y` (one of them 0: the other side keeps the aspect ratio; both given: upscaled to
cover the box, then centre-cropped to it), rounded down to a multiple of 8 (the VAE's latent
grid). `denoising_strength` 0 is allowed there, as in the webui: the second pass then runs no
step and the picture is the upscaled first pass.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sdcore.domain.models import GenerationParams, TaskKind
from sdcore.errors import InvalidInputError
from sdcore.webui.samplers import HIRES_IMAGE_UPSCALERS, HIRES_LATENT_UPSCALERS, resolve

MAX_SIDE = 2048  # generation; a 2048x2048 SD 1.x image already needs ~10 GB of activations
MAX_HIRES_SIDE = 2048
MAX_SEED = 2**32 - 1  # the webui's range; torch takes larger, clients expect this one
LATENT_SCALE = 8  # pixels per latent cell of every Stable Diffusion VAE


@dataclass(frozen=True)
class HiresGeometry:
    """What the hires fix will do."""

    width: int  # the final size
    height: int
    cover_w: int  # upscaled to this before the centre crop (equal to width/height: no crop)
    cover_h: int
    upscaler: str
    steps: int  # of the second pass; 0 when `strength` is 0 (it keeps the upscaled picture)
    strength: float
    sampler: str  # the second pass's, resolved
    schedule: str


def task_size(params: GenerationParams, native: tuple[int, int]) -> tuple[int, int]:
    """The task's (width, height): as asked, else the checkpoint's `native` size.

    Raises InvalidInputError naming `width` or `height`."""
    width = native[0] if params.width is None else params.width
    height = native[1] if params.height is None else params.height
    for field, value in (("width", width), ("height", height)):
        if value % 8 or not 8 <= value <= MAX_SIDE:
            raise InvalidInputError(
                field, f"must be a multiple of 8 between 8 and {MAX_SIDE}, got {value}"
            )
    return width, height


def check_counts(params: GenerationParams) -> None:
    """Steps, batch size and batch count, and the sampler. Raises InvalidInputError."""
    resolve(params.sampler, params.scheduler)
    for field, value in (("steps", params.steps), ("batch_size", params.batch_size)):
        if value < 1:
            raise InvalidInputError(field, f"must be at least 1, got {value}")
    if params.batches < 1:
        raise InvalidInputError("n_iter", f"must be at least 1, got {params.batches}")


def check_seed(seed: int, total: int, field: str) -> None:
    """A given (non-negative) first seed leaves room for `total` consecutive ones."""
    if seed >= 0 and seed + total - 1 > MAX_SEED:
        raise InvalidInputError(field, f"must be at most {MAX_SEED - total + 1}")


def seed_resize(params: GenerationParams) -> tuple[int, int] | None:
    """(latent height, latent width) to draw the seed's noise at, or None (off). Raises
    InvalidInputError."""
    w, h = params.seed_resize_from_w, params.seed_resize_from_h
    if w <= 0 or h <= 0:
        return None
    for field, value in (("seed_resize_from_w", w), ("seed_resize_from_h", h)):
        if not LATENT_SCALE <= value <= MAX_SIDE:
            raise InvalidInputError(field, f"must be {LATENT_SCALE}..{MAX_SIDE} (or <= 0: off)")
    return h // LATENT_SCALE, w // LATENT_SCALE


def check_img2img(params: GenerationParams) -> None:
    """Strength and modes of img2img and inpainting. Raises InvalidInputError."""
    strength = params.denoising_strength
    if not 0 < strength <= 1:
        raise InvalidInputError("denoising_strength", f"must be in (0, 1], got {strength}")
    if int(params.steps * strength) < 1:
        raise InvalidInputError(
            "denoising_strength",
            f"steps x denoising_strength must be at least 1 ({params.steps} x {strength})",
        )
    for field, value in (
        ("resize_mode", params.resize_mode),
        ("inpainting_fill", params.inpainting_fill),
    ):
        if not 0 <= value <= 3:
            raise InvalidInputError(field, f"must be 0..3, got {value}")
    if params.mask_blur < 0:
        raise InvalidInputError("mask_blur", f"must be >= 0, got {params.mask_blur}")
    if params.inpaint_full_res_padding < 0:
        raise InvalidInputError("inpaint_full_res_padding", "must be >= 0")


def hires_sampler(params: GenerationParams) -> tuple[str, str]:
    """The second pass's (sampler, schedule): `hr_sampler`/`hr_scheduler`, each empty meaning
    the first pass's request.

    Raises InvalidInputError naming `hr_sampler_name` or `hr_scheduler`."""
    try:
        return resolve(params.hr_sampler or params.sampler, params.hr_scheduler or params.scheduler)
    except InvalidInputError as exc:
        field = "hr_sampler_name" if exc.field == "sampler_name" else "hr_scheduler"
        raise InvalidInputError(field, exc.message) from None


def hires_geometry(
    params: GenerationParams, width: int, height: int, models: Collection[str] = ()
) -> HiresGeometry | None:
    """The hires fix `params` ask for on a `width x height` first pass, or None (off);
    `models`: the registered upscaler models the task has (usable as `hr_upscaler`).

    Raises
    ------
    InvalidInputError
        An unknown upscaler or sampler, a scale or size out of range, or a strength above 0
        that runs no step.
    """
    if not params.hires:
        return None
    upscalers = (*HIRES_LATENT_UPSCALERS, *HIRES_IMAGE_UPSCALERS)
    if params.hr_upscaler not in upscalers and params.hr_upscaler not in models:
        raise InvalidInputError(
            "hr_upscaler",
            f"unknown {params.hr_upscaler!r}; valid: {', '.join(upscalers)} or a registered "
            "upscaler model",
        )
    sampler, schedule = hires_sampler(params)
    rx, ry = params.hr_resize_x, params.hr_resize_y
    if rx <= 0 and ry <= 0:
        if not 1 <= params.hr_scale <= 4:
            raise InvalidInputError("hr_scale", f"must be 1..4, got {params.hr_scale}")
        cover_w, cover_h = int(width * params.hr_scale), int(height * params.hr_scale)
        target_w, target_h = cover_w, cover_h
    elif ry <= 0:
        cover_w, cover_h = rx, rx * height // width
        target_w, target_h = cover_w, cover_h
    elif rx <= 0:
        cover_w, cover_h = ry * width // height, ry
        target_w, target_h = cover_w, cover_h
    else:  # cover the box, keeping the aspect ratio, then crop to it
        if width / height < rx / ry:
            cover_w, cover_h = rx, rx * height // width
        else:
            cover_w, cover_h = ry * width // height, ry
        target_w, target_h = rx, ry
    target_w, target_h = _down8(target_w), _down8(target_h)
    cover_w, cover_h = max(_down8(cover_w), target_w), max(_down8(cover_h), target_h)
    for field, value in (("hr_resize_x", cover_w), ("hr_resize_y", cover_h)):
        if value > MAX_HIRES_SIDE:
            raise InvalidInputError(field, f"the hires size must be at most {MAX_HIRES_SIDE}")
    steps = params.hr_second_pass_steps or params.steps
    strength = params.denoising_strength
    if not 0 <= strength <= 1 or (strength > 0 and int(steps * strength) < 1):
        raise InvalidInputError(
            "denoising_strength",
            f"the hires pass needs 0 <= strength <= 1 and, above 0, steps x strength >= 1 "
            f"({steps} x {strength})",
        )
    steps = steps if strength > 0 else 0
    return HiresGeometry(
        target_w, target_h, cover_w, cover_h, params.hr_upscaler, steps, strength, sampler, schedule
    )


def check_generation(
    params: GenerationParams, native: tuple[int, int], upscalers: Collection[str]
) -> None:
    """Everything about a txt2img or img2img request that can be decided before it runs, on
    a checkpoint that draws at `native` size by default. Raises InvalidInputError."""
    if params.kind not in (TaskKind.TXT2IMG, TaskKind.IMG2IMG):
        return
    width, height = task_size(params, native)
    check_counts(params)
    total = params.batch_size * params.batches
    check_seed(params.seed, total, "seed")
    check_seed(params.subseed, total, "subseed")
    seed_resize(params)
    if params.kind is TaskKind.TXT2IMG:
        hires_geometry(params, width, height, upscalers)
    else:
        check_img2img(params)


def _down8(value: int) -> int:
    return max(8, value // 8 * 8)
