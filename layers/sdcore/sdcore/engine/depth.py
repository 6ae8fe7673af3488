"""The ControlNet depth modules (`depth_midas`, `depth_anything`, ...) on a registered
`preprocessor` model: a transformers depth estimation folder (DPT or Depth Anything) loaded
with `AutoModelForDepthEstimation` and its image processor.

As the extension's annotators: the image scaled so that its shorter side is the unit's
processor resolution, the model's predicted depth (relative inverse depth: larger is nearer)
brought back to that size, then normalised to 0..255 over the picture (near = white, as MiDaS
maps are shown) and given as 3 equal channels."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForDepthEstimation

from sdcore.errors import InvalidInputError
from sdcore.ports import NetworkFile
from sdcore.webui.control_maps import resize_to_res


class DepthEstimators:
    """Registered preprocessors by file hash, one loaded at a time (they can be large)."""

    def __init__(self) -> None:
        self._loaded: dict[str, tuple[Any, Any]] = {}

    def _get(self, file: NetworkFile, device: Any, field: str) -> tuple[Any, Any]:
        found = self._loaded.get(file.sha256)
        if found is None:
            try:
                model = AutoModelForDepthEstimation.from_pretrained(
                    str(file.path), local_files_only=True
                )
                processor = AutoImageProcessor.from_pretrained(
                    str(file.path), local_files_only=True
                )
            except (OSError, ValueError, KeyError) as exc:
                raise InvalidInputError(
                    field, f"preprocessor {file.name!r} does not load: {exc}"[:600]
                ) from exc
            self._loaded.clear()
            found = self._loaded[file.sha256] = (model.to(device).eval(), processor)
        return found

    def depth_map(self, file: NetworkFile, image: Image.Image, res: int, device: Any,
                  field: str) -> Image.Image:  # fmt: skip
        """`image`'s depth map by `file`'s model at resolution `res` (shorter side), RGB."""
        model, processor = self._get(file, device, field)
        scaled = resize_to_res(image.convert("RGB"), res)
        inputs = processor(images=scaled, return_tensors="pt").to(device)
        with torch.no_grad():
            predicted = model(**inputs).predicted_depth  # (1, h, w)
        depth = torch.nn.functional.interpolate(
            predicted[:, None].float(), size=(scaled.height, scaled.width),
            mode="bicubic", align_corners=False,
        )[0, 0].cpu().numpy()  # fmt: skip
        return Image.fromarray(normalised(depth)).convert("RGB")


def normalised(depth: np.ndarray) -> np.ndarray:
    """Depth to 0..255 over its range (larger = whiter); a flat prediction is black."""
    low, high = float(depth.min()), float(depth.max())
    if high - low < 1e-8:
        return np.zeros(depth.shape, dtype=np.uint8)
    return np.clip((depth - low) / (high - low) * 255.0 + 0.5, 0, 255).astype(np.uint8)
