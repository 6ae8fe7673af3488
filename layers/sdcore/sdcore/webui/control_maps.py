"""The ControlNet preprocessors that need no model, as the sd-webui-controlnet extension runs
them, in numpy and Pillow only (the proxy answers /controlnet/detect with them; the engine
uses them for its units): the map a module makes of an image, the extension's pixel-perfect
resolution, and the map fitted to the picture's size by resize mode.

- `canny`: OpenCV's Canny (which the extension calls) re-done here: 3x3 Sobel gradients of
  each RGB channel with replicated borders, the channel of the largest L1 magnitude, OpenCV's
  non-maximum suppression (22.5 degree sectors) and 8-connected hysteresis between
  threshold_a (low) and threshold_b (high); the image first resized so that its shorter side
  is `processor_res`.
- `threshold`: white where every channel is above threshold_a; `scribble`: white where one is
  below it (dark strokes on white become the white-on-black map scribble models take).
- `invert`: 255 - the image. `tile_resample`: shrunk by threshold_a (nothing below 1.1).
- `inpaint_only`: the image with its masked pixels marked (the ControlNet sees -1 there).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from sdcore.domain.controlnet import ControlResize

TAN_22_5 = 0.41421356237309503
TAN_67_5 = 2.414213562373095


@dataclass
class ControlMap:
    """A preprocessor's output: the RGB map and, for inpainting, the mask of pixels the
    ControlNet sees as unknown (white = masked)."""

    image: Image.Image
    masked: Image.Image | None = None


def _rgb(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def resize_to_res(image: Image.Image, res: int) -> Image.Image:
    """Scaled so that its shorter side is `res` (the extension's `resize_image_with_pad`,
    whose padding it takes off again): area averaging to shrink, bicubic to enlarge."""
    k = res / min(image.width, image.height)
    size = (max(1, round(image.width * k)), max(1, round(image.height * k)))
    if size == image.size:
        return image
    method = Image.Resampling.BICUBIC if k > 1 else Image.Resampling.BOX
    return image.resize(size, method)


def _sobel(channel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.pad(channel.astype(np.int32), 1, mode="edge")
    h, w = channel.shape

    def at(dy: int, dx: int) -> np.ndarray:
        return p[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    gx = (at(-1, 1) + 2 * at(0, 1) + at(1, 1)) - (at(-1, -1) + 2 * at(0, -1) + at(1, -1))
    gy = (at(1, -1) + 2 * at(1, 0) + at(1, 1)) - (at(-1, -1) + 2 * at(-1, 0) + at(-1, 1))
    return gx, gy


def canny(pixels: np.ndarray, low: float, high: float) -> np.ndarray:
    """OpenCV's `Canny(pixels, low, high)` (aperture 3, L1 gradient) on an HxWxC uint8 array:
    an HxW uint8 map, 255 on edges."""
    if low > high:
        low, high = high, low
    grads = [_sobel(pixels[..., c]) for c in range(pixels.shape[2])]
    mags = np.stack([np.abs(gx) + np.abs(gy) for gx, gy in grads])
    best = np.argmax(mags, axis=0)  # OpenCV keeps the channel of the largest magnitude
    pick = best[None]
    mag = np.take_along_axis(mags, pick, 0)[0]
    dx = np.take_along_axis(np.stack([g[0] for g in grads]), pick, 0)[0]
    dy = np.take_along_axis(np.stack([g[1] for g in grads]), pick, 0)[0]
    h, w = mag.shape
    m = np.pad(mag, 1)  # outside the image the magnitude is 0, as in OpenCV's buffers

    def at(oy: int | np.ndarray, ox: int | np.ndarray) -> np.ndarray:
        return m[1 + oy + np.arange(h)[:, None], 1 + ox + np.arange(w)[None, :]]

    ax, ay = np.abs(dx).astype(np.float64), np.abs(dy).astype(np.float64)
    horizontal = ay < ax * TAN_22_5
    vertical = ay > ax * TAN_67_5
    s = np.where((dx ^ dy) < 0, -1, 1)
    keep = np.where(
        horizontal,
        (mag > at(0, -1)) & (mag >= at(0, 1)),
        np.where(
            vertical,
            (mag > at(-1, 0)) & (mag >= at(1, 0)),
            (mag > at(-1, -s)) & (mag > at(1, s)),
        ),
    )
    candidate = keep & (mag > low)
    edges = candidate & (mag > high)
    while True:  # hysteresis: weak edges 8-connected to strong ones, grown to a fixed point
        p = np.pad(edges, 1)
        grown = np.zeros_like(edges)
        for oy in (-1, 0, 1):
            for ox in (-1, 0, 1):
                grown |= p[1 + oy : 1 + oy + h, 1 + ox : 1 + ox + w]
        grown &= candidate
        if np.array_equal(grown, edges):
            break
        edges = grown
    return np.where(edges, 255, 0).astype(np.uint8)


def _gray3(values: np.ndarray) -> Image.Image:
    return Image.fromarray(np.repeat(values[..., None], 3, axis=2), "RGB")


def _binary(white: np.ndarray) -> Image.Image:
    return _gray3(np.where(white, 255, 0).astype(np.uint8))


def detect(
    module: str,
    image: Image.Image,
    res: int,
    threshold_a: float,
    threshold_b: float,
    mask: Image.Image | None = None,
) -> ControlMap:
    """The map `module` (one of sdcore.webui.controlnet.MODULES) makes of `image`; `mask`
    (white = masked) for inpaint_only.

    Raises ValueError for inpaint_only without a mask."""
    if module == "none":
        return ControlMap(image.convert("RGB"))
    if module == "invert":
        return ControlMap(Image.fromarray(255 - _rgb(image), "RGB"))
    if module == "tile_resample":
        if threshold_a < 1.1:
            return ControlMap(image.convert("RGB"))
        size = (max(1, int(image.width / threshold_a)), max(1, int(image.height / threshold_a)))
        return ControlMap(image.convert("RGB").resize(size, Image.Resampling.BOX))
    if module == "inpaint_only":
        if mask is None:
            raise ValueError("inpaint_only needs a mask (the unit's mask, or img2img's)")
        return ControlMap(image.convert("RGB"), mask.convert("L").resize(image.size))
    pixels = _rgb(resize_to_res(image, res))
    if module == "canny":
        return ControlMap(_gray3(canny(pixels, threshold_a, threshold_b)))
    if module == "threshold":
        return ControlMap(
            _gray3(np.where(pixels.min(axis=2) > threshold_a, 255, 0).astype(np.uint8))
        )
    if module == "scribble":
        return ControlMap(
            _gray3(np.where(pixels.min(axis=2) < threshold_a, 255, 0).astype(np.uint8))
        )
    raise ValueError(f"no preprocessor {module!r}")


def pixel_perfect_res(
    image_size: tuple[int, int], width: int, height: int, mode: ControlResize
) -> int:
    """The extension's pixel-perfect preprocessor resolution: the image's shorter side as it
    will be after fitting to width x height."""
    raw_w, raw_h = image_size
    k_h, k_w = height / raw_h, width / raw_w
    k = min(k_h, k_w) if mode is ControlResize.RESIZE_AND_FILL else max(k_h, k_w)
    return int(round(k * min(raw_w, raw_h)))


def _resized(image: Image.Image, size: tuple[int, int], nearest: bool) -> Image.Image:
    if nearest:
        return image.resize(size, Image.Resampling.NEAREST)
    shrink = size[0] * size[1] < image.width * image.height
    return image.resize(size, Image.Resampling.BOX if shrink else Image.Resampling.BICUBIC)


def fit(image: Image.Image, width: int, height: int, mode: ControlResize, nearest: bool = False
        ) -> Image.Image:  # fmt: skip
    """`image` at width x height: stretched (Just Resize), scaled to cover and centre-cropped
    (Crop and Resize) or scaled to fit and centred on black (Resize and Fill)."""
    if image.size == (width, height):
        return image
    if mode is ControlResize.JUST_RESIZE:
        return _resized(image, (width, height), nearest)
    k_w, k_h = width / image.width, height / image.height
    k = max(k_w, k_h) if mode is ControlResize.CROP_AND_RESIZE else min(k_w, k_h)
    size = (max(1, round(image.width * k)), max(1, round(image.height * k)))
    scaled = _resized(image, size, nearest)
    left, top = (size[0] - width) // 2, (size[1] - height) // 2
    if mode is ControlResize.CROP_AND_RESIZE:
        return scaled.crop((left, top, left + width, top + height))
    canvas = Image.new(image.mode, (width, height), 0)
    canvas.paste(scaled, (-left, -top))
    return canvas
