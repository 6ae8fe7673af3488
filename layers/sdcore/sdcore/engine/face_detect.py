"""The face detector the engine ships: MediaPipe's short-range BlazeFace model
(`face_detection_short_range.tflite`, Apache-2.0, from the mediapipe 0.10.21 wheel, fetched at
install time by `sdcore.engine.face_detector_model`, never at run time), run by the mediapipe Tasks
`FaceDetector`. It gives each face's box and 6 keypoints: the eyes, the nose tip, the mouth
centre and the ears; the eyes, nose and mouth centre align the face (the mouth centre against
the midpoint of the template's mouth corners).

BlazeFace short range sees the picture at 128x128, so it finds faces that fill a good part of
it. Smaller faces (a group photo, a figure in a landscape) are found in square tiles: the whole
picture, then tiles of half its short side, a quarter, ... down to 128 px, each level's tiles
overlapping by half; a face found more than once (the same face in overlapping tiles or
levels) is kept once, at its best score."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sdcore.engine.face_restore import Face, FaceDetector

MODEL_FILE = Path(__file__).parent / "assets" / "face_detection_short_range.tflite"
MODEL_SHA256 = "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8"
MIN_SCORE = 0.5
SMALLEST_TILE = 128  # the detector's own input size


class MediapipeFaceDetector(FaceDetector):
    """BlazeFace through mediapipe's Tasks API; created once, used for every picture."""

    def __init__(self, model_file: Path = MODEL_FILE, min_score: float = MIN_SCORE) -> None:
        self._mp = importlib.import_module("mediapipe")
        vision = importlib.import_module("mediapipe.tasks.python.vision")
        base = importlib.import_module("mediapipe.tasks.python").BaseOptions
        options = vision.FaceDetectorOptions(
            base_options=base(model_asset_path=str(model_file)),
            min_detection_confidence=min_score,
        )
        self._detector: Any = vision.FaceDetector.create_from_options(options)

    def detect(self, image: Image.Image) -> list[Face]:
        rgb = np.ascontiguousarray(np.asarray(image.convert("RGB")))
        found = [f for box in tiles(*image.size) for f in self._detect(rgb, box)]
        kept: list[tuple[float, Face]] = []
        for score, face in sorted(found, key=lambda sf: -sf[0]):
            if all(_overlap(face.box, other.box) < 0.5 for _, other in kept):
                kept.append((score, face))
        faces = [f for _, f in kept]
        return sorted(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))[::-1]

    def _detect(self, rgb: np.ndarray, box: Box) -> list[tuple[float, Face]]:
        """(score, face) in the `box` tile of the picture, in the picture's coordinates."""
        x0, y0, x1, y1 = box
        tile = np.ascontiguousarray(rgb[y0:y1, x0:x1])
        found = self._detector.detect(
            self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=tile)
        )
        w, h = x1 - x0, y1 - y0
        faces = []
        for d in found.detections:
            b = d.bounding_box
            points = [(x0 + k.x * w, y0 + k.y * h) for k in d.keypoints[:4]]
            left, top = float(x0 + b.origin_x), float(y0 + b.origin_y)
            face = Face((left, top, left + b.width, top + b.height), tuple(points))
            faces.append((float(d.categories[0].score), face))
        return faces

    def close(self) -> None:
        self._detector.close()  # else its __del__ prints a TypeError at exit


Box = tuple[int, int, int, int]


def tiles(width: int, height: int, smallest: int = SMALLEST_TILE) -> list[Box]:
    """The tiles a picture is searched in: itself, then squares of half its short side, a
    quarter, ... and last `smallest` px (never below it), each level's overlapping by half and
    the last of a row or column flush with the edge."""
    boxes: list[Box] = [(0, 0, width, height)]
    side = min(width, height) if width != height else min(width, height) // 2
    while side >= smallest:
        boxes += _grid(width, height, side)
        if side == smallest:
            break
        side = max(smallest, side // 2)
    return boxes


def _grid(width: int, height: int, side: int) -> list[Box]:
    def starts(length: int) -> list[int]:
        out = list(range(0, length - side + 1, side // 2))
        return out if out[-1] == length - side else [*out, length - side]

    return [(x, y, x + side, y + side) for y in starts(height) for x in starts(width)]


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """The share of the smaller box that the two boxes have in common."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return w * h / smaller if smaller > 0 else 0.0


def default_detector() -> FaceDetector | None:
    """The shipped detector, or None where its model file or mediapipe is not installed."""
    if not MODEL_FILE.is_file():
        return None
    try:
        return MediapipeFaceDetector()
    except ImportError:
        return None
