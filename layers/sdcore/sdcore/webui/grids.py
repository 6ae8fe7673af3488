"""Labelled grids of pictures as the webui lays them out (PIL only, its default font): cells in
rows, labels above the columns and left of the rows, titles above side-by-side grids. Torch-free:
the x/y/z plot script (in the engine) and a batch's comparison grid (drawn by the API) share it."""

from __future__ import annotations

import math

from PIL import Image, ImageDraw, ImageFont, ImageOps

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


def captioned_grid(
    cells: list[Image.Image | None], captions: list[str], columns: int, margin: int = 0
) -> Image.Image:
    """`cells` in rows of `columns`, each under its own caption: rows of `labelled_grid`
    stacked. Cells of another size than the first are fitted into its size (kept in proportion,
    padded white), so that pictures of different sizes line up for comparison."""
    first = next((c for c in cells if c is not None), None)
    size = first.size if first is not None else (64, 64)
    # a cell that gave nothing stays black, as `labelled_grid` leaves it
    fitted: list[Image.Image | None] = [
        Image.new("RGB", size)
        if c is None
        else c
        if c.size == size
        else ImageOps.pad(c.convert("RGB"), size, color="white")
        for c in cells
    ]
    rows = [
        labelled_grid(fitted[i : i + columns], columns, captions[i : i + columns], [], margin)
        for i in range(0, len(fitted), columns)
    ]
    out = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), "white")
    y = 0
    for row in rows:
        out.paste(row, (0, y))
        y += row.height
    return out
