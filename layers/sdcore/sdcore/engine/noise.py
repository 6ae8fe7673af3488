"""Initial noise with the webui's seed semantics, and the cheap latent preview.

Per image i (seed s_i, variation seed v_i): a CPU generator seeded with s_i draws the image's
noise at the latent size; it then stays the image's generator for the sampler's later noise
(ancestral and SDE steps), so image i is the same whatever the batch it is in. With a variation
strength, noise drawn from v_i is spherically interpolated with it (`slerp`). With
`seed_resize_from` the seed's noise is drawn for that other size and pasted, centred, over the
image's own noise, so a seed keeps its composition across sizes.

The webui's `randn_source` picks the device the noise is drawn on ("CPU", this service's
default; "GPU": the pipeline's device, so the picture matches a webui on that GPU; "NV": an
NVIDIA GPU's numbers on any device, see `philox`), and its
`eta_noise_seed_delta` (ENSD) reseeds the generator the sampler goes on with at seed + ENSD.
"""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image

from sdcore.engine.philox import PhiloxGenerator

# SD 1.x latent channels -> RGB, the widely used linear fit to the VAE decoder (the webui's
# "Approx cheap" preview uses the same factors)
SD1_LATENT_RGB = torch.tensor(
    [
        [0.298, 0.207, 0.208],
        [0.187, 0.286, 0.173],
        [-0.158, 0.189, 0.264],
        [-0.184, -0.271, -0.473],
    ]
)
# the webui's coefficients for SDXL's latent space (another VAE)
SDXL_LATENT_RGB = torch.tensor(
    [
        [0.3448, 0.4168, 0.4395],
        [-0.1953, -0.0290, 0.0250],
        [0.1074, 0.0886, -0.0163],
        [-0.3730, -0.2499, -0.2088],
    ]
)


def slerp(t: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation from `low` (t=0) to `high` (t=1) of (C, H, W) noise, normalised
    along dim 1 as the webui does; nearly parallel inputs fall back to linear interpolation."""
    low_n = low / torch.norm(low, dim=1, keepdim=True)
    high_n = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_n * high_n).sum(1)
    if dot.mean() > 0.9995:
        return (1 - t) * low + t * high
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so).unsqueeze(1) * low + (
        torch.sin(t * omega) / so
    ).unsqueeze(1) * high


def _generator(seed: int, device: torch.device | str, nv: bool) -> Any:
    return PhiloxGenerator(seed) if nv else torch.Generator(device).manual_seed(seed)


def _draw(generator: Any, shape: tuple[int, ...], device: torch.device | str) -> torch.Tensor:
    if isinstance(generator, PhiloxGenerator):
        return generator.randn_tensor(shape).to(device)
    return torch.randn(shape, generator=generator, device=device)


def _randn(seed: int, shape: tuple[int, ...], device: torch.device | str, nv: bool) -> torch.Tensor:
    return _draw(_generator(seed, device, nv), shape, device)


def _paste_centred(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """`target` with the centred overlap of `source` (both (C, H, W)) written over it."""
    out = target.clone()
    _, sh, sw = source.shape
    _, th, tw = target.shape
    h, w = min(sh, th), min(sw, tw)
    sy, sx = (sh - h) // 2, (sw - w) // 2
    ty, tx = (th - h) // 2, (tw - w) // 2
    out[:, ty : ty + h, tx : tx + w] = source[:, sy : sy + h, sx : sx + w]
    return out


def image_noise(
    shape: tuple[int, int, int],
    seed: int,
    subseed: int | None = None,
    subseed_strength: float = 0.0,
    resize_from: tuple[int, int] | None = None,
    ensd: int = 0,
    device: torch.device | str = "cpu",
    nv: bool = False,
) -> tuple[torch.Tensor, Any]:
    """One image's initial noise, (C, H, W) float32 on `device`, and its generator (which drew
    the image-size noise first, whatever the options, and goes on to the sampler; with `ensd`,
    a generator seeded at seed + ensd goes on instead, as the webui's ENSD).

    `resize_from` is the (latent height, latent width) the seed's noise is drawn at; `nv`
    draws with the webui's NV generators (`philox.PhiloxGenerator`) instead of torch's."""
    generator = _generator(seed, device, nv)
    noise = _draw(generator, shape, device)
    source_shape = (shape[0], *resize_from) if resize_from else shape
    source = noise if source_shape == shape else _randn(seed, source_shape, device, nv)
    if subseed is not None and subseed_strength > 0:
        source = slerp(subseed_strength, source, _randn(subseed, source_shape, device, nv))
    if ensd:
        generator = _generator(seed + ensd, device, nv)
    if source_shape != shape:
        return _paste_centred(source, noise), generator
    return source, generator


def latent_preview(latent: torch.Tensor, factors: torch.Tensor = SD1_LATENT_RGB) -> Image.Image:
    """A (4, h, w) latent as an RGB image of the same h x w, by the linear fit (no VAE):
    `SD1_LATENT_RGB` for SD 1.x/2.x, `SDXL_LATENT_RGB` for SDXL."""
    factors = factors.to(latent.device, torch.float32)
    rgb = torch.einsum("chw,cr->hwr", latent.float(), factors)
    pixels = ((rgb + 1) / 2).clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()
    return Image.fromarray(pixels, "RGB")
