"""Grids of pictures as the webui's scripts lay them out (PIL only, its default font): cells in
rows, labels above the columns and left of the rows, titles above side-by-side grids; and the
SD upscale's tiles, split with overlap and blended back along linear ramps."""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

from sdcore.webui.scripts import tile_starts

LINE_H = 14  # the default bitmap font's line height, with spacing
PAD = 4


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default()


def _text_size(text: str) -> tuple[int, int]:
    lines = text.split("\n") if text else []
    font = _font()
    width = max((int(font.getlength(line)) for line in lines), default=0)
    return width, LINE_H * len(lines)


def labelled_grid(
    cells: list[Image.Image | None],
    columns: int,
    column_labels: list[str],
    row_labels: list[str],
    margin: int = 0,
) -> Image.Image:
    """`cells` (None: a blank one, as the webui leaves a job that gave nothing) in rows of
    `columns`, `margin` px apart, labelled when labels are given."""
    first = next((c for c in cells if c is not None), None)
    cell_w, cell_h = first.size if first is not None else (64, 64)
    rows = math.ceil(len(cells) / columns)
    left = max((_text_size(t)[0] for t in row_labels), default=0)
    left = left + 2 * PAD if left else 0
    top = max((_text_size(t)[1] for t in column_labels), default=0)
    top = top + 2 * PAD if top else 0
    width = left + columns * cell_w + (columns - 1) * margin
    height = top + rows * cell_h + (rows - 1) * margin
    grid = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(grid)
    for i, cell in enumerate(cells):
        x = left + (i % columns) * (cell_w + margin)
        y = top + (i // columns) * (cell_h + margin)
        grid.paste(
            cell.convert("RGB") if cell is not None else Image.new("RGB", (cell_w, cell_h)), (x, y)
        )
    for col, text in enumerate(column_labels[:columns]):
        tw, th = _text_size(text)
        x = left + col * (cell_w + margin) + (cell_w - tw) // 2
        draw.multiline_text((x, (top - th) // 2), text, fill="black", font=_font(), spacing=3)
    for row, text in enumerate(row_labels[:rows]):
        tw, th = _text_size(text)
        y = top + row * (cell_h + margin) + (cell_h - th) // 2
        draw.multiline_text(((left - tw) // 2, y), text, fill="black", font=_font(), spacing=3)
    return grid


def titled_row(grids: list[Image.Image], titles: list[str]) -> Image.Image:
    """Grids side by side under their titles (the x/y/z plot's z axis)."""
    top = max((_text_size(t)[1] for t in titles), default=0)
    top = top + 2 * PAD if top else 0
    width = sum(g.width for g in grids)
    out = Image.new("RGB", (width, top + max(g.height for g in grids)), "white")
    draw = ImageDraw.Draw(out)
    x = 0
    for grid, title in zip(grids, titles, strict=True):
        out.paste(grid, (x, top))
        tw, th = _text_size(title)
        draw.multiline_text(
            (x + (grid.width - tw) // 2, (top - th) // 2),
            title,
            fill="black",
            font=_font(),
            spacing=3,
        )
        x += grid.width
    return out


@dataclass(frozen=True)
class Tiles:
    """Where each tile of an image sits: (x, y) of its top-left corner, row by row."""

    width: int
    height: int
    tile_w: int
    tile_h: int
    overlap: int
    rows: list[int]  # each row's y
    columns: list[int]  # each column's x

    @property
    def count(self) -> int:
        return len(self.rows) * len(self.columns)


def tile_layout(width: int, height: int, tile_w: int, tile_h: int, overlap: int) -> Tiles:
    """The webui's split: as few tiles as cover the image with at least `overlap` px shared,
    spread evenly, the last flush with the edge. The image must be at least a tile."""
    overlap = min(overlap, tile_w - 8, tile_h - 8)
    return Tiles(
        width,
        height,
        tile_w,
        tile_h,
        overlap,
        tile_starts(height, tile_h, overlap),
        tile_starts(width, tile_w, overlap),
    )


def split(image: Image.Image, tiles: Tiles) -> list[Image.Image]:
    """The image's tiles, row by row."""
    return [
        image.crop((x, y, x + tiles.tile_w, y + tiles.tile_h))
        for y in tiles.rows
        for x in tiles.columns
    ]


def _ramp(size: tuple[int, int], horizontal: bool) -> Image.Image:
    """A mask rising linearly from 0 (the tile before keeps the pixel) towards 255 (this tile
    does) across the shared px, as the webui's blending mask."""
    w, h = size
    length = w if horizontal else h
    line = bytes(int(i * 255 / length) for i in range(length))
    if horizontal:
        return Image.frombytes("L", (length, 1), line).resize((w, h), Image.Resampling.NEAREST)
    return Image.frombytes("L", (1, length), line).resize((w, h), Image.Resampling.NEAREST)


def combine(parts: list[Image.Image], tiles: Tiles) -> Image.Image:
    """The tiles put back, each blended into the one before it (left, then above) along a
    linear ramp over the `overlap` px they share, as the webui's combine_grid."""
    out = Image.new("RGB", (tiles.width, tiles.height))
    cols = len(tiles.columns)
    for r, y in enumerate(tiles.rows):
        row = Image.new("RGB", (tiles.width, tiles.tile_h))
        for c, x in enumerate(tiles.columns):
            tile = parts[r * cols + c].convert("RGB")
            prev_end = tiles.columns[c - 1] + tiles.tile_w if c else 0
            shared = max(0, prev_end - x)
            if shared:
                row.paste(
                    tile.crop((0, 0, shared, tiles.tile_h)),
                    (x, 0),
                    _ramp((shared, tiles.tile_h), horizontal=True),
                )
            row.paste(tile.crop((shared, 0, tiles.tile_w, tiles.tile_h)), (x + shared, 0))
        prev_end = tiles.rows[r - 1] + tiles.tile_h if r else 0
        shared = max(0, prev_end - y)
        if shared:
            out.paste(
                row.crop((0, 0, tiles.width, shared)),
                (0, y),
                _ramp((tiles.width, shared), horizontal=False),
            )
        out.paste(row.crop((0, shared, tiles.width, tiles.tile_h)), (0, y + shared))
    return out
