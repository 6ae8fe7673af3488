"""The webui's scripts on the tiny model: each job equals a plain run with its parameters,
grids hold the jobs' first pictures with room for labels, progress runs over the whole task,
and SD upscale redraws the upscaled image tile by tile, blended where tiles overlap."""

from __future__ import annotations

import numpy as np
from PIL import Image

from sdcore.domain.models import GenerationParams, TaskKind
from sdcore.engine.diffusers_engine import DiffusersEngine
from sdcore.engine.grids import combine, split, tile_layout
from sdcore.ports import EngineInputs
from sdcore.webui.scripts import plan_script

from .support import Steps, gen


def _same(a: Image.Image, b: Image.Image) -> bool:
    return bool((np.asarray(a) == np.asarray(b)).all())


def _contains(grid: Image.Image, cell: Image.Image) -> bool:
    """Whether `cell` appears in `grid` at some cell-aligned offset from the bottom right."""
    g, c = np.asarray(grid), np.asarray(cell)
    h, w = c.shape[:2]
    for y in range(g.shape[0] - h, -1, -h):
        for x in range(g.shape[1] - w, -1, -w):
            if (g[y : y + h, x : x + w] == c).all():
                return True
    return False


def test_xyz_cells_equal_plain_runs_and_progress_spans_the_task(engine: DiffusersEngine) -> None:
    # Given steps 1-2 across and CFG 5 and 9 down
    base = gen(steps=2, seed=11)
    args = ["Steps", "1-2", "", "CFG Scale", "5, 9", "", "Nothing", "", "", True, True]
    params = plan_script("X/Y/Z plot", args, base)
    steps = Steps()
    # When
    result = engine.run(params, EngineInputs(), steps)
    # Then a grid, then the four cells, x fastest
    assert len(result.images) == 5 and len(result.infotexts) == 5
    grid, cells = result.images[0], result.images[1:]
    assert grid.width > 2 * 64 and grid.height > 2 * 64  # room for the labels
    # the two off the diagonal tell x from y: (steps 2, CFG 5) and (steps 1, CFG 9)
    for cell, (s, cfg) in ((cells[1], (2, 5.0)), (cells[2], (1, 9.0))):
        plain = engine.run(gen(steps=s, guidance=cfg, seed=11), EngineInputs(), Steps())
        assert _same(cell, plain.images[0])
    assert all(_contains(grid, cell) for cell in cells)
    assert {i.job_count for i in steps.seen} == {4}
    assert [i.job_no for i in steps.seen] == [0, 1, 1, 2, 3, 3]
    assert result.info["script"] == "x/y/z plot" and result.info["index_of_first_image"] == 1


def test_prompt_matrix_runs_every_combination(engine: DiffusersEngine) -> None:
    base = gen(prompt="a circle|red|blue", steps=1, seed=5)
    params = plan_script("Prompt matrix", [False, True, "positive", "comma", 2], base)
    result = engine.run(params, EngineInputs(), Steps())
    prompts = ["a circle", "a circle, red", "a circle, blue", "a circle, red, blue"]
    assert result.info["all_prompts"] == prompts
    assert result.info["all_seeds"] == [5, 6, 7, 8]  # different seeds: one more each
    grid, cells = result.images[0], result.images[1:]
    assert len(cells) == 4 and grid.width > 2 * 64 + 2 and grid.height > 2 * 64 + 2
    plain = engine.run(gen(prompt="a circle, red", steps=1, seed=6), EngineInputs(), Steps())
    assert _same(cells[1], plain.images[0])


def test_prompts_from_file_runs_each_line_with_its_options(engine: DiffusersEngine) -> None:
    text = 'a red circle\n--prompt "a blue square" --steps 2 --cfg_scale 4 --seed 9\n'
    params = plan_script("prompts from file or textbox", [False, False, text], gen(steps=1))
    steps = Steps()
    result = engine.run(params, EngineInputs(), steps)
    assert len(result.images) == 2 and result.info["all_seeds"] == [123, 9]
    plain = engine.run(
        gen(prompt="a blue square", steps=2, guidance=4, seed=9), EngineInputs(), Steps()
    )
    assert _same(result.images[1], plain.images[0])
    assert "Steps: 2" in result.infotexts[1] and [i.job_no for i in steps.seen] == [0, 1, 1]


def test_a_stop_ends_the_whole_script(engine: DiffusersEngine) -> None:
    params = plan_script("prompts from file or textbox", [False, False, "a\nb\nc"], gen(steps=2))
    result = engine.run(params, EngineInputs(), Steps(stop_at=3))
    assert result.interrupted and len(result.images) == 2


def test_sd_upscale_tiles_the_upscaled_image(engine: DiffusersEngine) -> None:
    # Given a 48x48 picture, doubled to 96x96 and redrawn in 64x64 tiles overlapping by 32
    source = Image.new("RGB", (48, 48), (200, 30, 30))
    base = GenerationParams(
        kind=TaskKind.IMG2IMG,
        prompt="red",
        steps=2,
        seed=3,
        width=64,
        height=64,
        denoising_strength=0.5,
        init_images=["inputs/x.png"],
    )
    params = plan_script("SD upscale", [None, 32, "Lanczos", 2.0], base)
    steps = Steps()
    result = engine.run(params, EngineInputs(init_images=[source]), steps)
    # Then one 96x96 picture from four tiles, progress over the four
    assert [im.size for im in result.images] == [(96, 96)] and result.info["tiles"] == 4
    assert {i.job_count for i in steps.seen} == {4}


def test_tiles_blend_linearly_where_they_overlap() -> None:
    tiles = tile_layout(96, 64, 64, 64, 32)
    assert tiles.columns == [0, 32] and tiles.rows == [0]
    black, white = Image.new("RGB", (64, 64)), Image.new("RGB", (64, 64), "white")
    out = np.asarray(combine([black, white], tiles))[:, :, 0]
    assert (out[:, :32] == 0).all() and (out[:, 64:] == 255).all()
    ramp = out[0, 32:64]
    assert (np.diff(ramp.astype(int)) > 0).all()  # rising from the left tile to the right one
    assert len(split(Image.new("RGB", (96, 64)), tiles)) == 2
