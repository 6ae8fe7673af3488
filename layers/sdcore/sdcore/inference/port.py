"""The engine port: what the inference use case needs from a diffusion library."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from sdcore.domain.models import GenerationParams


@dataclass
class StepInfo:
    """Where a running task is: image job `job_no` of `job_count`, step `step` of `steps`."""

    step: int
    steps: int
    job_no: int
    job_count: int
    elapsed_s: float

    @property
    def progress(self) -> float:
        if self.job_count == 0 or self.steps == 0:
            return 0.0
        return min(1.0, (self.job_no + self.step / self.steps) / self.job_count)

    @property
    def eta_s(self) -> float | None:
        p = self.progress
        return None if p <= 0 else self.elapsed_s * (1 - p) / p


# Called after every denoising step; returning True asks the engine to stop (cancellation).
StepCallback = Callable[[StepInfo], bool]


@dataclass
class EngineInputs:
    init_images: list[Image.Image] = field(default_factory=list)
    mask: Image.Image | None = None


@dataclass
class EngineResult:
    images: list[Image.Image]
    infotexts: list[str]  # one per image: the webui "parameters" text stored in the PNG
    info: dict[str, Any]  # seeds, sizes, sampler, timings; JSON-serialisable
    interrupted: bool = False


class Engine(ABC):
    """One loaded checkpoint. `load` once per execution environment, `run` per task."""

    @abstractmethod
    def load(self) -> None:
        """Load the model (from local files only, never the network)."""

    @abstractmethod
    def run(
        self, params: GenerationParams, inputs: EngineInputs, on_step: StepCallback
    ) -> EngineResult:
        """Generate. Raises InvalidInputError for parameters the model cannot honour."""
