"""Registered face restorer models (type `face_restorer`) from `.safetensors`: GFPGAN's clean
network (GFPGANv1Clean, v1.3/v1.4: a U-Net encoder whose features modulate a StyleGAN2 decoder
through SFT scale/shift conditions) and CodeFormer (a VQGAN encoder/decoder, a transformer that
predicts the codebook entries, fusion blocks carrying encoder features into the decoder).
Written here because `spandrel` imports torchvision, whose PyPI wheel breaks `import torch` 2.13
on these machines. Every size is read from the file's tensors, so the released 512 px models and
small ones alike load; the weights are loaded strictly: another layout is refused, never
half-loaded. Both take and give RGB in [-1, 1] at `model.size` px square."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812 (torch's own convention)
from safetensors.torch import load_file
from torch import nn

from sdcore.guards import face_layouts

State = dict[str, torch.Tensor]


def _indices(state: State, prefix: str) -> list[int]:
    found = {int(m[1]) for k in state if (m := re.match(rf"{re.escape(prefix)}(\d+)\.", k))}
    return sorted(found)


# --- GFPGAN (GFPGANv1Clean) ----------------------------------------------------------------------


class _ModulatedConv(nn.Module):
    def __init__(self, c_in: int, c_out: int, k: int, style: int, demod: bool, up: bool) -> None:
        super().__init__()
        self.modulation = nn.Linear(style, c_in)
        self.weight = nn.Parameter(torch.zeros(1, c_out, c_in, k, k))
        self.demod, self.up = demod, up

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        weight = self.weight * self.modulation(style).view(b, 1, c, 1, 1)
        if self.demod:
            weight = (
                weight * torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8)[..., None, None, None]
            )
        if self.up:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        k = weight.shape[-1]
        out = F.conv2d(x.reshape(1, -1, *x.shape[2:]), weight.view(-1, c, k, k), padding=k // 2,
                       groups=b)  # fmt: skip
        return out.view(b, -1, *out.shape[2:])


class _StyleConv(nn.Module):
    def __init__(self, c_in: int, c_out: int, style: int, up: bool) -> None:
        super().__init__()
        self.modulated_conv = _ModulatedConv(c_in, c_out, 3, style, True, up)
        self.weight = nn.Parameter(torch.zeros(1))  # the noise's strength
        self.bias = nn.Parameter(torch.zeros(1, c_out, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        out = self.modulated_conv(x, style) * 2**0.5 + self.weight * noise + self.bias
        return F.leaky_relu(out, 0.2)


class _ToRGB(nn.Module):
    def __init__(self, c_in: int, style: int, up: bool) -> None:
        super().__init__()
        self.modulated_conv = _ModulatedConv(c_in, 3, 1, style, False, False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        self.up = up

    def forward(
        self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None
    ) -> torch.Tensor:
        out = self.modulated_conv(x, style) + self.bias
        if skip is not None:
            out = out + F.interpolate(skip, scale_factor=2, mode="bilinear", align_corners=False)
        return out


class _ConstantInput(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, channels, 4, 4))


class _StyleDecoder(nn.Module):
    """StyleGAN2's generator with SFT conditions, under its `stylegan_decoder.` names."""

    def __init__(self, channels: list[int], style: int, mlp: int, sft_half: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Identity()]  # index 0: the style code's normalisation
        for _ in range(mlp):
            layers += [nn.Linear(style, style), nn.LeakyReLU(0.2)]
        self.style_mlp = nn.Sequential(*layers)  # unused: v1.3/1.4 feed latents directly
        self.constant_input = _ConstantInput(channels[0])
        self.style_conv1 = _StyleConv(channels[0], channels[0], style, False)
        self.to_rgb1 = _ToRGB(channels[0], style, False)
        self.style_convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for i in range(2 * len(channels) - 1):
            side = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise{i}", torch.zeros(1, 1, side, side))
        for c_in, c_out in zip(channels, channels[1:], strict=False):
            self.style_convs.append(_StyleConv(c_in, c_out, style, True))
            self.style_convs.append(_StyleConv(c_out, c_out, style, False))
            self.to_rgbs.append(_ToRGB(c_out, style, True))
        self.sft_half = sft_half

    def forward(self, latent: torch.Tensor, conditions: list[torch.Tensor]) -> torch.Tensor:
        # the stored noise, not fresh noise: the same face restores the same way every time
        noise = [getattr(self.noises, f"noise{i}") for i in range(2 * len(self.to_rgbs) + 1)]
        out = self.constant_input.weight.repeat(latent.shape[0], 1, 1, 1)
        out = self.style_conv1(out, latent[:, 0], noise[0])
        skip = self.to_rgb1(out, latent[:, 1], None)
        i = 1
        for n, to_rgb in enumerate(self.to_rgbs):
            conv1, conv2 = self.style_convs[2 * n], self.style_convs[2 * n + 1]
            out = conv1(out, latent[:, i], noise[i])
            if i < len(conditions):
                scale, shift = conditions[i - 1], conditions[i]
                if self.sft_half:
                    same, sft = torch.split(out, out.shape[1] // 2, dim=1)
                    out = torch.cat([same, sft * scale + shift], dim=1)
                else:
                    out = out * scale + shift
            out = conv2(out, latent[:, i + 1], noise[i + 1])
            skip = to_rgb(out, latent[:, i + 2], skip)
            i += 2
        return skip


class _UpDownBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, factor: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_in, 3, 1, 1)
        self.conv2 = nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.skip = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def resize(t: torch.Tensor) -> torch.Tensor:
            return F.interpolate(t, scale_factor=self.factor, mode="bilinear", align_corners=False)

        out = F.leaky_relu(self.conv2(resize(F.leaky_relu(self.conv1(x), 0.2))), 0.2)
        return out + self.skip(resize(x))


def _sft(c: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c, c, 3, 1, 1), nn.LeakyReLU(0.2), nn.Conv2d(c, c_out, 3, 1, 1))


class GFPGAN(nn.Module):
    """GFPGANv1Clean; `unet[i]`/`styled[i]`: the U-Net's / decoder's channels at 4 * 2**i px."""

    label = "GFPGAN"

    def __init__(self, unet: list[int], styled: list[int], style: int, mlp: int, sft_half: bool,
                 different_w: bool) -> None:  # fmt: skip
        super().__init__()
        levels = len(unet)  # 4 px .. size px
        self.size = 4 * 2 ** (levels - 1)
        self.style = style
        self.conv_body_first = nn.Conv2d(3, unet[-1], 1)
        self.conv_body_down = nn.ModuleList(
            _UpDownBlock(unet[i], unet[i - 1], 0.5) for i in range(levels - 1, 0, -1)
        )
        self.final_conv = nn.Conv2d(unet[0], unet[0], 3, 1, 1)
        self.conv_body_up = nn.ModuleList(
            _UpDownBlock(unet[i - 1], unet[i], 2) for i in range(1, levels)
        )
        self.toRGB = nn.ModuleList(nn.Conv2d(unet[i], 3, 1) for i in range(1, levels))  # noqa: N815
        latents = (2 * (levels + 1) - 2) if different_w else 1
        self.final_linear = nn.Linear(unet[0] * 16, latents * style)
        self.stylegan_decoder = _StyleDecoder(styled, style, mlp, sft_half)
        sft_out = [unet[i] * (1 if sft_half else 2) for i in range(1, levels)]
        self.condition_scale = nn.ModuleList(
            _sft(unet[i], sft_out[i - 1]) for i in range(1, levels)
        )
        self.condition_shift = nn.ModuleList(
            _sft(unet[i], sft_out[i - 1]) for i in range(1, levels)
        )

    def forward(self, x: torch.Tensor, weight: float = 0.5) -> torch.Tensor:
        feat = F.leaky_relu(self.conv_body_first(x), 0.2)
        skips: list[torch.Tensor] = []
        for block in self.conv_body_down:
            feat = block(feat)
            skips.insert(0, feat)
        feat = F.leaky_relu(self.final_conv(feat), 0.2)
        code = self.final_linear(feat.flatten(1)).view(x.shape[0], -1, self.style)
        latent = code.expand(-1, 2 * len(self.toRGB) + 2, -1) if code.shape[1] == 1 else code
        conditions = []
        for skip, up, scale, shift in zip(skips, self.conv_body_up, self.condition_scale,
                                          self.condition_shift, strict=True):  # fmt: skip
            feat = up(feat + skip)
            conditions += [scale(feat), shift(feat)]
        return self.stylegan_decoder(latent, conditions)


def _gfpgan(state: State) -> GFPGAN:
    ups = _indices(state, "conv_body_up.")
    unet = [state["final_conv.weight"].shape[0]]
    unet += [state[f"conv_body_up.{i}.conv2.weight"].shape[0] for i in ups]
    dec = "stylegan_decoder."
    styled = [state[f"{dec}constant_input.weight"].shape[1]]
    convs = _indices(state, f"{dec}style_convs.")
    styled += [state[f"{dec}style_convs.{i}.modulated_conv.weight"].shape[1] for i in convs[::2]]
    style = state[f"{dec}style_conv1.modulated_conv.modulation.weight"].shape[1]
    mlp = len(_indices(state, f"{dec}style_mlp."))
    sft_half = bool(ups) and state["condition_scale.0.2.weight"].shape[0] == unet[1]
    different_w = state["final_linear.weight"].shape[0] != style
    return GFPGAN(unet, styled, int(style), mlp, sft_half, different_w)


# --- CodeFormer ----------------------------------------------------------------------------------


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, c, eps=1e-6)


class _ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in), nn.Conv2d(c_in, c_out, 3, 1, 1)
        self.norm2, self.conv2 = _norm(c_out), nn.Conv2d(c_out, c_out, 3, 1, 1)
        self.conv_out = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return h + (self.conv_out(x) if self.conv_out is not None else x)


class _AttnBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm = _norm(c)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        n = self.norm(x)
        q, k, v = (t.reshape(b, c, h * w) for t in (self.q(n), self.k(n), self.v(n)))
        attn = torch.softmax(q.transpose(1, 2) @ k * c**-0.5, dim=2)
        return x + self.proj_out((v @ attn.transpose(1, 2)).reshape(b, c, h, w))


class _Resample(nn.Module):
    def __init__(self, c: int, down: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, 2 if down else 1, 0 if down else 1)
        self.down = down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down:
            return self.conv(F.pad(x, (0, 1, 0, 1)))
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _blocks(state: State, prefix: str, down: bool) -> nn.ModuleList:
    """A VQGAN encoder's or generator's block list rebuilt from its keys, block by block."""
    blocks: list[nn.Module] = []
    for i in _indices(state, prefix):
        p = f"{prefix}{i}."
        if f"{p}conv1.weight" in state:
            c_out, c_in = state[f"{p}conv1.weight"].shape[:2]
            blocks.append(_ResBlock(int(c_in), int(c_out)))
        elif f"{p}q.weight" in state:
            blocks.append(_AttnBlock(int(state[f"{p}q.weight"].shape[0])))
        elif f"{p}conv.weight" in state:
            blocks.append(_Resample(int(state[f"{p}conv.weight"].shape[0]), down))
        elif state.get(f"{p}weight") is not None and state[f"{p}weight"].ndim == 4:
            c_out, c_in = state[f"{p}weight"].shape[:2]
            blocks.append(nn.Conv2d(int(c_in), int(c_out), 3, 1, 1))
        elif state.get(f"{p}weight") is not None:
            blocks.append(_norm(int(state[f"{p}weight"].shape[0])))
        else:
            raise ValueError(f"{p[:-1]}: a block of no known kind")
    return nn.ModuleList(blocks)


def _taps(blocks: nn.ModuleList, nth: Callable[[int], int]) -> set[int]:
    """The blocks after which a level's features are tapped: the `nth(depth)`-th ResBlock of
    the level reached after `depth` resamplings, as CodeFormer's fixed index tables pick them."""
    depth, count, taps = 0, 0, set()
    for i, block in enumerate(blocks):
        if isinstance(block, _Resample):
            depth, count = depth + 1, 0
        elif isinstance(block, _ResBlock):
            count += 1
            if count == nth(depth):
                taps.add(i)
    return taps


class _Blocks(nn.Module):
    """The VQGAN encoder or generator: its blocks, run in turn (by CodeFormer's forward)."""

    def __init__(self, blocks: nn.ModuleList) -> None:
        super().__init__()
        self.blocks = blocks


class _SALayer(nn.Module):
    def __init__(self, dim: int, mlp: int, heads: int) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads)
        self.linear1, self.linear2 = nn.Linear(dim, mlp), nn.Linear(mlp, dim)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        n = self.norm1(x)
        x = x + self.self_attn(n + pos, n + pos, n)[0]
        return x + self.linear2(F.gelu(self.linear1(self.norm2(x))))


class _Fuse(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.encode_enc = _ResBlock(2 * c, c)
        self.scale, self.shift = _sft(c, c), _sft(c, c)

    def forward(self, enc: torch.Tensor, dec: torch.Tensor, w: float) -> torch.Tensor:
        feat = self.encode_enc(torch.cat([enc, dec], dim=1))
        return dec + w * (dec * self.scale(feat) + self.shift(feat))


class _Codebook(nn.Module):
    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(size, dim)


def _adain(content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    def stats(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = t.flatten(2)
        return flat.mean(2)[..., None, None], (flat.var(2) + 1e-5).sqrt()[..., None, None]

    (c_mean, c_std), (s_mean, s_std) = stats(content), stats(style)
    return (content - c_mean) / c_std * s_std + s_mean


class CodeFormer(nn.Module):
    label = "CodeFormer"
    HEADS = 8  # the released model's; the file does not record it

    def __init__(self, state: State) -> None:
        super().__init__()
        self.encoder = _Blocks(_blocks(state, "encoder.blocks.", True))
        self.generator = _Blocks(_blocks(state, "generator.blocks.", False))
        per_level = (
            next((i for i, b in enumerate(self.encoder.blocks) if isinstance(b, _Resample)), 1) - 1
        )  # ResBlocks before the first downsampling (after the first conv)
        # the encoder's last ResBlock of each level; the generator's first of each level, but at
        # its lowest one the last (after the two of its bottleneck)
        self._enc_taps = _taps(self.encoder.blocks, lambda _depth: per_level)
        self._gen_taps = _taps(self.generator.blocks, lambda d: per_level + 2 if d == 0 else 1)
        codes, emb = state["quantize.embedding.weight"].shape
        self.quantize = _Codebook(int(codes), int(emb))
        latent, dim = state["position_emb"].shape
        self.position_emb = nn.Parameter(torch.zeros(int(latent), int(dim)))
        self.feat_emb = nn.Linear(int(emb), int(dim))
        mlp = int(state["ft_layers.0.linear1.weight"].shape[0])
        layers = len(_indices(state, "ft_layers."))
        self.ft_layers = nn.ModuleList(_SALayer(int(dim), mlp, self.HEADS) for _ in range(layers))
        self.idx_pred_layer = nn.Sequential(
            nn.LayerNorm(int(dim)), nn.Linear(int(dim), int(codes), bias=False)
        )
        keys = sorted({m[1] for k in state if (m := re.match(r"fuse_convs_dict\.(\d+)\.", k))})
        self.fuse_convs_dict = nn.ModuleDict(
            {k: _Fuse(int(state[f"fuse_convs_dict.{k}.scale.0.weight"].shape[0])) for k in keys}
        )
        downs = sum(isinstance(b, _Resample) for b in self.encoder.blocks)
        self.size = math.isqrt(int(latent)) * 2**downs

    def forward(self, x: torch.Tensor, weight: float = 0.5) -> torch.Tensor:
        enc: dict[str, torch.Tensor] = {}
        for i, block in enumerate(self.encoder.blocks):
            x = block(x)
            if i in self._enc_taps:
                enc[str(x.shape[-1])] = x
        lq = x
        pos = self.position_emb.unsqueeze(1).repeat(1, x.shape[0], 1)
        query = self.feat_emb(lq.flatten(2).permute(2, 0, 1))
        for layer in self.ft_layers:
            query = layer(query, pos)
        top = self.idx_pred_layer(query).permute(1, 0, 2).argmax(dim=2)
        quant = self.quantize.embedding(top).view(lq.shape[0], *lq.shape[2:], -1)
        x = _adain(quant.permute(0, 3, 1, 2), lq)
        for i, block in enumerate(self.generator.blocks):
            x = block(x)
            size = str(x.shape[-1])
            if i in self._gen_taps and size in self.fuse_convs_dict and weight > 0:
                x = self.fuse_convs_dict[size](enc[size], x, weight)
        return x


# --- loading -------------------------------------------------------------------------------------

FaceModel = GFPGAN | CodeFormer


def build(state: State) -> FaceModel:
    """The model `state` describes, loaded strictly.

    Raises ValueError for a layout it does not know, naming the first few unexpected and missing
    tensors."""
    shapes = {k: list(v.shape) for k, v in state.items()}
    kind = face_layouts.architecture(shapes)
    if kind is None:
        raise ValueError(face_layouts.layout_mismatch(shapes))
    try:
        model: FaceModel = _gfpgan(state) if kind == GFPGAN.label else CodeFormer(state)
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"a {kind} layout with a tensor missing or odd: {exc}") from exc
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # a tensor of another shape
        raise ValueError(f"the tensors do not fit the {kind} layout: {exc}") from exc
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"the tensors do not fit the {kind} layout: unexpected "
            f"{', '.join(result.unexpected_keys[:4]) or 'none'}; missing "
            f"{', '.join(result.missing_keys[:4]) or 'none'}"
        )
    return model.eval()


def load_face_restorer(path: Path) -> FaceModel:
    """The model in `path` (`.safetensors`), in eval mode. Raises ValueError as `build`."""
    return build(load_file(str(path)))
