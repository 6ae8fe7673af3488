"""The SD upscale's tiles, split with overlap and blended back along linear ramps; the labelled
grids of the webui's scripts are drawn by `sdcore.webui.grids` (torch-free, shared with a batch's
comparison grid) and re-exported here."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from sdcore.webui.grids import labelled_grid as labelled_grid
from sdcore.webui.grids import titled_row as titled_row
from sdcore.webui.scripts import tile_starts


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
