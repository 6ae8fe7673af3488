"""The webui 1.10 samplers beyond the first set: names, each algorithm against a transcription
of its reference loop (a toy denoiser on a small tensor), and a seeded run on the tiny model."""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from sdcore.api.routes.webui import webui_samplers
from sdcore.configs import ROOT as CONFIGS_DIR
from sdcore.engine.diffusers_engine import DiffusersEngine
from sdcore.engine.k_samplers import bound
from sdcore.engine.schedulers import make_scheduler
from sdcore.ports import EngineInputs
from sdcore.webui.samplers import SAMPLERS, resolve

from .support import Steps, gen

NEW = (
    "PLMS",
    "DPM++ 3M SDE",
    "DPM++ 2M SDE Heun",
    "DPM fast",
    "DPM adaptive",
    "Restart",
    "DDIM CFG++",
)
SHAPE = (1, 4, 4, 4)
Denoise = Callable[[torch.Tensor, float], torch.Tensor]


def _config(prediction: str = "epsilon") -> dict[str, Any]:
    path = CONFIGS_DIR / "sd15" / "scheduler" / "scheduler_config.json"
    return {**json.loads(path.read_text()), "prediction_type": prediction}


def _toy(x_in: torch.Tensor, t: float) -> torch.Tensor:
    """A smooth stand-in UNet: its output depends on the input and the timestep."""
    return 0.4 * x_in + 0.05 * math.sin(t / 97.0) + 0.1 * x_in.flip(-1)


def _drive(scheduler: Any, x: torch.Tensor, seed: int) -> torch.Tensor:
    """The scheduler driven as the diffusers pipeline drives it."""
    seeded = "generator" in inspect.signature(scheduler.step).parameters
    extra = {"generator": torch.Generator().manual_seed(seed)} if seeded else {}
    for t in scheduler.timesteps:
        x_in = scheduler.scale_model_input(x, t)
        x = scheduler.step(_toy(x_in, float(t)), t, x, **extra).prev_sample
    return x


def _draws(seed: int) -> Callable[[], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return lambda: torch.randn(SHAPE, generator=g)


def _k_denoiser(scheduler: Any, prediction: str, own_timesteps: bool = False) -> Denoise:
    """k-diffusion's CompVis wrapper around the toy model; `own_timesteps`: the model sees the
    scheduler's timestep for a sigma (diffusers' DPM-Solver rounds them) rather than k-diffusion's
    interpolated one."""
    alphas = scheduler.alphas_cumprod.numpy()
    log_sigmas = np.log(((1 - alphas) / alphas) ** 0.5)
    own = dict(zip(scheduler.sigmas.tolist(), scheduler.timesteps.tolist(), strict=False))

    def denoise(x: torch.Tensor, sigma: float) -> torch.Tensor:
        t = float(scheduler._sigma_to_t(np.array([sigma]), log_sigmas)[0])
        c_in = 1 / (sigma**2 + 1) ** 0.5
        out = _toy(x * c_in, own[sigma] if own_timesteps else t)
        if prediction == "epsilon":
            return x - sigma * out
        return out * (-sigma * c_in) + x / (sigma**2 + 1)

    return denoise


def test_names_aliases_and_default_schedules() -> None:
    assert resolve("k_dpmpp_3m_sde") == ("DPM++ 3M SDE", "Exponential")
    assert resolve("k_dpmpp_2m_sde_heun", "automatic") == ("DPM++ 2M SDE Heun", "Exponential")
    assert resolve("DPM++ 3M SDE Karras") == ("DPM++ 3M SDE", "Karras")
    assert resolve("plms", "Karras") == ("PLMS", "Automatic")  # a timestep sampler
    assert resolve("restart") == ("Restart", "Karras")
    assert resolve("k_dpm_fast", "Karras") == ("DPM fast", "Automatic")  # its own steps
    listed = {s.name: s for s in webui_samplers()}
    assert set(NEW) <= set(listed) and list(listed) == list(SAMPLERS)
    assert listed["DPM++ 3M SDE"].options == {"scheduler": "exponential"}
    assert "k_dpmpp_2m_sde_heun" in listed["DPM++ 2M SDE Heun"].aliases


# --- DPM++ 2M SDE Heun and 3M SDE: k-diffusion's loops, with the scheduler's noise ----------


def _k_dpmpp_sde(denoise: Denoise, x, sigmas, noise, heun: bool, third: bool):  # type: ignore[no-untyped-def]
    """k-diffusion's `sample_dpmpp_2m_sde` (solver_type heun) and `sample_dpmpp_3m_sde` (eta 1,
    s_noise 1), transcribed, with `noise()` for the noise sampler."""
    d1_, d2_, h1, h2 = None, None, None, None
    for i in range(len(sigmas) - 1):
        denoised = denoise(x, sigmas[i])
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            h = math.log(sigmas[i]) - math.log(sigmas[i + 1])
            if not third:
                x = sigmas[i + 1] / sigmas[i] * math.exp(-h) * x - math.expm1(-2 * h) * denoised
                if d1_ is not None and heun:
                    r = h1 / h
                    x = x + (-math.expm1(-2 * h) / (-2 * h) + 1) / r * (denoised - d1_)
            else:
                x = math.exp(-2 * h) * x - math.expm1(-2 * h) * denoised
                phi_2 = math.expm1(-2 * h) / (2 * h) + 1
                if h2 is not None:
                    r0, r1 = h1 / h, h2 / h
                    d1_0, d1_1 = (denoised - d1_) / r0, (d1_ - d2_) / r1
                    d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                    d2 = (d1_0 - d1_1) / (r0 + r1)
                    x = x + phi_2 * d1 - (phi_2 / (2 * h) - 0.5) * d2
                elif h1 is not None:
                    x = x + phi_2 * (denoised - d1_) / (h1 / h)
            x = x + noise() * sigmas[i + 1] * (-math.expm1(-2 * h)) ** 0.5
            h1, h2 = h, h1
        d1_, d2_ = denoised, d1_
    return x


@pytest.mark.parametrize("sampler", ["DPM++ 2M SDE Heun", "DPM++ 3M SDE"])
@pytest.mark.parametrize("schedule", ["Automatic", "Karras"])
def test_sde_samplers_are_k_diffusions(sampler: str, schedule: str) -> None:
    scheduler: Any = make_scheduler(sampler, schedule, _config())
    scheduler.set_timesteps(7)
    sigmas = [float(s) for s in scheduler.sigmas]
    start = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    ours = _drive(scheduler, start * scheduler.init_noise_sigma, 2)
    # diffusers starts from unit-variance latents (VP); k-diffusion's x is scaled by sigma
    x0 = start * scheduler.init_noise_sigma * (sigmas[0] ** 2 + 1) ** 0.5
    denoise = _k_denoiser(scheduler, "epsilon", own_timesteps=True)
    expected = _k_dpmpp_sde(denoise, x0, sigmas, _draws(2), True, sampler == "DPM++ 3M SDE")
    assert len(sigmas) == 8
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)


# --- PLMS: the webui's `plms` ------------------------------------------------------------------


def test_plms_is_the_webuis() -> None:
    scheduler: Any = make_scheduler("PLMS", "Automatic", _config())
    scheduler.set_timesteps(6)
    alphas_cumprod = scheduler.alphas_cumprod.double()
    timesteps = torch.arange(1, 1000, 1000 // 6)[:6]  # the webui's DDIM/PLMS timesteps
    alphas = alphas_cumprod[timesteps]
    alphas_prev = alphas_cumprod[torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))]
    start = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))

    def x_prev(x: torch.Tensor, e_t: torch.Tensor, index: int) -> torch.Tensor:
        a_t, a_prev = alphas[index], alphas_prev[index]
        pred_x0 = (x - (1 - a_t).sqrt() * e_t) / a_t.sqrt()
        return a_prev.sqrt() * pred_x0 + (1 - a_prev).sqrt() * e_t

    x, old = start.double(), []  # the webui's loop, transcribed
    for i in range(len(timesteps)):
        index = len(timesteps) - 1 - i
        e_t = _toy(x, float(timesteps[index]))
        if not old:
            t_next = float(timesteps[max(index - 1, 0)])
            e_t_prime = (e_t + _toy(x_prev(x, e_t, index), t_next)) / 2
        elif len(old) == 1:
            e_t_prime = (3 * e_t - old[-1]) / 2
        elif len(old) == 2:
            e_t_prime = (23 * e_t - 16 * old[-1] + 5 * old[-2]) / 12
        else:
            e_t_prime = (55 * e_t - 59 * old[-1] + 37 * old[-2] - 9 * old[-3]) / 24
        x = x_prev(x, e_t_prime, index)
        old = [*old, e_t][-3:]
    ours = _drive(scheduler, start, 0)
    assert len(scheduler.timesteps) == 6 + 1  # the first step evaluates twice
    torch.testing.assert_close(ours, x.float(), rtol=1e-4, atol=1e-4)


# --- DPM fast: k-diffusion's `DPMSolver.dpm_solver_fast` -----------------------------------------


def _k_dpm_fast(denoise: Denoise, x, sigma_min, sigma_max, nfe, noise):  # type: ignore[no-untyped-def]
    """k-diffusion's `sample_dpm_fast` (eta 1, s_noise 1), transcribed."""

    def eps(x_: torch.Tensor, t_: float) -> torch.Tensor:
        return (x_ - denoise(x_, math.exp(-t_))) / math.exp(-t_)

    t_start, t_end = -math.log(sigma_max), -math.log(sigma_min)
    m = math.floor(nfe / 3) + 1
    ts = torch.linspace(t_start, t_end, m + 1, dtype=torch.float64)
    orders = [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]
    for i, order in enumerate(orders):
        t, t_next = float(ts[i]), float(ts[i + 1])
        sf, st = math.exp(-t), math.exp(-t_next)
        su = min(st, (st**2 * (sf**2 - st**2) / sf**2) ** 0.5)
        sd = (st**2 - su**2) ** 0.5
        t_next_ = min(t_end, -math.log(sd))
        su = max(st**2 - math.exp(-t_next_) ** 2, 0.0) ** 0.5
        h = t_next_ - t
        e = eps(x, t)
        if order == 1:
            x_new = x - math.exp(-t_next_) * math.expm1(h) * e
        elif order == 2:
            s1 = t + h / 2
            u1 = x - math.exp(-s1) * math.expm1(h / 2) * e
            e1 = eps(u1, s1)
            x_new = x - math.exp(-t_next_) * math.expm1(h) * e
            x_new = x_new - math.exp(-t_next_) / (2 * 0.5) * math.expm1(h) * (e1 - e)
        else:
            r1, r2 = 1 / 3, 2 / 3
            s1, s2 = t + r1 * h, t + r2 * h
            u1 = x - math.exp(-s1) * math.expm1(r1 * h) * e
            e1 = eps(u1, s1)
            u2 = x - math.exp(-s2) * math.expm1(r2 * h) * e
            u2 = u2 - math.exp(-s2) * (r2 / r1) * (math.expm1(r2 * h) / (r2 * h) - 1) * (e1 - e)
            e2 = eps(u2, s2)
            x_new = x - math.exp(-t_next_) * math.expm1(h) * e
            x_new = x_new - math.exp(-t_next_) / r2 * (math.expm1(h) / h - 1) * (e2 - e)
        x = x_new + su * noise()
    return x


@pytest.mark.parametrize("steps", [5, 6, 7])
@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_dpm_fast_is_k_diffusions(steps: int, prediction: str) -> None:
    scheduler: Any = make_scheduler("DPM fast", "Karras", _config(prediction))
    scheduler.set_timesteps(steps)
    table = ((1 - scheduler.alphas_cumprod) / scheduler.alphas_cumprod) ** 0.5
    start = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1)) * 14.6
    ours = _drive(scheduler, start, 2)
    denoise = _k_denoiser(scheduler, prediction)
    sigma_min, sigma_max = float(table[0]), float(table[-1])
    expected = _k_dpm_fast(denoise, start, sigma_min, sigma_max, steps, _draws(2))
    assert len(scheduler.timesteps) == steps  # `steps` model evaluations, as in the webui
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)


# --- DPM adaptive: k-diffusion's `DPMSolver.dpm_solver_adaptive` ----------------------------------


def _k_dpm_adaptive(denoise: Denoise, x, sigma_min, sigma_max, noise):  # type: ignore[no-untyped-def]
    """k-diffusion's `sample_dpm_adaptive` with the webui's arguments (order 3, rtol 0.05,
    atol 0.0078, h_init 0.05, pcoeff 0, icoeff 1, dcoeff 0, accept_safety 0.81, eta 1),
    transcribed; returns x and the model evaluations it made."""
    calls = 0

    def eps(x_: torch.Tensor, t_: float) -> torch.Tensor:
        nonlocal calls
        calls += 1
        return (x_ - denoise(x_, math.exp(-t_))) / math.exp(-t_)

    def solve_2(x_, t, t_next, e):  # type: ignore[no-untyped-def]  # dpm_solver_2_step, r1 1/3
        h = t_next - t
        s1 = t + h / 3
        u1 = x_ - math.exp(-s1) * math.expm1(h / 3) * e
        e1 = eps(u1, s1)
        x_2 = x_ - math.exp(-t_next) * math.expm1(h) * e
        return x_2 - math.exp(-t_next) / (2 / 3) * math.expm1(h) * (e1 - e), e1

    def solve_3(x_, t, t_next, e, e1):  # type: ignore[no-untyped-def]  # dpm_solver_3_step
        h = t_next - t
        r1, r2 = 1 / 3, 2 / 3
        s2 = t + r2 * h
        u2 = x_ - math.exp(-s2) * math.expm1(r2 * h) * e
        u2 = u2 - math.exp(-s2) * (r2 / r1) * (math.expm1(r2 * h) / (r2 * h) - 1) * (e1 - e)
        e2 = eps(u2, s2)
        x_3 = x_ - math.exp(-t_next) * math.expm1(h) * e
        return x_3 - math.exp(-t_next) / r2 * (math.expm1(h) / h - 1) * (e2 - e)

    t_start, t_end = -math.log(sigma_max), -math.log(sigma_min)
    s, x_prev, pid_h, errs = t_start, x, 0.05, None
    while s < t_end - 1e-5:
        t = min(t_end, s + pid_h)
        sf, st = math.exp(-s), math.exp(-t)
        su = min(st, (st**2 * (sf**2 - st**2) / sf**2) ** 0.5)
        sd = (st**2 - su**2) ** 0.5
        t_ = min(t_end, -math.log(sd))
        su = max(st**2 - math.exp(-t_) ** 2, 0.0) ** 0.5
        e = eps(x, s)  # a fresh eps cache every attempt, as k-diffusion has it
        x_low, e1 = solve_2(x, s, t_, e)
        x_high = solve_3(x, s, t_, e, e1)
        delta = torch.maximum(torch.tensor(0.0078), 0.05 * torch.maximum(x_low.abs(), x_prev.abs()))
        error = torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5
        inv_error = 1 / (float(error) + 1e-8)  # the PID controller, I term only, order 1.5
        errs = errs or [inv_error] * 3
        errs[0] = inv_error
        factor = 1 + math.atan(errs[0] ** (1 / 1.5) - 1)
        accept = factor >= 0.81
        if accept:
            errs[2], errs[1] = errs[1], errs[0]
        pid_h *= factor
        if accept:
            x_prev = x_low
            x = x_high + su * noise()
            s = t
    return x, calls


class _KPipe:
    """The diffusers pipeline's denoising loop (interrupt flag and step count included)."""

    def __init__(self, scheduler: Any) -> None:
        self.scheduler, self._interrupt, self.progress = scheduler, False, []

    def __call__(self, latents: torch.Tensor, seed: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        timesteps = self.scheduler.timesteps
        self._num_timesteps = len(timesteps)
        x = latents
        for i, t in enumerate(timesteps):
            if self._interrupt:
                continue
            x_in = self.scheduler.scale_model_input(x, t)
            out = _toy(x_in, float(t))
            x = self.scheduler.step(out, t, x, generator=generator).prev_sample
            self.progress.append((i + 1, self._num_timesteps))
        return x


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_dpm_adaptive_is_k_diffusions_and_ends_early(prediction: str) -> None:
    scheduler: Any = make_scheduler("DPM adaptive", "Karras", _config(prediction))
    scheduler.set_timesteps(20)
    budget = len(scheduler.timesteps)
    table = ((1 - scheduler.alphas_cumprod) / scheduler.alphas_cumprod) ** 0.5
    start = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1)) * 14.6
    pipe = _KPipe(scheduler)
    ours = bound(pipe, scheduler)(start, 2)
    denoise = _k_denoiser(scheduler, prediction)
    expected, calls = _k_dpm_adaptive(denoise, start, float(table[0]), float(table[-1]), _draws(2))
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)
    evaluations = len(pipe.progress)
    assert budget == 20 * 8 and 10 < evaluations < budget and evaluations <= calls
    assert pipe.progress[-1] == (evaluations, evaluations)  # progress ends at 100 %
    assert scheduler.pipe is None


def test_dpm_adaptive_out_of_budget_returns_the_last_prediction() -> None:
    scheduler: Any = make_scheduler("DPM adaptive", "Automatic", _config())
    scheduler.set_timesteps(2)  # 16 evaluations: not enough to reach sigma_min
    start = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1)) * 14.6
    pipe = _KPipe(scheduler)
    ours = bound(pipe, scheduler)(start, 2)
    assert len(pipe.progress) == 16 and pipe.progress[-1] == (16, 16)
    assert torch.isfinite(ours).all() and ours.abs().max() < 14.6


# --- Restart: the webui's `restart_sampler` ----------------------------------------------------


def _karras(n: int, sigma_min: float, sigma_max: float) -> list[float]:
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    low, high = sigma_min ** (1 / 7), sigma_max ** (1 / 7)
    return [float(s) for s in (high + ramp * (low - high)) ** 7] + [0.0]


def _webui_restart(denoise: Denoise, x, sigmas, noise):  # type: ignore[no-untyped-def]
    """The webui's `restart_sampler` (s_noise 1, its automatic restart list), transcribed."""
    steps = len(sigmas) - 1
    restart_list: dict[float, list[float]] = {}
    if steps >= 20:
        restart_steps, restart_times = 9, 1
        if steps >= 36:
            restart_steps, restart_times = steps // 4, 2
        sigmas = _karras(steps - restart_steps * restart_times, sigmas[-2], sigmas[0])
        restart_list = {0.1: [restart_steps + 1, restart_times, 2]}
    table = torch.tensor(sigmas, dtype=torch.float64)
    at = {int(torch.argmin(abs(table - k))): v for k, v in restart_list.items()}
    step_list = []
    for i in range(len(sigmas) - 1):
        step_list.append((sigmas[i], sigmas[i + 1]))
        if i + 1 in at:
            count, times, top = at[i + 1]
            low, high = i + 1, int(torch.argmin(abs(table - top)))
            if high < low:
                again = _karras(int(count), sigmas[low], sigmas[high])[:-1]
                for _ in range(int(times)):
                    step_list.extend(zip(again[:-1], again[1:], strict=True))
    last = None
    for old, new in step_list:
        if last is None:
            last = old
        elif last < old:
            x = x + noise() * (old**2 - last**2) ** 0.5
        d = (x - denoise(x, old)) / old
        if new == 0:
            x = x + d * (new - old)
        else:
            x_2 = x + d * (new - old)
            d_2 = (x_2 - denoise(x_2, new)) / new
            x = x + (d + d_2) / 2 * (new - old)
        last = new
    return x, len(step_list)


@pytest.mark.parametrize("steps", [6, 20, 36])
def test_restart_is_the_webuis(steps: int) -> None:
    scheduler: Any = make_scheduler("Restart", "Automatic", _config())  # Karras
    scheduler.set_timesteps(steps)
    sigmas = scheduler._schedule
    start = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    x0 = start * scheduler.init_noise_sigma
    ours = _drive(scheduler, x0, 2)
    expected, pairs = _webui_restart(_k_denoiser(scheduler, "epsilon"), x0, sigmas, _draws(2))
    assert len(scheduler.timesteps) == 2 * pairs - 1  # Heun: two evaluations a step but the last
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)


# --- DDIM CFG++: the webui's `ddim_cfgpp` -----------------------------------------------------


class _ToyUNet(torch.nn.Module):
    """Unconditional and conditional predictions stacked, as the pipeline batches them."""

    def forward(self, x: torch.Tensor, t: float) -> tuple[torch.Tensor]:
        uncond, cond = x.chunk(2)
        return (torch.cat([0.7 * _toy(uncond, t) - 0.02, _toy(cond, t)]),)


class _ToyPipe:
    """The diffusers pipeline's loop, classifier-free guidance included."""

    def __init__(self, scheduler: Any, guidance: float) -> None:
        self.unet, self.scheduler, self.guidance = _ToyUNet(), scheduler, guidance

    def __call__(self, latents: torch.Tensor) -> torch.Tensor:
        x = latents
        for t in self.scheduler.timesteps:
            uncond, cond = self.unet(torch.cat([x, x]), float(t))[0].chunk(2)
            guided = uncond + self.guidance * (cond - uncond)
            x = self.scheduler.step(guided, t, x).prev_sample
        return x


@pytest.mark.parametrize("guidance", [7.0, 3.5])
def test_ddim_cfgpp_is_the_webuis(guidance: float) -> None:
    scheduler: Any = make_scheduler("DDIM CFG++", "Automatic", _config())
    scheduler.set_timesteps(6)
    pipe = _ToyPipe(scheduler, guidance)
    start = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    ours = bound(pipe, scheduler)(start)
    assert not pipe.unet._forward_hooks and scheduler.uncond_batch is None  # nothing stays on
    alphas_cumprod = scheduler.alphas_cumprod.double()
    timesteps = torch.arange(1, 1000, 1000 // 6)[:6]
    alphas = alphas_cumprod[timesteps]
    alphas_prev = alphas_cumprod[torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))]
    x = start.double()  # the webui's loop (eta 0), transcribed
    for i in range(len(timesteps)):
        index = len(timesteps) - 1 - i
        t = float(timesteps[index])
        uncond, cond = 0.7 * _toy(x, t) - 0.02, _toy(x, t)
        e_t = uncond + (cond - uncond) * (guidance / 12.5)  # cond_scale x 1 / 12.5
        a_t, a_prev = alphas[index], alphas_prev[index]
        pred_x0 = (x - (1 - a_t).sqrt() * e_t) / a_t.sqrt()
        x = a_prev.sqrt() * pred_x0 + (1 - a_prev).sqrt() * uncond
    torch.testing.assert_close(ours, x.float(), rtol=1e-4, atol=1e-4)
    plain = make_scheduler("DDIM", "Automatic", _config())
    plain.set_timesteps(6)
    assert not torch.allclose(_ToyPipe(plain, guidance)(start), ours, atol=1e-2)


# --- on the tiny model -------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", NEW)
def test_each_new_sampler_runs_seeded_to_the_end(engine: DiffusersEngine, sampler: str) -> None:
    def run(seed: int) -> tuple[np.ndarray, Steps]:
        steps = Steps()
        result = engine.run(gen(sampler=sampler, seed=seed), EngineInputs(), steps)
        assert f"Sampler: {sampler}," in result.infotexts[0]
        return np.asarray(result.images[0].convert("RGB"), dtype=np.int16), steps

    first, steps = run(3)
    again, _ = run(3)
    assert np.array_equal(first, again)
    assert first.std() > 10  # no NaN (black) picture
    assert steps.seen[-1].step == steps.seen[-1].steps  # progress ends at 100 %


@pytest.mark.parametrize("sampler", ["DPM fast", "Restart"])
def test_img2img_starts_inside_the_plan(engine: DiffusersEngine, sampler: str) -> None:
    from PIL import Image

    picture = Image.new("RGB", (64, 64), (200, 40, 40))
    params = gen(kind="img2img", sampler=sampler, steps=6, denoising_strength=0.5)
    steps = Steps()
    result = engine.run(params, EngineInputs(init_images=[picture]), steps)
    assert steps.seen[-1].step == steps.seen[-1].steps
    assert np.asarray(result.images[0]).std() > 1


def test_dpm_adaptive_ends_the_pipeline_early(engine: DiffusersEngine) -> None:
    unet = engine._model.txt2img.unet
    seen: list[float] = []
    hook = unet.register_forward_pre_hook(lambda _m, args: seen.append(float(args[1])))
    try:
        steps = Steps()
        engine.run(gen(sampler="DPM adaptive", steps=10), EngineInputs(), steps)
    finally:
        hook.remove()
    budget, ran = steps.seen[0].steps, steps.seen[-1].step
    assert budget == 80 and ran < budget and steps.seen[-1].steps == ran  # 100 % at the end
    assert len(seen) == ran  # the skipped slots cost no evaluation
    assert seen[0] == 999 and len(set(seen)) == ran  # each at the sigma the solver asked for
