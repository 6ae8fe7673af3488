"""The sd-webui-controlnet extension's vocabulary (torch-free): its preprocessor modules, their
sliders and defaults, its control and resize mode names, and the infotext line of a unit.

Most modules that run here need no model (see sdcore.webui.control_maps); the depth modules
run a registered `preprocessor` model (a depth estimation folder) in the engine. The
extension's other model-based annotators (pose, line art, ...) are refused by name, as is
`reference_only`, which rewrites the UNet's attention rather than adding residuals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sdcore.domain.controlnet import ControlMode, ControlResize, ControlUnit
from sdcore.errors import InvalidInputError

VERSION = 2  # what GET /controlnet/version answers, as the extension's API
MAX_UNITS = 4  # units one task may use (GET /controlnet/settings' control_net_unit_count)


@dataclass(frozen=True)
class Slider:
    name: str
    value: float
    min: float
    max: float
    step: float = 1.0

    def wire(self) -> dict[str, Any]:
        return {"name": self.name, "value": self.value, "min": self.min, "max": self.max,
                "step": self.step}  # fmt: skip


_RES = Slider("Preprocessor Resolution", 512, 64, 2048)
# module -> (its sliders: resolution first when it has one, then threshold_a, threshold_b)
MODULES: dict[str, tuple[Slider | None, Slider | None, Slider | None]] = {
    "none": (None, None, None),
    "canny": (
        _RES,
        Slider("Canny Low Threshold", 100, 1, 255),
        Slider("Canny High Threshold", 200, 1, 255),
    ),  # fmt: skip
    "invert": (None, None, None),
    "threshold": (_RES, Slider("Binarization Threshold", 127, 0, 255), None),
    "scribble": (_RES, Slider("Binarization Threshold", 127, 0, 255), None),
    "tile_resample": (None, Slider("Down Sampling Rate", 1.0, 1.0, 8.0, 0.01), None),
    "inpaint_only": (None, None, None),
}
# the depth modules: each runs the registered `preprocessor` model (its first usable one by name)
DEPTH_MODULES: dict[str, tuple[Slider | None, Slider | None, Slider | None]] = {
    name: (_RES, None, None)
    for name in ("depth", "depth_midas", "depth_zoe", "depth_anything", "depth_anything_v2")
}
# the extension's display names (`alias_names=true`) where they differ from the module's
ALIASES = {"invert": "invert (from white bg & black line)"}
# the extension's modules that need an annotator model (not shipped here)
MODEL_MODULES = frozenset({
    "depth_leres", "depth_leres++", "depth_hand_refiner", "openpose", "openpose_full",
    "openpose_face", "openpose_faceonly",
    "openpose_hand", "dw_openpose_full", "animal_openpose", "lineart", "lineart_realistic",
    "lineart_anime", "lineart_anime_denoise", "lineart_coarse", "lineart_standard", "mlsd",
    "normal_bae", "normal_midas", "seg_ofade20k", "seg_ofcoco", "seg_ufade20k", "softedge_hed",
    "softedge_hedsafe", "softedge_pidinet", "softedge_pidisafe", "softedge_teed", "hed",
    "pidinet", "scribble_hed", "scribble_pidinet", "scribble_xdog", "shuffle", "t2ia_sketch_pidi",
    "t2ia_color_grid", "t2ia_style_clipvision", "clip_vision", "color", "segmentation",
    "inpaint_only+lama", "tile_colorfix", "tile_colorfix+sharp", "recolor_luminance",
    "recolor_intensity", "revision_clipvision", "revision_ignore_prompt", "ip-adapter_clip_sd15",
    "ip-adapter_clip_sdxl", "ip-adapter_face_id", "instant_id_face_embedding", "fake_scribble",
})  # fmt: skip
REFERENCE_MODULES = frozenset({"reference_only", "reference_adain", "reference_adain+attn"})

CONTROL_MODES: dict[str, ControlMode] = {
    "balanced": ControlMode.BALANCED,
    "prompt": ControlMode.PROMPT,
    "controlnet": ControlMode.CONTROLNET,
    "0": ControlMode.BALANCED,
    "1": ControlMode.PROMPT,
    "2": ControlMode.CONTROLNET,
    "Balanced": ControlMode.BALANCED,
    "My prompt is more important": ControlMode.PROMPT,
    "ControlNet is more important": ControlMode.CONTROLNET,
}
CONTROL_MODE_LABELS = {
    ControlMode.BALANCED: "Balanced",
    ControlMode.PROMPT: "My prompt is more important",
    ControlMode.CONTROLNET: "ControlNet is more important",
}
RESIZE_MODES: dict[str, ControlResize] = {
    "0": ControlResize.JUST_RESIZE,
    "1": ControlResize.CROP_AND_RESIZE,
    "2": ControlResize.RESIZE_AND_FILL,
    "Just Resize": ControlResize.JUST_RESIZE,
    "Crop and Resize": ControlResize.CROP_AND_RESIZE,
    "Resize and Fill": ControlResize.RESIZE_AND_FILL,
    # the extension's older labels
    "Envelope (Outer Fit)": ControlResize.RESIZE_AND_FILL,
    "Scale to Fit (Inner Fit)": ControlResize.CROP_AND_RESIZE,
    "Inner Fit (Scale to Fit)": ControlResize.CROP_AND_RESIZE,
    "Outer Fit (Shrink to Fit)": ControlResize.RESIZE_AND_FILL,
}
RESIZE_LABELS = {
    ControlResize.JUST_RESIZE: "Just Resize",
    ControlResize.CROP_AND_RESIZE: "Crop and Resize",
    ControlResize.RESIZE_AND_FILL: "Resize and Fill",
}


def module_name(value: str, field: str) -> str:
    """The module `value` names (a name or its display alias).

    Raises InvalidInputError naming `field` for a module that does not run here."""
    for name, alias in ALIASES.items():
        if value == alias:
            return name
    if value in MODULES or value in DEPTH_MODULES:
        return value
    runs = ", ".join([*MODULES, *DEPTH_MODULES])
    if value in REFERENCE_MODULES:
        why = "reference modules rewrite the UNet's attention, which this service does not do"
    elif value in MODEL_MODULES:
        why = "its annotator model is not available here"
    else:
        why = "unknown module"
    raise InvalidInputError(field, f"{value!r}: {why}; the modules that run: {runs}")


def module_list(alias_names: bool) -> list[str]:
    return [ALIASES.get(m, m) if alias_names else m for m in [*MODULES, *DEPTH_MODULES]]


def module_detail() -> dict[str, Any]:
    """Each module's sliders, as the extension's /controlnet/module_list `module_detail`
    (`model_free: false`: a depth module, which needs a registered `preprocessor`)."""
    return {
        name: {
            "model_free": name in MODULES,
            "sliders": [s.wire() for s in sliders if s is not None],
        }
        for name, sliders in {**MODULES, **DEPTH_MODULES}.items()
    }


def thresholds(module: str, a: float, b: float) -> tuple[float, float]:
    """threshold_a/b with the module's defaults where the request gives -1 (or less)."""
    _, slider_a, slider_b = MODULES.get(module) or DEPTH_MODULES[module]
    if a < 0 and slider_a is not None:
        a = slider_a.value
    if b < 0 and slider_b is not None:
        b = slider_b.value
    return a, b


def processor_res(module: str, value: int) -> int:
    """The preprocessor resolution: the request's, else the module's default (512)."""
    return value if value > 0 else 512


def infotext_fields(units: list[ControlUnit], hashes: dict[str, str]) -> list[tuple[str, str]]:
    """The extension's infotext entries: `ControlNet <i>: "Module: ..., Model: name [hash],
    ..."`, one per unit; `hashes` gives each model's sha256."""
    fields = []
    for i, unit in enumerate(units):
        parts = [
            ("Module", unit.module),
            ("Model", f"{unit.model} [{hashes.get(unit.model, '')[:8]}]"),
            ("Weight", unit.weight),
            ("Resize Mode", RESIZE_LABELS[unit.resize_mode]),
            ("Low Vram", unit.low_vram),
            ("Processor Res", unit.processor_res),
            ("Threshold A", unit.threshold_a),
            ("Threshold B", unit.threshold_b),
            ("Guidance Start", unit.guidance_start),
            ("Guidance End", unit.guidance_end),
            ("Pixel Perfect", unit.pixel_perfect),
            ("Control Mode", CONTROL_MODE_LABELS[unit.control_mode]),
        ]
        fields.append((f"ControlNet {i}", ", ".join(f"{k}: {v}" for k, v in parts)))
    return fields
