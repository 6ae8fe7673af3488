"""The demo ControlNet's world: shapes pictures (`sdlocal.demo.shapes`) and their canny maps.

A control image is the canny edge map of a shapes picture, as the webui's `canny` preprocessor
makes it (OpenCV's Canny, low/high thresholds 100/200, white edges on black, 3 channels): the
outline of the shape says where it is and how big. `sample` draws a training example (picture,
control map, prompt); `centroid` is how the evaluation reads where a picture's shape is (the mean
position of the pixels far from the background color).

Prompts are the demo grammar's two forms plus `a {color} {shape}` (white background), the form a
user is likely to type next to a control image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from sdlocal.demo import shapes

CANNY_LOW = 100  # the webui canny module's defaults (threshold_a, threshold_b)
CANNY_HIGH = 200
SHORT_P = 0.15  # `{color} {shape}`
ARTICLE_P = 0.15  # `a {color} {shape}`


@dataclass(frozen=True)
class Example:
    """One training or evaluation example: what is drawn where, and the prompt that says it."""

    scene: shapes.Scene
    side: float
    left: float
    top: float
    prompt: str

    @property
    def centre(self) -> tuple[float, float]:
        """(x, y) of the centre of the shape's bounding box, pixels."""
        return self.left + self.side / 2, self.top + self.side / 2


def canny(image: np.ndarray, low: int = CANNY_LOW, high: int = CANNY_HIGH) -> np.ndarray:
    """(h, w, 3) uint8 canny map of an RGB picture: white (255) edges on black."""
    edges = cv2.Canny(np.ascontiguousarray(image, dtype=np.uint8), low, high)
    return np.repeat(edges[..., None], 3, axis=-1)


def article_prompt(color: str, shape: str) -> str:
    """`a {color} {shape}`: white background, like the short form."""
    return f"a {color} {shape}"


def random_example(rng: np.random.Generator, size: int = shapes.SIZE) -> Example:
    """A random scene and geometry (as `shapes.sample` draws them) with one of the prompt forms."""
    u = rng.random()
    if u < SHORT_P + ARTICLE_P:
        colors = [c for c in shapes.COLORS if c != shapes.DEFAULT_BACKGROUND]
        color = colors[rng.integers(len(colors))]
        shape = shapes.SHAPES[rng.integers(len(shapes.SHAPES))]
        scene = shapes.Scene(color, shape, shapes.DEFAULT_BACKGROUND, short=True)
        prompt = scene.prompt if u < SHORT_P else article_prompt(color, shape)
    else:
        combos = shapes.combinations()
        scene = shapes.Scene(*combos[rng.integers(len(combos))])
        prompt = scene.prompt
    side, left, top = shapes.random_geometry(rng, size)
    return Example(scene, side, left, top, prompt)


def render(example: Example, size: int = shapes.SIZE) -> tuple[np.ndarray, np.ndarray]:
    """(picture, control map) of an example, both (size, size, 3) uint8."""
    picture = shapes.draw(example.scene, example.side, example.left, example.top, size)
    return picture, canny(picture)


def sample(
    rng: np.random.Generator, size: int = shapes.SIZE
) -> tuple[np.ndarray, np.ndarray, Example]:
    """One random training example: picture, control map, and what they show."""
    example = random_example(rng, size)
    picture, control = render(example, size)
    return picture, control, example


def centroid(image: Any) -> tuple[float, float] | None:
    """(x, y) mean position of the pixels far from the background color (the median border
    color), or None when too few stand out: where a picture's shape is."""
    a = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image, np.float32)
    a = a[..., :3]
    border = np.concatenate([a[0], a[-1], a[1:-1, 0], a[1:-1, -1]])
    far = np.linalg.norm(a - np.median(border, axis=0), axis=-1) > shapes.MIN_CONTRAST
    if far.sum() < shapes.MIN_PIXELS:
        return None
    ys, xs = np.nonzero(far)
    return float(xs.mean()) + 0.5, float(ys.mean()) + 0.5  # pixel centres


def edge_centroid(control: np.ndarray) -> tuple[float, float] | None:
    """(x, y) mean position of a control map's edge pixels, or None without edges."""
    edges = np.asarray(control)[..., 0] > 127
    if not edges.any():
        return None
    ys, xs = np.nonzero(edges)
    return float(xs.mean()) + 0.5, float(ys.mean()) + 0.5


__all__ = [
    "CANNY_HIGH",
    "CANNY_LOW",
    "Example",
    "article_prompt",
    "canny",
    "centroid",
    "edge_centroid",
    "random_example",
    "render",
    "sample",
]
