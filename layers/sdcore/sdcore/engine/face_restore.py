"""Face restoration as the webui runs it (facexlib's FaceRestoreHelper): find the faces, align
each to the 512 px template by its 5 landmarks (a similarity transform), restore the crop with a
registered GFPGAN or CodeFormer model, and paste it back through the inverse transform under a
soft mask; the result is blended over the input at a visibility (extras)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

from sdcore.engine.face_archs import FaceModel, load_face_restorer
from sdcore.errors import InvalidInputError
from sdcore.ports import NetworkFile

# facexlib's template for a 512 px face: eye centres, nose tip, mouth corners (image left first)
TEMPLATE_512 = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.1936],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ]
)


@dataclass(frozen=True)
class Face:
    """A detected face: its box (x0, y0, x1, y1) and 5 landmarks as TEMPLATE_512 orders them,
    or 4 with the mouth's centre for its corners."""

    box: tuple[float, float, float, float]
    landmarks: tuple[tuple[float, float], ...]


class FaceDetector(ABC):
    """Finds faces with their 5 landmarks."""

    @abstractmethod
    def detect(self, image: Image.Image) -> list[Face]:
        """The faces in `image` (RGB), largest first."""


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 similarity transform (rotation, uniform scale, shift) taking `src` points onto
    `dst` in the least-squares sense (Umeyama, no reflection)."""
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    s, d = src - src_mean, dst - dst_mean
    u, sig, vt = np.linalg.svd(d.T @ s / len(src))
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    rot = u @ sign @ vt
    scale = (sig * np.diag(sign)).sum() / s.var(0).sum()
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rot
    matrix[:, 2] = dst_mean - matrix[:, :2] @ src_mean
    return matrix


def _invert(matrix: np.ndarray) -> np.ndarray:
    full = np.vstack([matrix, [0, 0, 1]])
    return np.linalg.inv(full)[:2]


def _warp(image: Image.Image, matrix: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """`image` through `matrix` (source -> output) onto a canvas of `size`; PIL takes the
    inverse (output -> source)."""
    inv = _invert(matrix)
    return image.transform(
        size, Image.Transform.AFFINE, tuple(inv.ravel()), Image.Resampling.BILINEAR
    )


@torch.no_grad()
def _run(model: FaceModel, crop: Image.Image, weight: float) -> Image.Image:
    param = next(model.parameters())
    pixels = torch.from_numpy(np.asarray(crop, dtype=np.float32) / 127.5 - 1)
    out = model(pixels.permute(2, 0, 1)[None].to(param.device, param.dtype), weight)
    array = ((out[0].clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).float().cpu().numpy()
    return Image.fromarray(array.round().astype(np.uint8))


def restore_faces(
    model: FaceModel, detector: FaceDetector, image: Image.Image, weight: float = 0.5
) -> Image.Image:
    """`image` with every face the detector finds restored by `model` (CodeFormer's fidelity
    `weight`: 0 the most change, 1 the least; GFPGAN ignores it) and pasted back softly."""
    image = image.convert("RGB")
    size = int(model.size)
    template = TEMPLATE_512 * size / 512
    four = np.vstack([template[:3], template[3:].mean(0)])  # mouth corners -> mouth centre
    result = image
    for face in detector.detect(image):
        points = np.asarray(face.landmarks, dtype=np.float64)
        matrix = similarity(points, four if len(points) == 4 else template)
        restored = _run(model, _warp(image, matrix, (size, size)), weight)
        inverse = _invert(matrix)
        back = _warp(restored, inverse, image.size)
        # the face square, eroded then feathered so no edge of the crop shows
        border = max(1, size // 32)
        square = Image.new("L", (size, size), 0)
        square.paste(255, (border, border, size - border, size - border))
        mask = _warp(square, inverse, image.size)
        scale = float(np.sqrt(abs(np.linalg.det(inverse[:, :2]))))
        mask = mask.filter(ImageFilter.GaussianBlur(max(1.0, size * scale / 24)))
        result = Image.composite(back, result, mask)
    return result


class FaceRestorerCache:
    """Registered face restorer models, loaded once per file; the last `keep` stay loaded. The
    detector is the engine's: without one no face can be found, and a task asking for
    restoration is refused, naming its field."""

    def __init__(
        self,
        detector: FaceDetector | None = None,
        keep: int = 2,
        find_detector: Callable[[], FaceDetector | None] | None = None,
    ) -> None:
        self.detector = detector
        self._find = find_detector  # the shipped detector, created when first needed
        self.keep = keep
        self._loaded: dict[str, FaceModel] = {}  # file sha256 -> model, least recent first

    def model(self, file: NetworkFile, field: str, device: str) -> FaceModel:
        """The model in `file`. Raises InvalidInputError naming `field` for a file that is no
        face restorer."""
        model = self._loaded.pop(file.sha256, None)
        if model is None:
            try:
                model = load_face_restorer(Path(file.path)).to(device)
            except ValueError as exc:
                raise InvalidInputError(field, f"face restorer {file.name!r}: {exc}") from exc
        self._loaded[file.sha256] = model
        while len(self._loaded) > self.keep:
            self._loaded.pop(next(iter(self._loaded)))
        return model

    def restore(
        self, file: NetworkFile, field: str, device: str, images: list[Image.Image], weight: float
    ) -> list[Image.Image]:
        """`images` with their faces restored. Raises InvalidInputError naming `field` when
        the engine has no face detector or the file is no face restorer."""
        if self.detector is None and self._find is not None:
            self.detector, self._find = self._find(), None
        if self.detector is None:
            raise InvalidInputError(field, "no face detector is installed on this worker")
        model = self.model(file, field, device)
        return [restore_faces(model, self.detector, im, weight) for im in images]
