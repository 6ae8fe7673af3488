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
- DPM++ 2S a has no diffusers port: `ancestral.DPMpp2SAncestral` is k-diffusion's
  `sample_dpmpp_2s_ancestral` as a diffusers scheduler on Euler's sigma schedules.
- The samplers that add fresh noise as they go take the webui's eta and sigma noise
  (`eta_ancestral`, `s_noise`): subclasses in `ancestral` (DPM fast and DPM adaptive in
  `k_samplers`), set by `make_scheduler` for the samplers the webui gives them to.
- DPM++ 2M SDE Heun and DPM++ 3M SDE are diffusers' SDE DPM-Solver++ with `solver_type="heun"`
  and with `solver_order=3`; 3M SDE keeps order 3 to the end (`lower_order_final` off), as
  k-diffusion's `sample_dpmpp_3m_sde` (whose second step is the "heun" form, and whose
  third-order update `ancestral.DPMpp3MSDE` writes), and drops the next-to-last sigma of a
  one-longer schedule, as the webui does for it (`discard_next_to_last_sigma`). Their noise is
  diffusers' seeded Gaussian draws, as for DPM++ 2M SDE, not k-diffusion's Brownian tree.
- PLMS is diffusers' PNDM without its Runge-Kutta warm-up (`skip_prk_steps`): the webui's PLMS
  (a pseudo improved Euler first step, then Adams-Bashforth up to order 4) on DDIM's timesteps.
- DPM fast, DPM adaptive, Restart and DDIM CFG++ have no diffusers port: see `k_samplers`.
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
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    KDPM2DiscreteScheduler,
    LCMScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from sdcore.engine.ancestral import (
    DPM2Ancestral,
    DPMpp2SAncestral,
    DPMpp3MSDE,
    DPMppMultistepSDE,
    DPMppSDE,
    EulerAncestral,
)
from sdcore.engine.k_samplers import DDIMCFGpp, DPMAdaptive, DPMFast, Restart
from sdcore.webui.infotext import ETA_SAMPLERS, SIGMA_NOISE_SAMPLERS
from sdcore.webui.samplers import AUTOMATIC, NO_SCHEDULE, SAMPLERS, SCHEDULES, resolve


class _EulerAncestral(EulerAncestral):
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
_SDE = {**_UNIFORM, "algorithm_type": "sde-dpmsolver++"}
_DDIM_STEPS = {"timestep_spacing": "leading", "steps_offset": 1}
# webui sampler -> (diffusers scheduler class, options on top of the checkpoint's config)
SAMPLER_CLASSES: dict[str, tuple[type[Any], dict[str, Any]]] = {
    "Euler a": (_EulerAncestral, _UNIFORM),
    "Euler": (EulerDiscreteScheduler, _UNIFORM),
    "LMS": (LMSDiscreteScheduler, _UNIFORM),
    "Heun": (HeunDiscreteScheduler, _UNIFORM),
    "DPM2": (KDPM2DiscreteScheduler, _UNIFORM),
    "DPM2 a": (DPM2Ancestral, _UNIFORM),
    "DPM++ 2S a": (DPMpp2SAncestral, _UNIFORM),
    "DPM++ 2M": (
        DPMSolverMultistepScheduler,
        {**_UNIFORM, "algorithm_type": "dpmsolver++", "solver_order": 2},
    ),
    "DPM++ SDE": (DPMppSDE, _UNIFORM),
    "DPM++ 2M SDE": (DPMppMultistepSDE, {**_SDE, "solver_order": 2}),
    "DPM++ 2M SDE Heun": (
        DPMppMultistepSDE,
        {**_SDE, "solver_order": 2, "solver_type": "heun"},
    ),
    "DPM++ 3M SDE": (  # its second step is k-diffusion's exponential ("heun") one
        DPMpp3MSDE,
        {**_SDE, "solver_order": 3, "solver_type": "heun", "lower_order_final": False},
    ),
    "DPM fast": (DPMFast, _UNIFORM),
    "DPM adaptive": (DPMAdaptive, _UNIFORM),
    "Restart": (Restart, _UNIFORM),
    "DDIM": (DDIMScheduler, _DDIM_STEPS),
    "DDIM CFG++": (DDIMCFGpp, _DDIM_STEPS),
    "PLMS": (PNDMScheduler, {**_DDIM_STEPS, "skip_prk_steps": True}),
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
    *,
    eta: float = 1.0,
    s_noise: float = 1.0,
) -> SchedulerMixin:
    """A fresh scheduler for a resolved webui (sampler, schedule), built on the checkpoint's own
    scheduler config; `seeds` (one per image) seed DPM++ SDE's Brownian-tree noise; `sdxl`
    picks Align Your Steps' SDXL sigmas; `eta` and `s_noise` (the webui's `eta_ancestral` and
    `s_noise`) reach the samplers the webui gives them to, and no other.

    Raises
    ------
    InvalidInputError
        A sampler or schedule name that is not known (fields `sampler_name`, `scheduler`).
    """
    sampler, schedule = resolve(sampler, schedule)
    cls, options = SAMPLER_CLASSES[sampler]
    extra: dict[str, Any] = {}
    if sampler not in NO_SCHEDULE:
        extra = dict(SCHEDULE_OPTIONS[schedule])
    webui = schedule in WEBUI_SCHEDULES and sampler not in NO_SCHEDULE
    ends_at_min = issubclass(cls, _FINAL_SIGMA_MIN) or cls is _EulerAncestral  # (its twin)
    if webui and schedule == "KL Optimal" and ends_at_min:
        extra["final_sigmas_type"] = "sigma_min"  # the webui's KL Optimal stops there
    if cls is DPMppSDE:
        extra["noise_sampler_seed"] = list(seeds) if seeds else 0
    if cls is _EulerAncestral:
        built: Any = cls.from_config(base_config, **options)
        # its own spacings suffice for the uniform schedules; the others borrow Euler's sigmas
        built.schedule = {**options, **extra} if extra else {}
        built.webui_schedule = (schedule, sdxl) if webui else None
    else:
        built = cls.from_config(base_config, **{**options, **extra})
        if webui:
            _use_webui_sigmas(built, schedule, sdxl)
    if sampler in ETA_SAMPLERS:
        built.eta = float(eta)
    # (the webui gives s_noise to Euler, Heun and DPM2 too, where it scales the noise of its
    # sigma churn, which this service does not run: no effect there)
    if sampler in SIGMA_NOISE_SAMPLERS and hasattr(built, "s_noise"):
        built.s_noise = float(s_noise)
    return built  # type: ignore[no-any-return]
