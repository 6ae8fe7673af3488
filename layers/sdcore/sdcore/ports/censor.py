"""The censor port: how likely each picture is to be sexual or nude, from 0 (safe) to 1. The
inference function asks it after decoding (and about input images when the deployment says so);
what is done with the scores is the use case's (`sdcore.usecases.censor`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from PIL import Image


class Censor(ABC):
    name: str  # recorded with the scores, so a history says which classifier judged

    @abstractmethod
    def scores(self, images: Sequence[Image.Image]) -> list[float]:
        """One score per image, 0..1. Raises RuntimeError when the classifier is unusable."""
