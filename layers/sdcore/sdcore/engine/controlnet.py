"""ControlNet units on the checkpoint's UNet, as the sd-webui-controlnet extension applies them.

The pipelines' own denoising loops run unchanged: for the task, the UNet's `forward` is wrapped
so that each call first runs the active units' `ControlNetModel`s on the same latents,
timestep and prompt embeddings (an inpainting UNet's latents only, without its mask channels)
and passes the sum of their residuals as `down_block_additional_residuals` /
`mid_block_additional_residual`, which is what diffusers' ControlNet pipelines do. Per unit:

- its residuals times `weight` (a unit at weight 0 is not run at all);
- only while `guidance_start <= step / steps <= guidance_end` (the extension's test, with
  `step` the pipeline steps done so far in this pass and `steps` the pass's, so img2img's
  shortened schedule and the hires pass each count from 0);
- control mode "prompt" and "controlnet", and every unit in the hires fix's second pass:
  soft weights `weight * 0.825 ** (12 - i)` for residual i (the shallowest first, the middle
  block's last: 1.0 on SD 1.x/2.x's 13; SDXL's 10 take the first 10 of those 13);
  "controlnet" also zeroes the residuals of the unconditional half of classifier-free
  guidance (the extension's cfg injection);
- the control map is the preprocessor's output (a depth module: the registered `preprocessor`
  model's depth map, see sdcore.engine.depth) fitted to the pass's size by the unit's resize
  mode, RGB in [0, 1] (inpaint_only: -1 where masked), the same for every image of the batch.

ControlNet models load once per worker, LDM single files (`control_model.*`), diffusers-layout
files and diffusers folders, on the config of the checkpoint's UNet (so nothing is fetched and
a model of another architecture does not fit: refused with the unit's `model` field).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from diffusers import ControlNetModel
from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint
from PIL import Image
from safetensors.torch import load_file

from sdcore.domain.controlnet import ControlMode, ControlUnit
from sdcore.domain.models import GenerationParams
from sdcore.engine.depth import DepthEstimators
from sdcore.engine.threads import shared
from sdcore.errors import InvalidInputError
from sdcore.ports import ControlInput, EngineInputs, NetworkFile
from sdcore.webui.control_maps import ControlMap, detect, fit, pixel_perfect_res
from sdcore.webui.controlnet import DEPTH_MODULES

MAX_CONTROLNETS = 4  # models kept loaded; the least recently used goes first
SOFT_BASE = 0.825  # the extension's soft weights: weight * 0.825 ** (12 - i)
_ACTIVE = "_sd_control_run"  # the UNet attribute holding the task's ControlRun

_UNET_KEYS = (
    "flip_sin_to_cos", "freq_shift", "down_block_types", "only_cross_attention",
    "block_out_channels", "layers_per_block", "downsample_padding", "mid_block_scale_factor",
    "act_fn", "norm_num_groups", "norm_eps", "cross_attention_dim", "attention_head_dim",
    "num_attention_heads", "use_linear_projection", "class_embed_type", "num_class_embeds",
    "upcast_attention", "resnet_time_scale_shift", "projection_class_embeddings_input_dim",
    "mid_block_type", "transformer_layers_per_block", "encoder_hid_dim", "encoder_hid_dim_type",
    "addition_embed_type", "addition_time_embed_dim",
)  # fmt: skip


def _hint_channels(state: dict[str, torch.Tensor]) -> tuple[int, ...]:
    """The conditioning embedding's channels (diffusers layout), e.g. (16, 32, 96, 256)."""
    first = state["controlnet_cond_embedding.conv_in.weight"].shape[0]
    blocks = sorted(
        int(k.split(".")[2])
        for k in state
        if k.startswith("controlnet_cond_embedding.blocks.") and k.endswith(".weight")
    )
    outs = [state[f"controlnet_cond_embedding.blocks.{b}.weight"].shape[0] for b in blocks[1::2]]
    return (int(first), *(int(o) for o in outs))


def _diffusers_state(path: str, unet_config: Any) -> dict[str, torch.Tensor]:
    state = load_file(path)
    if any(k.startswith("control_model.") for k in state):
        state = {k[len("control_model.") :]: v for k, v in state.items()
                 if k.startswith("control_model.")}  # fmt: skip
    if "controlnet_cond_embedding.conv_in.weight" in state:
        return state
    return dict(convert_controlnet_checkpoint(state, dict(unet_config)))


def load_controlnet(file: NetworkFile, unet: Any, field: str) -> Any:
    """A ControlNetModel for `unet` (its device and dtype) from a single file or a folder.

    Raises InvalidInputError naming `field` when its weights do not fit the checkpoint."""
    try:
        if file.path.is_dir():
            net = ControlNetModel.from_pretrained(
                str(file.path), local_files_only=True, torch_dtype=unet.dtype
            )
            _check_fits(net.config, unet.config)
        else:
            state = _diffusers_state(str(file.path), unet.config)
            config = {k: unet.config[k] for k in _UNET_KEYS if k in unet.config}
            config["in_channels"] = int(state["conv_in.weight"].shape[1])
            config["conditioning_embedding_out_channels"] = _hint_channels(state)
            with torch.device("meta"):
                net = ControlNetModel.from_config(config)
            state = {k: v.to(unet.dtype) for k, v in state.items()}
            net.load_state_dict(state, strict=True, assign=True)
    except (KeyError, RuntimeError, ValueError, OSError) as exc:
        raise InvalidInputError(
            field, f"ControlNet {file.name!r} does not fit this checkpoint: {exc}"[:600]
        ) from exc
    return net.to(unet.device).eval()


def _check_fits(config: Any, unet_config: Any) -> None:
    for key in ("cross_attention_dim", "block_out_channels", "addition_embed_type"):
        mine, theirs = config.get(key), unet_config.get(key)
        if mine is not None and list(np.atleast_1d(mine)) != list(np.atleast_1d(theirs)):
            raise ValueError(f"its {key} is {mine}, the checkpoint's {theirs}")


class ControlNetCache:
    """Loaded ControlNet models by file hash, least recently used dropped first."""

    def __init__(self) -> None:
        self._nets: OrderedDict[str, Any] = OrderedDict()
        self.depth = DepthEstimators()  # the depth modules' preprocessor models

    def get(self, file: NetworkFile, unet: Any, field: str) -> Any:
        key = f"{file.sha256}:{id(unet)}"
        net = self._nets.get(key)
        if net is None:
            net = self._nets[key] = load_controlnet(file, unet, field)
            while len(self._nets) > MAX_CONTROLNETS:
                self._nets.popitem(last=False)
        self._nets.move_to_end(key)
        return net

    @contextmanager
    def applied(
        self, unet: Any, params: GenerationParams, inputs: EngineInputs, size: tuple[int, int]
    ) -> Iterator[ControlRun | None]:
        """The task's units on `unet` for the block (None: the task has none); `size`: the
        first pass's (width, height), which pixel-perfect resolutions and returned maps use."""
        if not params.controlnet:
            yield None
            return
        run = ControlRun(
            [
                Prepared(
                    unit,
                    self.get(c.file, unet, f"controlnet[{i}].model"),
                    _map(unit, c, inputs, size, f"controlnet[{i}]", self.depth, unet.device),
                )  # fmt: skip
                for i, (unit, c) in enumerate(zip(params.controlnet, inputs.controls, strict=True))
            ],
            size,
        )
        patched = "forward" in vars(unet)  # already wrapped on the instance (kept after)
        original = unet.forward
        unet.forward = run.wrap(original)
        setattr(unet, _ACTIVE, run)
        try:
            yield run
        finally:
            if patched:
                unet.forward = original
            else:
                del unet.forward  # the class's forward again
            delattr(unet, _ACTIVE)


def _map(
    unit: ControlUnit,
    given: ControlInput,
    inputs: EngineInputs,
    size: tuple[int, int],
    where: str,
    depth: DepthEstimators,
    device: Any,
) -> ControlMap:
    """The unit's control map: its preprocessor on its image (img2img: the init image and mask
    when it has none of its own), at its (or the pixel-perfect) resolution; a depth module's
    by the task's `preprocessor` model."""
    source = given.image or (inputs.init_images[0] if inputs.init_images else None)
    if source is None:
        raise InvalidInputError(f"{where}.image", "a control image is needed")
    mask = given.mask or inputs.mask
    res = unit.processor_res
    if unit.pixel_perfect:
        res = pixel_perfect_res(source.size, *size, unit.resize_mode)
    if unit.module in DEPTH_MODULES:
        if given.preprocessor is None:
            raise InvalidInputError(f"{where}.module", "a depth module needs a preprocessor model")
        return ControlMap(
            depth.depth_map(given.preprocessor, source, res, device, f"{where}.module")
        )
    try:
        return detect(unit.module, source, res, unit.threshold_a, unit.threshold_b, mask)
    except ValueError as exc:
        raise InvalidInputError(f"{where}.module", str(exc)) from None


@dataclass
class Prepared:
    unit: ControlUnit
    net: Any
    map: ControlMap
    hints: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)

    def hint(self, width: int, height: int) -> torch.Tensor:
        """The control map at width x height as the ControlNet takes it: (1, 3, h, w) in
        [0, 1], -1 where inpaint_only masks."""
        found = self.hints.get((width, height))
        if found is None:
            image = fit(self.map.image, width, height, self.unit.resize_mode)
            pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255)
            if self.map.masked is not None:
                mask = fit(self.map.masked, width, height, self.unit.resize_mode, nearest=True)
                masked = torch.from_numpy(np.asarray(mask) > 127)
                pixels[masked] = -1.0
            found = self.hints[(width, height)] = pixels.permute(2, 0, 1)[None]
        return found

    def picture(self, width: int, height: int) -> Image.Image:
        """The map as returned to the caller (masked pixels black)."""
        image = fit(self.map.image, width, height, self.unit.resize_mode).convert("RGB")
        if self.map.masked is None:
            return image
        mask = fit(self.map.masked, width, height, self.unit.resize_mode, nearest=True)
        return Image.composite(Image.new("RGB", image.size), image, mask)


class ControlRun:
    """A task's prepared units and where the running pass is (see the module doc)."""

    def __init__(self, units: list[Prepared], size: tuple[int, int]) -> None:
        self.units = units
        self.size = size
        self.pipe: Any = None
        self.step = 0
        self.hires = False

    def begin_pass(self, pipe: Any, hires: bool) -> None:
        self.pipe, self.step, self.hires = pipe, 0, hires

    def maps(self) -> list[Image.Image]:
        """The control maps the units asked to return, at the first pass's size."""
        return [p.picture(*self.size) for p in self.units if p.unit.return_map]

    def _scales(self, unit: ControlUnit, count: int) -> list[float]:
        if unit.control_mode is ControlMode.BALANCED and not self.hires:
            return [unit.weight] * count
        return [unit.weight * SOFT_BASE ** (12 - i) for i in range(count)]

    def _active(self, unit: ControlUnit) -> bool:
        steps = int(getattr(self.pipe, "_num_timesteps", 0) or 0) if self.pipe else 0
        done = self.step / steps if steps else 0.0
        return unit.weight != 0 and unit.guidance_start <= done <= unit.guidance_end

    def wrap(self, forward: Callable[..., Any]) -> Callable[..., Any]:
        def controlled(sample: torch.Tensor, timestep: Any, encoder_hidden_states: Any = None,
                       *args: Any, **kwargs: Any) -> Any:  # fmt: skip
            down, mid = self._residuals(sample, timestep, encoder_hidden_states, kwargs)
            if down is not None:
                kwargs["down_block_additional_residuals"] = down
                kwargs["mid_block_additional_residual"] = mid
            return forward(sample, timestep, encoder_hidden_states, *args, **kwargs)

        return controlled

    def _residuals(
        self, sample: torch.Tensor, timestep: Any, context: Any, kwargs: dict[str, Any]
    ) -> tuple[list[torch.Tensor] | None, torch.Tensor | None]:
        down: list[torch.Tensor] | None = None
        mid: torch.Tensor | None = None
        batch, _, h, w = sample.shape
        scale = int(getattr(self.pipe, "vae_scale_factor", 8) or 8) if self.pipe else 8
        cfg = bool(self.pipe is not None and getattr(self.pipe, "do_classifier_free_guidance",
                                                     False))  # fmt: skip
        for p in self.units:
            if not self._active(p.unit):
                continue
            net = p.net
            if p.unit.low_vram:
                net.to(sample.device)
            hint = p.hint(w * scale, h * scale).to(sample.device, sample.dtype)
            with torch.no_grad():
                d, m = net(
                    sample[:, : net.config.in_channels],
                    timestep,
                    encoder_hidden_states=context,
                    controlnet_cond=hint.expand(batch, -1, -1, -1),
                    timestep_cond=kwargs.get("timestep_cond"),
                    added_cond_kwargs=kwargs.get("added_cond_kwargs"),
                    return_dict=False,
                )
            if p.unit.low_vram:
                net.to("cpu")
            scales = self._scales(p.unit, len(d) + 1)
            d = [r * s for r, s in zip(d, scales, strict=False)]
            m = m * scales[len(d)]
            if p.unit.control_mode is ControlMode.CONTROLNET and cfg and batch % 2 == 0:
                keep = torch.ones(batch, 1, 1, 1, device=m.device, dtype=m.dtype)
                keep[: batch // 2] = 0  # the unconditional half comes first
                d, m = [r * keep for r in d], m * keep
            down = d if down is None else [a + b for a, b in zip(down, d, strict=True)]
            mid = m if mid is None else mid + m
        return down, mid


def controlled(pipe: Any, callback: Callable[..., Any], hires: bool = False) -> Callable[..., Any]:
    """`callback` (the step reporter) for a pipeline call, counting the pass's steps for the
    task's ControlNet units when it has any; torch's threads are sized to what runs now as
    the call starts and between its steps (`threads.shared`)."""
    callback = shared(callback)
    run: ControlRun | None = getattr(pipe.unet, _ACTIVE, None)
    if run is None:
        return callback
    run.begin_pass(pipe, hires)

    def on_step(p: Any, i: int, t: Any, kwargs: dict[str, Any]) -> Any:
        run.step = i + 1
        return callback(p, i, t, kwargs)

    return on_step
