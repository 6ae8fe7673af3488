"""Wire models: the webui's field names at the API edge, mapped once to domain names."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
from typing import Annotated, Any, ClassVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from sdcore.api.controlnet_schemas import ControlUnitBody, ParsedControls, parse_units
from sdcore.domain.models import (
    INPUT_PREFIXES,
    GenerationParams,
    ImageInput,
    TaskKind,
)
from sdcore.errors import InvalidInputError
from sdcore.usecases.submit import Submission
from sdcore.webui.infotext import request_fields
from sdcore.webui.samplers import (
    HIRES_IMAGE_UPSCALERS,
    HIRES_LATENT_UPSCALERS,
    NO_UPSCALER,
    UPSCALERS,
    check_sampler,
    check_schedule,
    resolve,
)

_DATA_URL = re.compile(r"^data:image/[a-zA-Z0-9.+-]+;base64,")


def decode_image(field: str, value: str) -> ImageInput:
    """An image given as plain base64, a data URL, the key of a stored object, or an http(s)
    URL (fetched with the address guard)."""
    if value.startswith(INPUT_PREFIXES):
        return ImageInput(field=field, key=value)
    if value[:8].lower().startswith(("http://", "https://")):
        return ImageInput(field=field, url=value)
    raw = _DATA_URL.sub("", value.strip(), count=1)
    try:
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInputError(field, "not base64, a data URL, or an object key") from None
    if not data:
        raise InvalidInputError(field, "empty image")
    return ImageInput(field=field, data=data)


class _Body(BaseModel):
    # webui clients send many fields we don't use (styles, save_images...): accept and ignore
    model_config = ConfigDict(extra="ignore")

    stable_diffusion_model: str | None = Field(None, description="checkpoint name")
    sd_vae: str | None = Field(None, description="VAE name ('Automatic'/'None' = the model's)")
    taskId: str | None = Field(  # noqa: N815 (wire name, as seed 003's API)
        None, description="client-chosen task id: a repeated submit returns the same task"
    )
    webhook: str | None = Field(
        None, max_length=2048, description="POSTed the result, signed, when the task ends"
    )
    priority: int = Field(0, ge=0, le=1, description="0 normal, 1 high: high runs first")

    @field_validator("sd_vae")
    @classmethod
    def _vae(cls, value: str | None) -> str | None:
        return None if value in (None, "", "Automatic", "None") else value

    def to_domain(self) -> tuple[GenerationParams, list[ImageInput], ImageInput | None]:
        """The request's parameters, input images and mask in domain words."""
        raise NotImplementedError

    def to_submission(self, model: str | None = None) -> Submission:
        """The whole request in domain words; `model` overrides `stable_diffusion_model`."""
        params, images, mask = self.to_domain()
        return Submission(
            params,
            images,
            mask,
            model=model or self.stable_diffusion_model,
            webhook=self.webhook,
            task_id=self.taskId,
            priority=self.priority,
        )


class _GenerationBody(_Body):
    prompt: str = Field("", max_length=20_000)
    negative_prompt: str = Field("", max_length=20_000)
    seed: int = Field(-1, ge=-1, le=2**32 - 1)
    steps: int = Field(20, ge=1, le=150)
    cfg_scale: float = Field(7.0, ge=0, le=30)
    width: int | None = Field(None, ge=8, le=2048, multiple_of=8)
    height: int | None = Field(None, ge=8, le=2048, multiple_of=8)
    sampler_name: str | None = None
    sampler_index: str | None = Field(None, description="older webui spelling of sampler_name")
    batch_size: int = Field(1, ge=1, le=8)
    n_iter: int = Field(1, ge=1, le=16)
    scheduler: str | None = Field(
        None,
        description="schedule type: Automatic (the sampler's default), Uniform, Karras, "
        "Exponential, SGM Uniform, Beta; a sampler name suffix (DPM++ 2M Karras) also sets it",
    )
    subseed: int = Field(-1, ge=-1, le=2**32 - 1, description="variation seed (-1: random)")
    subseed_strength: float = Field(0.0, ge=0, le=1, description="variation strength (0: off)")
    seed_resize_from_h: int = Field(-1, ge=-1, le=2048, description="<= 0: off")
    seed_resize_from_w: int = Field(-1, ge=-1, le=2048, description="<= 0: off")
    clip_skip: int = Field(1, ge=1, le=12, description="the webui's Clip skip")
    tiling: bool = Field(False, description="seamless textures: the picture tiles without a seam")
    restore_faces: bool | None = Field(
        None,
        description="restore faces after decoding with the registered face restorer of the "
        "face_restoration_model option (CodeFormer by default); unset: the face_restoration option",
    )
    infotext: str | None = Field(
        None,
        max_length=40_000,
        description="a webui infotext (PNG parameters); its fields fill those the request omits",
    )
    styles: list[Annotated[str, Field(max_length=128)]] = Field(
        default_factory=list,
        max_length=32,
        description="the caller's prompt styles (GET /styles) to apply to the prompts, in order",
    )

    controlnet: list[ControlUnitBody] = Field(
        default_factory=list,
        max_length=16,
        description="ControlNet units, as the sd-webui-controlnet extension's (the webui routes "
        "also take them as alwayson_scripts.controlnet.args); see docs/generation.md",
    )

    translate: bool | None = Field(
        None,
        description="put the Chinese of the prompts into English (offline, word by word) before "
        "encoding; the infotext keeps what was written. Unset: the deployment's SD_TRANSLATE",
    )

    script_name: str | None = Field(None, max_length=64, description="GET /sdapi/v1/scripts")
    script_args: list[Any] = Field(default_factory=list, max_length=32, description="its values")

    # whether a pasted infotext may set img2img fields (denoising strength, mask blur)
    _pastes_img2img: ClassVar[bool] = False

    @model_validator(mode="before")
    @classmethod
    def _paste(cls, data: Any) -> Any:
        """Apply `infotext` and `override_settings` (`CLIP_stop_at_last_layers`, `tiling`) as
        the webui's API does: they fill only the fields the request leaves out."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        overrides = data.get("override_settings")
        clip = overrides.get("CLIP_stop_at_last_layers") if isinstance(overrides, dict) else None
        if clip is not None and "clip_skip" not in data:
            data["clip_skip"] = clip
        if "tiling" in data and data["tiling"] is None:  # the webui's "unset": off, or as below
            del data["tiling"]
        tiling = overrides.get("tiling") if isinstance(overrides, dict) else None
        if tiling is not None and "tiling" not in data:  # the webui's setting of that name
            data["tiling"] = tiling
        text = data.get("infotext")
        if isinstance(text, str) and text.strip():
            try:
                pasted = request_fields(text, img2img=cls._pastes_img2img)
            except InvalidInputError as exc:
                raise InvalidInputError("infotext", exc.message) from None
            ours = data.get("override_settings")
            if isinstance(ours, dict) and "override_settings" in pasted:  # key by key
                data["override_settings"] = {**pasted["override_settings"], **ours}
            data = {**pasted, **data}
        return data

    @model_validator(mode="after")
    def _scripts_on_webui_routes(self) -> Any:
        # the webui bodies (with override_settings) run scripts; a native route refuses them
        if self.script_name and "override_settings" not in type(self).model_fields:
            raise InvalidInputError("script_name", "scripts run on the /sdapi/v1 routes")
        return self

    @field_validator("styles", mode="before")
    @classmethod
    def _styles(cls, value: Any) -> Any:
        return [] if value is None else value  # webui clients send null for "no styles"

    @field_validator("sampler_name", "sampler_index")
    @classmethod
    def _sampler(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                check_sampler(value)
            except InvalidInputError as exc:
                raise ValueError(exc.message) from None
        return value

    @field_validator("scheduler")
    @classmethod
    def _scheduler(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                check_schedule(value)
            except InvalidInputError as exc:
                raise ValueError(exc.message) from None
        return value

    def _control_source(self) -> tuple[Any, str, bool]:
        """(the raw units, their wire path, whether the webui's defaults apply)."""
        return self.controlnet, "controlnet", False

    def _controls(self, kind: TaskKind) -> ParsedControls:
        raw, path, webui = self._control_source()
        return parse_units(raw, path, kind, webui, decode_image)

    def to_submission(self, model: str | None = None) -> Submission:
        submission = super().to_submission(model)
        controls = self._controls(submission.params.kind)
        return dataclasses.replace(
            submission,
            control_images=controls.images,
            control_paths=controls.paths,
            translate=self.translate,
        )

    def _common(self, kind: TaskKind) -> dict[str, Any]:
        sampler, schedule = resolve(self.sampler_name or self.sampler_index, self.scheduler)
        return {
            "controlnet": self._controls(kind).units,
            "kind": kind,
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "seed": self.seed,
            "steps": self.steps,
            "guidance": self.cfg_scale,
            "width": self.width,
            "height": self.height,
            "sampler": sampler,
            "scheduler": schedule,
            "subseed": self.subseed,
            "subseed_strength": self.subseed_strength,
            "seed_resize_from_w": max(0, self.seed_resize_from_w),
            "seed_resize_from_h": max(0, self.seed_resize_from_h),
            "clip_skip": self.clip_skip,
            "tiling": self.tiling,
            "batch_size": self.batch_size,
            "batches": self.n_iter,
            "vae": self.sd_vae,
            # the option face_restoration_model names the restorer (see usecases.webui)
            "face_restorers": [("CodeFormer", 1.0)] if self.restore_faces else [],
        }


class Txt2ImgBody(_GenerationBody):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"prompt": "a red circle on a white background", "steps": 20, "seed": 7}]
        }
    )

    enable_hr: bool = Field(False, description="hires fix: a second, img2img pass larger")
    hr_scale: float = Field(2.0, ge=1, le=4, description="hires size = this x width/height")
    hr_resize_x: int = Field(0, ge=0, le=2048, description="hires width (0: by hr_scale)")
    hr_resize_y: int = Field(0, ge=0, le=2048, description="hires height (0: by hr_scale)")
    hr_upscaler: str = Field(
        "Latent",
        description="Latent, Latent (antialiased|bicubic|nearest|...), Lanczos, Nearest, or a "
        "registered upscaler model",
    )
    hr_second_pass_steps: int = Field(0, ge=0, le=150, description="0: the first pass's steps")
    hr_sampler_name: str | None = Field(None, description="the hires pass's sampler (none: same)")
    hr_scheduler: str | None = Field(None, description="its schedule type (none: the same)")
    hr_prompt: str = Field("", max_length=10_000, description="the hires pass's prompt ('': same)")
    hr_negative_prompt: str = Field("", max_length=10_000, description="('': the same)")
    # the webui UI's default for the hires pass (its API leaves it unset)
    denoising_strength: float = Field(0.7, ge=0, le=1, description="the hires pass's strength")

    @field_validator("hr_upscaler")
    @classmethod
    def _hr_upscaler(cls, value: str) -> str:
        # a registered upscaler model is checked against the registry at submit
        if not value.strip():
            valid = ", ".join((*HIRES_LATENT_UPSCALERS, *HIRES_IMAGE_UPSCALERS))
            raise ValueError(f"an upscaler is needed: {valid} or a registered upscaler model")
        return value

    @field_validator("hr_sampler_name", "hr_scheduler")
    @classmethod
    def _hr_same(cls, value: str | None, info: ValidationInfo) -> str | None:
        # the webui UI's "Use same sampler" / "Use same scheduler" mean the first pass's
        if value in (None, "", "Use same sampler", "Use same scheduler"):
            return None
        check = check_sampler if info.field_name == "hr_sampler_name" else check_schedule
        try:
            check(value)
        except InvalidInputError as exc:
            raise ValueError(exc.message) from None
        return value

    def to_domain(self) -> tuple[GenerationParams, list[ImageInput], ImageInput | None]:
        params = GenerationParams(
            **self._common(TaskKind.TXT2IMG),
            hires=self.enable_hr,
            hr_scale=self.hr_scale,
            hr_resize_x=self.hr_resize_x,
            hr_resize_y=self.hr_resize_y,
            hr_upscaler=self.hr_upscaler,
            hr_second_pass_steps=self.hr_second_pass_steps,
            hr_sampler=self.hr_sampler_name or "",
            hr_scheduler=self.hr_scheduler or "",
            hr_prompt=self.hr_prompt,
            hr_negative_prompt=self.hr_negative_prompt,
        )
        if self.enable_hr:  # without a hires pass txt2img denoises nothing
            params.denoising_strength = self.denoising_strength
        return params, [], None


class Img2ImgBody(_GenerationBody):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "prompt": "a blue circle",
                    "init_images": ["outputs/user/TASK_ID/0.png"],
                    "denoising_strength": 0.6,
                }
            ]
        }
    )

    init_images: list[str] = Field(..., min_length=1, max_length=8)
    mask: str | None = None
    denoising_strength: float = Field(0.75, ge=0, le=1)
    mask_blur: int = Field(4, ge=0, le=64)
    inpainting_mask_invert: int = Field(0, ge=0, le=1)
    resize_mode: int = Field(
        0,
        ge=0,
        le=3,
        description="0 just resize, 1 crop and resize, 2 resize and fill, 3 latent upscale",
    )
    inpainting_fill: int = Field(
        1, ge=0, le=3, description="masked content: 0 fill, 1 original, 2 latent noise, 3 nothing"
    )
    inpaint_full_res: bool = Field(False, description="inpaint only the masked region, larger")
    inpaint_full_res_padding: int = Field(32, ge=0, le=256, description="px around the region")

    _pastes_img2img: ClassVar[bool] = True

    def to_domain(self) -> tuple[GenerationParams, list[ImageInput], ImageInput | None]:
        params = GenerationParams(
            **self._common(TaskKind.IMG2IMG),
            denoising_strength=self.denoising_strength,
            mask_blur=self.mask_blur,
            inpainting_mask_invert=bool(self.inpainting_mask_invert),
            resize_mode=self.resize_mode,
            inpainting_fill=self.inpainting_fill,
            inpaint_full_res=self.inpaint_full_res,
            inpaint_full_res_padding=self.inpaint_full_res_padding,
        )
        images = [decode_image(f"init_images[{i}]", v) for i, v in enumerate(self.init_images)]
        mask = decode_image("mask", self.mask) if self.mask else None
        return params, images, mask


class ExtrasBody(_Body):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "image": "outputs/user/TASK_ID/0.png",
                    "upscaling_resize": 4,
                    "upscaler_1": "Lanczos",
                }
            ]
        }
    )

    image: str = Field(..., min_length=1)
    resize_mode: int = Field(0, ge=0, le=1, description="0: by upscaling_resize, 1: to w x h")
    upscaling_resize: float = Field(2.0, gt=0, le=8)
    upscaling_resize_w: int | None = Field(None, ge=1, le=8192)
    upscaling_resize_h: int | None = Field(None, ge=1, le=8192)
    upscaling_crop: bool = Field(True, description="resize_mode 1: crop to w x h after covering it")
    upscaler_1: str = "Lanczos"
    upscaler_2: str = Field("None", description="a second upscaler, blended in")
    extras_upscaler_2_visibility: float = Field(0.0, ge=0, le=1, description="upscaler_2's share")
    gfpgan_visibility: float = Field(
        0.0, ge=0, le=1, description="faces restored by the registered GFPGAN model, blended in"
    )
    codeformer_visibility: float = Field(
        0.0, ge=0, le=1, description="faces restored by the registered CodeFormer, blended in"
    )
    codeformer_weight: float = Field(
        0.0, ge=0, le=1, description="CodeFormer's fidelity: 0 the most change, 1 the least"
    )

    @field_validator("upscaler_1", "upscaler_2")
    @classmethod
    def _upscaler(cls, value: str) -> str:
        # a registered upscaler model is checked against the registry at submit
        if not value.strip():
            valid = ", ".join((*UPSCALERS, NO_UPSCALER))
            raise ValueError(f"an upscaler is needed: {valid} or a registered upscaler model")
        return value

    def to_domain(self) -> tuple[GenerationParams, list[ImageInput], ImageInput | None]:
        by_size = self.resize_mode == 1
        if by_size and not (self.upscaling_resize_w and self.upscaling_resize_h):
            raise InvalidInputError("upscaling_resize_w", "resize_mode 1 needs width and height")
        params = GenerationParams(
            kind=TaskKind.EXTRAS,
            upscale_factor=self.upscaling_resize,
            upscale_width=self.upscaling_resize_w if by_size else None,
            upscale_height=self.upscaling_resize_h if by_size else None,
            upscaler=self.upscaler_1,
            upscale_crop=self.upscaling_crop,
            upscaler_2=self.upscaler_2,
            upscaler_2_visibility=self.extras_upscaler_2_visibility,
            face_restorers=[
                (label, share)
                for label, share in (
                    ("GFPGAN", self.gfpgan_visibility),
                    ("CodeFormer", self.codeformer_visibility),
                )
                if share > 0
            ],
            codeformer_weight=self.codeformer_weight,
        )
        return params, [decode_image("image", self.image)], None
