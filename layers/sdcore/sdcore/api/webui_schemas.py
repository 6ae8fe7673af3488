"""Request bodies of the webui-compatible routes (`/sdapi/v1`): the native bodies plus what
webui and PAI-EAS clients send besides (override settings, always-on script arguments, an
extras batch, PNG info, options)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sdcore.api.schemas import ExtrasBody, Img2ImgBody, Txt2ImgBody
from sdcore.errors import InvalidInputError


class _Override(BaseModel):
    model_config = ConfigDict(extra="ignore")
    override_settings: dict[str, Any] = Field(default_factory=dict)
    # PAI-EAS clients (seed 002) name the checkpoint and an input image link here
    alwayson_scripts: dict[str, Any] = Field(default_factory=dict)

    def requested_checkpoint(self) -> str | None:
        """The checkpoint the request names (a webui title), wherever it names it."""
        explicit = getattr(self, "stable_diffusion_model", None)
        override = self.override_settings.get("sd_model_checkpoint")
        eas = self.alwayson_scripts.get("sd_model_checkpoint")
        return explicit or override or (eas if isinstance(eas, str) else None)

    def _webui_controls(self, native: Any) -> tuple[Any, str, bool]:
        """The sd-webui-controlnet shape, `alwayson_scripts.controlnet.args`, else the native
        `controlnet` list; the extension's defaults apply either way (its control map comes
        back unless a unit says `save_detected_map: false`)."""
        # the webui matches always-on script names case-insensitively ("ControlNet")
        name = next((k for k in self.alwayson_scripts if k.lower() == "controlnet"), None)
        if name is None:
            return native, "controlnet", True
        script = self.alwayson_scripts[name]
        path = f"alwayson_scripts.{name}.args"
        if not isinstance(script, dict) or not isinstance(script.get("args"), list):
            raise InvalidInputError(path, "a list of ControlNet units under args")
        return script["args"], path, True


class WebuiTxt2Img(Txt2ImgBody, _Override):
    def _control_source(self) -> tuple[Any, str, bool]:
        return self._webui_controls(self.controlnet)


class WebuiImg2Img(Img2ImgBody, _Override):
    init_images: list[str] = Field(default_factory=list, max_length=8)

    def _control_source(self) -> tuple[Any, str, bool]:
        return self._webui_controls(self.controlnet)

    @model_validator(mode="after")
    def _image_link(self) -> WebuiImg2Img:
        link = self.alwayson_scripts.get("image_link")
        if not self.init_images and isinstance(link, str) and link:
            self.init_images = [link]
        if not self.init_images:
            raise ValueError("init_images (or alwayson_scripts.image_link) is required")
        return self


class WebuiExtrasSingle(ExtrasBody):
    pass


class ImageData(BaseModel):
    data: str
    name: str = ""


class WebuiExtrasBatch(ExtrasBody):
    image: str = ""  # unused here: the batch comes in imageList
    imageList: list[ImageData] = Field(..., min_length=1, max_length=16)  # noqa: N815

    def singles(self) -> list[WebuiExtrasSingle]:
        """One extras request per image of the batch."""
        common = self.model_dump(exclude={"imageList"})
        return [WebuiExtrasSingle(**{**common, "image": item.data}) for item in self.imageList]


class PngInfoBody(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"image": "data:image/png;base64,iVBORw0KGgo..."}]}
    )

    image: str = Field(..., min_length=1)


class InterrogateBody(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"image": "data:image/png;base64,iVBORw0KGgo...", "model": "clip"}]
        }  # fmt: skip
    )

    image: str = Field(..., min_length=1)
    model: str = Field("clip", description="clip (captioner) or deepdanbooru (tagger)")


class OptionsBody(BaseModel):
    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={"examples": [{"sd_model_checkpoint": "demo", "sd_vae": "Automatic"}]},
    )
    # webui titles and names are short: a bound keeps a user record small
    sd_model_checkpoint: str | None = Field(None, max_length=256)
    sd_vae: str | None = Field(None, max_length=256)
