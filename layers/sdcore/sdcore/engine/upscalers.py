"""Registered upscaler models (type `upscaler`) from `.safetensors`: the ESRGAN family's
layouts in use, Real-ESRGAN's RRDBNet (`conv_first`, `body.N.rdbM.convK`, `conv_up1/2`,
`conv_hr`, `conv_last`; x4, and x2/x1 through pixel-unshuffle), the original ESRGAN x4 layout of
the same network (`model.0`, `model.1.sub.N.RDBM.convK.0`, `model.3/6/8/10`: community models
such as 4x-UltraSharp), renamed onto it, and Real-ESRGAN's compact SRVGGNet (`body.N`, a conv
per even index, PReLU between). Written here because `spandrel`, the loader
library, imports torchvision, whose PyPI wheel breaks `import torch` 2.13 on these machines.
The weights are loaded strictly: a file of another layout is refused, never half-loaded."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 (torch's own convention)
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from sdcore.domain.models import GenerationParams, TaskKind
from sdcore.errors import InvalidInputError
from sdcore.ports import EngineInputs


class _DenseBlock(nn.Module):
    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(nf, gc, 3, 1, 1)
        self.conv2 = nn.Conv2d(nf + gc, gc, 3, 1, 1)
        self.conv3 = nn.Conv2d(nf + 2 * gc, gc, 3, 1, 1)
        self.conv4 = nn.Conv2d(nf + 3 * gc, gc, 3, 1, 1)
        self.conv5 = nn.Conv2d(nf + 4 * gc, nf, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            feats.append(F.leaky_relu(conv(torch.cat(feats, 1)), 0.2))
        return self.conv5(torch.cat(feats, 1)) * 0.2 + x


class _RRDB(nn.Module):
    def __init__(self, nf: int, gc: int) -> None:
        super().__init__()
        self.rdb1, self.rdb2, self.rdb3 = (_DenseBlock(nf, gc) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    def __init__(self, in_ch: int, nf: int, gc: int, blocks: int) -> None:
        super().__init__()
        self.unshuffle = {3: 1, 12: 2, 48: 4}[in_ch]
        self.scale = 4 // self.unshuffle
        self.conv_first = nn.Conv2d(in_ch, nf, 3, 1, 1)
        self.body = nn.Sequential(*(_RRDB(nf, gc) for _ in range(blocks)))
        self.conv_body = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_hr = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_last = nn.Conv2d(nf, 3, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.unshuffle)
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        for conv in (self.conv_up1, self.conv_up2):
            feat = F.leaky_relu(conv(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        return self.conv_last(F.leaky_relu(self.conv_hr(feat), 0.2))


class SRVGGNet(nn.Module):
    def __init__(self, nf: int, convs: int, scale: int, prelu: bool) -> None:
        super().__init__()
        self.scale = scale
        layers: list[nn.Module] = [nn.Conv2d(3, nf, 3, 1, 1)]
        for _ in range(convs):
            layers += [nn.PReLU(nf) if prelu else nn.LeakyReLU(0.1), nn.Conv2d(nf, nf, 3, 1, 1)]
        layers += [nn.PReLU(nf) if prelu else nn.LeakyReLU(0.1)]
        layers += [nn.Conv2d(nf, 3 * scale * scale, 3, 1, 1)]
        self.body = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for layer in self.body:
            out = layer(out)
        base = F.interpolate(x, scale_factor=self.scale, mode="nearest")
        return F.pixel_shuffle(out, self.scale) + base


# the original ESRGAN x4 network's top-level indices -> Real-ESRGAN's names (its 2 upsampling
# stages are model.3 and model.6, with an activation after each)
_OLD_ESRGAN = {
    "0": "conv_first",
    "3": "conv_up1",
    "6": "conv_up2",
    "8": "conv_hr",
    "10": "conv_last",
}


def _from_old_esrgan(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An original-ESRGAN state dict under Real-ESRGAN's RRDBNet names.

    Raises ValueError for the layout's other scales (one or three upsampling stages)."""
    if not all(f"model.{i}.weight" in state for i in _OLD_ESRGAN):
        stages = sorted(int(m[1]) for k in state if (m := re.match(r"model\.(\d+)\.weight", k)))
        raise ValueError(f"an original ESRGAN layout other than x4 (layers {stages})")
    blocks = [int(m[1]) for k in state if (m := re.match(r"model\.1\.sub\.(\d+)\.RDB", k))]
    trunk = max(blocks) + 1  # the conv after the RRDB blocks
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if m := re.match(r"model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)$", key):
            out[f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"] = value
        elif m := re.match(rf"model\.1\.sub\.{trunk}\.(weight|bias)$", key):
            out[f"conv_body.{m[1]}"] = value
        elif (m := re.match(r"model\.(\d+)\.(weight|bias)$", key)) and m[1] in _OLD_ESRGAN:
            out[f"{_OLD_ESRGAN[m[1]]}.{m[2]}"] = value
        else:
            out[key] = value  # left as is: the strict load below names it
    return out


def load_upscaler(path: Path) -> nn.Module:
    """The model in `path`, in eval mode. Raises ValueError for a layout it does not know."""
    state = load_file(str(path))
    if "model.0.weight" in state and "model.1.sub.0.RDB1.conv1.0.weight" in state:
        state = _from_old_esrgan(state)
    model: nn.Module
    if "conv_first.weight" in state:
        nf, in_ch = state["conv_first.weight"].shape[:2]
        gc = state["body.0.rdb1.conv1.weight"].shape[0]
        blocks = 1 + max(int(m[1]) for k in state if (m := re.match(r"body\.(\d+)\.", k)))
        if in_ch not in (3, 12, 48):
            raise ValueError(f"RRDBNet with {in_ch} input channels")
        model = RRDBNet(int(in_ch), int(nf), int(gc), blocks)
    elif "body.0.weight" in state:
        last = max(int(m[1]) for k in state if (m := re.match(r"body\.(\d+)\.weight", k)))
        nf = state["body.0.weight"].shape[0]
        scale = math.isqrt(state[f"body.{last}.weight"].shape[0] // 3)
        model = SRVGGNet(int(nf), last // 2 - 1, scale, prelu="body.1.weight" in state)
    else:
        raise ValueError("not an ESRGAN-family layout (RRDBNet or SRVGGNet)")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"the weights do not fit the layout: {exc}") from exc
    return model.eval()


TILE, TILE_OVERLAP = 192, 8  # the webui's defaults for ESRGAN-family models ("ESRGAN_tile")


@torch.no_grad()
def _run_once(model: nn.Module, image: Image.Image) -> Image.Image:
    param = next(model.parameters())
    pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255)
    out = model(pixels.permute(2, 0, 1)[None].to(param.device, param.dtype)).clamp(0, 1)
    array = out[0].permute(1, 2, 0).float().cpu().numpy()
    return Image.fromarray((array * 255).round().astype(np.uint8))


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    """Tile origins along one side, spread evenly, the last flush with the end (the webui's
    `split_grid`)."""
    count = math.ceil((size - overlap) / (tile - overlap))
    step = (size - tile) / (count - 1) if count > 1 else 0
    return [min(int(i * step), size - tile) for i in range(count)]


def _ramp(length: int, across: int, horizontal: bool) -> Image.Image:
    """The blend mask over an overlap: 0 at the earlier tile's side rising to 255."""
    ramp = (np.arange(length, dtype=np.float32) * 255 / length).astype(np.uint8)
    grid = np.tile(ramp, (across, 1)) if horizontal else np.tile(ramp[:, None], (1, across))
    return Image.fromarray(grid, "L")


def _tiled(model: nn.Module, image: Image.Image, tile: int, overlap: int) -> Image.Image:
    """One pass of `model` over `image` in overlapping tiles of `tile` px, blended linearly in
    the overlaps as the webui's `combine_grid` does; an image within one tile runs whole."""
    if image.width <= tile and image.height <= tile:
        return _run_once(model, image)
    tile_w, tile_h = min(tile, image.width), min(tile, image.height)
    xs = _starts(image.width, tile_w, overlap)
    ys = _starts(image.height, tile_h, overlap)
    scale = 0
    rows = []
    for y in ys:
        row = []
        for x in xs:
            out = _run_once(model, image.crop((x, y, x + tile_w, y + tile_h)))
            scale = out.width // tile_w
            row.append((x * scale, out))
        rows.append((y * scale, row))
    w, h, lap = image.width * scale, image.height * scale, overlap * scale
    combined = Image.new("RGB", (w, h))
    for y, row in rows:
        strip = Image.new("RGB", (w, tile_h * scale))
        for x, out in row:
            if x == 0:
                strip.paste(out, (0, 0))
                continue
            strip.paste(out.crop((0, 0, lap, out.height)), (x, 0), _ramp(lap, out.height, True))
            strip.paste(out.crop((lap, 0, out.width, out.height)), (x + lap, 0))
        if y == 0:
            combined.paste(strip, (0, 0))
            continue
        combined.paste(strip.crop((0, 0, w, lap)), (0, y), _ramp(lap, w, False))
        combined.paste(strip.crop((0, lap, w, strip.height)), (0, y + lap))
    return combined


def run_upscaler(
    model: nn.Module,
    image: Image.Image,
    scale: float,
    tile: int = TILE,
    overlap: int = TILE_OVERLAP,
) -> Image.Image:
    """`image` upscaled by `scale`: the model run until the picture is at least that large
    (each run multiplies by its native scale), in `tile`-px tiles overlapping by `overlap`
    (0: whole), then resampled to the exact size (Lanczos), as the webui's upscalers do."""
    target = (int(image.width * scale), int(image.height * scale))
    native = int(getattr(model, "scale", 1))
    current = image.convert("RGB")
    while native > 1 and (current.width < target[0] or current.height < target[1]):
        if tile > overlap >= 0 and tile > 0:
            current = _tiled(model, current, tile, overlap)
        else:
            current = _run_once(model, current)
    return current.resize(target, Image.Resampling.LANCZOS) if current.size != target else current


class UpscalerCache:
    """Registered upscaler models, loaded once per file; the last `keep` used stay loaded."""

    def __init__(self, keep: int = 2) -> None:
        self.keep = keep
        self._loaded: dict[str, nn.Module] = {}  # file sha256 -> model, least recently used first

    def models(
        self, params: GenerationParams, inputs: EngineInputs, device: str
    ) -> dict[str, Callable[[Image.Image, float], Image.Image]]:
        """The task's registered upscaler models, by the name the task gives them.

        Raises InvalidInputError (naming the task's field) for a file that is no upscaler."""
        models: dict[str, Callable[[Image.Image, float], Image.Image]] = {}
        for name, file in inputs.upscalers.items():
            model = self._loaded.pop(file.sha256, None)
            if model is None:
                try:
                    model = load_upscaler(file.path).to(device)
                except ValueError as exc:
                    field = "upscaler_1" if name == params.upscaler else "upscaler_2"
                    if params.kind is TaskKind.TXT2IMG:
                        field = "hr_upscaler"
                    if params.script is not None and params.script.tile_upscale is not None:
                        field = "script_args"
                    raise InvalidInputError(field, f"upscaler {name!r}: {exc}") from exc
            self._loaded[file.sha256] = model
            while len(self._loaded) > self.keep:
                self._loaded.pop(next(iter(self._loaded)))
            models[name] = partial(run_upscaler, model)
        return models
