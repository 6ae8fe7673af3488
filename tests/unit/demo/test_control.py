"""The demo ControlNet's world (canny control maps of shapes pictures, where a picture's shape
is) and the shipped ControlNet: the folder the local stack registers. What it draws is checked
through the API, on the local stack (tests/e2e/test_demo_model.py)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest

from sdcore.domain.models import ModelFormat, ModelType
from sdcore.guards.modelfiles import inspect_stream
from sdlocal.demo import control, shapes
from sdlocal.stack import DEMO_CONTROLNET, pack_folder

ROOT = Path(__file__).resolve().parents[3]


def top_left_circle(color: str = "blue") -> control.Example:
    scene = shapes.Scene(color, "circle", shapes.DEFAULT_BACKGROUND, short=True)
    return control.Example(scene, 24.0, 2.0, 2.0, control.article_prompt(color, "circle"))


def test_control_map_is_white_edges_on_black_in_three_channels() -> None:
    picture, ctrl = control.render(top_left_circle())
    assert picture.shape == ctrl.shape == (64, 64, 3) and ctrl.dtype == np.uint8
    assert set(np.unique(ctrl)) == {0, 255}
    assert (ctrl[..., 0] == ctrl[..., 1]).all() and (ctrl[..., 0] == ctrl[..., 2]).all()
    edge = control.edge_centroid(ctrl)
    assert edge is not None and math.dist(edge, (14.0, 14.0)) < 1.5
    assert ctrl[40:, :].max() == 0 and ctrl[:, 40:].max() == 0  # nothing away from the circle
    assert control.edge_centroid(np.zeros((64, 64, 3), np.uint8)) is None


@pytest.mark.parametrize("shape", shapes.SHAPES)
def test_centroid_reads_where_a_drawn_shape_is(shape: str) -> None:
    scene = shapes.Scene("red", shape, "green")
    picture = shapes.draw(scene, 30.0, 30.0, 10.0)
    got = control.centroid(picture)
    assert got is not None
    x, y = got
    assert abs(x - 45.0) < 1.0  # every shape is symmetric left-right
    assert 10.0 < y < 40.0
    assert control.centroid(np.full((64, 64, 3), 245, np.uint8)) is None


def test_examples_are_deterministic_per_seed_and_use_the_three_prompt_forms() -> None:
    def draw(seed: int) -> list[control.Example]:
        rng = np.random.default_rng(seed)
        return [control.random_example(rng) for _ in range(300)]

    first = draw(3)
    assert first == draw(3) and first != draw(4)
    forms = {"long": 0, "short": 0, "article": 0}
    for example in first:
        color, shape, background = example.scene.as_tuple()
        if example.prompt == control.article_prompt(color, shape):
            forms["article"] += 1
            assert background == shapes.DEFAULT_BACKGROUND
        else:
            assert shapes.parse_prompt(example.prompt) == (color, shape, background)
            forms["short" if example.scene.short else "long"] += 1
        assert example.side >= 64 / 3 and example.left >= shapes.MARGIN
        assert example.left + example.side <= 64 - shapes.MARGIN + 1e-6
    assert min(forms.values()) > 20


def test_the_shipped_controlnet_is_a_small_diffusers_folder_the_admin_upload_takes(
    tmp_path: Path,
) -> None:
    files = sorted(p.name for p in DEMO_CONTROLNET.iterdir())
    assert files == ["config.json", "diffusion_pytorch_model.safetensors"]
    assert sum(p.stat().st_size for p in DEMO_CONTROLNET.iterdir()) < 8_000_000
    archive = pack_folder(DEMO_CONTROLNET, tmp_path / "a.tar")
    again = pack_folder(DEMO_CONTROLNET, tmp_path / "b.tar")
    assert archive.read_bytes() == again.read_bytes()  # the same sha256 at every start
    data = archive.read_bytes()
    chunks = iter(lambda stream=io.BytesIO(data): stream.read(1 << 20), b"")
    inspection = inspect_stream(chunks, ModelType.CONTROLNET)
    assert inspection.format is ModelFormat.DIFFUSERS and inspection.size == len(data)
