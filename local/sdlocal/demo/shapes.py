"""The shapes world of the trained demo model: prompt grammar, palette, a picture generator and a
classifier that reads a picture back as (color, shape, background).

One filled shape (circle, axis-aligned square or upright triangle) in one palette color on a plain
background of another palette color. Prompts::

    a {color} {shape} on a {background} background
    {color} {shape}                                  (background white)

`draw`/`sample` make the training pictures (deterministic for a seeded numpy Generator);
`classify` is how the evaluation script and the tests decide whether a generated picture shows
what its prompt asked for: background = the median color of the border pixels; shape = the pixels
far from it; both named by the nearest palette color; the shape's kind from the fraction of its
bounding box it fills (square ~1.0, circle ~pi/4 = 0.785, triangle ~0.5).

numpy only (scipy for connected components in `classify`); no torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 220, 40),
    "orange": (245, 140, 30),
    "purple": (140, 60, 190),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
BACKGROUNDS: tuple[str, ...] = tuple(COLORS)
DEFAULT_BACKGROUND = "white"  # what the short prompt `{color} {shape}` means
SIZE = 64  # native side of the demo model's pictures
MIN_FRACTION = 1 / 3  # the shape covers at least this fraction of the image width
MAX_FRACTION = 0.75
MARGIN = 2.0  # pixels kept free between the shape and the image border
SUPERSAMPLE = 4  # anti-aliasing: coverage measured on a 4x4 grid per pixel

# every word a prompt can contain (the demo tokenizer makes each one token)
WORDS: tuple[str, ...] = ("a", "on", "background", *COLORS, *SHAPES)

# fill fraction of the bounding box: square 1.0, circle pi/4, triangle 1/2; split half-way
_SQUARE_ABOVE = (1.0 + np.pi / 4) / 2  # 0.893
_TRIANGLE_BELOW = (np.pi / 4 + 0.5) / 2  # 0.643

_LONG = re.compile(r"^a (\w+) (\w+) on a (\w+) background$")
_SHORT = re.compile(r"^(\w+) (\w+)$")


@dataclass(frozen=True)
class Scene:
    """One picture's content; `prompt` says it in the grammar."""

    color: str
    shape: str
    background: str
    short: bool = False  # `{color} {shape}` (background white) instead of the long form

    def __post_init__(self) -> None:
        if self.color not in COLORS or self.background not in COLORS:
            raise ValueError(f"unknown color in {self}")
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}")
        if self.color == self.background:
            raise ValueError("shape color must differ from the background color")
        if self.short and self.background != DEFAULT_BACKGROUND:
            raise ValueError(f"the short prompt means a {DEFAULT_BACKGROUND} background")

    @property
    def prompt(self) -> str:
        return prompt_for(self.color, self.shape, None if self.short else self.background)

    def as_tuple(self) -> tuple[str, str, str]:
        return self.color, self.shape, self.background


def prompt_for(color: str, shape: str, background: str | None = None) -> str:
    """`a {color} {shape} on a {background} background`, or `{color} {shape}` without one."""
    if background is None:
        return f"{color} {shape}"
    return f"a {color} {shape} on a {background} background"


def parse_prompt(prompt: str) -> tuple[str, str, str]:
    """(color, shape, background) a grammar prompt asks for; ValueError for anything else."""
    text = " ".join(prompt.lower().split())
    if m := _LONG.match(text):
        color, shape, background = m[1], m[2], m[3]
    elif m := _SHORT.match(text):
        color, shape, background = m[1], m[2], DEFAULT_BACKGROUND
    else:
        raise ValueError(f"not a shapes prompt: {prompt!r}")
    Scene(color, shape, background)  # validates the words
    return color, shape, background


def combinations() -> list[tuple[str, str, str]]:
    """Every (color, shape, background) with color != background: 8 x 3 x 7 = 168."""
    return [(c, s, b) for c in COLORS for s in SHAPES for b in BACKGROUNDS if c != b]


# --- drawing ---------------------------------------------------------------------------------


def _coverage(shape: str, left: float, top: float, side: float, size: int) -> np.ndarray:
    """Fraction of each pixel inside the shape whose bounding box is (left, top, side, side)."""
    n = size * SUPERSAMPLE
    c = (np.arange(n, dtype=np.float32) + 0.5) / SUPERSAMPLE  # sub-pixel centres, pixel units
    x, y = c[None, :], c[:, None]
    if shape == "circle":
        r = side / 2
        inside = (x - left - r) ** 2 + (y - top - r) ** 2 <= r * r
    elif shape == "square":
        inside = (x >= left) & (x <= left + side) & (y >= top) & (y <= top + side)
    elif shape == "triangle":
        # upright isosceles: apex at the top centre, base = height = side
        v = (y - top) / side  # 0 at the apex, 1 at the base
        inside = (v >= 0) & (v <= 1) & (np.abs(x - left - side / 2) <= v * side / 2)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    inside = inside.astype(np.float32)
    return inside.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(1, 3))


def draw(
    scene: Scene | tuple[str, str, str],
    side: float,
    left: float,
    top: float,
    size: int = SIZE,
) -> np.ndarray:
    """An anti-aliased (size, size, 3) uint8 picture of the scene; the shape's bounding box is
    `side` pixels square with its top-left corner at (left, top)."""
    color, shape, background = scene.as_tuple() if isinstance(scene, Scene) else scene
    alpha = _coverage(shape, left, top, side, size)[..., None]
    fg = np.array(COLORS[color], dtype=np.float32)
    bg = np.array(COLORS[background], dtype=np.float32)
    return np.rint(bg + alpha * (fg - bg)).astype(np.uint8)


def random_scene(rng: np.random.Generator, short_p: float = 0.15) -> Scene:
    """A scene uniform over the valid combinations; with probability `short_p` the short prompt
    form (white background)."""
    if rng.random() < short_p:
        colors = [c for c in COLORS if c != DEFAULT_BACKGROUND]
        color = colors[rng.integers(len(colors))]
        return Scene(color, SHAPES[rng.integers(len(SHAPES))], DEFAULT_BACKGROUND, short=True)
    combos = combinations()
    return Scene(*combos[rng.integers(len(combos))])


def random_geometry(rng: np.random.Generator, size: int = SIZE) -> tuple[float, float, float]:
    """(side, left, top): side uniform in [size/3, 3/4 size], fully inside the margin."""
    side = float(rng.uniform(np.ceil(size * MIN_FRACTION), size * MAX_FRACTION))
    room = size - 2 * MARGIN - side
    left = MARGIN + float(rng.uniform(0, room))
    top = MARGIN + float(rng.uniform(0, room))
    return side, left, top


def sample(
    rng: np.random.Generator, size: int = SIZE, short_p: float = 0.15
) -> tuple[np.ndarray, Scene]:
    """One random training picture and the scene it shows."""
    scene = random_scene(rng, short_p)
    side, left, top = random_geometry(rng, size)
    return draw(scene, side, left, top, size), scene


def dataset(
    n: int, seed: int, size: int = SIZE, short_p: float = 0.15
) -> tuple[np.ndarray, list[Scene]]:
    """`n` pictures (n, size, size, 3) uint8 and their scenes, the same for the same seed."""
    rng = np.random.default_rng(seed)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    scenes: list[Scene] = []
    for i in range(n):
        images[i], scene = sample(rng, size, short_p)
        scenes.append(scene)
    return images, scenes


# --- reading a picture back --------------------------------------------------------------------

_PALETTE_NAMES = list(COLORS)
_PALETTE = np.array([COLORS[n] for n in _PALETTE_NAMES], dtype=np.float32)
MIN_CONTRAST = 40.0  # RGB distance from the background that counts as "far" from it
MIN_PIXELS = 16  # fewer far pixels than this: no shape at all


@dataclass(frozen=True)
class Reading:
    """What `classify` saw. `shape`/`color` are None when no shape stands out."""

    color: str | None
    shape: str | None
    background: str
    fill: float  # fraction of the bounding box the shape fills
    extent: int  # bounding-box width in pixels

    def as_tuple(self) -> tuple[str | None, str | None, str]:
        return self.color, self.shape, self.background


def nearest_color(rgb: Any) -> str:
    d = np.linalg.norm(_PALETTE - np.asarray(rgb, dtype=np.float32), axis=1)
    return _PALETTE_NAMES[int(np.argmin(d))]


def shape_from_fill(fill: float) -> str:
    if fill >= _SQUARE_ABOVE:
        return "square"
    if fill <= _TRIANGLE_BELOW:
        return "triangle"
    return "circle"


def read(image: Any) -> Reading:
    """Classify a picture (PIL image or HxWx3 array) in detail."""
    from scipy import ndimage  # only the classifier needs it

    a = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image, np.float32)
    a = a[..., :3]
    border = np.concatenate([a[0], a[-1], a[1:-1, 0], a[1:-1, -1]])
    bg = np.median(border, axis=0)
    background = nearest_color(bg)
    far = np.linalg.norm(a - bg, axis=-1) > MIN_CONTRAST
    if far.sum() < MIN_PIXELS:
        return Reading(None, None, background, 0.0, 0)
    fg = np.median(a[far], axis=0)
    # a pixel belongs to the shape when it is nearer the shape's color than the background's:
    # the half-way line, so anti-aliased edges count by half on average
    mask = np.linalg.norm(a - fg, axis=-1) < np.linalg.norm(a - bg, axis=-1)
    labels, count = ndimage.label(mask)
    if count == 0:
        return Reading(None, None, background, 0.0, 0)
    sizes = np.bincount(labels.ravel())[1:]
    blob = labels == (int(np.argmax(sizes)) + 1)
    ys, xs = np.nonzero(blob)
    h = int(ys.max() - ys.min() + 1)
    w = int(xs.max() - xs.min() + 1)
    fill = float(blob.sum()) / float(h * w)
    color = nearest_color(np.median(a[blob], axis=0))
    return Reading(color, shape_from_fill(fill), background, fill, w)


def classify(image: Any) -> tuple[str | None, str | None, str]:
    """(color, shape, background) of a picture; color and shape are None if no shape is seen."""
    return read(image).as_tuple()


__all__ = [
    "BACKGROUNDS",
    "COLORS",
    "DEFAULT_BACKGROUND",
    "SHAPES",
    "SIZE",
    "WORDS",
    "Reading",
    "Scene",
    "classify",
    "combinations",
    "dataset",
    "draw",
    "parse_prompt",
    "prompt_for",
    "random_scene",
    "read",
    "sample",
]
