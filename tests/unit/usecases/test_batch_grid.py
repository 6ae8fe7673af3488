"""A batch's labels and grid: the fields in which templates differ, and the webui's labelled grid
(shared with the x/y/z plot) laying out pictures of different sizes."""

from __future__ import annotations

from PIL import Image

from sdcore.domain.params import TaskKind
from sdcore.domain.templates import Template
from sdcore.usecases.batches import labels
from sdcore.webui.grids import LINE_H, PAD, captioned_grid


def _t(name: str, kind: TaskKind = TaskKind.TXT2IMG, **fields: object) -> Template:
    return Template(owner="u", name=name, kind=kind, fields=dict(fields))


def test_labels_name_the_differing_fields_only() -> None:
    got = labels([
        _t("a", steps=4, seed=1, prompt="x"),
        _t("b", steps=8, seed=1, prompt="y", sampler_name="Euler a" * 10),
        _t("c", TaskKind.IMG2IMG, steps=4, seed=1),
    ])  # fmt: skip
    assert got[0] == "a\ntxt2img\nsampler_name: default\nsteps: 4"
    assert got[1].splitlines()[2] == "sampler_name: " + ("Euler a" * 10)[:37] + "..."
    assert got[2].splitlines()[:2] == ["c", "img2img"]


def test_captioned_grid_fits_cells_into_the_first_ones_size() -> None:
    cells = [Image.new("RGB", (16, 16), "red"), None, Image.new("RGB", (32, 8), "blue"),
             Image.new("RGB", (16, 16), "green")]  # fmt: skip
    grid = captioned_grid(cells, ["a", "b", "c", "d\ntwo lines"], columns=3)
    row1_h = LINE_H + 2 * PAD + 16  # one line of labels above the first row's cells
    assert grid.width == 3 * 16 and grid.height == row1_h + 2 * LINE_H + 2 * PAD + 16
    assert grid.getpixel((2, row1_h - 2)) == (255, 0, 0)
    assert grid.getpixel((16 + 2, row1_h - 2)) == (0, 0, 0)  # gave nothing: black
    assert grid.getpixel((32 + 8, row1_h - 8)) == (0, 0, 255)  # 32x8 padded into 16x16
    assert grid.getpixel((32 + 8, row1_h - 15)) == (255, 255, 255)
    assert grid.getpixel((2, grid.height - 2)) == (0, 128, 0)
