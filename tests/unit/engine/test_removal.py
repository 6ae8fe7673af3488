"""Removal on the engine: the person segmenter on a real photo (IoU against the reference mask
drawn by hand), the mask recipe (box, dilate, blur), the original pasted back bit for bit outside
the blurred mask, nothing found -> the photo back with coverage 0, a registered SegFormer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdcore.domain.removal import MaskMode, RemoveSpec
from sdcore.engine.diffusers_engine import DiffusersEngine
from sdcore.engine.img2img import resize_image
from sdcore.engine.removal import boxes, coverage, dilate, final_mask
from sdcore.engine.segmenters import MediapipePersonSegmenter, TransformersSegmenter
from sdcore.errors import InvalidInputError
from sdcore.ports import EngineInputs, NetworkFile
from tests.data.fetch_photos import PERSON_MASK, fetch
from tests.segmenters import LABELS, save_segmenter

from .support import Steps, gen


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.open(fetch()).convert("RGB")


@pytest.fixture(scope="module")
def person_segmenter() -> Iterator[MediapipePersonSegmenter]:
    segmenter = MediapipePersonSegmenter()
    yield segmenter
    segmenter.close()


def _on(mask: Image.Image) -> np.ndarray:
    return np.asarray(mask.convert("L")) > 0


def test_the_person_segmenter_covers_the_astronaut(
    astronaut: Image.Image, person_segmenter: MediapipePersonSegmenter
) -> None:
    found = _on(person_segmenter.segment(astronaut, "person", 0.5))
    reference = _on(Image.open(PERSON_MASK))
    iou = (found & reference).sum() / (found | reference).sum()
    assert iou >= 0.8, iou
    with pytest.raises(ValueError, match="valid: person"):
        person_segmenter.segment(astronaut, "car", 0.5)


def _blobs() -> Image.Image:
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (4, 4, 8, 20))  # a 4x16 bar
    mask.putpixel((40, 40), 255)
    mask.putpixel((41, 41), 255)  # diagonal to it: the same region
    return mask


def test_boxes_fill_each_region_s_bounding_box() -> None:
    out = _on(boxes(_blobs()))
    assert out[4:20, 4:8].all() and out[40:42, 40:42].all()
    assert out.sum() == 4 * 16 + 2 * 2
    lone = Image.new("L", (64, 64), 0)
    lone.paste(255, (40, 40, 42, 42))
    lone.paste(255, (44, 44, 46, 46))  # not touching: two boxes, not one
    assert _on(boxes(lone)).sum() == 8


def test_dilate_grows_by_the_pixels_asked_and_blur_stays_near_the_edge() -> None:
    dot = Image.new("L", (64, 64), 0)
    dot.putpixel((32, 32), 255)
    grown = _on(dilate(dot, 5))
    ys, xs = np.nonzero(grown)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (27, 37, 27, 37)
    assert not grown[27, 27]  # a disc, not a square
    spec = RemoveSpec(dilate=5, blur=3)
    soft = np.asarray(final_mask(dot, spec))
    assert soft[32, 32] > 150 and 0 < soft[32, 38] < soft[32, 35] < soft[32, 32]  # a soft edge
    assert soft[32, 32 + 5 + 3 * 4 :].max() == 0 and soft[:10].max() == 0  # and none far off
    box = final_mask(_blobs(), RemoveSpec(mask_mode=MaskMode.BOX))
    assert coverage(box) == round((4 * 16 + 2 * 2) / 64**2, 4)
    assert coverage(Image.new("L", (64, 64), 0)) == 0


def _remove(engine: DiffusersEngine, photo: Image.Image, steps: Steps | None = None, **spec):  # type: ignore[no-untyped-def]
    params = gen(kind="img2img", steps=2, width=64, height=64, remove=RemoveSpec(**spec))
    return engine.run(params, EngineInputs(init_images=[photo]), steps or Steps())


def test_the_person_is_repainted_and_the_rest_is_the_photo_bit_for_bit(
    engine: DiffusersEngine, astronaut: Image.Image
) -> None:
    result = _remove(engine, astronaut, dilate=2, blur=2)
    edited, mask = result.images
    assert result.info["segmenter"] == "mediapipe-selfie-segmentation"
    assert result.info["target"] == "person" and 0.3 < result.info["maskCoverage"] < 0.9
    photo = np.asarray(resize_image(0, astronaut, 64, 64), dtype=np.int16)
    out, m = np.asarray(edited, dtype=np.int16), np.asarray(mask)
    assert mask.size == edited.size == (64, 64)
    assert np.array_equal(out[m == 0], photo[m == 0])  # outside the blurred mask: the input
    assert np.abs(out[m == 255] - photo[m == 255]).mean() > 10  # inside: repainted
    assert result.info["inpaint_s"] > 0 and result.info["segment_s"] > 0


def test_nothing_found_gives_the_photo_back_with_coverage_0(engine: DiffusersEngine) -> None:
    wall = Image.new("RGB", (64, 64), (120, 130, 140))
    steps = Steps()
    result = _remove(engine, wall, steps=steps, dilate=8, blur=4)
    assert result.info["maskCoverage"] == 0 and steps.seen == []
    assert np.array_equal(np.asarray(result.images[0]), np.asarray(wall))
    assert not np.asarray(result.images[1]).any()


def test_a_registered_segformer_segments_by_its_labels(
    engine: DiffusersEngine, tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = save_segmenter(tmp_path_factory.mktemp("segformer") / "seg")
    segmenter = TransformersSegmenter(folder, "tiny-segformer", "cpu")
    assert segmenter.labels == tuple(LABELS)
    grey = Image.new("RGB", (48, 40), (90, 90, 90))
    assert _on(segmenter.segment(grey, "car", 0.5)).all()
    assert not _on(segmenter.segment(grey, "person", 0.5)).any()
    file = NetworkFile("tiny-segformer", "0" * 64, Path(folder))
    params = gen(kind="img2img", steps=2, remove=RemoveSpec(target="car", segmenter="x"))
    result = engine.run(params, EngineInputs(init_images=[grey], segmenter=file), Steps())
    assert result.info["segmenter"] == "tiny-segformer" and result.info["maskCoverage"] == 1.0
    bad = params.model_copy(update={"remove": RemoveSpec(target="tree", segmenter="x")})
    with pytest.raises(InvalidInputError) as err:
        engine.run(bad, EngineInputs(init_images=[grey], segmenter=file), Steps())
    assert err.value.field == "target" and "background, person, car" in err.value.message
