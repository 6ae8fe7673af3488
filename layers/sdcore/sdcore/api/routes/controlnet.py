"""The sd-webui-controlnet extension's routes (`/sdapi/v1/controlnet/...`) besides its model
list (in the webui routes): its preprocessors, their maps, its API version and unit count."""

from __future__ import annotations

import base64

from aws_lambda_powertools.event_handler.router import APIGatewayRouter

from sdcore.api.controlnet_schemas import (
    ControlnetSettings,
    ControlnetVersion,
    DetectBody,
    DetectResult,
    ModuleList,
)
from sdcore.api.routes.common import WEBUI, documented
from sdcore.api.schemas import decode_image
from sdcore.errors import InvalidInputError
from sdcore.usecases import controlnet as controlnet_cases
from sdcore.webui.controlnet import MAX_UNITS, VERSION, module_detail, module_list

router = APIGatewayRouter()
PREFIX = "/sdapi/v1/controlnet"


@documented(router.get, f"{PREFIX}/module_list", tags=[WEBUI])
def controlnet_module_list() -> ModuleList:
    """The ControlNet preprocessors that run here (`?alias_names=true`: display names)."""
    query = router.current_event.query_string_parameters or {}
    aliases = str(query.get("alias_names", "")).lower() in ("true", "1", "yes")
    return ModuleList(module_list=module_list(aliases), module_detail=module_detail())


@documented(router.get, f"{PREFIX}/version", tags=[WEBUI])
def controlnet_version() -> ControlnetVersion:
    """The extension API version this service answers as."""
    return ControlnetVersion(version=VERSION)


@documented(router.get, f"{PREFIX}/settings", tags=[WEBUI])
def controlnet_settings() -> ControlnetSettings:
    """How many ControlNet units one task may use."""
    return ControlnetSettings(control_net_unit_count=MAX_UNITS)


def _data(field: str, value: str) -> bytes:
    image = decode_image(field, value)
    if image.data is None:
        raise InvalidInputError(field, "base64 or a data URL")
    return image.data


@documented(router.post, f"{PREFIX}/detect", tags=[WEBUI])
def controlnet_detect(body: DetectBody) -> DetectResult:
    """Run a preprocessor on images: their control maps, base64 PNGs."""
    maps = controlnet_cases.detect_maps(
        body.controlnet_module,
        [_data(f"controlnet_input_images[{i}]", v)
         for i, v in enumerate(body.controlnet_input_images)],
        [_data(f"controlnet_masks[{i}]", v) for i, v in enumerate(body.controlnet_masks)],
        body.controlnet_processor_res,
        body.controlnet_threshold_a,
        body.controlnet_threshold_b,
    )  # fmt: skip
    return DetectResult(images=[base64.b64encode(m).decode() for m in maps])
