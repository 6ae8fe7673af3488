"""Install step: take MediaPipe's short-range face detection model out of the mediapipe 0.10.21
wheel (the last that ships its `.tflite` files; Apache-2.0), fetched through the package
registry with pip, check its SHA-256 and put it where the engine looks for it. Run by
`make install` and the inference image build (`python -m sdcore.engine.face_detector_model`);
nothing fetches it at run time."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from sdcore.engine.face_detect import MODEL_FILE, MODEL_SHA256

WHEEL = "mediapipe==0.10.21"
MEMBER = "mediapipe/modules/face_detection/face_detection_short_range.tflite"


def main() -> None:
    if MODEL_FILE.is_file() and hashlib.sha256(MODEL_FILE.read_bytes()).hexdigest() == MODEL_SHA256:
        return
    with tempfile.TemporaryDirectory() as tmp:
        pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", WHEEL, "-d", tmp]
        subprocess.run(pip, check=True)
        wheel = next(Path(tmp).glob("mediapipe-*.whl"))
        data = zipfile.ZipFile(wheel).read(MEMBER)
    digest = hashlib.sha256(data).hexdigest()
    if digest != MODEL_SHA256:
        sys.exit(f"{MEMBER}: sha256 {digest}, expected {MODEL_SHA256}")
    MODEL_FILE.parent.mkdir(parents=True, exist_ok=True)
    MODEL_FILE.write_bytes(data)


if __name__ == "__main__":
    main()
