"""Sampler and schedule-type names as the webui spells them, and how a request's pair of names
resolves (torch-free, so the API edge validates cheaply; the engine maps the result to diffusers).

The webui (1.9+) splits what older versions called "DPM++ 2M Karras" into a sampler ("DPM++ 2M")
and a schedule type ("Karras"); it still accepts the old suffixed names, and so do we. A schedule
of "Automatic" means the sampler's own default: Karras for DPM++ 2M, DPM++ SDE, DPM++ 2S a,
DPM2, DPM2 a and Restart, Exponential for DPM++ 2M SDE, DPM++ 2M SDE Heun and DPM++ 3M SDE,
the model's uniform sigmas for the rest. DPM fast and DPM adaptive space their own steps
(log-uniform between the model's smallest and largest sigma), so, like the timestep samplers,
they take no schedule type.
"""

from __future__ import annotations

from dataclasses import dataclass

from sdcore.errors import InvalidInputError

SAMPLERS: tuple[str, ...] = (
    "Euler a",
    "Euler",
    "LMS",
    "Heun",
    "DPM2",
    "DPM2 a",
    "DPM++ 2S a",
    "DPM++ 2M",
    "DPM++ SDE",
    "DPM++ 2M SDE",
    "DPM++ 2M SDE Heun",
    "DPM++ 3M SDE",
    "DPM fast",
    "DPM adaptive",
    "Restart",
    "DDIM",
    "DDIM CFG++",
    "PLMS",
    "UniPC",
    "LCM",
)
DEFAULT_SAMPLER = "Euler"
# the webui's own aliases (k-diffusion function names); accepted wherever a sampler name is
SAMPLER_ALIASES: dict[str, tuple[str, ...]] = {
    "Euler a": ("k_euler_a", "k_euler_ancestral"),
    "Euler": ("k_euler",),
    "LMS": ("k_lms",),
    "Heun": ("k_heun",),
    "DPM2": ("k_dpm_2",),
    "DPM2 a": ("k_dpm_2_a",),
    "DPM++ 2S a": ("k_dpmpp_2s_a",),
    "DPM++ 2M": ("k_dpmpp_2m",),
    "DPM++ SDE": ("k_dpmpp_sde",),
    "DPM++ 2M SDE": ("k_dpmpp_2m_sde",),
    "DPM++ 2M SDE Heun": ("k_dpmpp_2m_sde_heun",),
    "DPM++ 3M SDE": ("k_dpmpp_3m_sde",),
    "DPM fast": ("k_dpm_fast",),
    "DPM adaptive": ("k_dpm_ad",),
    "Restart": ("restart",),
    "DDIM": ("ddim",),
    "DDIM CFG++": ("ddim_cfgpp",),
    "PLMS": ("plms",),
    "UniPC": ("unipc",),
    "LCM": ("k_lcm",),
}

AUTOMATIC = "Automatic"


@dataclass(frozen=True)
class Schedule:
    """A webui schedule type (the `/sdapi/v1/schedulers` entry)."""

    name: str
    label: str
    default_rho: float = -1
    need_inner_model: bool = False
    aliases: tuple[str, ...] = ()


# The webui's schedule types (1.10), in its order.
SCHEDULES: tuple[Schedule, ...] = (
    Schedule("automatic", AUTOMATIC),
    Schedule("uniform", "Uniform", need_inner_model=True),
    Schedule("karras", "Karras", default_rho=7.0),
    Schedule("exponential", "Exponential"),
    Schedule("polyexponential", "Polyexponential", default_rho=1.0),
    Schedule("sgm_uniform", "SGM Uniform", need_inner_model=True, aliases=("SGMUniform",)),
    Schedule("kl_optimal", "KL Optimal"),
    Schedule("align_your_steps", "Align Your Steps"),
    Schedule("simple", "Simple", need_inner_model=True),
    Schedule("normal", "Normal", need_inner_model=True),
    Schedule("ddim", "DDIM", need_inner_model=True),
    Schedule("beta", "Beta", need_inner_model=True),
)
# webui 1.9+: the schedule a sampler uses when the request says Automatic
DEFAULT_SCHEDULE: dict[str, str] = {
    "DPM++ 2S a": "Karras",
    "DPM++ 2M": "Karras",
    "DPM2": "Karras",
    "DPM2 a": "Karras",
    "DPM++ SDE": "Karras",
    "DPM++ 2M SDE": "Exponential",
    "DPM++ 2M SDE Heun": "Exponential",
    "DPM++ 3M SDE": "Exponential",
    "Restart": "Karras",
}
# samplers the webui runs on timesteps rather than sigmas: a schedule type does not apply to
# them and is ignored, as the webui ignores it
TIMESTEP_SAMPLERS = frozenset({"DDIM", "DDIM CFG++", "PLMS", "UniPC", "LCM"})
# k-diffusion samplers that place their own steps: the schedule type is ignored, as for the above
OWN_STEP_SAMPLERS = frozenset({"DPM fast", "DPM adaptive"})
NO_SCHEDULE = TIMESTEP_SAMPLERS | OWN_STEP_SAMPLERS

UPSCALERS: tuple[str, ...] = ("Lanczos", "Nearest")
# the webui's "None": extras leaves the image as it is (webui clients send it by default)
NO_UPSCALER = "None"
# the hires fix's upscalers (`hr_upscaler`): latent modes, then the image resamplers
HIRES_LATENT_UPSCALERS: tuple[str, ...] = (
    "Latent",
    "Latent (antialiased)",
    "Latent (bicubic)",
    "Latent (bicubic antialiased)",
    "Latent (nearest)",
    "Latent (nearest-exact)",
)
HIRES_IMAGE_UPSCALERS = UPSCALERS

_SAMPLER_NAMES = {
    **{s.lower(): s for s in SAMPLERS},
    **{a.lower(): s for s, aliases in SAMPLER_ALIASES.items() for a in aliases},
}
_SCHEDULE_NAMES = {key.lower(): s.label for s in SCHEDULES for key in (s.name, s.label, *s.aliases)}


def _valid_samplers() -> str:
    return ", ".join(SAMPLERS)


def _valid_schedules() -> str:
    return ", ".join(s.label for s in SCHEDULES)


def sampler_options(sampler: str) -> dict[str, str]:
    """The `options` of a `/sdapi/v1/samplers` entry: the default schedule, as the webui lists."""
    default = DEFAULT_SCHEDULE.get(sampler)
    return {"scheduler": _schedule(default).name} if default else {}


def _schedule(label: str) -> Schedule:
    return next(s for s in SCHEDULES if s.label == label)


def check_schedule(value: str) -> str:
    """The label of a schedule type given by name, label or alias (any case).

    Raises
    ------
    InvalidInputError
        Field `scheduler`, listing the valid labels.
    """
    label = _SCHEDULE_NAMES.get(value.strip().lower())
    if label is None:
        raise InvalidInputError(
            "scheduler", f"unknown schedule type {value!r}; valid: {_valid_schedules()}"
        )
    return label


def check_sampler(value: str) -> tuple[str, str | None]:
    """(sampler, schedule label from a suffix or None) for a webui sampler name: a canonical
    name, an alias, or an older suffixed name such as "DPM++ 2M Karras".

    Raises
    ------
    InvalidInputError
        Field `sampler_name`, listing the valid names.
    """
    key = value.strip().lower()
    if key in _SAMPLER_NAMES:
        return _SAMPLER_NAMES[key], None
    for schedule in SCHEDULES[1:]:
        for suffix in (schedule.label, *schedule.aliases):
            stem = key.removesuffix(" " + suffix.lower())
            if stem != key and stem in _SAMPLER_NAMES:
                return _SAMPLER_NAMES[stem], schedule.label
    raise InvalidInputError(
        "sampler_name", f"unknown sampler {value!r}; valid: {_valid_samplers()}"
    )


def resolve(sampler_name: str | None, scheduler: str | None = None) -> tuple[str, str]:
    """The (sampler, schedule label) a request runs with.

    An explicit `scheduler` other than Automatic wins over a name suffix; Automatic becomes the
    sampler's default schedule (or stays Automatic: the model's uniform sigmas). Timestep
    samplers (DDIM, DDIM CFG++, PLMS, UniPC, LCM) and the samplers that place their own steps
    (DPM fast, DPM adaptive) always report Automatic: no schedule applies to them.

    Raises
    ------
    InvalidInputError
        Field `sampler_name` or `scheduler` for a name that is not known.
    """
    sampler, suffix = check_sampler(sampler_name or DEFAULT_SAMPLER)
    schedule = check_schedule(scheduler) if scheduler else AUTOMATIC
    if sampler in NO_SCHEDULE:
        return sampler, AUTOMATIC
    if schedule == AUTOMATIC:
        schedule = suffix or DEFAULT_SCHEDULE.get(sampler, AUTOMATIC)
    return sampler, schedule
