"""The face detector the engine ships: MediaPipe's short-range BlazeFace model
(`face_detection_short_range.tflite`, Apache-2.0, from the mediapipe 0.10.21 wheel, fetched at
install time by `sdcore.engine.face_detector_model`, never at run time), run by the mediapipe Tasks
`FaceDetector`. It gives each face's box and 6 keypoints: the eyes, the nose tip, the mouth
centre and the ears; the eyes, nose and mouth centre align the face (the mouth centre against
the midpoint of the template's mouth corners). Short range: faces that fill a good part of the
picture (portraits, selfies), as generated faces mostly are."""

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
        found = self._detector.detect(
            self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=rgb)
        )
        w, h = image.size
        faces = []
        for d in found.detections:
            box = d.bounding_box
            points = [(k.x * w, k.y * h) for k in d.keypoints[:4]]
            x0, y0 = float(box.origin_x), float(box.origin_y)
            faces.append(Face((x0, y0, x0 + box.width, y0 + box.height), tuple(points)))
        return sorted(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))[::-1]

    def close(self) -> None:
        self._detector.close()  # else its __del__ prints a TypeError at exit


def default_detector() -> FaceDetector | None:
    """The shipped detector, or None where its model file or mediapipe is not installed."""
    if not MODEL_FILE.is_file():
        return None
    try:
        return MediapipeFaceDetector()
    except ImportError:
        return None
