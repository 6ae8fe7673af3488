"""What a task asks the engine to do, in domain words."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field

from sdcore.domain.controlnet import ControlUnit
from sdcore.domain.interrogate import InterrogateSpec
from sdcore.domain.removal import RemoveSpec
from sdcore.domain.scripts import ScriptPlan


class TaskKind(StrEnum):
    TXT2IMG = "txt2img"
    IMG2IMG = "img2img"
    EXTRAS = "extras"
    INTERROGATE = "interrogate"  # a caption or tags of one image, no pictures out


class GenerationParams(BaseModel):
    """What to generate, in domain words. Images are object keys, never pixels."""

    kind: TaskKind
    prompt: str = ""
    negative_prompt: str = ""
    seed: int = -1
    steps: int = 20
    guidance: float = 7.0
    width: int | None = None
    height: int | None = None
    sampler: str = "Euler"
    # the webui's schedule type label ("Automatic", "Karras", ...); see sdcore.webui.samplers
    scheduler: str = "Automatic"
    # webui variation seeds: noise from `subseed` slerped in at `subseed_strength` (0 = off)
    subseed: int = -1
    subseed_strength: float = 0.0
    # draw the seed's noise as for this size (0 = off), so a seed keeps its picture when resized
    seed_resize_from_w: int = 0
    seed_resize_from_h: int = 0
    clip_skip: int = 1
    tiling: bool = False  # the webui's seamless textures: circular padding in UNet and VAE
    batch_size: int = 1
    batches: int = 1
    denoising_strength: float = 0.75
    init_images: list[str] = Field(default_factory=list)
    mask: str | None = None
    mask_blur: int = 4
    inpainting_mask_invert: bool = False
    # webui img2img: 0 just resize, 1 crop and resize, 2 resize and fill, 3 latent upscale
    resize_mode: int = 0
    # the masked area starts as: 0 fill, 1 original, 2 latent noise, 3 latent nothing
    inpainting_fill: int = 1
    inpaint_full_res: bool = False  # "only masked": inpaint the mask's region at full size
    inpaint_full_res_padding: int = 32
    upscale_factor: float = 2.0
    upscale_width: int | None = None
    upscale_height: int | None = None
    upscaler: str = "Lanczos"
    upscale_crop: bool = True  # to a size: cover it, then centre-crop to it (the webui default)
    upscaler_2: str = "None"
    upscaler_2_visibility: float = 0.0  # 0..1: how much of upscaler_2's result is blended in
    # face restoration, in order: (a registered face restorer's name, or an architecture label
    # "CodeFormer"/"GFPGAN" naming the registered one of it; visibility 0..1 over the input);
    # txt2img/img2img `restore_faces` asks for one at visibility 1, extras for up to two
    face_restorers: list[tuple[str, float]] = Field(default_factory=list)
    codeformer_weight: float = 0.5  # CodeFormer's fidelity: 0 the most change, 1 the least
    vae: str | None = None
    # txt2img's hires fix: a second, img2img pass at hr_scale (or hr_resize_x/y) times the size
    hires: bool = False
    hr_scale: float = 2.0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_upscaler: str = "Latent"
    hr_second_pass_steps: int = 0  # 0: the first pass's steps
    hr_sampler: str = ""  # "": the first pass's sampler
    hr_scheduler: str = ""  # "": the first pass's schedule type
    hr_prompt: str = ""  # "": the first pass's prompt
    hr_negative_prompt: str = ""  # "": the first pass's negative prompt
    # the prompts as the caller wrote them, when their Chinese was translated before encoding
    # (`translate`); the infotext records them beside the translation
    original_prompt: str | None = None
    original_negative_prompt: str | None = None
    # webui options a generation applies (see sdcore.webui.options): the seed offset of the
    # sampler's later noise (ancestral and SDE steps); where the starting noise is drawn
    # (None: this service's default, the CPU, and not written into the infotext)
    eta_noise_seed_delta: int = 0
    randn_source: str | None = None
    # the ancestral/SDE samplers' noise multiplier and the sigma noise of Euler, Heun and DPM2
    eta_ancestral: float = 1.0
    s_noise: float = 1.0
    # a webui script (`script_name` + `script_args`): its jobs and grids (see domain.scripts)
    script: ScriptPlan | None = None
    # ControlNet units (the sd-webui-controlnet extension's, enabled ones only), summed
    controlnet: list[ControlUnit] = Field(default_factory=list)
    # interrogate: the method, the registered model and the webui options it runs with
    interrogate: InterrogateSpec | None = None
    # an img2img task whose mask the worker draws first: segment, mask, inpaint (domain.removal)
    remove: RemoveSpec | None = None

    @property
    def image_count(self) -> int:
        if self.kind in (TaskKind.EXTRAS, TaskKind.INTERROGATE):
            return 1
        return self.batch_size * self.batches

    def script_jobs(self) -> list[GenerationParams]:
        """A script task's jobs, each this task's parameters with the job's changes."""
        if self.script is None:
            return [self]
        base = self.model_dump(exclude={"script"})
        return [GenerationParams.model_validate({**base, **job}) for job in self.script.jobs]
