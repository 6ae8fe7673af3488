"""Sampler names as the webui spells them. The engine maps each to a diffusers scheduler; this
module stays free of torch so the API edge can validate names cheaply."""

from __future__ import annotations

SAMPLERS: tuple[str, ...] = (
    "Euler",
    "Euler a",
    "LMS",
    "Heun",
    "DPM++ 2M",
    "DPM++ 2M Karras",
    "DDIM",
    "UniPC",
)
DEFAULT_SAMPLER = "Euler"
UPSCALERS: tuple[str, ...] = ("Lanczos", "Nearest")
# the webui's "None": extras leaves the image as it is (webui clients send it by default)
NO_UPSCALER = "None"
