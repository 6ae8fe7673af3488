"""The segmenters a removal runs (the `Segmenter` port):

- the built-in person segmenter: MediaPipe's selfie segmentation (`selfie_segmentation.tflite`,
  from the mediapipe 0.10.21 wheel, fetched at install time by `sdcore.engine.segmenter_model`)
  run by the mediapipe Tasks `ImageSegmenter`; a pixel is the person where its confidence mask
  is over the threshold (its category mask marks the person 0, the background 255);
- a registered `segmenter` model: a transformers semantic segmentation folder
  (`AutoModelForSemanticSegmentation`: SegFormer, BEiT, DPT, UperNet...), its classes the
  config's `id2label`; the logits are upsampled to the picture and softmaxed, a pixel is the
  target where the target's probability is over the threshold.

Models load from local files only and stay cached per file (one worker, one task at a time)."""

from __future__ import annotations

import importlib
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

from sdcore.domain.removal import BUILTIN_LABELS, BUILTIN_SEGMENTER
from sdcore.errors import InvalidInputError
from sdcore.ports import NetworkFile
from sdcore.ports.segmenter import Segmenter

SELFIE_FILE = Path(__file__).parent / "assets" / "selfie_segmentation.tflite"
SELFIE_SHA256 = "9ee168ec7c8f2a16c56fe8e1cfbc514974cbbb7e434051b455635f1bd1462f5c"


def _unknown(target: str, labels: tuple[str, ...]) -> ValueError:
    return ValueError(f"unknown target {target!r}; valid: {', '.join(labels)}")


class MediapipePersonSegmenter(Segmenter):
    """MediaPipe's selfie segmentation through the Tasks API; created once per worker."""

    name = BUILTIN_SEGMENTER
    labels = BUILTIN_LABELS

    def __init__(self, model_file: Path = SELFIE_FILE) -> None:
        if not model_file.is_file():
            raise FileNotFoundError(
                f"{model_file} is missing: run `python -m sdcore.engine.segmenter_model`"
            )
        self._mp = importlib.import_module("mediapipe")
        vision = importlib.import_module("mediapipe.tasks.python.vision")
        base = importlib.import_module("mediapipe.tasks.python").BaseOptions
        options = vision.ImageSegmenterOptions(
            base_options=base(model_asset_path=str(model_file)), output_confidence_masks=True
        )
        self._segmenter: Any = vision.ImageSegmenter.create_from_options(options)

    def segment(self, image: Image.Image, target: str, threshold: float) -> Image.Image:
        if target not in self.labels:
            raise _unknown(target, self.labels)
        rgb = np.ascontiguousarray(np.asarray(image.convert("RGB")))
        found = self._segmenter.segment(
            self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=rgb)
        )
        confidence = np.asarray(found.confidence_masks[0].numpy_view()).reshape(rgb.shape[:2])
        return Image.fromarray(np.where(confidence > threshold, 255, 0).astype(np.uint8), "L")

    def close(self) -> None:
        self._segmenter.close()  # else its __del__ prints a TypeError at exit


class TransformersSegmenter(Segmenter):
    """A semantic segmentation folder; its labels are the config's `id2label`."""

    def __init__(self, folder: Path, name: str, device: str) -> None:
        self.name, self.device = name, device
        self._processor: Any = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
        model: Any = AutoModelForSemanticSegmentation.from_pretrained(
            folder, local_files_only=True, use_safetensors=True
        )
        self._model = model.to(device).eval()
        id2label = self._model.config.id2label
        self.labels = tuple(str(id2label[i]) for i in sorted(id2label))

    def segment(self, image: Image.Image, target: str, threshold: float) -> Image.Image:
        if target not in self.labels:
            raise _unknown(target, self.labels)
        rgb = image.convert("RGB")
        pixels = self._processor(images=rgb, return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            logits = self._model(pixel_values=pixels.to(self.device)).logits
            logits = torch.nn.functional.interpolate(
                logits.float(), size=(rgb.height, rgb.width), mode="bilinear", align_corners=False
            )
            prob = logits.softmax(dim=1)[0, self.labels.index(target)]
        found = (prob > threshold).cpu().numpy()
        return Image.fromarray(np.where(found, 255, 0).astype(np.uint8), "L")


class SegmenterCache:
    """The built-in segmenter, created when first needed, and registered ones by file."""

    def __init__(self, builtin: Segmenter | None = None) -> None:
        self._builtin = builtin
        self._loaded: dict[tuple[str, str], Segmenter] = {}

    def get(self, file: NetworkFile | None, device: str) -> Segmenter:
        """The segmenter of a removal: `file`'s (a registered model) or the built-in one.

        Raises
        ------
        InvalidInputError
            The built-in segmenter's model file is not installed.
        """
        if file is None:
            if self._builtin is None:
                try:
                    self._builtin = MediapipePersonSegmenter()
                except (FileNotFoundError, ImportError) as exc:
                    raise InvalidInputError("segmenter", f"no built-in segmenter: {exc}") from exc
                # closed before mediapipe's own executor shuts down at exit (a plain atexit
                # hook runs after it and fails; left open, its __del__ prints a TypeError)
                getattr(threading, "_register_atexit")(self._builtin.close)  # noqa: B009
            return self._builtin
        key = (file.sha256, device)
        if key not in self._loaded:
            self._loaded.clear()  # one registered segmenter at a time: they can be large
            self._loaded[key] = TransformersSegmenter(file.path, file.name, device)
        return self._loaded[key]
