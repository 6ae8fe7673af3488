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
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
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

from sdcore.samplers import AUTOMATIC, SAMPLERS, SCHEDULES, TIMESTEP_SAMPLERS, resolve


class _EulerAncestral(EulerAncestralDiscreteScheduler):
    """Euler a on any sigma schedule: the sigmas and timesteps come from an Euler scheduler with
    the same config and schedule options."""

    schedule: dict[str, Any] = {}

    def set_timesteps(self, num_inference_steps: int, device: Any = None) -> None:
        super().set_timesteps(num_inference_steps, device)  # type: ignore[misc]
        if not self.schedule:
            return
        config = self.config  # type: ignore[attr-defined]  # registered by diffusers' ConfigMixin
        twin = EulerDiscreteScheduler.from_config(config, **self.schedule)
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
}
assert set(SAMPLER_CLASSES) == set(SAMPLERS)
assert set(SCHEDULE_OPTIONS) == {s.label for s in SCHEDULES}


def make_scheduler(
    sampler: str,
    schedule: str,
    base_config: Any,
    seeds: list[int] | None = None,
) -> SchedulerMixin:
    """A fresh scheduler for a resolved webui (sampler, schedule), built on the checkpoint's own
    scheduler config; `seeds` (one per image) seed DPM++ SDE's Brownian-tree noise.

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
    if cls is DPMSolverSDEScheduler:
        extra["noise_sampler_seed"] = list(seeds) if seeds else 0
    if cls is _EulerAncestral:
        scheduler: Any = cls.from_config(base_config, **options)
        # its own spacings suffice for the uniform schedules; the others borrow Euler's sigmas
        scheduler.schedule = {**options, **extra} if extra else {}
        return scheduler
    built: SchedulerMixin = cls.from_config(base_config, **{**options, **extra})
    return built
