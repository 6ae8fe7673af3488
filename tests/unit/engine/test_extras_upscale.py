"""Extras as the webui's postprocessing upscale: by a factor, to a size with or without the centre
crop, and a second upscaler blended in at its visibility."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from PIL import Image

from sdcore.api.schemas import ExtrasBody
from sdcore.domain.models import GenerationParams, TaskKind
from sdcore.engine.extras import upscale
from sdcore.errors import InvalidInputError


def _source() -> Image.Image:
    """30x20 with a sharp checker pattern, so Lanczos and Nearest disagree."""
    pixels = (np.indices((20, 30)).sum(axis=0) % 2 * 255).astype(np.uint8)
    return Image.fromarray(np.stack([pixels, 255 - pixels, pixels // 2], axis=2))


def _params(**fields: Any) -> GenerationParams:
    return GenerationParams(kind=TaskKind.EXTRAS, **fields)


def _px(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_by_factor() -> None:
    image, fields = upscale(_source(), _params(upscale_factor=2.5))
    assert image.size == (75, 50)
    assert fields == [("Postprocess upscale by", "2.5"), ("Postprocess upscaler", "Lanczos")]


def test_to_a_size_covers_it_then_crops_to_it() -> None:
    # 30x20 to 60x60: scaled by max(2, 3) = 3 to 90x60, then the middle 60 columns
    image, fields = upscale(_source(), _params(upscale_width=60, upscale_height=60))
    assert image.size == (60, 60)
    full = _source().resize((90, 60), Image.Resampling.LANCZOS)
    assert np.array_equal(_px(image), _px(full)[:, 15:75])
    assert ("Postprocess crop to", "60x60") in fields


def test_to_a_size_without_crop_keeps_the_aspect_ratio() -> None:
    image, fields = upscale(
        _source(), _params(upscale_width=60, upscale_height=60, upscale_crop=False)
    )
    assert image.size == (90, 60)
    assert fields[0] == ("Postprocess upscale to", "60x60") and len(fields) == 2


@pytest.mark.parametrize("visibility", [0.0, 0.4, 1.0])
def test_second_upscaler_blends_in_at_its_visibility(visibility: float) -> None:
    params = _params(upscaler_2="Nearest", upscaler_2_visibility=visibility)
    image, fields = upscale(_source(), params)
    lanczos = _px(_source().resize((60, 40), Image.Resampling.LANCZOS))
    nearest = _px(_source().resize((60, 40), Image.Resampling.NEAREST))
    expected = lanczos + (nearest - lanczos) * visibility
    assert np.abs(_px(image) - expected).max() <= 1
    assert (("Postprocess upscaler 2", "Nearest") in fields) == (visibility > 0)


def test_unknown_upscalers_name_their_field() -> None:
    with pytest.raises(InvalidInputError) as err:
        upscale(_source(), _params(upscaler_2="4x-UltraSharp", upscaler_2_visibility=0.5))
    assert err.value.field == "upscaler_2"
    with pytest.raises(InvalidInputError) as err:
        upscale(_source(), _params(upscale_factor=2000))
    assert err.value.field == "upscaling_resize_w"


def test_the_wire_fields_map_to_the_domain() -> None:
    body = ExtrasBody(
        image="aGVsbG8=",
        resize_mode=1,
        upscaling_resize_w=64,
        upscaling_resize_h=32,
        upscaling_crop=False,
        upscaler_2="Nearest",
        extras_upscaler_2_visibility=0.3,
    )
    params, _, _ = body.to_domain()
    assert (params.upscale_width, params.upscale_height, params.upscale_crop) == (64, 32, False)
    assert (params.upscaler_2, params.upscaler_2_visibility) == ("Nearest", 0.3)
