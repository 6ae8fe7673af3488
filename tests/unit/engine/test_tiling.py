"""The webui's tiling (seamless textures) on the tiny model: circular padding in every Conv2d of
the UNet and the VAE for the task that asks for it (txt2img, img2img, inpainting, the hires
fix's second pass), the layers' own padding back after it however it ends, `Tiling: True` in
the infotext, and the request field reaching the engine."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from proxy_function.app import lambda_handler as proxy
from sdcore import composition
from sdcore.api.schemas import Img2ImgBody, Txt2ImgBody
from sdcore.domain.models import GenerationParams, Model, ModelStatus
from sdcore.engine import pipeline
from sdcore.engine.diffusers_engine import DiffusersEngine
from sdcore.engine.tiling import conv_layers
from sdcore.ports import EngineInputs, StepInfo
from sdcore.usecases.auth import bootstrap_local
from sdcore.usecases.inference import run_task
from sdcore.webui.infotext import parse_infotext, request_fields
from tests.functional import events
from tests.functional.events import Context

from .support import Steps, gen

HALF = 32  # px: half the 64x64 picture; 4 latent px, a multiple of the tiny UNet's stride (4)


def _px(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64)


def _modes(engine: DiffusersEngine) -> list[str]:
    return [layer.padding_mode for layer in conv_layers(engine.model)]


def _shifted(
    engine: DiffusersEngine,
    monkeypatch: pytest.MonkeyPatch,
    params: GenerationParams,
    inputs: EngineInputs,
    shift: bool,
) -> np.ndarray:
    """The picture from the seed's noise, or from that noise rolled by half the picture (the
    init image, if any, rolled with it)."""
    draw = pipeline.draw_noise

    def rolled(*args: Any) -> tuple[torch.Tensor, list[torch.Generator]]:
        noise, generators = draw(*args)
        return torch.roll(noise, (HALF // 8, HALF // 8), (2, 3)), generators

    if shift:
        monkeypatch.setattr(pipeline, "draw_noise", rolled)
        inputs = EngineInputs(
            init_images=[
                Image.fromarray(np.roll(np.asarray(im), (HALF, HALF), (0, 1)))
                for im in inputs.init_images
            ]
        )
    try:
        return _px(engine.run(params, inputs, Steps()).images[0])
    finally:
        monkeypatch.setattr(pipeline, "draw_noise", draw)


def seam_error(
    engine: DiffusersEngine,
    monkeypatch: pytest.MonkeyPatch,
    params: GenerationParams,
    inputs: EngineInputs,
) -> float:
    """How far the picture's edges are from continuing each other, in 8-bit levels.

    The tiny model's pictures are noise-like (random weights): neighbouring pixels differ by
    ~18 levels anywhere, so comparing the edge columns with each other cannot tell a seam
    from texture. Instead the picture `a` is made again from the same noise rolled by half the
    picture, `b`: there the right edge column sits just left of the middle and the left edge
    column just right of it, and both are made as interior pixels, next to each other. With
    circular padding every layer treats the picture as a torus, so `b` is `a` rolled by half
    (up to 8-bit rounding): `a`'s right and left columns, and its bottom and top rows, are
    what the model paints when they are neighbours. The error is the mean absolute difference
    between `a` rolled and `b` in the 4-pixel band on each side of `b`'s middle column and row
    (where `a`'s seams are). Measured: 0.00 (max 1 level) tiled, 31-42 untiled.
    """
    a = np.roll(_shifted(engine, monkeypatch, params, inputs, False), (HALF, HALF), (0, 1))
    b = _shifted(engine, monkeypatch, params, inputs, True)
    band = slice(HALF - 4, HALF + 4)
    return float((np.abs(a - b)[:, band].mean() + np.abs(a - b)[band, :].mean()) / 2)


def _init() -> Image.Image:
    """A picture with structure in both directions (its edges do not match)."""
    y, x = np.mgrid[0:64, 0:64]
    return Image.fromarray(np.stack([x * 4, y * 4, (x + y) * 2], -1).astype(np.uint8))


@pytest.mark.parametrize(
    ("fields", "inputs", "most"),
    [
        ({}, EngineInputs(), 1.0),
        (
            {"kind": "img2img", "denoising_strength": 0.75, "steps": 4},
            EngineInputs(init_images=[_init()]),
            10.0,
        ),
    ],
    ids=["txt2img", "img2img"],
)
def test_a_tiled_picture_continues_across_its_edges(
    engine: DiffusersEngine,
    monkeypatch: pytest.MonkeyPatch,
    fields: dict[str, Any],
    inputs: EngineInputs,
    most: float,
) -> None:
    """Measured over six seeds: untiled 31-42 levels; tiled txt2img 0.00, tiled img2img 3.4-5.2
    (the VAE encoder's downsampling pads one side with zeros itself, outside its Conv2d's
    padding, as the webui's encoder does: the init image's latents are not exactly circular).
    The limits sit well between: untiled over 15, tiled under `most` and a third of it."""
    plain = seam_error(engine, monkeypatch, gen(**fields), inputs)
    tiled = seam_error(engine, monkeypatch, gen(tiling=True, **fields), inputs)
    assert plain > 15
    assert tiled < most and tiled * 3 < plain


class _Watch:
    """An on_step callback that records the UNet's and VAE's padding modes at every step."""

    def __init__(self, engine: DiffusersEngine, stop_at: int | None = None) -> None:
        self.engine, self.stop_at = engine, stop_at
        self.seen: list[set[str]] = []

    def __call__(self, info: StepInfo) -> bool:
        self.seen.append(set(_modes(self.engine)))
        return self.stop_at is not None and len(self.seen) >= self.stop_at


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"kind": "img2img", "denoising_strength": 0.6},
        {"kind": "img2img", "denoising_strength": 0.75, "_mask": True},
        {"hires": True, "hr_second_pass_steps": 2, "denoising_strength": 0.5},
    ],
    ids=["txt2img", "img2img", "inpaint", "hires"],
)
def test_every_pass_runs_circular_and_the_padding_comes_back(
    engine: DiffusersEngine, fields: dict[str, Any]
) -> None:
    before = _modes(engine)
    assert "circular" not in before
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    inputs = (
        EngineInputs(init_images=[_init()], mask=mask if fields.pop("_mask", False) else None)
        if fields.get("kind") == "img2img"
        else EngineInputs()
    )
    watch = _Watch(engine)
    engine.run(gen(tiling=True, **fields), inputs, watch)
    assert watch.seen and all(seen == {"circular"} for seen in watch.seen)
    if fields.get("hires"):
        assert len(watch.seen) == 3 + 1  # the second pass's step ran circular too
    assert _modes(engine) == before


def test_the_padding_comes_back_after_a_cancelled_or_failed_task(engine: DiffusersEngine) -> None:
    # Given an untiled picture made before any tiled task of this test
    before = _modes(engine)
    first = engine.run(gen(seed=9), EngineInputs(), Steps()).images[0]

    # When a tiled task is cancelled after a step, and another fails in its second step
    result = engine.run(gen(seed=9, tiling=True), EngineInputs(), _Watch(engine, stop_at=1))
    assert result.interrupted

    def fail(info: StepInfo) -> bool:
        if info.step == 2:
            raise RuntimeError("out of memory")
        return False

    with pytest.raises(RuntimeError, match="out of memory"):
        engine.run(gen(seed=9, tiling=True), EngineInputs(), fail)

    # Then every layer pads as it did, and the next untiled task gives the same pixels
    assert _modes(engine) == before
    again = engine.run(gen(seed=9), EngineInputs(), Steps()).images[0]
    assert np.array_equal(_px(first), _px(again))
    tiled = engine.run(gen(seed=9, tiling=True), EngineInputs(), Steps()).images[0]
    assert not np.array_equal(_px(first), _px(tiled))


def test_the_infotext_says_tiling_and_pasting_it_turns_tiling_on(engine: DiffusersEngine) -> None:
    result = engine.run(gen(seed=11, tiling=True, clip_skip=2), EngineInputs(), Steps())
    text = result.infotexts[0]
    # the webui's place: after Clip skip
    assert text.splitlines()[-1].endswith("Model: tiny-sd, Clip skip: 2, Tiling: True")
    assert parse_infotext(text)["Tiling"] == "True" and result.info["tiling"] is True
    assert "Tiling" not in engine.run(gen(seed=11), EngineInputs(), Steps()).infotexts[0]
    # pasted back: tiling on, the same pixels
    assert request_fields(text)["tiling"] is True
    assert request_fields(text, img2img=True)["tiling"] is True
    params, _, _ = Txt2ImgBody(infotext=text).to_domain()
    assert params.tiling is True
    again = engine.run(params, EngineInputs(), Steps()).images[0]
    assert np.array_equal(_px(result.images[0]), _px(again))
    # explicit fields win; "False" and odd values as the webui reads them
    assert Txt2ImgBody(infotext=text, tiling=False).tiling is False
    assert request_fields(text.replace("Tiling: True", "Tiling: False"))["tiling"] is False
    assert "tiling" not in request_fields(text.replace("Tiling: True", "Tiling: maybe"))


def test_the_bodies_map_tiling_and_the_webui_spellings() -> None:
    assert Txt2ImgBody(tiling=True).to_domain()[0].tiling is True
    img, _, _ = Img2ImgBody(tiling=True, init_images=["outputs/u/t/0.png"]).to_domain()
    assert img.tiling is True
    assert Txt2ImgBody().to_domain()[0].tiling is False
    # the webui's API leaves it unset (null): off, or its `tiling` setting in override_settings
    assert Txt2ImgBody.model_validate({"tiling": None}).tiling is False
    assert Txt2ImgBody(override_settings={"tiling": True}).tiling is True
    assert Txt2ImgBody(tiling=False, override_settings={"tiling": True}).tiling is False


# --- the field through the API to the engine ---------------------------------------------------


@pytest.fixture
def api_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The handlers on the local backend (state in tmp_path); webui calls answer at once."""
    monkeypatch.setenv("SD_BACKEND", "local")
    monkeypatch.setenv("SD_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SD_SYNC_TIMEOUT", "0")
    monkeypatch.setenv("SD_WEBUI_TIMEOUT", "0")
    composition.reset()
    creds = bootstrap_local(composition.get_services(), tmp_path)
    assert creds is not None
    monkeypatch.setattr(events, "DEFAULT_HEADERS", {"Authorization": f"Bearer {creds['user_key']}"})
    composition.get_services().models.create(
        Model(
            name="demo",
            status=ModelStatus.UNLOADED,
            sha256="0" * 64,
            size=1,
            key="k",
            registered_at=0,
            modified_at=0,
        )
    )
    yield tmp_path
    composition.reset()


def _submit(path: str, body: dict[str, Any]) -> str:
    resp = proxy(events.api("POST", path, body), Context())
    answer = json.loads(resp["body"])
    assert resp["statusCode"] in (202, 504), answer  # queued; webui: still running
    return str(answer["taskId"])


@pytest.mark.parametrize("path", ["/txt2img", "/sdapi/v1/txt2img", "/img2img", "/sdapi/v1/img2img"])
def test_the_request_field_reaches_the_engine(
    api_env: Path, engine: DiffusersEngine, path: str
) -> None:
    body: dict[str, Any] = {"prompt": "a red circle", "steps": 2, "seed": 5, "tiling": True}
    if "img2img" in path:
        png = api_env / "init.png"
        _init().save(png)
        body["init_images"] = [base64.b64encode(png.read_bytes()).decode()]
    task_id = _submit(path, body)
    svc = composition.get_services()
    assert svc.tasks.get(task_id).params.tiling is True
    run_task(svc, engine, task_id, None)
    task = svc.tasks.get(task_id)
    assert task.status == "succeeded", task.error
    assert task.info["tiling"] is True
    assert task.info["infotexts"][0].endswith("Tiling: True")
