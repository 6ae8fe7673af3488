"""PNG `parameters` chunk and the webui infotext format."""

from __future__ import annotations

import numpy as np
from PIL import Image

from sdcore.api.schemas import Txt2ImgBody
from sdcore.engine.diffusers_engine import DiffusersEngine
from sdcore.ports import EngineInputs
from sdcore.webui.png_info import png_bytes, read_parameters

from .support import Steps, gen


def test_infotext_is_the_webui_format_and_survives_the_png(engine: DiffusersEngine) -> None:
    params = gen(negative_prompt="blurry, low quality", steps=3, seed=123, guidance=7)
    result = engine.run(params, EngineInputs(), Steps())
    expected = (
        "a red circle\n"
        "Negative prompt: blurry, low quality\n"
        "Steps: 3, Sampler: Euler, CFG scale: 7.0, Seed: 123, Size: 64x64, "
        "Model hash: 76c4bcb125, Model: tiny-sd"
    )
    assert result.infotexts == [expected]
    data = png_bytes(result.images[0], result.infotexts[0])
    assert data.startswith(b"\x89PNG")
    assert read_parameters(data) == expected


def test_no_negative_prompt_line_when_empty(engine: DiffusersEngine) -> None:
    text = engine.run(gen(seed=5), EngineInputs(), Steps()).infotexts[0]
    assert text == (
        "a red circle\nSteps: 3, Sampler: Euler, CFG scale: 7.0, Seed: 5, Size: 64x64, "
        "Model hash: 76c4bcb125, Model: tiny-sd"
    )


def test_unicode_round_trips_and_missing_chunks_read_as_none() -> None:
    image = Image.new("RGB", (4, 4), "red")
    text = "一只红色的猫 🐱\nSteps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 1, Size: 4x4"
    assert read_parameters(png_bytes(image, text)) == text
    plain = png_bytes(image, "x").replace(b"parameters", b"parametrix")  # other key, same size
    assert read_parameters(plain) is None
    assert read_parameters(b"not an image") is None


def test_pasting_an_infotext_back_gives_the_same_pixels(engine: DiffusersEngine) -> None:
    # Given an image made with most of the webui's generation fields
    params = gen(
        prompt="a (red:1.2) circle BREAK [white] background",
        negative_prompt="blue, dark",
        sampler="DPM++ 2M SDE",
        scheduler="Karras",
        seed=77,
        subseed=5,
        subseed_strength=0.3,
        seed_resize_from_w=32,
        seed_resize_from_h=48,
        clip_skip=2,
        guidance=5.5,
        steps=4,
        width=64,
        height=48,
    )
    first = engine.run(params, EngineInputs(), Steps())
    text = read_parameters(png_bytes(first.images[0], first.infotexts[0]))
    assert text is not None and "Schedule type: Karras" in text and "Clip skip: 2" in text

    # When its PNG infotext is pasted into an otherwise empty request
    pasted, _, _ = Txt2ImgBody(infotext=text).to_domain()
    again = engine.run(pasted, EngineInputs(), Steps())

    # Then the request means the same: same infotext, same pixels
    assert again.infotexts == first.infotexts
    assert np.array_equal(np.asarray(again.images[0]), np.asarray(first.images[0]))
