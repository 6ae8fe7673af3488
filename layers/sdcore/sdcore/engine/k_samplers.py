"""k-diffusion and webui samplers that diffusers does not port, as diffusers schedulers.

Each sampler is written once, as k-diffusion writes it: a loop over x (sigma-scaled latents)
that asks for one model evaluation at a time. Here the loop is a generator that yields
`(sigma, x)` where it would call the model and receives the denoised prediction back;
`_KLoop.step` feeds it the pipeline's evaluations one by one (the state machine DPM++ 2S a
and diffusers' Heun write by hand). Where the evaluations land depends only on the schedule,
not on the model, so `set_timesteps` learns them with a dry run of the same loop on a
zero tensor, and `timesteps` lists one entry per evaluation: the pipeline's loop, its
progress and its step count are the evaluations, so progress ends at 100 %.

- DPM fast: k-diffusion's `sample_dpm_fast` with the webui's arguments: `steps` model
  evaluations (orders 3, ..., 3 then 2, 1), log-uniform in sigma between the model's smallest
  and largest sigma, with the webui's eta and sigma noise (`eta`, `s_noise`; 1 by default).
  It ends at the model's smallest sigma, as in the webui, not at 0. img2img starts inside the
  schedule: the first step re-plans the remaining evaluations from the sigma the image was
  noised to, as the webui starts DPM fast from the img2img schedule's first sigma.
- Restart: the webui's `restart_sampler` (Heun steps; from 20 steps on, a Karras schedule of
  fewer steps plus a noised "restart" back up from sigma ~0.1 to ~2, twice from 36 steps on).
  img2img continues the plan from its starting step (Heun's two evaluations a step).
- DPM adaptive: k-diffusion's `sample_dpm_adaptive` within an evaluation budget (`DPMAdaptive`),
  with the webui's eta (not its sigma noise, which the webui does not give it).
- DDIM CFG++: the webui's `ddim_cfgpp`, which needs the unconditional prediction (`DDIMCFGpp`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from typing import Any

import numpy as np
import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler
from diffusers.schedulers.scheduling_ddim import DDIMSchedulerOutput
from diffusers.schedulers.scheduling_euler_discrete import EulerDiscreteSchedulerOutput

from sdcore.engine.ancestral import ancestral_step
from sdcore.engine.philox import randn_tensor

# (sigma, x) per model evaluation in, denoised predictions back, the final x returned
Loop = Generator[tuple[float, torch.Tensor], torch.Tensor, torch.Tensor]
Noise = Callable[[torch.Tensor], torch.Tensor]


def karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> list[float]:
    """k-diffusion's `get_sigmas_karras`, without the trailing 0."""
    ramp = np.linspace(0, 1, n)
    low, high = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return [float(s) for s in (high + ramp * (low - high)) ** rho]


class _KLoop(EulerDiscreteScheduler):
    """A k-diffusion loop driven one model evaluation per pipeline step (see the module doc)."""

    order = 1
    eta = 1.0  # the webui's ancestral eta and sigma noise, where it gives them (make_scheduler)
    s_noise = 1.0

    def loop(self, x: torch.Tensor, schedule: list[float], noise: Noise) -> Loop:
        raise NotImplementedError

    def schedule_for(self, step_sigmas: list[float]) -> list[float]:
        """The sigmas the loop walks (by default the scheduler's, ending with 0)."""
        return step_sigmas

    def set_timesteps(self, num_inference_steps: int, device: Any = None, **kwargs: Any) -> None:
        super().set_timesteps(num_inference_steps, device)  # type: ignore[misc]
        base: Any = self  # diffusers' attributes are set dynamically: untyped for mypy
        alphas = base.alphas_cumprod.numpy().astype(np.float64)
        self._table = ((1 - alphas) / alphas) ** 0.5  # the model's sigmas, ascending
        self._schedule = self.schedule_for([float(s) for s in base.sigmas])
        self._device = device
        self._use_plan(self._dry_run(self._schedule), 0)
        self.num_inference_steps = num_inference_steps
        self._run: Loop | None = None
        self._done: torch.Tensor | None = None
        self._generator: Any = None
        base._step_index = None
        base._begin_index = None

    def _dry_run(self, schedule: list[float]) -> tuple[list[float], float]:
        """The loop's evaluation sigmas and its final sigma, from a run on zeros."""
        evals: list[float] = []
        run = self.loop(torch.zeros(1), schedule, torch.zeros_like)
        try:
            sigma, _ = next(run)
            while True:
                evals.append(sigma)
                sigma, _ = run.send(torch.zeros(1))
        except StopIteration:
            pass
        return evals, self.final_sigma(schedule)

    def _use_plan(self, plan: tuple[list[float], float], start: int) -> None:
        """Evaluations from index `start` on; written in place, because the pipeline's loop
        iterates views of `timesteps` it took before the first step."""
        evals, final = plan
        base: Any = self
        steps = base._sigma_to_t(np.array(evals), np.log(self._table)).astype(np.float32)
        if start == 0:
            self.timesteps = torch.from_numpy(steps).to(device=self._device)
            self.sigmas = torch.tensor([*evals, final], dtype=torch.float32)
            return
        assert len(evals) == len(self.timesteps) - start
        self.timesteps[start:] = torch.from_numpy(steps).to(self.timesteps.device)
        self.sigmas[start:] = torch.tensor([*evals, final], dtype=torch.float32)

    def _noise(self, x: torch.Tensor) -> torch.Tensor:
        return randn_tensor(x.shape, generator=self._generator, device=x.device, dtype=x.dtype)

    def step(  # type: ignore[override]
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: Any = None,
        return_dict: bool = True,
        **kwargs: Any,
    ) -> Any:
        base: Any = self
        if base.step_index is None:
            base._init_step_index(timestep)
        index = int(base.step_index)
        sigma = float(self.sigmas[index])
        work = sample.to(torch.float32)
        out = model_output.to(torch.float32)
        if base.config.prediction_type == "v_prediction":
            denoised = out * (-sigma / (sigma**2 + 1) ** 0.5) + work / (sigma**2 + 1)
        else:
            denoised = work - sigma * out
        self._generator = generator
        if self._run is None:  # the first evaluation: start the loop where the pipeline does
            self._run = self.start(work, index)
            next(self._run, None)  # (a loop with nothing to do ends at once, as `advance` sees)
        x = self.advance(index, denoised)
        base._step_index = index + 1
        prev = x.to(model_output.dtype)
        if not return_dict:
            return (prev, denoised)
        return EulerDiscreteSchedulerOutput(prev_sample=prev, pred_original_sample=denoised)

    def advance(self, index: int, denoised: torch.Tensor) -> torch.Tensor:
        """The loop's next model input (or its result) given evaluation `index`'s prediction."""
        assert self._run is not None
        if self._done is not None:  # the loop has ended: later slots leave x as it is
            return self._done
        try:
            _, x = self._run.send(denoised)
        except StopIteration as done:
            self._done = done.value
            return done.value
        return x

    def start(self, x: torch.Tensor, index: int) -> Loop:
        """The loop from evaluation `index` on (img2img starts inside the plan)."""
        return self.loop(x, self._schedule, self._noise)

    def final_sigma(self, schedule: list[float]) -> float:
        return schedule[-1]


class DPMFast(_KLoop):
    """k-diffusion's `sample_dpm_fast` (DPM-Solver-fast, with `eta` and `s_noise`)."""

    def schedule_for(self, step_sigmas: list[float]) -> list[float]:
        # the webui's arguments: the model's sigma range and `steps` evaluations
        return [float(self._table[-1]), float(self._table[0]), len(step_sigmas) - 1]

    def final_sigma(self, schedule: list[float]) -> float:
        return schedule[1]

    def start(self, x: torch.Tensor, index: int) -> Loop:
        if index == 0:
            return self.loop(x, self._schedule, self._noise)
        # img2img: the remaining evaluations, from the sigma the image was noised to
        remaining = [float(self.sigmas[index]), float(self._table[0]), len(self.timesteps) - index]
        self._use_plan(self._dry_run(remaining), index)
        return self.loop(x, remaining, self._noise)

    def loop(self, x: torch.Tensor, schedule: list[float], noise: Noise) -> Loop:
        sigma_max, sigma_min, nfe = schedule[0], schedule[1], int(schedule[2])
        return _dpm_fast(x, sigma_max, sigma_min, nfe, noise, self.eta, self.s_noise)


def _dpm_fast(
    x: torch.Tensor,
    sigma_max: float,
    sigma_min: float,
    nfe: int,
    noise: Noise,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> Loop:
    """DPM-Solver-fast in t = -log(sigma): steps of order 3 (3 evaluations each), the last ones
    of lower order so that exactly `nfe` evaluations are made; ancestral noise at `eta`, times
    `s_noise`."""
    t_start, t_end = -math.log(sigma_max), -math.log(sigma_min)
    m = nfe // 3 + 1
    ts = np.linspace(t_start, t_end, m + 1)
    orders = [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]
    for i, order in enumerate(orders):
        t, t_next = float(ts[i]), float(ts[i + 1])
        s, s_next = math.exp(-t), math.exp(-t_next)
        down, up = ancestral_step(s, s_next, eta)
        t_to = min(t_end, -math.log(down)) if down > 0 else t_end
        up = max(s_next**2 - math.exp(-t_to) ** 2, 0.0) ** 0.5
        h = t_to - t
        eps = (x - (yield s, x)) / s
        total = x - math.exp(-t_to) * math.expm1(h) * eps
        if order == 2:
            s1 = t + h / 2
            u1 = x - math.exp(-s1) * math.expm1(h / 2) * eps
            eps1 = (u1 - (yield math.exp(-s1), u1)) / math.exp(-s1)
            total = total - math.exp(-t_to) * math.expm1(h) * (eps1 - eps)
        elif order == 3:
            r1, r2 = 1 / 3, 2 / 3
            s1, s2 = t + r1 * h, t + r2 * h
            u1 = x - math.exp(-s1) * math.expm1(r1 * h) * eps
            eps1 = (u1 - (yield math.exp(-s1), u1)) / math.exp(-s1)
            u2 = (
                x
                - math.exp(-s2) * math.expm1(r2 * h) * eps
                - math.exp(-s2) * (r2 / r1) * (math.expm1(r2 * h) / (r2 * h) - 1) * (eps1 - eps)
            )
            eps2 = (u2 - (yield math.exp(-s2), u2)) / math.exp(-s2)
            total = total - math.exp(-t_to) / r2 * (math.expm1(h) / h - 1) * (eps2 - eps)
        x = total + up * s_noise * noise(x)
    return x


class Restart(_KLoop):
    """The webui's `restart_sampler` (Restart sampling, Xu et al. 2023; s_noise 1)."""

    order = 2  # Heun's two evaluations a step: img2img's step slicing stays on step boundaries

    def loop(self, x: torch.Tensor, schedule: list[float], noise: Noise) -> Loop:
        return _restart(x, _restart_pairs(schedule), noise)

    def start(self, x: torch.Tensor, index: int) -> Loop:
        pairs = _restart_pairs(self._schedule)
        evals = 0  # img2img: skip the Heun steps before the pipeline's first evaluation
        while index > evals:
            evals += 1 if pairs[0][1] == 0 else 2
            pairs = pairs[1:]
        return _restart(x, pairs, self._noise)


def _restart_pairs(sigmas: list[float]) -> list[tuple[float, float]]:
    """The (from, to) sigma of every Heun step, restarts included, as the webui lists them."""
    steps = len(sigmas) - 1
    restart: dict[float, tuple[int, int, float]] = {}
    if steps >= 20:
        restart_steps, restart_times = (steps // 4, 2) if steps >= 36 else (9, 1)
        sigmas = [*karras(steps - restart_steps * restart_times, sigmas[-2], sigmas[0]), 0.0]
        restart = {0.1: (restart_steps + 1, restart_times, 2.0)}
    table = np.array(sigmas)
    at = {int(np.argmin(abs(table - key))): value for key, value in restart.items()}
    pairs = []
    for i in range(len(sigmas) - 1):
        pairs.append((sigmas[i], sigmas[i + 1]))
        if i + 1 in at:
            count, times, top = at[i + 1]
            low, high = i + 1, int(np.argmin(abs(table - top)))
            if high < low:
                again = karras(count, sigmas[low], sigmas[high])
                pairs.extend(list(zip(again[:-1], again[1:], strict=True)) * times)
    return pairs


def _restart(x: torch.Tensor, pairs: list[tuple[float, float]], noise: Noise) -> Loop:
    last: float | None = None
    for old, new in pairs:
        if last is not None and last < old:  # a restart: noise back up to `old`
            x = x + noise(x) * (old**2 - last**2) ** 0.5
        d = (x - (yield old, x)) / old
        x_next = x + d * (new - old)
        if new != 0:  # Heun's correction
            d_next = (x_next - (yield new, x_next)) / new
            x_next = x + (d + d_next) / 2 * (new - old)
        x, last = x_next, new
    return x


# --- DPM adaptive -------------------------------------------------------------------------------

# model evaluations a requested step buys DPM adaptive: its budget is this many times `steps`
ADAPTIVE_EVALS_PER_STEP = 8


class DPMAdaptive(_KLoop):
    """k-diffusion's `sample_dpm_adaptive` (DPM-Solver-23 with error control; the webui's
    arguments: the model's sigma range, its eta, rtol 0.05, atol 0.0078, h_init 0.05, the
    I controller at safety 0.81).

    How many evaluations it takes depends on the model, so it gets a budget instead:
    `ADAPTIVE_EVALS_PER_STEP` x `steps` slots, laid out as Euler's schedule with each sigma
    repeated (so img2img's step slicing starts it on a step's sigma, with the budget left).
    After each evaluation the loop's next sigma is written into `timesteps` and `sigmas` in
    place (the pipeline's loop iterates views of them). When the solver reaches the model's
    smallest sigma (where it ends, as in the webui), `bound` has given it the pipeline: it
    sets the pipeline's step count to the steps run, so the progress ends at 100 %, and
    interrupts the remaining slots, which then cost no evaluation. Should the budget run out
    first, the result is the last evaluation's denoised prediction. One more difference from
    k-diffusion: a rejected step re-uses the prediction at its start instead of evaluating
    the model again at the same point (the same value, one evaluation fewer)."""

    order = ADAPTIVE_EVALS_PER_STEP
    pipe: Any = None  # the pipeline running this scheduler, for the duration of the call

    def set_timesteps(self, num_inference_steps: int, device: Any = None, **kwargs: Any) -> None:
        EulerDiscreteScheduler.set_timesteps(self, num_inference_steps, device)
        base: Any = self  # diffusers' attributes are set dynamically: untyped for mypy
        alphas = base.alphas_cumprod.numpy().astype(np.float64)
        self._table = ((1 - alphas) / alphas) ** 0.5
        self._device = device
        slots = [float(s) for s in base.sigmas[:-1] for _ in range(self.order)]
        self._use_plan((slots, float(self._table[0])), 0)
        self.num_inference_steps = num_inference_steps
        self._run = None
        self._generator = None
        self._done = None
        base._step_index = None
        base._begin_index = None

    def index_for_timestep(self, timestep: Any, schedule_timesteps: Any = None) -> int:
        # txt2img starts at the first slot (diffusers takes a repeated timestep's second one)
        slots = self.timesteps if schedule_timesteps is None else schedule_timesteps
        return int((slots == timestep).nonzero()[0].item())

    def loop(self, x: torch.Tensor, schedule: list[float], noise: Noise) -> Loop:
        return _dpm_adaptive(x, schedule[0], schedule[1], noise, self.eta, self.s_noise)

    def start(self, x: torch.Tensor, index: int) -> Loop:
        return self.loop(x, [float(self.sigmas[index]), float(self._table[0])], self._noise)

    def advance(self, index: int, denoised: torch.Tensor) -> torch.Tensor:
        assert self._run is not None
        if self._done is not None:  # solved: the pipeline was not told to stop
            return self._done
        try:
            sigma, x = self._run.send(denoised)
        except StopIteration as done:
            self._done = done.value
            if self.pipe is not None:
                self.pipe._num_timesteps = index + 1
                self.pipe._interrupt = True
            return self._done
        if index + 1 == len(self.timesteps):  # out of budget
            self._run.close()
            self._done = denoised
            return denoised
        base: Any = self
        t = base._sigma_to_t(np.array([sigma]), np.log(self._table))
        self.timesteps[index + 1] = float(t[0])
        self.sigmas[index + 1] = sigma
        return x


def _dpm_adaptive(
    x: torch.Tensor,
    sigma_max: float,
    sigma_min: float,
    noise: Noise,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> Loop:
    """DPM-Solver-23 from `sigma_max` to `sigma_min` in t = -log(sigma): each step compares the
    second- and third-order solutions and an I controller sizes the next one; ancestral noise
    at `eta`, times `s_noise`."""
    rtol, atol, accept_safety, eps_guard = 0.05, 0.0078, 0.81, 1e-8
    s, t_end, h = -math.log(sigma_max), -math.log(sigma_min), 0.05
    x_prev, eps = x, None
    while s < t_end - 1e-5:
        t = min(t_end, s + h)
        sig_s, sig_t = math.exp(-s), math.exp(-t)
        down, up = ancestral_step(sig_s, sig_t, eta)
        t_to = min(t_end, -math.log(down)) if down > 0 else t_end
        up = max(sig_t**2 - math.exp(-t_to) ** 2, 0.0) ** 0.5
        step = t_to - s
        if eps is None:  # a rejected step keeps the prediction at its start
            eps = (x - (yield sig_s, x)) / sig_s
        s1, s2 = s + step / 3, s + 2 * step / 3
        u1 = x - math.exp(-s1) * math.expm1(step / 3) * eps
        eps1 = (u1 - (yield math.exp(-s1), u1)) / math.exp(-s1)
        first = x - math.exp(-t_to) * math.expm1(step) * eps
        low = first - math.exp(-t_to) * 1.5 * math.expm1(step) * (eps1 - eps)
        u2 = (
            x
            - math.exp(-s2) * math.expm1(2 * step / 3) * eps
            - math.exp(-s2) * 2 * (math.expm1(2 * step / 3) / (2 * step / 3) - 1) * (eps1 - eps)
        )
        eps2 = (u2 - (yield math.exp(-s2), u2)) / math.exp(-s2)
        high = first - math.exp(-t_to) * 1.5 * (math.expm1(step) / step - 1) * (eps2 - eps)
        delta = torch.clamp(rtol * torch.maximum(low.abs(), x_prev.abs()), min=atol)
        error = float(torch.linalg.norm((low - high) / delta)) / low.numel() ** 0.5
        order = 1.5 if eta else 3  # the controller's order, as k-diffusion sets it
        factor = 1 + math.atan((1 / (error + eps_guard)) ** (1 / order) - 1)
        h *= factor
        if factor >= accept_safety:
            x_prev, x, s, eps = low, high + up * s_noise * noise(x), t, None
    return x


# --- DDIM CFG++ ---------------------------------------------------------------------------------


class DDIMCFGpp(DDIMScheduler):
    """The webui's `ddim_cfgpp` (CFG++, Chung et al. 2024; eta 0): DDIM whose denoised estimate
    uses the guidance scale divided by 12.5 and whose step direction is the unconditional
    noise prediction. The pipeline hands a scheduler only the guided prediction, so `bound`
    records the UNet's unconditional half for the run (a forward hook on this task's call
    only, removed when the call ends); without one (CFG scale 1: no unconditional pass) the
    step is plain DDIM's."""

    uncond_batch: torch.Tensor | None = None  # the UNet's last output, CFG halves stacked

    def step(  # type: ignore[override]
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        eta: float = 0.0,
        use_clipped_model_output: bool = False,
        generator: Any = None,
        variance_noise: Any = None,
        return_dict: bool = True,
    ) -> Any:
        base: Any = self  # diffusers' attributes are set dynamically: untyped for mypy
        out = model_output.to(torch.float32)
        x = sample.to(torch.float32)
        last = self.uncond_batch
        batch = out.shape[0]
        uncond = last[:batch].to(out) if last is not None and last.shape[0] == 2 * batch else out
        t = int(timestep)
        prev_t = t - base.config.num_train_timesteps // base.num_inference_steps
        a_t = base.alphas_cumprod[t]
        a_prev = base.alphas_cumprod[prev_t] if prev_t >= 0 else base.final_alpha_cumprod

        def eps(pred: torch.Tensor) -> torch.Tensor:
            if base.config.prediction_type == "v_prediction":
                return a_t**0.5 * pred + (1 - a_t) ** 0.5 * x
            return pred

        e_u = eps(uncond)
        e_t = e_u + (eps(out) - e_u) / 12.5  # the webui's guidance scale x 1/12.5
        pred_x0 = (x - (1 - a_t) ** 0.5 * e_t) / a_t**0.5
        prev = (a_prev**0.5 * pred_x0 + (1 - a_prev) ** 0.5 * e_u).to(model_output.dtype)
        if not return_dict:
            return (prev, pred_x0)
        return DDIMSchedulerOutput(prev_sample=prev, pred_original_sample=pred_x0)


def bound(pipe: Any, scheduler: Any) -> Any:
    """`pipe`, or for a sampler that needs more than the guided prediction, a call of `pipe`
    that gives the scheduler what it needs for that call only."""
    if isinstance(scheduler, DPMAdaptive):

        def solve(*args: Any, **kwargs: Any) -> Any:
            scheduler.pipe = pipe
            try:
                return pipe(*args, **kwargs)
            finally:
                scheduler.pipe = None

        return solve
    if not isinstance(scheduler, DDIMCFGpp):
        return pipe

    def record(_module: Any, _args: Any, output: Any) -> None:
        scheduler.uncond_batch = output[0] if isinstance(output, tuple) else output.sample

    def call(*args: Any, **kwargs: Any) -> Any:
        hook = pipe.unet.register_forward_hook(record)
        try:
            return pipe(*args, **kwargs)
        finally:
            hook.remove()
            scheduler.uncond_batch = None

    return call
