"""Install step: take MediaPipe's selfie segmentation model (`selfie_segmentation.tflite`, about
250 kB, Apache-2.0) out of the mediapipe 0.10.21 wheel, fetched through the package registry
with pip, check its SHA-256 and put it where the engine looks for it. Run by `make install` and
the inference image build (`python -m sdcore.engine.segmenter_model`); nothing fetches it at
run time."""

from __future__ import annotations

from sdcore.engine.face_detector_model import fetch
from sdcore.engine.segmenters import SELFIE_FILE, SELFIE_SHA256

MEMBER = "mediapipe/modules/selfie_segmentation/selfie_segmentation.tflite"


def main() -> None:
    fetch(MEMBER, SELFIE_FILE, SELFIE_SHA256)


if __name__ == "__main__":
    main()
