"""The engine port: one loaded checkpoint that generates (the diffusers engine in
`sdcore.engine`; tests pass scripted ones)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from sdcore.domain.models import GenerationParams
from sdcore.errors import DomainError

# --- the engine ------------------------------------------------------------------------------


@dataclass
class StepInfo:
    """Where a running task is: image job `job_no` of `job_count`, step `step` of `steps`."""

    step: int
    steps: int
    job_no: int
    job_count: int
    elapsed_s: float
    step_s: float | None = None  # mean seconds per step so far (None until two were timed)
    # a cheap preview of the current latents (no VAE decode); None: no known approximation
    preview: Callable[[], Image.Image] | None = field(default=None, repr=False)

    @property
    def progress(self) -> float:
        if self.job_count == 0 or self.steps == 0:
            return 0.0
        return min(1.0, (self.job_no + self.step / self.steps) / self.job_count)

    @property
    def eta_s(self) -> float | None:
        """Seconds left: the steps still to run at the measured step time; before two steps
        were timed, extrapolated from the elapsed time."""
        if self.step_s is not None and self.steps > 0:
            left = (self.steps - self.step) + (self.job_count - self.job_no - 1) * self.steps
            return max(0, left) * self.step_s
        p = self.progress
        return None if p <= 0 else self.elapsed_s * (1 - p) / p


class StepAction(IntEnum):
    """What a step callback asks for. A plain bool works too: True is STOP, False CONTINUE."""

    CONTINUE = 0
    STOP = 1  # cancel the task: no more steps, no more images
    SKIP = 2  # end the current job (one n_iter batch) early; the next job runs


# Called after every denoising step; its answer (a StepAction or a bool) steers the run.
StepCallback = Callable[[StepInfo], "StepAction | bool"]


@dataclass(frozen=True)
class NetworkFile:
    """A registered extra model (LoRA, VAE, embedding) fetched to local disk for a task."""

    name: str
    sha256: str
    path: Path  # a .safetensors file, or a diffusers folder (a VAE)
    webui_hash: str = ""  # a LoRA's hash as the webui computes it (see modelfiles), if known


@dataclass
class ControlInput:
    """A ControlNet unit's model on local disk and its images (None: img2img's init image and
    mask), in the order of the task's `controlnet` units."""

    file: NetworkFile
    image: Image.Image | None = None
    mask: Image.Image | None = None
    preprocessor: NetworkFile | None = None  # a depth module's `preprocessor` model folder


@dataclass
class EngineInputs:
    init_images: list[Image.Image] = field(default_factory=list)
    mask: Image.Image | None = None
    loras: dict[str, NetworkFile] = field(default_factory=dict)  # by the name in `<lora:...>`
    vae: NetworkFile | None = None  # `sd_vae`; None = the checkpoint's own
    embeddings: list[NetworkFile] = field(default_factory=list)  # those the prompts name
    upscalers: dict[str, NetworkFile] = field(default_factory=dict)  # extras: registered models
    face_restorers: dict[str, NetworkFile] = field(default_factory=dict)  # by name or label
    controls: list[ControlInput] = field(default_factory=list)  # the task's ControlNet units
    interrogator: NetworkFile | None = None  # interrogate: the captioner or tagger folder
    segmenter: NetworkFile | None = None  # a removal's registered segmenter (None: built-in)


@dataclass
class EngineResult:
    images: list[Image.Image]
    infotexts: list[str]  # one per image: the webui "parameters" text stored in the PNG
    info: dict[str, Any]  # seeds, sizes, sampler, timings; JSON-serialisable
    interrupted: bool = False


@dataclass
class BatchItem:
    """One task of a batch run (`Engine.run_batch`): its parameters, inputs and step callback."""

    params: GenerationParams
    inputs: EngineInputs
    on_step: StepCallback


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

    def run_batch(self, items: Sequence[BatchItem]) -> list[EngineResult | DomainError]:
        """Generate several tasks whose `sdcore.webui.batching.batch_key` is equal, as one
        pipeline call where the engine can (this default runs them one after the other).

        One answer per item, in order: its result, or the DomainError it raised (the others
        still run). Each item's callback gets that item's own progress; a STOP from one ends
        that item only (its result `interrupted`, its images dropped) while the others finish.
        Each image comes from its own seed's generator and noise, so an item's pictures equal
        those of `run` alone, up to float rounding.
        """
        out: list[EngineResult | DomainError] = []
        for item in items:
            try:
                out.append(self.run(item.params, item.inputs, item.on_step))
            except DomainError as exc:
                out.append(exc)
        return out


class EngineFactory(Protocol):
    """Builds one checkpoint's engine from local disk (diffusers'; tests pass scripted ones)."""

    def __call__(
        self,
        model_path: Path,
        model_name: str,
        model_hash: str,
        *,
        config_dir: Path | None,
        device: str,
        allow_pickle: bool,
    ) -> Engine: ...
