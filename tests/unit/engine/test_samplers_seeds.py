"""webui samplers and schedule types, seeds (variation, resize), CFG and skip on the tiny model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from diffusers import DPMSolverSDEScheduler
from PIL import Image

from sdcore.configs import ROOT as CONFIGS_DIR
from sdcore.engine.diffusers_engine import DiffusersEngine
from sdcore.engine.noise import image_noise, latent_preview, slerp
from sdcore.engine.schedulers import WEBUI_SCHEDULES, make_scheduler, webui_sigmas
from sdcore.errors import InvalidInputError
from sdcore.ports import EngineInputs, StepAction, StepInfo
from sdcore.webui.samplers import (
    SAMPLERS,
    SCHEDULES,
    TIMESTEP_SAMPLERS,
    check_sampler,
    resolve,
    sampler_options,
)

from .support import Steps, gen


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def image(engine: DiffusersEngine, **params: object) -> np.ndarray:
    return pixels(engine.run(gen(**params), EngineInputs(), Steps()).images[0])


# --- names ------------------------------------------------------------------------------------


def test_names_resolve_as_the_webui_resolves_them() -> None:
    assert resolve(None) == ("Euler", "Automatic")
    assert resolve("DPM++ 2M") == ("DPM++ 2M", "Karras")  # its default schedule
    assert resolve("DPM++ 2M SDE", "automatic") == ("DPM++ 2M SDE", "Exponential")
    assert resolve("DPM++ 2M Karras") == ("DPM++ 2M", "Karras")  # pre-1.9 suffixed name
    assert resolve("DPM++ 2M Karras", "Exponential") == ("DPM++ 2M", "Exponential")
    assert resolve("Euler a", "karras") == ("Euler a", "Karras")
    assert resolve("k_euler_a", "SGMUniform") == ("Euler a", "SGM Uniform")  # aliases
    assert resolve("DDIM", "Karras") == ("DDIM", "Automatic")  # timestep samplers: no schedule
    assert check_sampler("LMS Exponential") == ("LMS", "Exponential")
    assert sampler_options("DPM++ 2M") == {"scheduler": "karras"} and sampler_options("Euler") == {}
    assert resolve("Euler", "align_your_steps") == ("Euler", "Align Your Steps")
    with pytest.raises(InvalidInputError) as err:
        resolve("Euler", "Wavy")
    assert err.value.field == "scheduler" and "KL Optimal" in err.value.message
    with pytest.raises(InvalidInputError) as err:
        resolve("DPM slow")
    assert err.value.field == "sampler_name" and "UniPC" in err.value.message


def test_schedule_options_reach_the_scheduler() -> None:
    config = {"num_train_timesteps": 1000, "beta_schedule": "scaled_linear"}
    config.update(beta_start=0.00085, beta_end=0.012, timestep_spacing="leading", steps_offset=1)
    euler = make_scheduler("Euler", "Automatic", config)
    assert euler.config.timestep_spacing == "linspace"  # the webui's uniform sigmas
    assert make_scheduler("Euler", "Karras", config).config.use_karras_sigmas is True
    assert make_scheduler("LMS", "Exponential", config).config.use_exponential_sigmas is True
    assert make_scheduler("DPM++ 2M SDE", "Automatic", config).config.algorithm_type == (
        "sde-dpmsolver++"
    )
    sde = make_scheduler("DPM++ SDE", "Karras", config, [5, 6])
    assert isinstance(sde, DPMSolverSDEScheduler) and sde.noise_sampler_seed == [5, 6]
    assert make_scheduler("DDIM", "Automatic", config).config.timestep_spacing == "leading"
    # Euler a on Karras sigmas: the same sigmas as Euler's Karras schedule
    ancestral = make_scheduler("Euler a", "Karras", config)
    ancestral.set_timesteps(6)
    twin = make_scheduler("Euler", "Karras", config)
    twin.set_timesteps(6)
    assert torch.allclose(ancestral.sigmas, twin.sigmas)
    plain = make_scheduler("Euler a", "Automatic", config)
    plain.set_timesteps(6)
    assert not torch.allclose(plain.sigmas, twin.sigmas)


@pytest.mark.parametrize("schedule", [s.label for s in SCHEDULES])
def test_every_schedule_runs_with_a_k_sampler(engine: DiffusersEngine, schedule: str) -> None:
    result = engine.run(gen(sampler="Euler a", scheduler=schedule), EngineInputs(), Steps())
    text = result.infotexts[0]
    if schedule == "Automatic":
        assert "Schedule type" not in text
    else:
        assert f"Sampler: Euler a, Schedule type: {schedule}, CFG scale" in text
    assert result.info["scheduler"] == schedule


def test_samplers_differ_and_each_is_reproducible(engine: DiffusersEngine) -> None:
    images = {s: image(engine, sampler=s, seed=3) for s in SAMPLERS}
    for s in ("Euler a", "DPM++ SDE", "DPM++ 2M SDE"):
        assert np.array_equal(images[s], image(engine, sampler=s, seed=3)), s  # seeded
    assert all(images[s].std() > 10 for s in SAMPLERS)  # no NaN (black) pictures
    distinct = {images[s].tobytes() for s in SAMPLERS}
    assert len(distinct) == len(SAMPLERS)
    karras = image(engine, sampler="Euler", scheduler="Karras", seed=3)
    assert not np.array_equal(karras, images["Euler"])
    # a timestep sampler ignores the schedule type, as the webui does
    ddim = image(engine, sampler="DDIM", scheduler="Karras", seed=3)
    assert np.array_equal(ddim, images["DDIM"])
    assert set(SAMPLERS) >= TIMESTEP_SAMPLERS


# --- seeds ------------------------------------------------------------------------------------


def test_variation_seed_interpolates_between_two_seeds(engine: DiffusersEngine) -> None:
    base = image(engine, seed=10)
    assert np.array_equal(image(engine, seed=10, subseed=20, subseed_strength=0.0), base)
    # at strength 1 the noise is the variation seed's: Euler (no step noise) draws seed 20
    varied = image(engine, seed=10, subseed=20, subseed_strength=1.0)
    assert np.array_equal(varied, image(engine, seed=20))
    half = image(engine, seed=10, subseed=20, subseed_strength=0.5)
    assert not np.array_equal(half, base) and not np.array_equal(half, image(engine, seed=20))
    result = engine.run(
        gen(seed=10, subseed=20, subseed_strength=0.5, batch_size=2), EngineInputs(), Steps()
    )
    assert result.info["all_subseeds"] == [20, 21]
    assert "Seed: 11, Size: 64x64" in result.infotexts[1]
    assert "Variation seed: 21, Variation seed strength: 0.5" in result.infotexts[1]


def test_variation_seed_minus_one_is_drawn_and_recorded(engine: DiffusersEngine) -> None:
    result = engine.run(gen(seed=1, subseed=-1, subseed_strength=0.3), EngineInputs(), Steps())
    drawn = result.info["subseed"]
    assert 0 <= drawn < 2**32 and f"Variation seed: {drawn}," in result.infotexts[0]
    again = image(engine, seed=1, subseed=drawn, subseed_strength=0.3)
    assert np.array_equal(pixels(result.images[0]), again)


def test_seed_resize_keeps_the_seeds_noise_in_the_middle() -> None:
    own, _ = image_noise((4, 8, 8), seed=5)
    small, _ = image_noise((4, 8, 8), seed=5, resize_from=(4, 4))
    source, _ = image_noise((4, 4, 4), seed=5)
    assert torch.equal(small[:, 2:6, 2:6], source)  # the 4x4 seed noise, centred
    assert torch.equal(small[:, :2], own[:, :2])  # the rest is the image's own noise
    big, _ = image_noise((4, 4, 4), seed=5, resize_from=(8, 8))
    assert torch.equal(big, own[:, 2:6, 2:6])  # the middle of the larger seed noise
    same, _ = image_noise((4, 8, 8), seed=5, resize_from=(8, 8))
    assert torch.equal(same, own)


def test_seed_resize_in_the_engine(engine: DiffusersEngine) -> None:
    resized = engine.run(
        gen(seed=4, width=64, height=64, seed_resize_from_w=32, seed_resize_from_h=32),
        EngineInputs(),
        Steps(),
    )
    assert "Seed resize from: 32x32" in resized.infotexts[0]
    assert not np.array_equal(pixels(resized.images[0]), image(engine, seed=4))
    with pytest.raises(InvalidInputError) as err:
        engine.run(gen(seed_resize_from_w=4, seed_resize_from_h=64), EngineInputs(), Steps())
    assert err.value.field == "seed_resize_from_w"


def test_slerp_ends_are_its_inputs() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn((4, 8, 8), generator=g), torch.randn((4, 8, 8), generator=g)
    assert torch.allclose(slerp(0.0, a, b), a, atol=1e-5)
    assert torch.allclose(slerp(1.0, a, b), b, atol=1e-5)
    mid = slerp(0.5, a, b)
    assert mid.norm() > (0.5 * a + 0.5 * b).norm()  # spherical: no loss of variance


def test_img2img_honours_variation_seeds(engine: DiffusersEngine) -> None:
    init = EngineInputs(init_images=[Image.new("RGB", (64, 64), "red")])
    params = {"kind": "img2img", "steps": 4, "denoising_strength": 0.75, "seed": 8}
    a = engine.run(gen(**params), init, Steps()).images[0]
    b = engine.run(gen(**params, subseed=9, subseed_strength=0.7), init, Steps()).images[0]
    c = engine.run(gen(**params), init, Steps()).images[0]
    assert np.array_equal(pixels(a), pixels(c))
    assert not np.array_equal(pixels(a), pixels(b))


# --- cfg_scale, skip, preview, eta ------------------------------------------------------------


def test_cfg_below_one_still_guides(engine: DiffusersEngine) -> None:
    one = image(engine, guidance=1.0, negative_prompt="blue")
    zero = image(engine, guidance=0.0, negative_prompt="blue")
    # the webui computes uncond + s * (cond - uncond) for any s != 1: at 0 that is the
    # negative prompt's prediction alone, not the prompt's
    assert not np.array_equal(one, zero)
    assert np.array_equal(zero, image(engine, guidance=0.0, prompt="x", negative_prompt="blue"))


def test_skip_ends_the_current_job_and_the_next_one_runs(engine: DiffusersEngine) -> None:
    seen: list[StepInfo] = []

    def on_step(info: StepInfo) -> StepAction:
        seen.append(info)
        return StepAction.SKIP if (info.job_no, info.step) == (0, 2) else StepAction.CONTINUE

    result = engine.run(gen(steps=5, batches=2, batch_size=2), EngineInputs(), on_step)
    assert [(s.job_no, s.step) for s in seen] == [(0, 1), (0, 2)] + [(1, i) for i in range(1, 6)]
    assert len(result.images) == 4 and result.interrupted is False
    assert result.info["skipped_jobs"] == [0]
    full = engine.run(gen(steps=5, seed=125, batch_size=2), EngineInputs(), Steps()).images
    assert np.array_equal(pixels(result.images[2]), pixels(full[0]))  # job 1 untouched


def test_step_times_give_the_eta_and_a_preview_is_offered(engine: DiffusersEngine) -> None:
    steps = Steps()
    engine.run(gen(steps=4, batches=2), EngineInputs(), steps)
    first, later = steps.seen[0], steps.seen[2]
    assert first.step_s is None  # nothing timed yet
    assert later.step_s is not None and later.step_s > 0
    left = (4 - later.step) + 4  # this job's remaining steps and the whole next job
    assert later.eta_s == pytest.approx(left * later.step_s)
    assert later.preview is not None
    preview = later.preview()
    assert preview.size == (8, 8) and preview.mode == "RGB"  # latent size: no VAE decode


def test_latent_preview_is_the_linear_approximation() -> None:
    latent = torch.zeros((4, 2, 3))
    latent[0] = 1.0  # channel 0 alone: (0.298, 0.207, 0.208) -> ((x + 1) / 2) * 255
    rgb = np.asarray(latent_preview(latent))
    assert rgb.shape == (2, 3, 3)
    assert rgb[0, 0].tolist() == [round(1.298 / 2 * 255), round(1.207 / 2 * 255), 154]


# --- DPM++ 2S a, exactly as k-diffusion ----------------------------------------------------------


def _k_diffusion_dpmpp_2s_ancestral(denoise, x, sigmas, noise):
    """k-diffusion's `sample_dpmpp_2s_ancestral` (eta 1, s_noise 1), transcribed from its
    published source, with `noise()` for its noise sampler."""
    for i in range(len(sigmas) - 1):
        sigma, nxt = sigmas[i], sigmas[i + 1]
        denoised = denoise(x, sigma)
        up = min(nxt, (nxt**2 * (sigma**2 - nxt**2) / sigma**2) ** 0.5)
        down = (nxt**2 - up**2) ** 0.5
        if down == 0:
            x = x + (x - denoised) / sigma * (down - sigma)
        else:
            t, t_next = -math.log(sigma), -math.log(down)
            h = t_next - t
            s = t + h / 2
            x_2 = (math.exp(-s) / math.exp(-t)) * x - math.expm1(-h / 2) * denoised
            denoised_2 = denoise(x_2, math.exp(-s))
            x = (math.exp(-t_next) / math.exp(-t)) * x - math.expm1(-h) * denoised_2
        if nxt > 0:
            x = x + noise() * up
    return x


@pytest.mark.parametrize("schedule", ["Automatic", "Uniform"])
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_dpmpp_2s_a_is_k_diffusions_sampler(schedule: str, prediction: str) -> None:
    path = CONFIGS_DIR / "sd15" / "scheduler" / "scheduler_config.json"
    config = {**json.loads(path.read_text()), "prediction_type": prediction}
    scheduler = make_scheduler("DPM++ 2S a", schedule, config)
    scheduler.set_timesteps(6)
    alphas = scheduler.alphas_cumprod.numpy()
    log_sigmas = np.log(((1 - alphas) / alphas) ** 0.5)

    def model(x_in: torch.Tensor, t: float) -> torch.Tensor:  # a smooth stand-in UNet
        return 0.4 * x_in + 0.05 * math.sin(t / 97.0) + 0.1 * x_in.flip(-1)

    def denoise(x: torch.Tensor, sigma: float) -> torch.Tensor:  # k-diffusion's CompVis wrapper
        t = float(scheduler._sigma_to_t(np.array([sigma]), log_sigmas)[0])
        c_in = 1 / (sigma**2 + 1) ** 0.5
        out = model(x * c_in, t)
        if prediction == "epsilon":
            return x - sigma * out
        return out * (-sigma * c_in) + x / (sigma**2 + 1)

    step_sigmas = [s for s, *_ in scheduler._plan] + [0.0]
    start = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(2)
    expected = _k_diffusion_dpmpp_2s_ancestral(
        denoise, start * step_sigmas[0], step_sigmas, lambda: torch.randn(1, 4, 4, 4, generator=g)
    )
    x = start * scheduler.init_noise_sigma
    generator = torch.Generator().manual_seed(2)
    for t in scheduler.timesteps:
        x_in = scheduler.scale_model_input(x, t)
        x = scheduler.step(model(x_in, float(t)), t, x, generator=generator).prev_sample
    assert len(scheduler.timesteps) == 2 * 6 - 1  # two evaluations a step, the last one
    torch.testing.assert_close(x, expected, rtol=1e-4, atol=1e-4)


# --- the webui's own schedule types ----------------------------------------------------------


def _table() -> np.ndarray:
    path = CONFIGS_DIR / "sd15" / "scheduler" / "scheduler_config.json"
    scheduler = make_scheduler("Euler", "Automatic", json.loads(path.read_text()))
    alphas = scheduler.alphas_cumprod.numpy().astype(np.float64)
    return ((1 - alphas) / alphas) ** 0.5


def test_webui_schedule_formulas() -> None:
    """The webui's sd_schedulers.py formulas, checked at points worked out by hand."""
    table = _table()
    sigma_min, sigma_max = table[0], table[-1]
    poly = webui_sigmas("Polyexponential", 5, table)  # rho 1: log-linear from max to min
    assert poly[0] == pytest.approx(sigma_max) and poly[-1] == pytest.approx(sigma_min)
    assert np.allclose(np.diff(np.log(poly)), np.log(sigma_min / sigma_max) / 4)
    kl = webui_sigmas("KL Optimal", 4, table)  # tan of evenly spaced arctans, min excluded
    assert kl[0] == pytest.approx(sigma_max)
    assert kl[2] == pytest.approx(math.tan((math.atan(sigma_min) + math.atan(sigma_max)) / 2))
    # 11 steps: the 11 published sigmas, then 0; otherwise log-linear through them
    assert list(webui_sigmas("Align Your Steps", 11, table)[:2]) == [14.615, 6.475]
    assert webui_sigmas("Align Your Steps", 11, table, sdxl=True)[1] == pytest.approx(6.315)
    ays = webui_sigmas("Align Your Steps", 21, table)
    assert ays[2] == pytest.approx(6.475) and ays[1] == pytest.approx(math.sqrt(14.615 * 6.475))
    assert webui_sigmas("Align Your Steps", 10, table)[-1] == pytest.approx(0.029)
    simple = webui_sigmas("Simple", 4, table)  # every 250th of the table, from the top
    assert list(simple) == [table[-1], table[-251], table[-501], table[-751]]
    normal = webui_sigmas("Normal", 4, table)  # t = 999, 666, 333, 0
    assert normal[1] == pytest.approx(table[666]) and normal[-1] == pytest.approx(table[0])
    ddim = webui_sigmas("DDIM", 4, table)  # t = 751, 501, 251, 1
    assert list(ddim) == [table[751], table[501], table[251], table[1]]


@pytest.mark.parametrize("schedule", WEBUI_SCHEDULES)
@pytest.mark.parametrize("sampler", ["Euler", "Euler a", "Heun", "DPM++ 2M", "DPM++ 2S a", "LMS"])
def test_every_sigma_sampler_runs_on_the_webui_schedule(schedule: str, sampler: str) -> None:
    path = CONFIGS_DIR / "sd15" / "scheduler" / "scheduler_config.json"
    scheduler = make_scheduler(sampler, schedule, json.loads(path.read_text()), [0])
    scheduler.set_timesteps(8)
    wanted = webui_sigmas(schedule, 8, _table())
    got = scheduler.sigmas.numpy()
    firsts = got[:-1] if sampler not in ("Heun", "DPM++ 2S a") else None
    if firsts is not None:  # one evaluation a step: the sigmas are the schedule's
        assert np.allclose(firsts, wanted, rtol=1e-4)
    else:  # Heun repeats, 2S a interleaves midpoints: every schedule sigma is among them
        assert all(np.isclose(got, w, rtol=1e-4).any() for w in wanted)
    final = 0.0 if schedule != "KL Optimal" or sampler in ("Heun", "LMS") else _table()[0]
    if sampler == "DPM++ 2S a":  # its sigmas list evaluations; the plan has the steps' ends
        assert scheduler._plan[-1][3] == pytest.approx(final, abs=1e-6)
    else:
        assert got[-1] == pytest.approx(final, abs=1e-6)
