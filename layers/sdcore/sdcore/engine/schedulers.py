"""webui samplers and schedule types -> diffusers schedulers.

The mapping follows the table in diffusers' scheduler overview ("A1111/k-diffusion -> Diffusers",
and its "Noise schedules and schedule types"), with these choices where the table is silent or
differs from what the webui runs:

- k-diffusion samplers (everything but DDIM, UniPC, LCM) use `timestep_spacing="linspace"`: the
  webui's uniform schedule takes sigmas at timesteps evenly spread from 999 to 0, which is what
  "linspace" gives; SD checkpoints' own configs say "leading", which never starts at pure noise.
- DPM++ SDE is k-diffusion's `sample_dpmpp_sde` (Brownian-tree noise), which diffusers ports as
  `DPMSolverSDEScheduler` (needs torchsde); the table's `DPMSolverSinglestepScheduler` is the
  deterministic solver.
- DPM++ 2S a has no diffusers port: `_DPMpp2SAncestral` is k-diffusion's
  `sample_dpmpp_2s_ancestral` (eta 1) as a diffusers scheduler on Euler's sigma schedules: each
  step evaluates the model at sigma and at the log-space midpoint towards the ancestral step's
  sigma_down, then adds noise of sigma_up; the last step (to sigma 0) is Euler's.
- DDIM uses leading spacing with offset 1 (the webui's DDIM timesteps); UniPC the webui's
  order 3 and time-uniform steps, with diffusers' bh2 variant (the webui's bh1 gives NaN here).
- Euler a: diffusers' `EulerAncestralDiscreteScheduler` has no Karras/Exponential/Beta sigmas, so
  those schedules borrow `EulerDiscreteScheduler`'s sigmas and timesteps (same layout).
- Schedule types diffusers lacks (Polyexponential, KL Optimal, Align Your Steps, Simple, Normal,
  DDIM) are the webui's formulas (`sd_schedulers.py`) over the model's own sigma table, handed
  to each scheduler through its Karras hook (`_convert_to_karras`), so every sigma sampler
  places its timesteps, midpoints (Heun, DPM2) and final sigma as it does for Karras. KL
  Optimal ends at the model's smallest sigma, as in the webui, where the scheduler can
  (`final_sigmas_type`: Euler, Euler a, DPM++ 2S a, DPM++ 2M, DPM++ 2M SDE); the others end at 0.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# LMS and the Beta schedule need scipy, DPM++ SDE torchsde (imported by diffusers' scheduler):
# imported here, so a worker without them fails at start, not mid-task
import scipy.integrate  # noqa: F401
import scipy.stats  # noqa: F401
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    DPMSolverSDEScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    KDPM2AncestralDiscreteScheduler,
    KDPM2DiscreteScheduler,
    LCMScheduler,
    LMSDiscreteScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_euler_discrete import EulerDiscreteSchedulerOutput
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor

from sdcore.webui.samplers import AUTOMATIC, SAMPLERS, SCHEDULES, TIMESTEP_SAMPLERS, resolve


class _EulerAncestral(EulerAncestralDiscreteScheduler):
    """Euler a on any sigma schedule: the sigmas and timesteps come from an Euler scheduler with
    the same config and schedule options."""

    schedule: dict[str, Any] = {}
    webui_schedule: tuple[str, bool] | None = None  # (a webui-only schedule type, SDXL)

    def set_timesteps(self, num_inference_steps: int, device: Any = None) -> None:
        super().set_timesteps(num_inference_steps, device)  # type: ignore[misc]
        if not self.schedule:
            return
        config = self.config  # type: ignore[attr-defined]  # registered by diffusers' ConfigMixin
        twin = EulerDiscreteScheduler.from_config(config, **self.schedule)
        if self.webui_schedule is not None:
            _use_webui_sigmas(twin, *self.webui_schedule)
        twin.set_timesteps(num_inference_steps, device)
        self.sigmas = twin.sigmas.to("cpu")
        self.timesteps = twin.timesteps


class _DPMpp2SAncestral(EulerDiscreteScheduler):
    """k-diffusion's DPM-Solver++(2S) ancestral sampler (eta 1, s_noise 1). Two model
    evaluations per step but the last, so `timesteps` interleaves each step's sigma with its
    midpoint (`order` 2 keeps img2img's step slicing on step boundaries, as for Heun)."""

    order = 2

    def set_timesteps(self, num_inference_steps: int, device: Any = None, **kwargs: Any) -> None:
        super().set_timesteps(num_inference_steps, device)  # type: ignore[misc]
        base: Any = self  # diffusers' attributes are set dynamically: untyped for mypy
        sigmas = [float(x) for x in base.sigmas]  # the step sigmas, ending with 0
        # (sigma, sigma_down, sigma_up, sigma_next) per step; eval -> (step, first stage)
        self._plan: list[tuple[float, float, float, float]] = []
        self._stage: list[tuple[int, bool]] = []
        evals: list[float] = []
        for i, (sigma, nxt) in enumerate(zip(sigmas[:-1], sigmas[1:], strict=True)):
            up = min(nxt, (nxt**2 * (sigma**2 - nxt**2) / sigma**2) ** 0.5)
            down = (nxt**2 - up**2) ** 0.5
            self._plan.append((sigma, down, up, nxt))
            evals.append(sigma)
            self._stage.append((i, True))
            if down > 0:
                evals.append(math.sqrt(sigma * down))  # exp(-(t + h/2)) with t = -log(sigma)
                self._stage.append((i, False))
        alphas = base.alphas_cumprod.numpy()
        log_sigmas = np.log(((1 - alphas) / alphas) ** 0.5)
        steps = base._sigma_to_t(np.array(evals), log_sigmas)
        self.timesteps = torch.from_numpy(steps.astype(np.float32)).to(device=device)
        self.sigmas = torch.tensor([*evals, 0.0], dtype=torch.float32)
        self.num_inference_steps = num_inference_steps
        self._x: torch.Tensor | None = None
        base._step_index = None
        base._begin_index = None

    def step(  # type: ignore[override]
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: Any = None,
        return_dict: bool = True,
        **kwargs: Any,
    ) -> Any:
        base: Any = self  # diffusers' attributes are set dynamically: untyped for mypy
        if base.step_index is None:
            base._init_step_index(timestep)
        index = int(base.step_index)
        sigma = float(base.sigmas[index])
        work = sample.to(torch.float32)
        out = model_output.to(torch.float32)
        if base.config.prediction_type == "v_prediction":
            denoised = out * (-sigma / (sigma**2 + 1) ** 0.5) + work / (sigma**2 + 1)
        else:
            denoised = work - sigma * out
        step, first = self._stage[index]
        sigma_i, down, up, nxt = self._plan[step]
        if first and down == 0:  # the last step: Euler to sigma 0
            x = denoised
        elif first:  # half a step in log-sigma towards sigma_down
            self._x = work
            h = math.log(sigma_i) - math.log(down)
            x = (math.sqrt(sigma_i * down) / sigma_i) * work - math.expm1(-h / 2) * denoised
        else:  # the full step with the midpoint's prediction, then the ancestral noise
            assert self._x is not None
            h = math.log(sigma_i) - math.log(down)
            x = (down / sigma_i) * self._x - math.expm1(-h) * denoised
            if nxt > 0:
                noise = randn_tensor(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                x = x + noise * up
        base._step_index = index + 1
        prev = x.to(model_output.dtype)
        if not return_dict:
            return (prev, denoised)
        return EulerDiscreteSchedulerOutput(prev_sample=prev, pred_original_sample=denoised)


# schedule types the webui computes itself (no diffusers option gives them)
WEBUI_SCHEDULES = ("Polyexponential", "KL Optimal", "Align Your Steps", "Simple", "Normal", "DDIM")
# schedulers that can end on the model's smallest sigma instead of 0
_FINAL_SIGMA_MIN = (EulerDiscreteScheduler, DPMSolverMultistepScheduler)

# --- the webui's own sigma schedules ------------------------------------------------------------

# Align Your Steps' published 10-step sigmas (NVIDIA), as the webui ships them
_AYS_SD1 = [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029]
_AYS_SDXL = [14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029]


def _t_to_sigma(t: np.ndarray, table: np.ndarray) -> np.ndarray:
    """k-diffusion's `t_to_sigma`: log-sigma interpolated between integer timesteps."""
    low, high = np.floor(t).astype(int), np.ceil(t).astype(int)
    frac = t - low
    log_sigmas = np.log(table)
    return np.exp((1 - frac) * log_sigmas[low] + frac * log_sigmas[high])


def _loglinear(sigmas: list[float], n: int) -> np.ndarray:
    ys = np.interp(np.linspace(0, 1, n), np.linspace(0, 1, len(sigmas)), np.log(sigmas[::-1]))
    return np.exp(ys)[::-1].copy()


def webui_sigmas(schedule: str, n: int, table: np.ndarray, sdxl: bool = False) -> np.ndarray:
    """The first `n` sigmas (the final one, 0 or sigma_min, is the scheduler's) of a webui
    schedule type, from the model's sigma table (ascending, one per training timestep)."""
    sigma_min, sigma_max = float(table[0]), float(table[-1])
    if schedule == "Polyexponential":  # k-diffusion's, rho 1
        ramp = np.linspace(1, 0, n)
        return np.exp(ramp * (math.log(sigma_max) - math.log(sigma_min)) + math.log(sigma_min))
    if schedule == "KL Optimal":
        steps = np.arange(n + 1) / n
        arc_min, arc_max = math.atan(sigma_min), math.atan(sigma_max)
        return np.tan(steps * arc_min + (1 - steps) * arc_max)[:-1]
    if schedule == "Align Your Steps":
        published = _AYS_SDXL if sdxl else _AYS_SD1
        # as published for 11 steps (then 0), else log-linear through them to sigma_min
        return np.array(published) if n == len(published) else _loglinear(published, n)
    if schedule == "Simple":
        stride = len(table) / n
        return np.array([table[-(1 + int(x * stride))] for x in range(n)])
    if schedule == "Normal":  # k-diffusion's sigma_to_t of sigma_max and sigma_min: 999 and 0
        return _t_to_sigma(np.linspace(len(table) - 1, 0, n), table)
    if schedule == "DDIM":
        stride = max(len(table) // n, 1)
        return np.array(table[1::stride][::-1])
    raise ValueError(f"no webui sigma formula for {schedule!r}")


def _use_webui_sigmas(scheduler: Any, schedule: str, sdxl: bool) -> None:
    """Make `scheduler`'s Karras hook (on, in its config) give the webui schedule's sigmas."""
    alphas = scheduler.alphas_cumprod.numpy().astype(np.float64)
    table = ((1 - alphas) / alphas) ** 0.5

    def sigmas(in_sigmas: Any, num_inference_steps: int | None = None) -> np.ndarray:
        n = num_inference_steps or scheduler.num_inference_steps
        return webui_sigmas(schedule, int(n), table, sdxl)

    scheduler._convert_to_karras = sigmas


_UNIFORM = {"timestep_spacing": "linspace"}
# webui sampler -> (diffusers scheduler class, options on top of the checkpoint's config)
SAMPLER_CLASSES: dict[str, tuple[type[Any], dict[str, Any]]] = {
    "Euler a": (_EulerAncestral, _UNIFORM),
    "Euler": (EulerDiscreteScheduler, _UNIFORM),
    "LMS": (LMSDiscreteScheduler, _UNIFORM),
    "Heun": (HeunDiscreteScheduler, _UNIFORM),
    "DPM2": (KDPM2DiscreteScheduler, _UNIFORM),
    "DPM2 a": (KDPM2AncestralDiscreteScheduler, _UNIFORM),
    "DPM++ 2S a": (_DPMpp2SAncestral, _UNIFORM),
    "DPM++ 2M": (
        DPMSolverMultistepScheduler,
        {**_UNIFORM, "algorithm_type": "dpmsolver++", "solver_order": 2},
    ),
    "DPM++ SDE": (DPMSolverSDEScheduler, _UNIFORM),
    "DPM++ 2M SDE": (
        DPMSolverMultistepScheduler,
        {**_UNIFORM, "algorithm_type": "sde-dpmsolver++", "solver_order": 2},
    ),
    "DDIM": (DDIMScheduler, {"timestep_spacing": "leading", "steps_offset": 1}),
    "UniPC": (
        UniPCMultistepScheduler,
        # the webui's order 3 and time-uniform steps; its variant bh1 gives NaN latents in
        # diffusers 0.42 (every step count tried), so diffusers' default bh2
        {**_UNIFORM, "solver_order": 3, "lower_order_final": True},
    ),
    "LCM": (LCMScheduler, {}),
}
# webui schedule type -> scheduler options (diffusers' "Noise schedules and schedule types")
SCHEDULE_OPTIONS: dict[str, dict[str, Any]] = {
    AUTOMATIC: {},
    "Uniform": {},
    "Karras": {"use_karras_sigmas": True},
    "Exponential": {"use_exponential_sigmas": True},
    "Beta": {"use_beta_sigmas": True},
    "SGM Uniform": {"timestep_spacing": "trailing"},
    # the webui's own formulas, through the Karras hook (`_use_webui_sigmas`)
    **{label: {"use_karras_sigmas": True} for label in WEBUI_SCHEDULES},
}
assert set(SAMPLER_CLASSES) == set(SAMPLERS)
assert set(SCHEDULE_OPTIONS) == {s.label for s in SCHEDULES}


def make_scheduler(
    sampler: str,
    schedule: str,
    base_config: Any,
    seeds: list[int] | None = None,
    sdxl: bool = False,
) -> SchedulerMixin:
    """A fresh scheduler for a resolved webui (sampler, schedule), built on the checkpoint's own
    scheduler config; `seeds` (one per image) seed DPM++ SDE's Brownian-tree noise; `sdxl`
    picks Align Your Steps' SDXL sigmas.

    Raises
    ------
    InvalidInputError
        A sampler or schedule name that is not known (fields `sampler_name`, `scheduler`).
    """
    sampler, schedule = resolve(sampler, schedule)
    cls, options = SAMPLER_CLASSES[sampler]
    extra: dict[str, Any] = {}
    if sampler not in TIMESTEP_SAMPLERS:
        extra = dict(SCHEDULE_OPTIONS[schedule])
    webui = schedule in WEBUI_SCHEDULES and sampler not in TIMESTEP_SAMPLERS
    ends_at_min = issubclass(cls, _FINAL_SIGMA_MIN) or cls is _EulerAncestral  # (its twin)
    if webui and schedule == "KL Optimal" and ends_at_min:
        extra["final_sigmas_type"] = "sigma_min"  # the webui's KL Optimal stops there
    if cls is DPMSolverSDEScheduler:
        extra["noise_sampler_seed"] = list(seeds) if seeds else 0
    if cls is _EulerAncestral:
        scheduler: Any = cls.from_config(base_config, **options)
        # its own spacings suffice for the uniform schedules; the others borrow Euler's sigmas
        scheduler.schedule = {**options, **extra} if extra else {}
        scheduler.webui_schedule = (schedule, sdxl) if webui else None
        return scheduler
    built: Any = cls.from_config(base_config, **{**options, **extra})
    if webui:
        _use_webui_sigmas(built, schedule, sdxl)
    return built  # type: ignore[no-any-return]
