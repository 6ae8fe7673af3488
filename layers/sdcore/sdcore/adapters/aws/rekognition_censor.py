"""Rekognition's DetectModerationLabels as the censor: a picture's score is the highest
confidence (as 0..1) of the top-level sexual categories (taxonomy v7 "Explicit" and
"Non-Explicit Nudity of Intimate parts and Kissing", v6 "Explicit Nudity"); 0 when none is
detected above MIN_CONFIDENCE. One call per picture (PNG bytes, at most 5 MB: larger pictures
are sent downscaled)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from PIL import Image

from sdcore.ports.censor import Censor

SEXUAL = frozenset(
    {"Explicit", "Explicit Nudity", "Non-Explicit Nudity of Intimate parts and Kissing"}
)
MIN_CONFIDENCE = 10.0  # percent: lower scores are recorded as 0
MAX_BYTES = 5 * 1024 * 1024  # the API's limit for image bytes


def _png(image: Image.Image) -> bytes:
    picture = image.convert("RGB")
    while True:
        out = io.BytesIO()
        picture.save(out, "PNG")
        if out.tell() <= MAX_BYTES:
            return out.getvalue()
        picture = picture.resize((picture.width // 2, picture.height // 2))


class RekognitionCensor(Censor):
    name = "rekognition"

    def __init__(self, client: Any) -> None:
        self.client = client

    def scores(self, images: Sequence[Image.Image]) -> list[float]:
        out = []
        for image in images:
            resp = self.client.detect_moderation_labels(
                Image={"Bytes": _png(image)}, MinConfidence=MIN_CONFIDENCE
            )
            found = [
                float(label["Confidence"]) / 100
                for label in resp.get("ModerationLabels", [])
                if label.get("Name") in SEXUAL
            ]
            out.append(max(found, default=0.0))
        return out
