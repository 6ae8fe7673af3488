"""Helpers shared by the inference tests (fixtures live in conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdcore.domain.models import GenerationParams
from sdcore.ports import StepInfo

MODEL_NAME = "tiny-sd"
MODEL_HASH = "76c4bcb125a293b85cbe8788cd0c98602240e243a00fd372965c3170962c72f5"


@dataclass
class TinyFiles:
    single_file: Path
    diffusers_dir: Path


def gen(**overrides: Any) -> GenerationParams:
    """Small, fast parameters: 3 steps at the native 64x64."""
    values: dict[str, Any] = {"kind": "txt2img", "prompt": "a red circle", "steps": 3, "seed": 123}
    values.update(overrides)
    return GenerationParams(**values)


@dataclass
class Steps:
    """An on_step callback that records what it saw and can ask to stop."""

    stop_at: int | None = None  # stop once this many steps were seen
    seen: list[StepInfo] = field(default_factory=list)

    def __call__(self, info: StepInfo) -> bool:
        self.seen.append(info)
        return self.stop_at is not None and len(self.seen) >= self.stop_at
