"""DiffusersEngine on the tiny model: sizes, seeds, samplers, img2img/inpaint/extras, progress."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sdcore.engine.checkpoints import pick_device
from sdcore.engine.diffusers_engine import DiffusersEngine
from sdcore.engine.schedulers import SAMPLER_CLASSES
from sdcore.errors import InvalidInputError
from sdcore.ports import EngineInputs
from sdcore.webui.samplers import SAMPLERS

from .support import MODEL_HASH, Steps, gen


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def gradient(width: int = 64, height: int = 64) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.uint8)
    y = np.linspace(0, 255, height, dtype=np.uint8)
    rgb = np.stack(np.broadcast_arrays(x[None, :], y[:, None], np.full((1, 1), 128)), axis=-1)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def centre_mask(size: int = 64, box: int = 16) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    lo = (size - box) // 2
    mask.paste(255, (lo, lo, lo + box, lo + box))
    return mask


# --- txt2img ---------------------------------------------------------------------------------


def test_txt2img_defaults_to_the_native_size(engine: DiffusersEngine) -> None:
    assert engine.native_size == (64, 64)  # sample_size 8 x VAE scale 8
    result = engine.run(gen(), EngineInputs(), Steps())
    assert [im.size for im in result.images] == [(64, 64)]
    assert result.interrupted is False
    assert result.info["width"] == 64 and result.info["height"] == 64


def test_txt2img_honours_the_requested_size(engine: DiffusersEngine) -> None:
    result = engine.run(gen(width=96, height=48), EngineInputs(), Steps())
    assert result.images[0].size == (96, 48)
    assert "Size: 96x48" in result.infotexts[0]


@pytest.mark.parametrize(("field", "size"), [("width", {"width": 60}), ("height", {"height": 4})])
def test_sizes_must_be_multiples_of_8(engine: DiffusersEngine, field: str, size: dict) -> None:
    with pytest.raises(InvalidInputError) as err:
        engine.run(gen(**size), EngineInputs(), Steps())
    assert err.value.field == field


def test_same_seed_same_pixels_other_seed_other_pixels(engine: DiffusersEngine) -> None:
    a = engine.run(gen(seed=7), EngineInputs(), Steps()).images[0]
    b = engine.run(gen(seed=7), EngineInputs(), Steps()).images[0]
    c = engine.run(gen(seed=8), EngineInputs(), Steps()).images[0]
    assert np.array_equal(pixels(a), pixels(b))
    assert not np.array_equal(pixels(a), pixels(c))


def test_batch_uses_seed_plus_i_for_batch_size_times_batches_images(
    engine: DiffusersEngine,
) -> None:
    result = engine.run(gen(seed=40, batch_size=2, batches=2), EngineInputs(), Steps())
    assert len(result.images) == 4
    assert result.info["seed"] == 40
    assert result.info["all_seeds"] == [40, 41, 42, 43]
    assert [t.split("Seed: ")[1].split(",")[0] for t in result.infotexts] == [
        "40",
        "41",
        "42",
        "43",
    ]
    # the second batch is what a first batch starting at seed+2 gives (same shapes, so the
    # same arithmetic; a different batch size may differ in the last bit, as in the webui)
    second = engine.run(gen(seed=42, batch_size=2), EngineInputs(), Steps()).images
    for got, want in zip(result.images[2:], second, strict=True):
        assert np.array_equal(pixels(got), pixels(want))


def test_seed_minus_one_draws_a_reproducible_seed(engine: DiffusersEngine) -> None:
    first = engine.run(gen(seed=-1), EngineInputs(), Steps())
    seed = first.info["seed"]
    assert 0 <= seed < 2**32
    again = engine.run(gen(seed=seed), EngineInputs(), Steps())
    assert np.array_equal(pixels(first.images[0]), pixels(again.images[0]))


def test_info_has_what_webui_clients_read(engine: DiffusersEngine) -> None:
    info = engine.run(gen(negative_prompt="blurry"), EngineInputs(), Steps()).info
    for key in (
        "seed",
        "all_seeds",
        "prompt",
        "negative_prompt",
        "steps",
        "sampler_name",
        "cfg_scale",
        "width",
        "height",
        "device",
        "model",
        "model_hash",
        "elapsed_s",
        "infotexts",
    ):
        assert key in info, key
    assert info["device"] == engine.device == "cpu"
    assert info["model"] == "tiny-sd" and info["model_hash"] == MODEL_HASH
    assert info["negative_prompt"] == "blurry" and info["sampler_name"] == "Euler"


# --- samplers --------------------------------------------------------------------------------


def test_every_webui_sampler_has_a_scheduler() -> None:
    assert set(SAMPLER_CLASSES) == set(SAMPLERS)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_runs(engine: DiffusersEngine, sampler: str) -> None:
    steps = Steps()
    result = engine.run(gen(sampler=sampler, steps=3), EngineInputs(), steps)
    assert result.images[0].size == (64, 64)
    assert f"Sampler: {sampler}," in result.infotexts[0]
    assert steps.seen and steps.seen[-1].step == steps.seen[-1].steps  # ran to the end


def test_sampler_options_do_not_leak_into_the_next_run(engine: DiffusersEngine) -> None:
    before = engine.run(gen(sampler="Euler"), EngineInputs(), Steps()).images[0]
    engine.run(gen(sampler="DPM++ 2M", scheduler="Karras"), EngineInputs(), Steps())
    after = engine.run(gen(sampler="Euler"), EngineInputs(), Steps()).images[0]
    assert np.array_equal(pixels(before), pixels(after))


def test_unknown_sampler_is_a_field_error(engine: DiffusersEngine) -> None:
    with pytest.raises(InvalidInputError) as err:
        engine.run(gen(sampler="Euler b"), EngineInputs(), Steps())
    assert err.value.field == "sampler_name"
    assert "DPM++ 2M SDE" in err.value.message  # lists the valid names


# --- img2img and inpaint ---------------------------------------------------------------------


def test_img2img_runs_steps_times_strength(engine: DiffusersEngine) -> None:
    steps = Steps()
    params = gen(kind="img2img", steps=4, denoising_strength=0.5, width=64, height=64)
    result = engine.run(params, EngineInputs(init_images=[gradient(80, 40)]), steps)
    assert result.images[0].size == (64, 64)  # the init image is resized to the request
    assert [s.step for s in steps.seen] == [1, 2]
    assert {s.steps for s in steps.seen} == {2}  # the real count, not the requested 4
    assert result.infotexts[0].endswith("Model: tiny-sd, Denoising strength: 0.5")
    assert "Mask blur" not in result.infotexts[0]


def test_img2img_needs_an_image_and_at_least_one_step(engine: DiffusersEngine) -> None:
    with pytest.raises(InvalidInputError) as err:
        engine.run(gen(kind="img2img"), EngineInputs(), Steps())
    assert err.value.field == "init_images"
    with pytest.raises(InvalidInputError) as err:
        params = gen(kind="img2img", steps=3, denoising_strength=0.2)
        engine.run(params, EngineInputs(init_images=[gradient()]), Steps())
    assert err.value.field == "denoising_strength"


@pytest.mark.parametrize("invert", [False, True])
def test_inpaint_repaints_only_inside_the_mask(engine: DiffusersEngine, invert: bool) -> None:
    init = gradient()
    params = gen(kind="img2img", steps=4, denoising_strength=0.75, inpainting_mask_invert=invert)
    # a 16 px square to repaint, or (inverted) everything but a 40 px square: either way the
    # probes below sit 12+ px away from the mask edge, out of reach of the blur
    mask = centre_mask(box=40) if invert else centre_mask(box=16)
    result = engine.run(params, EngineInputs(init_images=[init], mask=mask), Steps())
    out = pixels(result.images[0])
    assert result.images[0].size == (64, 64)
    assert result.infotexts[0].endswith("Denoising strength: 0.75, Mask blur: 4")
    corner, centre = (slice(0, 8), slice(0, 8)), (slice(28, 36), slice(28, 36))
    kept, repainted = (centre, corner) if invert else (corner, centre)
    # far from the (blurred) mask edge the original is pasted back exactly, as the webui does
    assert np.array_equal(out[kept], pixels(init)[kept])
    assert not np.array_equal(out[repainted], pixels(init)[repainted])


# --- extras ----------------------------------------------------------------------------------


def test_extras_resamples_by_factor(engine: DiffusersEngine) -> None:
    params = gen(kind="extras", upscale_factor=2.0, upscaler="Lanczos")
    result = engine.run(params, EngineInputs(init_images=[gradient(40, 24)]), Steps())
    assert [im.size for im in result.images] == [(80, 48)]
    assert result.infotexts == ["Postprocess upscale by: 2, Postprocess upscaler: Lanczos"]


def test_extras_resamples_to_an_explicit_size_with_nearest(engine: DiffusersEngine) -> None:
    src = gradient(4, 4)
    params = gen(kind="extras", upscale_width=8, upscale_height=12, upscaler="Nearest")
    image = engine.run(params, EngineInputs(init_images=[src]), Steps()).images[0]
    assert image.size == (8, 12)
    # as the webui: scaled by max(8/4, 12/4) = 3 to cover the size, then centre-cropped to it
    expected = src.resize((12, 12), Image.Resampling.NEAREST).crop((2, 0, 10, 12))
    assert np.array_equal(pixels(image), pixels(expected))


def test_extras_rejects_unknown_upscalers_and_missing_images(engine: DiffusersEngine) -> None:
    with pytest.raises(InvalidInputError) as err:
        engine.run(gen(kind="extras", upscaler="ESRGAN_4x"), EngineInputs([gradient()]), Steps())
    assert err.value.field == "upscaler_1"
    with pytest.raises(InvalidInputError) as err:
        engine.run(gen(kind="extras"), EngineInputs(), Steps())
    assert err.value.field == "image"


# --- progress and interruption ---------------------------------------------------------------


def test_progress_reports_every_step_of_every_batch(engine: DiffusersEngine) -> None:
    steps = Steps()
    engine.run(gen(steps=3, batches=2), EngineInputs(), steps)
    assert [(s.job_no, s.step, s.steps, s.job_count) for s in steps.seen] == [
        (0, 1, 3, 2),
        (0, 2, 3, 2),
        (0, 3, 3, 2),
        (1, 1, 3, 2),
        (1, 2, 3, 2),
        (1, 3, 3, 2),
    ]
    progress = [s.progress for s in steps.seen]
    assert progress == sorted(progress) and progress[-1] == 1.0
    elapsed = [s.elapsed_s for s in steps.seen]
    assert elapsed == sorted(elapsed) and elapsed[0] > 0


def test_on_step_true_interrupts_and_skips_later_batches(engine: DiffusersEngine) -> None:
    steps = Steps(stop_at=2)
    result = engine.run(gen(steps=10, batches=3), EngineInputs(), steps)
    assert result.interrupted is True and result.info["interrupted"] is True
    assert len(steps.seen) == 2  # the remaining 8 steps and the other 2 batches never ran
    assert len(result.images) == 1  # diffusers still decodes the partial image; caller decides
    # the flag does not leak into the next call
    assert engine.run(gen(), EngineInputs(), Steps()).interrupted is False


# --- loading ---------------------------------------------------------------------------------


def test_single_file_and_diffusers_folder_give_the_same_image(
    engine: DiffusersEngine, folder_engine: DiffusersEngine
) -> None:
    a = engine.run(gen(seed=99), EngineInputs(), Steps()).images[0]
    b = folder_engine.run(gen(seed=99), EngineInputs(), Steps()).images[0]
    assert np.array_equal(pixels(a), pixels(b))


def test_run_before_load_and_bad_paths_fail_loudly(tmp_path) -> None:
    engine = DiffusersEngine(tmp_path / "missing.safetensors", "x", "")
    with pytest.raises(RuntimeError):
        engine.run(gen(), EngineInputs(), Steps())
    with pytest.raises(FileNotFoundError):
        engine.load()
    (tmp_path / "model.ckpt").write_bytes(b"pickle")
    with pytest.raises(ValueError):
        DiffusersEngine(tmp_path / "model.ckpt", "x", "").load()


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [
        (True, True, ("cuda", torch.float16)),
        (False, True, ("mps", torch.float32)),
        (False, False, ("cpu", torch.float32)),
    ],
)
def test_auto_device_prefers_cuda_then_mps_then_cpu(
    monkeypatch: pytest.MonkeyPatch, cuda: bool, mps: bool, expected: tuple
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert pick_device("auto") == expected
    assert pick_device("cpu") == ("cpu", torch.float32)


def test_info_reports_the_peak_memory(engine: DiffusersEngine) -> None:
    result = engine.run(gen(), EngineInputs(), Steps())
    peak = result.info["peak_memory_mb"]
    # on CPU: the process's peak resident size, which the kernel also reports as VmHWM (kB)
    status = Path("/proc/self/status").read_text()
    hwm_kb = int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("VmHWM:")))
    assert peak == pytest.approx(hwm_kb / 1024, rel=0.1)
    assert peak > 50  # torch and a model are loaded: tens of MB at least
