"""The segmenter port: which pixels of a picture belong to a class (a person, a car...). The
inference function asks it for a removal's mask (`sdcore.engine.removal`); the built-in one is
MediaPipe's person segmenter, a registered `segmenter` model gives others."""

from __future__ import annotations

from abc import ABC, abstractmethod

from PIL import Image


class Segmenter(ABC):
    name: str  # recorded in the task's info, so a history says which model drew the mask
    labels: tuple[str, ...]  # the class labels it knows

    @abstractmethod
    def segment(self, image: Image.Image, target: str, threshold: float) -> Image.Image:
        """An "L" mask of the picture's size: 255 where `target` is (confidence above
        `threshold`), 0 elsewhere. Raises ValueError for a label it does not know."""

    def close(self) -> None:  # noqa: B027 (most segmenters hold nothing to release)
        """Release what it holds (native resources)."""
