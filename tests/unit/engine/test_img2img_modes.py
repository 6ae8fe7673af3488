"""img2img resize modes and inpainting (mask blur, masked content, only-masked, invert) on the
tiny model: the pixels outside the mask are the init image's, as the webui keeps them."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from sdcore.engine.diffusers_engine import DiffusersEngine
from sdcore.engine.img2img import fill, resize_image
from sdcore.errors import InvalidInputError
from sdcore.ports import EngineInputs

from .support import Steps, gen


def _two_colour(width: int, height: int) -> Image.Image:
    """Left half red, right half blue, with a green line across the top row."""
    image = Image.new("RGB", (width, height), (255, 0, 0))
    image.paste((0, 0, 255), (width // 2, 0, width, height))
    image.paste((0, 255, 0), (0, 0, width, 1))
    return image


def _px(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_resize_modes_as_the_webui() -> None:
    wide = _two_colour(128, 64)
    stretched = _px(resize_image(0, wide, 64, 64))
    cropped = _px(resize_image(1, wide, 64, 64))
    filled = _px(resize_image(2, wide, 64, 64))
    assert stretched.shape == cropped.shape == filled.shape == (64, 64, 3)
    # 1: scaled to 128x64 and the middle 64 columns kept: red then blue, green top row kept
    assert tuple(cropped[32, 4]) == (255, 0, 0) and tuple(cropped[32, 60]) == (0, 0, 255)
    assert cropped[0, 10, 1] > 200
    # 2: scaled to 64x32 in the middle; the bands above and below repeat its edge rows
    assert tuple(filled[32, 4]) == (255, 0, 0) and tuple(filled[32, 60]) == (0, 0, 255)
    assert filled[16, 10, 1] > 100  # the picture's top row (half green after the downscale)
    # ... stretched over the band above (one row repeated), the bottom row over the band below
    assert (filled[0:16] == filled[0]).all() and filled[0, 10, 1] > 100
    assert np.abs(filled[48:] - filled[47]).max() <= 16 and (filled[48:] == filled[63]).all()
    # a tall image: bands left and right
    tall = _px(resize_image(2, _two_colour(32, 64), 64, 64))
    assert tuple(tall[40, 2]) == (255, 0, 0) and tuple(tall[40, 61]) == (0, 0, 255)


def test_fill_paints_the_masked_area_from_the_rest() -> None:
    image = _two_colour(64, 64)
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (24, 24, 40, 40))
    out = _px(fill(image, mask))
    # outside the mask the picture is kept; inside it a mix of the surrounding red and blue
    assert np.array_equal(out[:, :20], _px(image)[:, :20])
    centre = out[32, 32]
    assert centre[0] > 50 and centre[2] > 50 and centre[1] < 30


def _img2img(engine: DiffusersEngine, init: Image.Image, **fields: Any) -> Image.Image:
    params = gen(kind="img2img", denoising_strength=0.6, steps=5, **fields)
    mask = fields.pop("_mask", None)
    result = engine.run(params, EngineInputs(init_images=[init], mask=mask), Steps())
    return result.images[0]


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
def test_each_resize_mode_gives_the_requested_size_and_its_own_picture(
    engine: DiffusersEngine, mode: int
) -> None:
    init = _two_colour(96, 48)
    out = _img2img(engine, init, resize_mode=mode, width=64, height=64)
    assert out.size == (64, 64)
    if mode:
        assert not np.array_equal(_px(out), _px(_img2img(engine, init, width=64, height=64)))


def _mask(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).rectangle(box, fill=255)
    return mask


def _inpaint(engine: DiffusersEngine, init: Image.Image, mask: Image.Image, **fields: Any) -> Any:
    params = gen(kind="img2img", denoising_strength=0.75, steps=4, **fields)
    return engine.run(params, EngineInputs(init_images=[init], mask=mask), Steps()).images[0]


@pytest.mark.parametrize("fill_mode", [0, 1, 2, 3])
def test_inpainting_keeps_the_pixels_outside_the_blurred_mask(
    engine: DiffusersEngine, fill_mode: int
) -> None:
    init = _two_colour(64, 64)
    mask = _mask((64, 64), (24, 24, 40, 40))
    out = _px(_inpaint(engine, init, mask, inpainting_fill=fill_mode, mask_blur=2))
    outside = np.asarray(mask.filter(ImageFilter.GaussianBlur(2))) == 0
    assert np.array_equal(out[outside], _px(init)[outside])
    assert not np.array_equal(out[30:34, 30:34], _px(init)[30:34, 30:34])


def test_masked_content_modes_differ(engine: DiffusersEngine) -> None:
    init = _two_colour(64, 64)
    mask = _mask((64, 64), (16, 16, 48, 48))
    outs = [_px(_inpaint(engine, init, mask, inpainting_fill=f))[28:36, 28:36] for f in range(4)]
    for i in range(4):
        for j in range(i + 1, 4):
            assert not np.array_equal(outs[i], outs[j]), (i, j)


def test_invert_repaints_the_other_side(engine: DiffusersEngine) -> None:
    init = _two_colour(64, 64)
    mask = _mask((64, 64), (0, 0, 31, 63))  # the left half
    out = _px(_inpaint(engine, init, mask, mask_blur=0, inpainting_mask_invert=1))
    assert np.array_equal(out[:, :32], _px(init)[:, :32])
    assert not np.array_equal(out[:, 32:], _px(init)[:, 32:])


def test_only_masked_keeps_the_picture_size_and_everything_outside(
    engine: DiffusersEngine,
) -> None:
    # Given a 160x120 picture with a small masked square, generated at 64x64
    init = _two_colour(160, 120)
    mask = _mask((160, 120), (100, 50, 115, 65))
    out = _inpaint(
        engine,
        init,
        mask,
        inpaint_full_res=True,
        inpaint_full_res_padding=8,
        mask_blur=0,
        width=64,
        height=64,
    )
    # Then the result is the picture's size, changed only inside the mask
    assert out.size == (160, 120)
    changed = np.any(_px(out) != _px(init), axis=2)
    assert changed[50:66, 100:116].any()
    assert not changed[np.asarray(mask) == 0].any()


def test_bad_values_name_their_field(engine: DiffusersEngine) -> None:
    init = _two_colour(64, 64)
    with pytest.raises(InvalidInputError) as err:
        _img2img(engine, init, resize_mode=4)
    assert err.value.field == "resize_mode"
    with pytest.raises(InvalidInputError) as err:
        _inpaint(engine, init, Image.new("L", (64, 64)), inpaint_full_res=True)
    assert err.value.field == "mask"
