"""The hires fix on the tiny model: sizes as the webui computes them, latent and image
upscalers, the second pass's steps and strength, and its infotext fields."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from sdcore.api.schemas import Txt2ImgBody
from sdcore.engine.diffusers_engine import DiffusersEngine
from sdcore.errors import InvalidInputError
from sdcore.ports import EngineInputs
from sdcore.webui.infotext import parse_infotext

from .support import Steps, gen


def _run(engine: DiffusersEngine, **fields: Any) -> Any:
    steps = Steps()
    result = engine.run(gen(hires=True, **fields), EngineInputs(), steps)
    return result, steps


@pytest.mark.parametrize(
    ("fields", "size"),
    [
        ({"hr_scale": 2}, (128, 128)),
        ({"hr_scale": 1.5, "width": 64, "height": 48}, (96, 72)),
        ({"hr_resize_x": 96}, (96, 96)),
        ({"hr_resize_y": 80, "width": 64, "height": 32}, (160, 80)),
        ({"hr_resize_x": 128, "hr_resize_y": 96}, (128, 96)),  # cover 128x128, crop to the box
        ({"hr_scale": 2, "hr_upscaler": "Lanczos"}, (128, 128)),
    ],
)
def test_output_size(
    engine: DiffusersEngine, fields: dict[str, Any], size: tuple[int, int]
) -> None:
    result, _ = _run(engine, **fields)
    assert result.images[0].size == size


def test_second_pass_runs_its_steps_and_the_infotext_says_so(engine: DiffusersEngine) -> None:
    result, steps = _run(engine, hr_second_pass_steps=4, denoising_strength=0.5, batch_size=2)
    # 3 first-pass steps, then int(4 x 0.5) = 2 steps at the larger size
    assert [s.steps for s in steps.seen] == [3, 3, 3, 2, 2]
    assert len(result.images) == 2 and result.images[1].size == (128, 128)
    fields = parse_infotext(result.infotexts[0])
    assert fields["Size-1"] == "64" and fields["Size-2"] == "64"  # the first pass, as the webui
    assert float(fields["Hires upscale"]) == 2
    assert fields["Hires steps"] == "4"
    assert fields["Hires upscaler"] == "Latent"
    assert fields["Denoising strength"] == "0.5"


def test_same_seed_same_pixels_and_upscalers_differ(engine: DiffusersEngine) -> None:
    def pixels(**fields: Any) -> np.ndarray:
        return np.asarray(_run(engine, **fields)[0].images[0], dtype=np.int16)

    latent = pixels(hr_upscaler="Latent")
    assert np.array_equal(latent, pixels(hr_upscaler="Latent"))
    assert not np.array_equal(latent, pixels(hr_upscaler="Latent (nearest)"))
    assert not np.array_equal(latent, pixels(hr_upscaler="Lanczos"))
    # the second pass changes the picture: not a plain resize of the first pass
    first = engine.run(gen(), EngineInputs(), Steps()).images[0]
    assert not np.array_equal(latent, np.asarray(first.resize((128, 128)), dtype=np.int16))


def test_denoising_strength_0_keeps_the_upscaled_first_pass(engine: DiffusersEngine) -> None:
    """As the webui: the second pass runs no step; the picture is the first pass upscaled."""
    result, steps = _run(engine, hr_upscaler="Lanczos", denoising_strength=0)
    assert [s.steps for s in steps.seen] == [3, 3, 3]  # the first pass's steps only
    first = engine.run(gen(), EngineInputs(), Steps()).images[0]
    resized = first.resize((128, 128), Image.Resampling.LANCZOS)
    assert np.array_equal(np.asarray(result.images[0]), np.asarray(resized))
    assert parse_infotext(result.infotexts[0])["Denoising strength"] == "0.0"
    latent, _ = _run(engine, denoising_strength=0)  # latents upscaled, then decoded
    assert latent.images[0].size == (128, 128)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"hr_upscaler": "ESRGAN_4x"}, "hr_upscaler"),
        ({"hr_scale": 8}, "hr_scale"),
        ({"denoising_strength": 0.1, "steps": 3}, "denoising_strength"),
    ],
)
def test_bad_hires_fields_name_the_field(
    engine: DiffusersEngine, fields: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidInputError) as err:
        _run(engine, **fields)
    assert err.value.field == field


def test_the_wire_fields_map_to_the_domain() -> None:
    body = Txt2ImgBody(
        enable_hr=True, hr_scale=1.5, hr_upscaler="Latent (bicubic)", hr_second_pass_steps=7
    )
    params, _, _ = body.to_domain()
    assert (params.hires, params.hr_scale, params.hr_upscaler) == (True, 1.5, "Latent (bicubic)")
    assert (params.hr_second_pass_steps, params.denoising_strength) == (7, 0.7)
    # a name that is no built-in may be a registered upscaler model: checked at submit
    assert Txt2ImgBody(enable_hr=True, hr_upscaler="4x-model").to_domain()[0].hr_upscaler
    with pytest.raises(ValidationError, match="hr_upscaler"):
        Txt2ImgBody(enable_hr=True, hr_upscaler=" ")
    body = Txt2ImgBody(
        enable_hr=True,
        hr_sampler_name="DPM++ 2M",
        hr_scheduler="Karras",
        hr_prompt="a blue square",
        hr_negative_prompt="blurry",
    )
    params = body.to_domain()[0]
    assert (params.hr_sampler, params.hr_scheduler) == ("DPM++ 2M", "Karras")
    assert (params.hr_prompt, params.hr_negative_prompt) == ("a blue square", "blurry")
    same = Txt2ImgBody(enable_hr=True, hr_sampler_name="Use same sampler").to_domain()[0]
    assert (same.hr_sampler, same.hr_scheduler) == ("", "")
    with pytest.raises(ValidationError, match="hr_sampler_name"):
        Txt2ImgBody(enable_hr=True, hr_sampler_name="Nope a")
    with pytest.raises(ValidationError, match="hr_scheduler"):
        Txt2ImgBody(enable_hr=True, hr_scheduler="Nope")


def test_a_pasted_hires_infotext_reproduces_the_picture(engine: DiffusersEngine) -> None:
    # Given a hires picture and its infotext
    fields = {"hr_resize_x": 96, "hr_second_pass_steps": 4, "hr_upscaler": "Latent (nearest)"}
    result, _ = _run(engine, denoising_strength=0.6, **fields)
    # When the infotext alone is pasted into a txt2img request
    params, _, _ = Txt2ImgBody(infotext=result.infotexts[0]).to_domain()
    again = engine.run(params, EngineInputs(), Steps())
    # Then the hires fix is on with the same settings, and the picture is the same
    assert (params.hires, params.hr_resize_x, params.hr_resize_y) == (True, 96, 0)
    assert (params.hr_second_pass_steps, params.hr_upscaler) == (4, "Latent (nearest)")
    assert params.denoising_strength == 0.6
    assert np.array_equal(np.asarray(again.images[0]), np.asarray(result.images[0]))


# --- the second pass's own sampler, prompts and upscaler models -----------------------------


def _pixels(engine: DiffusersEngine, **fields: Any) -> tuple[np.ndarray, dict[str, str]]:
    result, _ = _run(engine, sampler="Euler", **fields)
    return np.asarray(result.images[0], dtype=np.int16), parse_infotext(result.infotexts[0])


def test_hires_sampler_and_schedule(engine: DiffusersEngine) -> None:
    base, base_fields = _pixels(engine)
    same, same_fields = _pixels(engine, hr_sampler="Euler")
    other, other_fields = _pixels(engine, hr_sampler="DPM++ 2M", hr_scheduler="Exponential")
    assert np.array_equal(same, base)  # the first pass's sampler, named: the same picture
    assert not np.array_equal(other, base)
    assert "Hires sampler" not in base_fields and "Hires sampler" not in same_fields
    assert other_fields["Hires sampler"] == "DPM++ 2M"
    assert other_fields["Hires schedule type"] == "Exponential"
    with pytest.raises(InvalidInputError) as err:
        _run(engine, hr_sampler="Nope")
    assert err.value.field == "hr_sampler_name"


def test_hires_prompts(engine: DiffusersEngine) -> None:
    base, fields = _pixels(engine)
    same, _ = _pixels(engine, hr_prompt="a red circle")  # the prompt of `gen`
    other, other_fields = _pixels(engine, hr_prompt="a blue square", hr_negative_prompt="red")
    tagged, _ = _pixels(engine, hr_prompt="a blue square <lora:nothing:1>")
    assert np.array_equal(same, base) and not np.array_equal(other, base)
    assert "Hires prompt" not in fields
    assert other_fields["Hires prompt"] == "a blue square"
    assert other_fields["Hires negative prompt"] == "red"
    plain, _ = _pixels(engine, hr_prompt="a blue square")
    assert np.array_equal(tagged, plain)  # a LoRA tag in the hires prompt is not applied


def test_a_registered_upscaler_model_as_the_hires_upscaler(
    engine: DiffusersEngine, tmp_path: Any
) -> None:
    from .test_upscaler_models import _srvgg

    # an x2 model without learnt weights is a nearest-neighbour x2: the same first-stage
    # picture as the built-in Nearest, so the same result
    zero = _srvgg(tmp_path / "zero.safetensors", zero=True)
    inputs = EngineInputs(upscalers={zero.name: zero})
    params = gen(hires=True, hr_upscaler=zero.name, hr_scale=2)
    result = engine.run(params, inputs, Steps())
    nearest, _ = _run(engine, hr_upscaler="Nearest", hr_scale=2)
    assert np.array_equal(np.asarray(result.images[0]), np.asarray(nearest.images[0]))
    assert parse_infotext(result.infotexts[0])["Hires upscaler"] == zero.name
    # a model with weights: x3 is two runs of the x2 model, then resized to 192x192
    model = _srvgg(tmp_path / "x2.safetensors")
    inputs = EngineInputs(upscalers={model.name: model})
    big = engine.run(gen(hires=True, hr_upscaler=model.name, hr_scale=3), inputs, Steps())
    assert big.images[0].size == (192, 192)
    with pytest.raises(InvalidInputError) as err:  # a name the task has no file for
        engine.run(gen(hires=True, hr_upscaler="missing"), EngineInputs(), Steps())
    assert err.value.field == "hr_upscaler"


def test_a_pasted_infotext_brings_the_hires_sampler_and_prompts(engine: DiffusersEngine) -> None:
    fields = {"hr_sampler": "DPM++ 2M", "hr_prompt": "a blue square, big"}
    result, _ = _run(engine, sampler="Euler", **fields)
    params, _, _ = Txt2ImgBody(infotext=result.infotexts[0]).to_domain()
    assert (params.hr_sampler, params.hr_prompt) == ("DPM++ 2M", "a blue square, big")
    again = engine.run(params, EngineInputs(), Steps())
    assert np.array_equal(np.asarray(again.images[0]), np.asarray(result.images[0]))
