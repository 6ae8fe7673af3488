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
- DPM++ 2S a has no diffusers port; the closest is the singlestep second-order DPM-Solver++ in
  its SDE form (noise added each step, as an ancestral sampler does).
- DDIM uses leading spacing with offset 1 (the webui's DDIM timesteps); UniPC the webui's
  order 3 and time-uniform steps, with diffusers' bh2 variant (the webui's bh1 gives NaN here).
- Euler a: diffusers' `EulerAncestralDiscreteScheduler` has no Karras/Exponential/Beta sigmas, so
  those schedules borrow `EulerDiscreteScheduler`'s sigmas and timesteps (same layout).
"""

from __future__ import annotations

from typing import Any

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    DPMSolverSDEScheduler,
    DPMSolverSinglestepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    KDPM2AncestralDiscreteScheduler,
    KDPM2DiscreteScheduler,
    LCMScheduler,
    LMSDiscreteScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

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


_UNIFORM = {"timestep_spacing": "linspace"}
# webui sampler -> (diffusers scheduler class, options on top of the checkpoint's config)
SAMPLER_CLASSES: dict[str, tuple[type[Any], dict[str, Any]]] = {
    "Euler a": (_EulerAncestral, _UNIFORM),
    "Euler": (EulerDiscreteScheduler, _UNIFORM),
    "LMS": (LMSDiscreteScheduler, _UNIFORM),
    "Heun": (HeunDiscreteScheduler, _UNIFORM),
    "DPM2": (KDPM2DiscreteScheduler, _UNIFORM),
    "DPM2 a": (KDPM2AncestralDiscreteScheduler, _UNIFORM),
    "DPM++ 2S a": (
        DPMSolverSinglestepScheduler,
        {**_UNIFORM, "algorithm_type": "sde-dpmsolver++", "solver_order": 2},
    ),
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
