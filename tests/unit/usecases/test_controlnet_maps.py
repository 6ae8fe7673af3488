"""The ControlNet preprocessors that need no model (numpy and Pillow only): canny is OpenCV's
to the pixel, the binary and inverting modules, inpaint_only's mask, the resize modes and the
pixel-perfect resolution."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from sdcore.domain.controlnet import ControlResize
from sdcore.domain.models import ModelType
from sdcore.errors import InvalidInputError
from sdcore.guards.model_layouts import describe
from sdcore.webui.control_maps import canny, detect, fit, pixel_perfect_res
from sdcore.webui.controlnet import module_name


def _scene() -> Image.Image:
    image = Image.new("RGB", (96, 80), (250, 250, 250))
    draw = ImageDraw.Draw(image)
    draw.ellipse((10, 10, 60, 60), fill=(200, 30, 40))
    draw.rectangle((62, 20, 90, 70), fill=(10, 160, 90))
    return image


@pytest.mark.parametrize("blur", [0, 2])
@pytest.mark.parametrize(("low", "high"), [(100, 200), (20, 60), (200, 100)])
def test_canny_is_opencvs(blur: int, low: int, high: int) -> None:
    pixels = np.asarray(_scene().filter(ImageFilter.GaussianBlur(blur)))
    assert np.array_equal(canny(pixels, low, high), cv2.Canny(pixels, low, high))


def test_the_model_free_modules() -> None:
    circle = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(circle).ellipse((8, 8, 36, 36), fill="black")
    ring = np.asarray(detect("canny", circle, 64, 100, 200).image.convert("L"))
    assert ring[22, 5:11].max() == 255 and ring[16:29, 16:29].max() == 0
    assert detect("canny", circle, 128, 100, 200).image.size == (128, 128)  # processor_res
    white = np.asarray(detect("threshold", circle, 64, 127, -1).image.convert("L"))
    assert white[0, 0] == 255 and white[22, 22] == 0
    strokes = np.asarray(detect("scribble", circle, 64, 127, -1).image.convert("L"))
    assert strokes[0, 0] == 0 and strokes[22, 22] == 255
    inverted = np.asarray(detect("invert", circle, 512, -1, -1).image)
    assert inverted.shape == (64, 64, 3) and inverted[22, 22, 0] == 255
    assert detect("tile_resample", circle, 512, 4.0, -1).image.size == (16, 16)
    assert detect("tile_resample", circle, 512, 1.0, -1).image.size == (64, 64)
    mask = Image.new("L", (64, 64))
    ImageDraw.Draw(mask).rectangle((0, 0, 31, 63), fill=255)
    masked = detect("inpaint_only", circle, 512, -1, -1, mask)
    assert masked.masked is not None and masked.masked.getpixel((10, 10)) == 255
    with pytest.raises(ValueError, match="mask"):
        detect("inpaint_only", circle, 512, -1, -1)


def test_module_names() -> None:
    assert module_name("invert (from white bg & black line)", "module") == "invert"
    for name, why in (("openpose", "not available"), ("reference_only", "attention"),
                      ("nonsense", "unknown")):  # fmt: skip
        with pytest.raises(InvalidInputError, match=why) as err:
            module_name(name, "args[0].module")
        assert err.value.field == "args[0].module" and "canny" in err.value.message


def test_resize_modes_and_pixel_perfect() -> None:
    wide = Image.new("RGB", (200, 100), "white")
    wide.paste((0, 0, 0), (0, 0, 20, 100))  # a black band at the left edge
    assert fit(wide, 64, 64, ControlResize.JUST_RESIZE).size == (64, 64)
    cropped = np.asarray(fit(wide, 64, 64, ControlResize.CROP_AND_RESIZE))
    assert cropped.shape == (64, 64, 3) and cropped[32, 0, 0] > 200  # the band cropped away
    filled = np.asarray(fit(wide, 64, 64, ControlResize.RESIZE_AND_FILL))
    assert filled[0, 32].max() == 0 and filled[32, 32].min() > 200  # black above, picture inside
    assert pixel_perfect_res((200, 100), 512, 512, ControlResize.CROP_AND_RESIZE) == 512
    assert pixel_perfect_res((200, 100), 512, 512, ControlResize.RESIZE_AND_FILL) == 256


def test_an_uploaded_controlnet_records_its_architecture() -> None:
    sd1 = {"control_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": [320, 768]}
    xl = {"down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight": [640, 2048]}
    assert describe(sd1, ModelType.CONTROLNET) == {"architecture": "sd1"}
    assert describe(xl, ModelType.CONTROLNET) == {"architecture": "sdxl"}
