"""The webui's hires fix for txt2img: a first pass at `width x height`, an upscale (of the
latents, or of the decoded image by a resampler or a registered upscaler model), then an img2img
pass at the larger size with `denoising_strength` and `hr_second_pass_steps` (0: the first
pass's steps), and its own sampler, schedule type and prompts when `hr_sampler`,
`hr_scheduler`, `hr_prompt`, `hr_negative_prompt` say (empty: the first pass's). The plan's
sizes and checks: `sdcore.webui.generation_rules`, which the proxy checks requests with too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 (torch's own convention)
from PIL import Image

from sdcore.domain.models import GenerationParams
from sdcore.webui.generation_rules import HiresGeometry, hires_geometry
from sdcore.webui.samplers import HIRES_IMAGE_UPSCALERS, HIRES_LATENT_UPSCALERS

# webui name -> (torch interpolation mode, antialias)
_LATENT_MODES: dict[str, tuple[str, bool]] = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
_RESAMPLE = {"Lanczos": Image.Resampling.LANCZOS, "Nearest": Image.Resampling.NEAREST}


@dataclass(frozen=True)
class HiresPlan(HiresGeometry):
    @property
    def latent(self) -> bool:
        return self.upscaler in _LATENT_MODES

    @property
    def model(self) -> bool:
        """Whether the upscaler is a registered model (not a resampler or a latent mode)."""
        return self.upscaler not in (*HIRES_LATENT_UPSCALERS, *HIRES_IMAGE_UPSCALERS)

    def infotext_fields(
        self, params: GenerationParams, sampler: str, schedule: str
    ) -> list[tuple[str, Any]]:
        """The webui's extra infotext fields of a hires fix; `sampler` and `schedule` are the
        first pass's (the second's are written when asked for and different)."""
        resize = params.hr_resize_x > 0 or params.hr_resize_y > 0
        asked = params.hr_sampler or params.hr_scheduler
        return [
            ("Denoising strength", self.strength),
            ("Hires upscale", None if resize else params.hr_scale),
            ("Hires resize", f"{params.hr_resize_x}x{params.hr_resize_y}" if resize else None),
            ("Hires steps", params.hr_second_pass_steps or None),
            ("Hires upscaler", self.upscaler),
            ("Hires sampler", self.sampler if asked and self.sampler != sampler else None),
            ("Hires schedule type", self.schedule if asked and self.schedule != schedule else None),
            ("Hires prompt", _changed(params.hr_prompt, params.prompt)),
            ("Hires negative prompt", _changed(params.hr_negative_prompt, params.negative_prompt)),
        ]

    def prompts(self, params: GenerationParams) -> tuple[str, str] | None:
        """The second pass's (prompt, negative prompt) when either differs from the first's."""
        prompt = params.hr_prompt or params.prompt
        negative = params.hr_negative_prompt or params.negative_prompt
        same = prompt == params.prompt and negative == params.negative_prompt
        return None if same else (prompt, negative)

    def upscale_latents(self, latents: torch.Tensor, scale: int) -> torch.Tensor:
        mode, antialias = _LATENT_MODES[self.upscaler]
        size = (self.cover_h // scale, self.cover_w // scale)
        out = F.interpolate(latents, size=size, mode=mode, antialias=antialias)
        return _crop(out, self.height // scale, self.width // scale)

    def upscale_image(
        self,
        image: Image.Image,
        model: Callable[[Image.Image, float], Image.Image] | None = None,
    ) -> Image.Image:
        """The decoded first-pass picture at the hires size: resampled, or (`model`, for a
        registered upscaler) upscaled by the model as far as the cover size needs, then
        Lanczos-resized to it exactly, as the webui's `resize_image` with an upscaler does;
        then centre-cropped to the target."""
        if model is not None:
            scale = max(self.cover_w / image.width, self.cover_h / image.height)
            big = model(image, scale) if scale > 1 else image
            if big.size != (self.cover_w, self.cover_h):
                big = big.resize((self.cover_w, self.cover_h), Image.Resampling.LANCZOS)
        else:
            big = image.resize((self.cover_w, self.cover_h), _RESAMPLE[self.upscaler])
        left, top = (self.cover_w - self.width) // 2, (self.cover_h - self.height) // 2
        return big.crop((left, top, left + self.width, top + self.height))


def _changed(value: str, first: str) -> str | None:
    return value if value and value != first else None


def _crop(latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
    top = (latents.shape[2] - height) // 2
    left = (latents.shape[3] - width) // 2
    return latents[:, :, top : top + height, left : left + width]


def plan_hires(
    params: GenerationParams, width: int, height: int, models: Collection[str] = ()
) -> HiresPlan | None:
    """The hires fix `params` ask for (None: off), as `hires_geometry` plans it. Raises
    InvalidInputError."""
    geometry = hires_geometry(params, width, height, models)
    return None if geometry is None else HiresPlan(**dataclasses.asdict(geometry))
