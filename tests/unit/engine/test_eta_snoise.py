"""The webui's `eta_ancestral` and `s_noise` options on the samplers: each sampler the webui gives
them to, at eta 0.5 and sigma noise 0.9, against a transcription of k-diffusion's loop (a toy
denoiser on a small tensor); eta 1 and sigma noise 1 as diffusers' own schedulers (today's
pixels); on the tiny model, and in the infotext and back."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import (
    DPMSolverMultistepScheduler,
    DPMSolverSDEScheduler,
    EulerAncestralDiscreteScheduler,
    KDPM2AncestralDiscreteScheduler,
)
from diffusers.schedulers.scheduling_dpmsolver_sde import BrownianTreeNoiseSampler

from sdcore.engine.diffusers_engine import DiffusersEngine
from sdcore.engine.schedulers import make_scheduler
from sdcore.ports import EngineInputs
from sdcore.webui.infotext import generation_infotext, parse_infotext, request_fields

from .support import Steps, gen
from .test_more_samplers import SHAPE, _config, _draws, _toy

ETA, S_NOISE = 0.5, 0.9
Denoise = Callable[[torch.Tensor, float], torch.Tensor]
Noise = Callable[[], torch.Tensor]


def _scheduler(sampler: str, steps: int, eta: float = ETA, s_noise: float = S_NOISE) -> Any:
    scheduler: Any = make_scheduler(sampler, "Automatic", _config(), [5], eta=eta, s_noise=s_noise)
    scheduler.set_timesteps(steps)
    return scheduler


def _drive(scheduler: Any, x: torch.Tensor, seed: int) -> tuple[torch.Tensor, list[float]]:
    """The scheduler driven as the diffusers pipeline drives it; the timesteps the model saw."""
    seeded = "generator" in inspect.signature(scheduler.step).parameters
    extra = {"generator": torch.Generator().manual_seed(seed)} if seeded else {}
    seen: list[float] = []
    for t in scheduler.timesteps:
        x_in = scheduler.scale_model_input(x, t)
        seen.append(float(t))
        x = scheduler.step(_toy(x_in, float(t)), t, x, **extra).prev_sample
    return x, seen


class _Denoiser:
    """k-diffusion's CompVis wrapper around the toy model. Given the timesteps our scheduler
    fed the model, it feeds them again in the same order (diffusers interpolates sigma, not
    log-sigma, between training timesteps, and rounds some), after checking that each is
    where k-diffusion would evaluate the model (so a misplaced evaluation fails)."""

    def __init__(self, scheduler: Any, seen: list[float] | None = None) -> None:
        alphas = scheduler.alphas_cumprod.numpy()
        self.log_sigmas = np.log(((1 - alphas) / alphas) ** 0.5)
        self.seen, self.calls = seen, 0

    def __call__(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        t = float(np.interp(math.log(sigma), self.log_sigmas, np.arange(len(self.log_sigmas))))
        if self.seen is not None:
            assert abs(self.seen[self.calls] - t) < 1.5, (self.calls, self.seen[self.calls], t)
            t = self.seen[self.calls]
        self.calls += 1
        return x - sigma * _toy(x / (sigma**2 + 1) ** 0.5, t)


def _ancestral(sigma: float, nxt: float, eta: float) -> tuple[float, float]:
    """k-diffusion's `get_ancestral_step`: (sigma_down, sigma_up)."""
    if not eta:
        return nxt, 0.0
    up = min(nxt, eta * (nxt**2 * (sigma**2 - nxt**2) / sigma**2) ** 0.5)
    return (nxt**2 - up**2) ** 0.5, up


# --- k-diffusion's loops, transcribed, with `eta` and `s_noise` ----------------------------


def _k_euler_ancestral(denoise: Denoise, x, sigmas, noise: Noise, eta, s_noise):  # type: ignore[no-untyped-def]
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        down, up = _ancestral(sigmas[i], sigmas[i + 1], eta)
        x = x + (x - denoised) / sigmas[i] * (down - sigmas[i])
        if sigmas[i + 1] > 0:
            x = x + noise() * s_noise * up
    return x


def _k_dpm_2_ancestral(denoise: Denoise, x, sigmas, noise: Noise, eta, s_noise):  # type: ignore[no-untyped-def]
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        down, up = _ancestral(sigmas[i], sigmas[i + 1], eta)
        d = (x - denoised) / sigmas[i]
        if down == 0:
            x = x + d * (down - sigmas[i])
        else:
            mid = math.exp((math.log(sigmas[i]) + math.log(down)) / 2)
            x_2 = x + d * (mid - sigmas[i])
            d_2 = (x_2 - denoise(x_2, mid)) / mid
            x = x + d_2 * (down - sigmas[i])
            x = x + noise() * s_noise * up
    return x


def _k_dpmpp_2s_ancestral(denoise: Denoise, x, sigmas, noise: Noise, eta, s_noise):  # type: ignore[no-untyped-def]
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        down, up = _ancestral(sigmas[i], sigmas[i + 1], eta)
        if down == 0:
            x = x + (x - denoised) / sigmas[i] * (down - sigmas[i])
        else:
            t, t_next = -math.log(sigmas[i]), -math.log(down)
            h = t_next - t
            s = t + h / 2
            x_2 = (math.exp(-s) / math.exp(-t)) * x - math.expm1(-h / 2) * denoised
            denoised_2 = denoise(x_2, math.exp(-s))
            x = (math.exp(-t_next) / math.exp(-t)) * x - math.expm1(-h) * denoised_2
        if sigmas[i + 1] > 0:
            x = x + noise() * s_noise * up
    return x


def _k_dpmpp_sde(denoise: Denoise, x, sigmas, brownian, eta, s_noise):  # type: ignore[no-untyped-def]
    """`sample_dpmpp_sde` (r 1/2) with a Brownian-tree `brownian(sigma, sigma_next)`; its times
    in float32 tensors, as k-diffusion has them (a Brownian path moves by ~sqrt(dt): the float64
    times would query it elsewhere)."""

    def sigma_fn(t: torch.Tensor) -> torch.Tensor:
        return t.neg().exp()

    for i in range(len(sigmas) - 1):
        sigma, nxt = torch.tensor(sigmas[i]), torch.tensor(sigmas[i + 1])
        denoised = denoise(x, float(sigma))
        if nxt == 0:
            x = x + (x - denoised) / float(sigma) * (0 - float(sigma))
            continue
        t, t_next = sigma.log().neg(), nxt.log().neg()
        s = t + (t_next - t) * 0.5
        down, up = _ancestral(float(sigma_fn(t)), float(sigma_fn(s)), eta)
        s_ = -math.log(down)
        x_2 = (down / float(sigma_fn(t))) * x - math.expm1(float(t) - s_) * denoised
        x_2 = x_2 + brownian(sigma_fn(t), sigma_fn(s)) * s_noise * up
        denoised_2 = denoise(x_2, float(sigma_fn(s)))
        down, up = _ancestral(float(sigma_fn(t)), float(sigma_fn(t_next)), eta)
        t_next_ = -math.log(down)
        x = (down / float(sigma_fn(t))) * x - math.expm1(float(t) - t_next_) * denoised_2
        x = x + brownian(sigma_fn(t), sigma_fn(t_next)) * s_noise * up
    return x


def _k_dpmpp_multistep_sde(denoise: Denoise, x, sigmas, noise: Noise, eta, s_noise, kind):  # type: ignore[no-untyped-def]
    """`sample_dpmpp_2m_sde` (kind "midpoint" or "heun") and `sample_dpmpp_3m_sde` ("3m")."""
    old, older, h_1, h_2 = None, None, None, None
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        h = None
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            h = math.log(sigmas[i]) - math.log(sigmas[i + 1])
            h_eta = h * (eta + 1)
            grow = -math.expm1(-h_eta)
            x = sigmas[i + 1] / sigmas[i] * math.exp(-eta * h) * x + grow * denoised
            if kind != "3m" and old is not None:
                r = h_1 / h
                if kind == "heun":
                    x = x + (grow / -h_eta + 1) * (1 / r) * (denoised - old)
                else:
                    x = x + 0.5 * grow * (1 / r) * (denoised - old)
            elif kind == "3m" and h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0, d1_1 = (denoised - old) / r0, (old - older) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_2 = math.expm1(-h_eta) / h_eta + 1
                x = x + phi_2 * d1 - (phi_2 / h_eta - 0.5) * d2
            elif kind == "3m" and h_1 is not None:
                x = x + (math.expm1(-h_eta) / h_eta + 1) * (denoised - old) / (h_1 / h)
            if eta:
                x = x + noise() * sigmas[i + 1] * (-math.expm1(-2 * eta * h)) ** 0.5 * s_noise
        old, older, h_1, h_2 = denoised, old, h, h_1
    return x


def _dpm_eps(denoise: Denoise) -> Callable[[torch.Tensor, float], torch.Tensor]:
    def eps(x: torch.Tensor, t: float) -> torch.Tensor:
        return (x - denoise(x, math.exp(-t))) / math.exp(-t)

    return eps


def _k_dpm_solver_step(eps, x, t, t_next, e, order):  # type: ignore[no-untyped-def]
    """`DPMSolver.dpm_solver_{1,2,3}_step` (r1 1/2 at order 2, 1/3 and 2/3 at order 3)."""
    h = t_next - t
    x_1 = x - math.exp(-t_next) * math.expm1(h) * e
    if order == 1:
        return x_1
    if order == 2:
        s1 = t + h / 2
        u1 = x - math.exp(-s1) * math.expm1(h / 2) * e
        return x_1 - math.exp(-t_next) * math.expm1(h) * (eps(u1, s1) - e)
    r1, r2 = 1 / 3, 2 / 3
    s1, s2 = t + r1 * h, t + r2 * h
    u1 = x - math.exp(-s1) * math.expm1(r1 * h) * e
    e1 = eps(u1, s1)
    u2 = x - math.exp(-s2) * math.expm1(r2 * h) * e
    u2 = u2 - math.exp(-s2) * (r2 / r1) * (math.expm1(r2 * h) / (r2 * h) - 1) * (e1 - e)
    return x_1 - math.exp(-t_next) / r2 * (math.expm1(h) / h - 1) * (eps(u2, s2) - e)


def _k_dpm_fast(denoise: Denoise, x, sigma_min, sigma_max, nfe, noise: Noise, eta, s_noise):  # type: ignore[no-untyped-def]
    """`sample_dpm_fast`: `DPMSolver.dpm_solver_fast` with `eta` and `s_noise`."""
    eps = _dpm_eps(denoise)
    t_start, t_end = -math.log(sigma_max), -math.log(sigma_min)
    m = nfe // 3 + 1
    ts = np.linspace(t_start, t_end, m + 1)
    orders = [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]
    for i, order in enumerate(orders):
        t, t_next = float(ts[i]), float(ts[i + 1])
        if eta:
            down, _ = _ancestral(math.exp(-t), math.exp(-t_next), eta)
            t_next_ = min(t_end, -math.log(down))
            su = (math.exp(-t_next) ** 2 - math.exp(-t_next_) ** 2) ** 0.5
        else:
            t_next_, su = t_next, 0.0
        x = _k_dpm_solver_step(eps, x, t, t_next_, eps(x, t), order)
        x = x + su * s_noise * noise()
    return x


def _k_dpm_adaptive(denoise: Denoise, x, sigma_min, sigma_max, noise: Noise, eta):  # type: ignore[no-untyped-def]
    """`sample_dpm_adaptive` with the webui's arguments (order 3, rtol 0.05, atol 0.0078,
    h_init 0.05, the I controller, accept_safety 0.81) and `eta`."""
    eps = _dpm_eps(denoise)
    t_end = -math.log(sigma_min)
    s, x_prev, h = -math.log(sigma_max), x, 0.05
    while s < t_end - 1e-5:
        t = min(t_end, s + h)
        if eta:
            down, _ = _ancestral(math.exp(-s), math.exp(-t), eta)
            t_ = min(t_end, -math.log(down))
            su = (math.exp(-t) ** 2 - math.exp(-t_) ** 2) ** 0.5
        else:
            t_, su = t, 0.0
        e = eps(x, s)
        step = t_ - s
        s1 = s + step / 3  # the 2-step at r1 1/3 and the 3-step share eps at s1
        u1 = x - math.exp(-s1) * math.expm1(step / 3) * e
        e1 = eps(u1, s1)
        x_1 = x - math.exp(-t_) * math.expm1(step) * e
        x_low = x_1 - math.exp(-t_) / (2 / 3) * math.expm1(step) * (e1 - e)
        s2 = s + 2 * step / 3
        u2 = x - math.exp(-s2) * math.expm1(2 * step / 3) * e
        u2 = u2 - math.exp(-s2) * 2 * (math.expm1(2 * step / 3) / (2 * step / 3) - 1) * (e1 - e)
        x_high = x_1 - math.exp(-t_) * 1.5 * (math.expm1(step) / step - 1) * (eps(u2, s2) - e)
        delta = torch.clamp(0.05 * torch.maximum(x_low.abs(), x_prev.abs()), min=0.0078)
        error = float(torch.linalg.norm((x_low - x_high) / delta)) / x.numel() ** 0.5
        factor = 1 + math.atan((1 / (error + 1e-8)) ** (1 / (1.5 if eta else 3)) - 1)
        h *= factor
        if factor >= 0.81:
            x_prev, x, s = x_low, x_high + su * noise(), t
    return x


# --- our schedulers against them ---------------------------------------------------------------


def _ours_and_theirs(sampler: str, steps: int, eta: float, s_noise: float) -> tuple[Any, Any]:
    scheduler = _scheduler(sampler, steps, eta, s_noise)
    start = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    if sampler in ("DPM fast", "DPM adaptive"):  # (they evaluate at k-diffusion's timesteps)
        table = ((1 - scheduler.alphas_cumprod) / scheduler.alphas_cumprod) ** 0.5
        low, high = float(table[0]), float(table[-1])
        x0 = start * high
        ours, _ = _drive(scheduler, x0, 2)
        denoise = _Denoiser(scheduler)
        if sampler == "DPM fast":
            return ours, _k_dpm_fast(denoise, x0, low, high, steps, _draws(2), eta, s_noise)
        return ours, _k_dpm_adaptive(denoise, x0, low, high, _draws(2), eta)
    if sampler in ("DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 3M SDE"):  # VP latents
        sigmas = [float(s) for s in scheduler.sigmas]
        kind = {"DPM++ 2M SDE": "midpoint", "DPM++ 2M SDE Heun": "heun"}.get(sampler, "3m")
        ours, seen = _drive(scheduler, start * scheduler.init_noise_sigma, 2)
        x0 = start * scheduler.init_noise_sigma * (sigmas[0] ** 2 + 1) ** 0.5
        denoise = _Denoiser(scheduler, seen)
        expected = _k_dpmpp_multistep_sde(denoise, x0, sigmas, _draws(2), eta, s_noise, kind)
        assert denoise.calls == len(seen)
        return ours, expected
    x0 = start * scheduler.init_noise_sigma
    ours, seen = _drive(scheduler, x0, 2)
    denoise = _Denoiser(scheduler, seen)
    if sampler == "DPM++ 2S a":
        sigmas = [plan[0] for plan in scheduler._plan] + [0.0]
    else:  # second-order schedulers list most sigmas twice
        sigmas = torch.unique_consecutive(scheduler.sigmas).tolist()
    if sampler == "DPM++ SDE":
        low, high = min(s for s in sigmas if s > 0), max(sigmas)
        tree = BrownianTreeNoiseSampler(x0, low, high, [5])
        expected = _k_dpmpp_sde(denoise, x0, sigmas, tree, eta, s_noise)
    else:
        loop = {
            "Euler a": _k_euler_ancestral,
            "DPM2 a": _k_dpm_2_ancestral,
            "DPM++ 2S a": _k_dpmpp_2s_ancestral,
        }[sampler]
        s_noise = 1.0 if sampler == "Euler a" else s_noise  # the webui gives Euler a no s_noise
        expected = loop(denoise, x0, sigmas, _draws(2), eta, s_noise)
    assert denoise.calls == len(seen)
    return ours, expected


SAMPLERS = (
    "Euler a",
    "DPM2 a",
    "DPM++ 2S a",
    "DPM++ SDE",
    "DPM++ 2M SDE",
    "DPM++ 2M SDE Heun",
    "DPM++ 3M SDE",
    "DPM fast",
    "DPM adaptive",
)


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize(("eta", "s_noise"), [(ETA, S_NOISE), (0.0, S_NOISE), (1.0, 1.1)])
def test_each_sampler_is_k_diffusions_at_eta_and_s_noise(
    sampler: str, eta: float, s_noise: float
) -> None:
    ours, expected = _ours_and_theirs(sampler, 8 if sampler == "DPM adaptive" else 6, eta, s_noise)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_eta_and_s_noise_change_the_result(sampler: str) -> None:
    steps = 8 if sampler == "DPM adaptive" else 6
    start = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1)) * 14.6

    def run(eta: float, s_noise: float) -> torch.Tensor:
        return _drive(_scheduler(sampler, steps, eta, s_noise), start, 2)[0]

    plain = run(1.0, 1.0)
    assert not torch.allclose(run(ETA, 1.0), plain, atol=1e-3)
    webui_gives_s_noise = sampler not in ("Euler a", "DPM adaptive")
    assert torch.allclose(run(1.0, S_NOISE), plain, atol=1e-3) != webui_gives_s_noise


@pytest.mark.parametrize(
    ("sampler", "stock", "options"),
    [
        ("Euler a", EulerAncestralDiscreteScheduler, {}),
        ("DPM2 a", KDPM2AncestralDiscreteScheduler, {}),
        ("DPM++ SDE", DPMSolverSDEScheduler, {"noise_sampler_seed": [5]}),
        ("DPM++ 2M SDE", DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++"}),
        (
            "DPM++ 2M SDE Heun",
            DPMSolverMultistepScheduler,
            {"algorithm_type": "sde-dpmsolver++", "solver_type": "heun"},
        ),
    ],
)
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_eta_1_is_diffusers_own_arithmetic(
    sampler: str, stock: Any, options: dict[str, Any], prediction: str
) -> None:
    config = {**_config(prediction), "timestep_spacing": "linspace"}
    ours: Any = make_scheduler(sampler, "Uniform", config, [5], eta=1.0, s_noise=1.0)
    theirs: Any = stock.from_config(config, **options)
    start = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    results = []
    for scheduler in (ours, theirs):
        scheduler.set_timesteps(5)
        results.append(_drive(scheduler, start * scheduler.init_noise_sigma, 2)[0])
    assert torch.equal(ours.timesteps, theirs.timesteps)
    assert torch.equal(results[0], results[1])  # bit for bit: today's pixels


# --- on the tiny model ---------------------------------------------------------------------


def _pixels(engine: DiffusersEngine, **params: Any) -> tuple[np.ndarray, str]:
    result = engine.run(gen(steps=3, **params), EngineInputs(), Steps())
    return np.asarray(result.images[0].convert("RGB"), dtype=np.int16), result.infotexts[0]


def test_the_options_reach_the_engine(engine: DiffusersEngine) -> None:
    ancestral, text = _pixels(engine, sampler="Euler a")
    same, same_text = _pixels(engine, sampler="Euler a", eta_ancestral=1.0, s_noise=1.0)
    assert np.array_equal(same, ancestral) and same_text == text  # the defaults: today's
    assert "Eta" not in text and "Sigma noise" not in text
    less, less_text = _pixels(engine, sampler="Euler a", eta_ancestral=0.5)
    assert not np.array_equal(less, ancestral), "eta_ancestral does not reach make_scheduler"
    assert "Eta: 0.5" in less_text and "Sigma noise" not in less_text
    quieter, _ = _pixels(engine, sampler="DPM++ 2S a", s_noise=0.5)
    assert not np.array_equal(quieter, _pixels(engine, sampler="DPM++ 2S a")[0])
    euler, _ = _pixels(engine, sampler="Euler")
    other, euler_text = _pixels(engine, sampler="Euler", eta_ancestral=0.5, s_noise=0.5)
    assert np.array_equal(other, euler)  # Euler has neither (sigma noise without churn)
    assert "Eta" not in euler_text and "Sigma noise: 0.5" in euler_text  # as the webui writes


# --- the infotext ------------------------------------------------------------------------------


def _infotext(**params: Any) -> str:
    values = {"steps": 3, "seed": 1, **params}
    return generation_infotext(
        gen(**values), seed=1, subseed=2, width=64, height=64, model_name="tiny",
        model_hash="", sampler=values.get("sampler", "Euler"), schedule="Automatic",
    )  # fmt: skip


def test_infotext_records_them_as_the_webui_and_a_paste_restores_them() -> None:
    text = _infotext(sampler="DPM++ 2S a", eta_ancestral=0.5, s_noise=0.9)
    fields = parse_infotext(text)
    assert fields["Eta"] == "0.5" and fields["Sigma noise"] == "0.9"
    assert request_fields(text)["override_settings"] == {"eta_ancestral": 0.5, "s_noise": 0.9}
    assert request_fields(text, img2img=True)["override_settings"]["s_noise"] == 0.9
    default = _infotext(sampler="DPM++ 2S a")
    assert "Eta" not in default and "Sigma noise" not in default
    assert "override_settings" not in request_fields(default)
    # only the samplers the webui gives them to
    assert "Eta" not in _infotext(sampler="DPM++ 2M", eta_ancestral=0.5, s_noise=0.9)
    assert "Sigma noise" not in _infotext(sampler="Euler a", s_noise=0.9)
    assert "Sigma noise" not in _infotext(sampler="DPM adaptive", s_noise=0.9)
    assert "Eta: 0.5" in _infotext(sampler="DPM adaptive", eta_ancestral=0.5)
    # ENSD, as the webui: not at eta 0
    assert "ENSD: 31337" in _infotext(sampler="DPM fast", eta_noise_seed_delta=31337)
    assert "ENSD" not in _infotext(sampler="Euler a", eta_noise_seed_delta=31337, eta_ancestral=0)
    odd = "p\nSteps: 3, Sampler: Euler a, Seed: 1, Eta: nan, Sigma noise: x"
    assert "override_settings" not in request_fields(odd)
