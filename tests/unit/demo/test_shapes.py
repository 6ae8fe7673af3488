"""The shapes world of the demo model (grammar, generator, classifier) and the shipped trained
checkpoint, loaded through the serving engine."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from sdlocal.demo import shapes

ROOT = Path(__file__).resolve().parents[3]
MODEL = ROOT / "models" / "demo-shapes.safetensors"
CONFIG = ROOT / "layers" / "sdcore" / "sdcore" / "configs" / "demo-shapes"


# --- grammar ---------------------------------------------------------------------------------


def test_palette_shapes_and_backgrounds_are_the_issues() -> None:
    assert shapes.COLORS == {
        "red": (220, 40, 40),
        "green": (40, 180, 60),
        "blue": (40, 80, 220),
        "yellow": (240, 220, 40),
        "orange": (245, 140, 30),
        "purple": (140, 60, 190),
        "white": (245, 245, 245),
        "black": (20, 20, 20),
    }
    assert shapes.SHAPES == ("circle", "square", "triangle")
    assert tuple(shapes.COLORS) == shapes.BACKGROUNDS
    combos = shapes.combinations()
    assert len(combos) == 8 * 3 * 7 == len(set(combos))
    assert all(c != b for c, _, b in combos)


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("a red circle on a white background", ("red", "circle", "white")),
        ("a purple triangle on a black background", ("purple", "triangle", "black")),
        ("  A Yellow  square on a blue background ", ("yellow", "square", "blue")),
        ("green square", ("green", "square", "white")),
    ],
)
def test_prompts_parse(prompt: str, expected: tuple[str, str, str]) -> None:
    assert shapes.parse_prompt(prompt) == expected


@pytest.mark.parametrize(
    "prompt",
    [
        "a pink circle on a white background",  # not a palette color
        "a red hexagon on a white background",
        "a red circle on a red background",  # shape color = background color
        "white circle",  # white on the implied white background
        "a red circle",
        "",
    ],
)
def test_other_prompts_are_refused(prompt: str) -> None:
    with pytest.raises(ValueError):
        shapes.parse_prompt(prompt)


def test_prompt_forms_round_trip() -> None:
    for color, shape, background in shapes.combinations():
        long = shapes.prompt_for(color, shape, background)
        assert long == f"a {color} {shape} on a {background} background"
        assert shapes.parse_prompt(long) == (color, shape, background)
    assert shapes.Scene("red", "circle", "white", short=True).prompt == "red circle"
    assert shapes.parse_prompt("red circle") == ("red", "circle", "white")


# --- generator and classifier ----------------------------------------------------------------


def test_generator_is_deterministic_per_seed() -> None:
    a, sa = shapes.dataset(20, seed=7)
    b, sb = shapes.dataset(20, seed=7)
    c, _ = shapes.dataset(20, seed=8)
    assert np.array_equal(a, b) and sa == sb
    assert not np.array_equal(a, c)
    assert a.shape == (20, 64, 64, 3) and a.dtype == np.uint8


def test_classifier_reads_back_what_the_generator_drew() -> None:
    images, scenes = shapes.dataset(600, seed=0)
    wrong = [
        (s, shapes.read(im))
        for im, s in zip(images, scenes, strict=True)
        if shapes.classify(im) != s.as_tuple()
    ]
    assert not wrong, wrong[:3]
    # the sample spans the grammar: many combinations, both prompt forms
    drawn = {s.as_tuple() for s in scenes}
    assert drawn <= set(shapes.combinations()) and len(drawn) >= 100
    assert any(s.short for s in scenes) and not all(s.short for s in scenes)


@pytest.mark.parametrize("shape", shapes.SHAPES)
def test_smallest_and_largest_shapes_classify(shape: str) -> None:
    for side in (64 / 3, 48.0):
        image = shapes.draw(("blue", shape, "yellow"), side, 5.3, 7.7)
        assert shapes.classify(image) == ("blue", shape, "yellow")


def test_shape_covers_at_least_a_third_of_the_width_and_stays_inside() -> None:
    rng = np.random.default_rng(3)
    for _ in range(300):
        image, scene = shapes.sample(rng)
        reading = shapes.read(image)
        assert reading.extent >= 64 / 3 - 1  # half-covered edge pixels may drop out
        # the border is all background: the shape never touches it
        bg = np.array(shapes.COLORS[scene.background], dtype=np.uint8)
        border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
        assert (border == bg).all()
    for _ in range(1000):
        side, left, top = shapes.random_geometry(rng)
        assert side >= 64 / 3
        assert left >= 2 and top >= 2 and left + side <= 62 and top + side <= 62


def test_blank_picture_has_no_shape() -> None:
    blank = np.full((64, 64, 3), shapes.COLORS["green"], dtype=np.uint8)
    assert shapes.classify(blank) == (None, None, "green")


def test_classifier_tolerates_noise_and_blur() -> None:
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(1)
    images, scenes = shapes.dataset(100, seed=5)
    for image, scene in zip(images, scenes, strict=True):
        noisy = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
        soft = Image.fromarray(noisy).filter(ImageFilter.GaussianBlur(0.7))
        assert shapes.classify(soft) == scene.as_tuple()


# --- the shipped trained checkpoint ------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_engine():
    if not MODEL.is_file():
        pytest.skip(f"{MODEL} not built (scripts/train_demo_model.py)")
    from sdcore.engine.diffusers_engine import DiffusersEngine

    digest = hashlib.sha256(MODEL.read_bytes()).hexdigest()
    engine = DiffusersEngine(MODEL, "demo-shapes", digest, config_dir=CONFIG, device="cpu")
    engine.load()
    return engine


def test_demo_checkpoint_is_small_and_native_64(demo_engine) -> None:
    assert MODEL.stat().st_size <= 20 * 1024 * 1024
    assert demo_engine.native_size == (64, 64)
    pipe = demo_engine.model.txt2img
    for part in (pipe.unet, pipe.vae, pipe.text_encoder):  # an fp16 file, float32 on the CPU
        assert {str(p.dtype) for p in part.parameters()} == {"torch.float32"}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_demo_checkpoint_draws_a_red_circle_on_white(demo_engine, seed: int) -> None:
    from sdcore.domain.models import GenerationParams, TaskKind
    from sdcore.ports import EngineInputs

    # the webui defaults: default sampler, 20 steps, CFG 7, native size
    params = GenerationParams(
        kind=TaskKind.TXT2IMG, prompt="a red circle on a white background", seed=seed
    )
    result = demo_engine.run(params, EngineInputs(), lambda _info: False)
    image = result.images[0]
    assert image.size == (64, 64)
    assert shapes.classify(image) == ("red", "circle", "white")
