"""A webui script's plan, in domain words: the jobs it runs (each a generation with some of the
task's parameters changed) and the labelled grids it lays their first images out in. A script
task is one task: the engine runs its jobs in order and reports progress over all of them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ScriptGrid(BaseModel):
    """A grid of job results: `cells` are job indexes (each job's first image), row by row."""

    cells: list[int]
    columns: int
    column_labels: list[str] = Field(default_factory=list)
    row_labels: list[str] = Field(default_factory=list)
    margin: int = 0  # px between cells, as the webui's "grid margins"


class TileUpscale(BaseModel):
    """img2img's SD upscale: the init image upscaled by `scale` with `upscaler`, then redrawn
    tile by tile (the task's width x height, overlapping by `overlap` px) and blended back."""

    upscaler: str
    scale: float
    overlap: int
    tiles: int = 1  # per picture, known from the image's size at submit (the work budget's)


class ScriptPlan(BaseModel):
    """What a webui script runs: `jobs` (GenerationParams fields to change, one generation
    each), then `grids` first in the output; with `titles` the grids are also joined side by
    side under those titles into one image that leads (the x/y/z plot's z axis), and
    `sub_grids` says whether the grids themselves follow it. `cells`: whether every job's own
    images follow the grids."""

    name: str
    jobs: list[dict[str, Any]] = Field(default_factory=list)
    grids: list[ScriptGrid] = Field(default_factory=list)
    titles: list[str] = Field(default_factory=list)
    sub_grids: bool = True
    cells: bool = True
    tile_upscale: TileUpscale | None = None
