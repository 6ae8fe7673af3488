"""Registered upscaler models (ESRGAN family) in extras, loaded from .safetensors files in
Real-ESRGAN's key layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from sdcore.engine.diffusers_engine import DiffusersEngine
from sdcore.engine.upscalers import RRDBNet, load_upscaler
from sdcore.errors import InvalidInputError
from sdcore.ports import EngineInputs, NetworkFile
from sdcore.webui.scripts import plan_script

from .support import Steps, gen


def _srvgg(path: Path, scale: int = 2, zero: bool = False) -> NetworkFile:
    """Real-ESRGAN's compact layout written key by key: convs at even indices, PReLU between."""
    g = torch.Generator().manual_seed(1)

    def t(*shape: int) -> torch.Tensor:
        return torch.zeros(shape) if zero else torch.randn(*shape, generator=g) * 0.1

    state = {"body.0.weight": t(8, 3, 3, 3), "body.0.bias": t(8), "body.1.weight": t(8)}
    state |= {"body.2.weight": t(8, 8, 3, 3), "body.2.bias": t(8), "body.3.weight": t(8)}
    state |= {"body.4.weight": t(3 * scale * scale, 8, 3, 3), "body.4.bias": t(3 * scale**2)}
    save_file(state, str(path))
    return NetworkFile("tiny-compact", ("0" if zero else "1") * 64, path)


def _image() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8))


def _run(engine: DiffusersEngine, file: NetworkFile, **fields: object) -> Image.Image:
    params = gen(kind="extras", upscaler=file.name, **fields)
    inputs = EngineInputs(init_images=[_image()], upscalers={file.name: file})
    return engine.run(params, inputs, Steps()).images[0]


def test_compact_model_with_zero_weights_is_its_nearest_base(
    engine: DiffusersEngine, tmp_path: Path
) -> None:
    # the network adds a learnt residual to a nearest-neighbour upscale: zero weights, none
    out = _run(engine, _srvgg(tmp_path / "zero.safetensors", zero=True), upscale_factor=2)
    expected = _image().resize((32, 24), Image.Resampling.NEAREST)
    assert np.array_equal(np.asarray(out), np.asarray(expected))


def test_compact_model_upscales_and_is_run_until_the_size_is_reached(
    engine: DiffusersEngine, tmp_path: Path
) -> None:
    file = _srvgg(tmp_path / "x2.safetensors")
    out = _run(engine, file, upscale_factor=2)
    assert out.size == (32, 24)
    lanczos = _image().resize((32, 24), Image.Resampling.LANCZOS)
    assert not np.array_equal(np.asarray(out), np.asarray(lanczos))
    # x3 with an x2 model: run twice (64x48), then resampled down to 48x36
    assert _run(engine, file, upscale_factor=3).size == (48, 36)


def test_rrdbnet_layout_loads_strictly(tmp_path: Path) -> None:
    model = RRDBNet(3, 8, 4, 2)
    keys = set(model.state_dict())
    assert {"conv_first.weight", "body.1.rdb3.conv5.weight", "conv_up2.weight"} <= keys
    assert {"conv_hr.bias", "conv_last.weight", "conv_body.weight"} <= keys
    save_file(model.state_dict(), str(tmp_path / "rrdb.safetensors"))
    loaded = load_upscaler(tmp_path / "rrdb.safetensors")
    assert isinstance(loaded, RRDBNet) and loaded.scale == 4
    x = torch.rand(1, 3, 6, 5)
    assert loaded(x).shape == (1, 3, 24, 20)
    # a missing block is refused, not half-loaded
    state = {k: v for k, v in model.state_dict().items() if k != "conv_hr.weight"}
    save_file(state, str(tmp_path / "broken.safetensors"))
    with pytest.raises(ValueError, match="do not fit"):
        load_upscaler(tmp_path / "broken.safetensors")


def test_a_file_of_another_kind_names_the_field(engine: DiffusersEngine, tmp_path: Path) -> None:
    save_file({"emb_params": torch.zeros(2, 32)}, str(tmp_path / "emb.safetensors"))
    file = NetworkFile("not-an-upscaler", "2" * 64, tmp_path / "emb.safetensors")
    with pytest.raises(InvalidInputError) as err:
        _run(engine, file, upscale_factor=2)
    assert err.value.field == "upscaler_1"


def _old_esrgan_keys(state: dict[str, torch.Tensor], blocks: int) -> dict[str, torch.Tensor]:
    """The original ESRGAN x4 file layout (`model.N`, as community models such as
    4x-UltraSharp ship): nn.Sequential indices, the RRDB trunk under `model.1.sub`."""
    top = {"conv_first": "0", "conv_up1": "3", "conv_up2": "6", "conv_hr": "8", "conv_last": "10"}
    out = {}
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if head in top:
            out[f"model.{top[head]}.{rest}"] = value
        elif head == "conv_body":
            out[f"model.1.sub.{blocks}.{rest}"] = value
        else:  # body.I.rdbJ.convK.(weight|bias)
            _, block, rdb, conv, kind = key.split(".")
            out[f"model.1.sub.{block}.RDB{rdb[3:]}.{conv}.0.{kind}"] = value
    return out


def test_the_original_esrgan_x4_layout_loads_as_the_same_network(tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = RRDBNet(3, 8, 4, 2).eval()
    save_file(_old_esrgan_keys(model.state_dict(), 2), str(tmp_path / "old.safetensors"))
    loaded = load_upscaler(tmp_path / "old.safetensors")
    x = torch.rand(1, 3, 5, 6)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    # the layout's x2 and x8 variants (other upsampling stages) are refused by name
    state = _old_esrgan_keys(model.state_dict(), 2)
    del state["model.10.weight"], state["model.10.bias"]
    save_file(state, str(tmp_path / "x2.safetensors"))
    with pytest.raises(ValueError, match="other than x4"):
        load_upscaler(tmp_path / "x2.safetensors")


def test_large_pictures_are_upscaled_in_overlapping_tiles(tmp_path: Path) -> None:
    from sdcore.engine.upscalers import run_upscaler

    rng = np.random.default_rng(1)
    picture = Image.fromarray(rng.integers(0, 255, (50, 70, 3), dtype=np.uint8))
    # a model without learnt weights is a nearest upscale, local to each pixel: the tiles and
    # their blended overlaps give exactly the whole picture's result
    zero = load_upscaler(_srvgg(tmp_path / "zero.safetensors", zero=True).path)
    whole = run_upscaler(zero, picture, 2, tile=0)
    tiled = run_upscaler(zero, picture, 2, tile=24, overlap=8)
    assert np.array_equal(np.asarray(tiled), np.asarray(whole))
    # a trained-like model sees its tile's border: close to the whole run, not equal
    model = load_upscaler(_srvgg(tmp_path / "x2.safetensors").path)
    whole, tiled = run_upscaler(model, picture, 2, tile=0), run_upscaler(model, picture, 2, 24, 8)
    assert tiled.size == whole.size == (140, 100)
    diff = np.abs(np.asarray(tiled, dtype=np.int16) - np.asarray(whole, dtype=np.int16))
    assert 0 < diff.mean() < 8
    # within one tile the picture runs whole
    assert run_upscaler(model, picture, 2, tile=192).size == (140, 100)
    same = run_upscaler(model, picture, 2, tile=192)
    assert np.array_equal(np.asarray(same), np.asarray(whole))


def test_sd_upscale_runs_a_registered_upscaler_model(
    engine: DiffusersEngine, tmp_path: Path
) -> None:
    # a zero-weight compact x2 model is an exact nearest-neighbour x2: SD upscale by it redraws
    # the very tile SD upscale by "Nearest" does; a trained one another
    source = Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 32, 3), np.uint8))
    base = gen(kind="img2img", prompt="red", steps=2, seed=3, width=64, height=64,
               denoising_strength=0.5, init_images=["inputs/x.png"])  # fmt: skip

    def sd_upscale(upscaler: str, file: NetworkFile | None = None) -> np.ndarray:
        params = plan_script("SD upscale", [None, 0, upscaler, 2.0], base)
        inputs = EngineInputs(init_images=[source], upscalers={upscaler: file} if file else {})
        return np.asarray(engine.run(params, inputs, Steps()).images[0])

    zero = _srvgg(tmp_path / "zero.safetensors", zero=True)
    nearest = sd_upscale("Nearest")
    assert np.array_equal(sd_upscale(zero.name, zero), nearest)
    trained = _srvgg(tmp_path / "x2.safetensors")
    assert not np.array_equal(sd_upscale(trained.name, trained), nearest)
