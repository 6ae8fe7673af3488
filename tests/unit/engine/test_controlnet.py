"""ControlNet units on the tiny model: a tiny ControlNet built from its UNet (zero convs
randomised so that it changes the picture), loaded from a diffusers folder and an LDM single
file; weight, enabled/guidance ranges, multi-unit, hires and img2img, maps and infotext."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import ControlNetModel, UNet2DConditionModel
from PIL import Image, ImageDraw
from safetensors.torch import save_file

from sdcore.domain.controlnet import ControlUnit
from sdcore.engine.checkpoints import ldm_unet_key
from sdcore.engine.controlnet import ControlRun
from sdcore.engine.diffusers_engine import DiffusersEngine
from sdcore.errors import InvalidInputError
from sdcore.ports import ControlInput, EngineInputs, NetworkFile

from .support import Steps, gen


def _ldm(net: Any) -> dict[str, torch.Tensor]:
    """The ControlNet's weights in the LDM layout webui ControlNets ship in."""
    config = net.config
    per_level = config["layers_per_block"] + 1
    out = {}
    for key, value in net.state_dict().items():
        if key.startswith("controlnet_cond_embedding."):
            rest = key.split(".", 1)[1]
            if rest.startswith("conv_in."):
                new = "input_hint_block.0." + rest.split(".", 1)[1]
            elif rest.startswith("conv_out."):
                new = "input_hint_block.14." + rest.split(".", 1)[1]
            else:
                _, k, param = rest.split(".")
                new = f"input_hint_block.{2 * (int(k) + 1)}.{param}"
        elif key.startswith("controlnet_down_blocks."):
            _, i, param = key.split(".")
            new = f"zero_convs.{i}.0.{param}"
        elif key.startswith("controlnet_mid_block."):
            new = "middle_block_out.0." + key.split(".", 1)[1]
        else:
            new = ldm_unet_key(key, per_level, [])
        out["control_model." + new] = value.contiguous()
    return out


@pytest.fixture(scope="module")
def nets(engine: DiffusersEngine, tmp_path_factory: pytest.TempPathFactory) -> list[NetworkFile]:
    """Two tiny ControlNets: [folder, LDM file of the same weights, another (folder)]."""
    root = tmp_path_factory.mktemp("controlnet")
    files = []
    # the checkpoint's own UNet weights: an earlier test may have left LoRA layers wrapping it
    unet = engine.model.txt2img.unet
    base = {
        k.replace(".base_layer", ""): v for k, v in unet.state_dict().items() if "lora_" not in k
    }
    plain = UNet2DConditionModel.from_config(unet.config)
    plain.load_state_dict(base)
    for seed in (0, 1):
        torch.manual_seed(seed)
        net = ControlNetModel.from_unet(plain)
        zero = [*net.controlnet_down_blocks, net.controlnet_mid_block,
                net.controlnet_cond_embedding.conv_out]  # fmt: skip
        with torch.no_grad():
            for conv in zero:
                conv.weight.normal_(0, 0.3)
        folder = root / f"cn{seed}"
        net.save_pretrained(folder)
        files.append(NetworkFile(f"cn{seed}", f"{seed:064x}", folder))
        if seed == 0:
            single = root / "cn0-ldm.safetensors"
            save_file(_ldm(net), str(single))
            files.append(NetworkFile("cn0-ldm", "f" * 64, single))
    return files


def _circle(size: int = 64, at: tuple[int, int] = (8, 8)) -> Image.Image:
    image = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(image).ellipse((at[0], at[1], at[0] + 28, at[1] + 28), fill="black")
    return image


def _run(engine: DiffusersEngine, units: list[tuple[ControlUnit, NetworkFile]],
         images: list[Image.Image] | None = None, **overrides: Any) -> Any:  # fmt: skip
    inputs = EngineInputs(
        controls=[ControlInput(f, image=_circle()) for _, f in units],
        init_images=images or [],
    )
    return engine.run(gen(controlnet=[u for u, _ in units], **overrides), inputs, Steps())


def _px(result: Any, n: int = 0) -> np.ndarray:
    return np.asarray(result.images[n], dtype=np.int16)


CANNY = ControlUnit(model="cn0", module="canny", processor_res=64, threshold_a=50,
                    threshold_b=100)  # fmt: skip


@pytest.fixture(scope="module")
def baseline(engine: DiffusersEngine, nets: list[NetworkFile]) -> tuple[Any, Any]:
    """(no unit, the canny unit) at 2 steps, shared."""
    return _run(engine, [], steps=2), _run(engine, [(CANNY, nets[0])], steps=2)


def test_a_control_changes_the_picture_and_weight_0_is_none(
    engine: DiffusersEngine, nets: list[NetworkFile], baseline: tuple[Any, Any]
) -> None:
    plain, controlled = baseline
    assert np.abs(_px(controlled) - _px(plain)).mean() > 1
    off = _run(engine, [(CANNY.model_copy(update={"weight": 0.0}), nets[0])], steps=2)
    assert np.array_equal(_px(off), _px(plain))
    # the LDM single file of the same weights gives the same picture
    ldm = _run(engine, [(CANNY.model_copy(update={"model": "cn0-ldm"}), nets[1])], steps=2)
    assert np.abs(_px(ldm) - _px(controlled)).max() <= 1
    text = controlled.infotexts[0]
    assert re.search(r'ControlNet 0: "Module: canny, Model: cn0 \[00000000\], Weight: 1.0', text)
    assert "Control Mode: Balanced" in text


def test_guidance_range_and_multi_unit(
    engine: DiffusersEngine, nets: list[NetworkFile], baseline: tuple[Any, Any]
) -> None:
    plain, full = _px(baseline[0]), _px(baseline[1])
    # of 2 steps, the control only at the second (step 1 of 2: 0.5 <= 0.5)
    late = _px(_run(engine, [(CANNY.model_copy(update={"guidance_start": 0.5}), nets[0])],
                    steps=2))  # fmt: skip
    assert np.abs(full - late).mean() > 0.5 and not np.array_equal(late, plain)
    other = ControlUnit(model="cn1", module="invert", control_mode="controlnet")
    both = _run(engine, [(CANNY, nets[0]), (other, nets[2])], steps=2)
    assert np.abs(_px(both) - full).mean() > 0.5
    assert "ControlNet 1: " in both.infotexts[0]
    assert "Control Mode: ControlNet is more important" in both.infotexts[0]


def test_soft_weights_and_the_conditional_half() -> None:
    run = ControlRun([], (64, 64))
    balanced, prompt = (
        ControlUnit(model="m", weight=0.5),
        ControlUnit(model="m", control_mode="prompt"),
    )
    assert run._scales(balanced, 13) == [0.5] * 13
    assert run._scales(prompt, 13)[0] == pytest.approx(0.825**12)
    assert run._scales(prompt, 13)[12] == 1.0
    run.hires = True  # the hires pass takes soft weights whatever the mode
    assert run._scales(balanced, 13)[12] == 0.5 and run._scales(balanced, 13)[0] < 0.1


def test_hires_img2img_and_returned_map(engine: DiffusersEngine, nets: list[NetworkFile]) -> None:
    unit = CANNY.model_copy(update={"return_map": True})
    sizes: list[tuple[int, ...]] = []
    net = engine._controlnets.get(nets[0], engine.model.txt2img.unet, "model")
    hook = net.register_forward_hook(lambda _m, args, _out: sizes.append(tuple(args[0].shape[-2:])))
    try:
        hires = _run(engine, [(unit, nets[0])], steps=2, hires=True, hr_scale=1.5,
                     hr_upscaler="Latent", denoising_strength=0.5)  # fmt: skip
    finally:
        hook.remove()
    assert [im.size for im in hires.images] == [(96, 96), (64, 64)]  # the picture, its map
    assert {(8, 8), (12, 12)} <= set(sizes)  # the control runs in both passes
    edges = np.asarray(hires.images[1].convert("L")) > 127
    assert edges[22, 5:11].any() and edges[5:11, 22].any()  # the circle's ring
    assert not edges[16:29, 16:29].any()  # not inside
    # img2img: a unit without an image of its own takes the init image
    init = _circle(64, (20, 20))
    params = gen(kind="img2img", steps=2, denoising_strength=0.8, controlnet=[unit])
    result = engine.run(params, EngineInputs(init_images=[init], controls=[ControlInput(nets[0])]),
                        Steps())  # fmt: skip
    edges = np.asarray(result.images[1].convert("L")) > 127
    assert edges[34, 17:23].any() and not edges[20:25, 5:11].any()  # the init image's circle
    # inpainting: inpaint_only's map is the init image with the masked part unknown (black)
    mask = Image.new("L", (64, 64))
    ImageDraw.Draw(mask).rectangle((0, 0, 31, 63), fill=255)
    inpaint = ControlUnit(model="cn0", module="inpaint_only", return_map=True)
    params = gen(kind="img2img", steps=2, mask_blur=0, controlnet=[inpaint])
    inputs = EngineInputs(init_images=[init], mask=mask, controls=[ControlInput(nets[0])])
    result = engine.run(params, inputs, Steps())
    shown = np.asarray(result.images[1])
    assert shown[:, :32].max() == 0 and shown[:, 50:].min() == 255
    kept = np.asarray(result.images[0])[:, 40:]  # outside the mask: the init image, pasted back
    assert np.array_equal(kept, np.asarray(init)[:, 40:])


def test_a_controlnet_of_another_shape_is_refused_by_field(
    engine: DiffusersEngine, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong.safetensors"
    save_file({"control_model.input_hint_block.0.weight": torch.zeros(16, 3, 3, 3)}, str(wrong))
    unit = ControlUnit(model="wrong")
    with pytest.raises(InvalidInputError) as err:
        _run(engine, [(unit, NetworkFile("wrong", "e" * 64, wrong))])
    assert err.value.field == "controlnet[0].model"


@pytest.fixture(scope="module")
def depth_model(tmp_path_factory: pytest.TempPathFactory) -> NetworkFile:
    from tests.depth_models import save_depth_model

    folder = save_depth_model(tmp_path_factory.mktemp("depth") / "dpt")
    return NetworkFile("dpt", "d" * 64, folder)


def test_a_depth_module_runs_the_preprocessor_model(
    engine: DiffusersEngine, nets: list[NetworkFile], depth_model: NetworkFile,
    baseline: tuple[Any, Any],
) -> None:  # fmt: skip
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation

    # the map: the model's prediction at the processor resolution, 0..255 over its range
    model = AutoModelForDepthEstimation.from_pretrained(str(depth_model.path))
    processor = AutoImageProcessor.from_pretrained(str(depth_model.path))
    with torch.no_grad():
        predicted = model(**processor(images=_circle(), return_tensors="pt")).predicted_depth
    depth = torch.nn.functional.interpolate(predicted[:, None], size=(64, 64), mode="bicubic")
    want = depth[0, 0].numpy()
    want = (want - want.min()) / (want.max() - want.min()) * 255
    unit = ControlUnit(model="cn0", module="depth_midas", processor_res=64, return_map=True)
    inputs = EngineInputs(controls=[ControlInput(nets[0], _circle(), preprocessor=depth_model)])
    result = engine.run(gen(controlnet=[unit], steps=2), inputs, Steps())
    shown = np.asarray(result.images[1], dtype=np.float32)
    assert shown.shape == (64, 64, 3) and shown.min() == 0 and shown.max() == 255
    assert np.array_equal(shown[..., 0], shown[..., 2])
    assert np.abs(shown[..., 0] - want).max() <= 1
    # the depth map guides the picture: not the picture of no unit, nor that of the plain
    # image as the map (the tiny ControlNet's residuals depend on its hint only a little)
    plain = _run(engine, [(ControlUnit(model="cn0", module="none"), nets[0])], steps=2)
    assert np.abs(_px(result) - _px(baseline[0])).mean() > 1
    assert not np.array_equal(_px(result), _px(plain))
    # without its model (never so from a submitted task) the unit's module is named
    with pytest.raises(InvalidInputError) as err:
        _run(engine, [(unit, nets[0])], steps=2)
    assert err.value.field == "controlnet[0].module"
