"""Whether a single-file checkpoint fits the config folder it will load with: every tensor the
loader takes (UNet, VAE, text encoders), by name and shape, in the file's own (LDM/webui) layout.

The expected layout is computed from the folder's JSON configs the way diffusers and
transformers build the models (`UNet2DConditionModel`, `AutoencoderKL`, `CLIPTextModel`) and
the way diffusers' single-file loader reads each part (OpenCLIP encoders with q, k, v stacked).
Nothing is built or run. Tensors a file holds beyond these (EMA weights, SD 2.x's unused last
text layer) are not loaded and not checked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdcore.guards.model_bytes import ModelFileError, Shapes

NAMED = 4  # differences a refusal names

# the prefix of each part in the single-file layout of each architecture
UNET, VAE = "model.diffusion_model.", "first_stage_model."
# architecture -> its text encoders: (label, key prefix, config subfolder, OpenCLIP layout)
TEXT_ENCODERS = {
    "sd1": [("text encoder", "cond_stage_model.transformer.text_model.", "text_encoder", False)],
    "sd2": [("text encoder", "cond_stage_model.model.", "text_encoder", True)],
    "sdxl": [
        ("text encoder", "conditioner.embedders.0.transformer.text_model.", "text_encoder", False),
        ("text encoder 2", "conditioner.embedders.1.model.", "text_encoder_2", True),
    ],
}


@dataclass(frozen=True)
class Want:
    """What a tensor must be: one of `shapes` (a None dimension is any size); `optional` ones
    may be absent."""

    shapes: tuple[tuple[int | None, ...], ...]
    optional: bool = False

    def fits(self, shape: list[int]) -> bool:
        def same(want: tuple[int | None, ...]) -> bool:
            if len(want) != len(shape):
                return False
            return all(w is None or w == s for w, s in zip(want, shape, strict=True))

        return any(same(want) for want in self.shapes)

    def named(self) -> str:
        return "[" + ", ".join("*" if d is None else str(d) for d in self.shapes[0]) + "]"


Layout = dict[str, Want]


def _w(*shape: int | None) -> Want:
    return Want((shape,))


def _linear(out: int, inp: int, bias: bool = True) -> Layout:
    layout = {"weight": _w(out, inp)}
    return layout | {"bias": _w(out)} if bias else layout


def _conv(out: int, inp: int, k: int = 3) -> Layout:
    return {"weight": _w(out, inp, k, k), "bias": _w(out)}


def _norm(width: int) -> Layout:
    return {"weight": _w(width), "bias": _w(width)}


def _put(into: Layout, prefix: str, layout: Layout) -> None:
    for key, want in layout.items():
        into[f"{prefix}.{key}"] = want


def _per_block(value: Any, blocks: int) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value] * blocks


# --- UNet (UNet2DConditionModel, LDM names under model.diffusion_model.) -----------------------


def _unet_resnet(into: Layout, at: str, cin: int, cout: int, temb: int) -> None:
    _put(into, f"{at}.in_layers.0", _norm(cin))
    _put(into, f"{at}.in_layers.2", _conv(cout, cin))
    _put(into, f"{at}.emb_layers.1", _linear(cout, temb))
    _put(into, f"{at}.out_layers.0", _norm(cout))
    _put(into, f"{at}.out_layers.3", _conv(cout, cout))
    if cin != cout:
        _put(into, f"{at}.skip_connection", _conv(cout, cin, 1))


def _unet_attention(
    into: Layout, at: str, width: int, heads: int, layers: int, context: int, linear: bool
) -> None:
    """A Transformer2DModel: `layers` blocks of self- and cross-attention and a GEGLU MLP."""
    inner = heads * (width // heads)
    _put(into, f"{at}.norm", _norm(width))
    _put(into, f"{at}.proj_in", _linear(inner, width) if linear else _conv(inner, width, 1))
    _put(into, f"{at}.proj_out", _linear(width, inner) if linear else _conv(width, inner, 1))
    for n in range(layers):
        block = f"{at}.transformer_blocks.{n}"
        for attn, source in (("attn1", inner), ("attn2", context)):
            _put(into, f"{block}.{attn}.to_q", _linear(inner, inner, bias=False))
            _put(into, f"{block}.{attn}.to_k", _linear(inner, source, bias=False))
            _put(into, f"{block}.{attn}.to_v", _linear(inner, source, bias=False))
            _put(into, f"{block}.{attn}.to_out.0", _linear(inner, inner))
        for norm in ("norm1", "norm2", "norm3"):
            _put(into, f"{block}.{norm}", _norm(inner))
        _put(into, f"{block}.ff.net.0.proj", _linear(inner * 8, inner))
        _put(into, f"{block}.ff.net.2", _linear(inner, inner * 4))


def unet_layout(config: dict[str, Any], inpainting: bool = False) -> Layout:
    """The UNet's tensors in the LDM layout (no prefix). `inpainting`: the 9-channel first conv
    the engine builds an inpainting checkpoint's UNet with."""
    channels = list(config["block_out_channels"])
    levels, per_level = len(channels), int(config["layers_per_block"])
    temb = config.get("time_embedding_dim") or channels[0] * 4
    heads = _per_block(config.get("num_attention_heads") or config["attention_head_dim"], levels)
    context = _per_block(config["cross_attention_dim"], levels)
    layers = _per_block(config.get("transformer_layers_per_block", 1), levels)
    linear = bool(config.get("use_linear_projection"))
    out: Layout = {}
    in_channels = 9 if inpainting else int(config["in_channels"])
    _put(out, "input_blocks.0.0", _conv(channels[0], in_channels))  # named first in a refusal
    _put(out, "time_embed.0", _linear(temb, channels[0]))
    _put(out, "time_embed.2", _linear(temb, temb))
    if config.get("addition_embed_type") == "text_time":
        added = int(config["projection_class_embeddings_input_dim"])  # SDXL's size conditioning
        _put(out, "label_emb.0.0", _linear(temb, added))
        _put(out, "label_emb.0.2", _linear(temb, temb))
    width = channels[0]
    for level, kind in enumerate(config["down_block_types"]):
        cin, width = width, channels[level]
        for j in range(per_level):
            at = f"input_blocks.{1 + level * (per_level + 1) + j}"
            _unet_resnet(out, f"{at}.0", cin if j == 0 else width, width, temb)
            if "CrossAttn" in kind:
                args = (width, heads[level], layers[level], context[level], linear)
                _unet_attention(out, f"{at}.1", *args)
        if level < levels - 1:
            at = f"input_blocks.{1 + level * (per_level + 1) + per_level}"
            _put(out, f"{at}.0.op", _conv(width, width))
    _unet_resnet(out, "middle_block.0", width, width, temb)
    _unet_attention(out, "middle_block.1", width, heads[-1], layers[-1], context[-1], linear)
    _unet_resnet(out, "middle_block.2", width, width, temb)
    up = list(reversed(channels))
    heads, layers, context = heads[::-1], layers[::-1], context[::-1]
    for level, kind in enumerate(config["up_block_types"]):
        prev, width = width, up[level]
        skip_in = up[min(level + 1, levels - 1)]
        for j in range(per_level + 1):
            at = f"output_blocks.{level * (per_level + 1) + j}"
            skip = skip_in if j == per_level else width
            _unet_resnet(out, f"{at}.0", (prev if j == 0 else width) + skip, width, temb)
            if "CrossAttn" in kind:
                args = (width, heads[level], layers[level], context[level], linear)
                _unet_attention(out, f"{at}.1", *args)
        if level < levels - 1:
            slot = 2 if "CrossAttn" in kind else 1
            last = level * (per_level + 1) + per_level
            _put(out, f"output_blocks.{last}.{slot}.conv", _conv(width, width))
    _put(out, "out.0", _norm(channels[0]))
    _put(out, "out.2", _conv(int(config["out_channels"]), channels[0]))
    return out


# --- VAE (AutoencoderKL, LDM names under first_stage_model.) --------------------------------------


def _vae_resnet(into: Layout, at: str, cin: int, cout: int) -> None:
    _put(into, f"{at}.norm1", _norm(cin))
    _put(into, f"{at}.conv1", _conv(cout, cin))
    _put(into, f"{at}.norm2", _norm(cout))
    _put(into, f"{at}.conv2", _conv(cout, cout))
    if cin != cout:
        _put(into, f"{at}.nin_shortcut", _conv(cout, cin, 1))


def _vae_mid(into: Layout, at: str, width: int) -> None:
    _vae_resnet(into, f"{at}.block_1", width, width)
    _put(into, f"{at}.attn_1.norm", _norm(width))
    for name in ("q", "k", "v", "proj_out"):  # 1x1 convolutions in LDM files, linear in others
        into[f"{at}.attn_1.{name}.weight"] = Want(((width, width, 1, 1), (width, width)))
        into[f"{at}.attn_1.{name}.bias"] = _w(width)
    _vae_resnet(into, f"{at}.block_2", width, width)


def vae_layout(config: dict[str, Any]) -> Layout:
    """The VAE's tensors in the LDM layout (no prefix)."""
    channels = list(config["block_out_channels"])
    levels, per_level = len(channels), int(config["layers_per_block"])
    latent = int(config["latent_channels"])
    out: Layout = {}
    _put(out, "encoder.conv_in", _conv(channels[0], int(config["in_channels"])))
    width = channels[0]
    for level in range(levels):
        cin, width = width, channels[level]
        for j in range(per_level):
            _vae_resnet(out, f"encoder.down.{level}.block.{j}", cin if j == 0 else width, width)
        if level < levels - 1:
            _put(out, f"encoder.down.{level}.downsample.conv", _conv(width, width))
    _vae_mid(out, "encoder.mid", width)
    _put(out, "encoder.norm_out", _norm(width))
    _put(out, "encoder.conv_out", _conv(2 * latent, width))
    _put(out, "decoder.conv_in", _conv(width, latent))
    _vae_mid(out, "decoder.mid", width)
    for level, cout in enumerate(reversed(channels)):
        at = f"decoder.up.{levels - 1 - level}"  # LDM numbers the decoder's levels upwards
        cin, width = width, cout
        for j in range(per_level + 1):
            _vae_resnet(out, f"{at}.block.{j}", cin if j == 0 else width, width)
        if level < levels - 1:
            _put(out, f"{at}.upsample.conv", _conv(width, width))
    _put(out, "decoder.norm_out", _norm(width))
    _put(out, "decoder.conv_out", _conv(int(config["out_channels"]), width))
    _put(out, "quant_conv", _conv(2 * latent, 2 * latent, 1))
    _put(out, "post_quant_conv", _conv(latent, latent, 1))
    return out


# --- text encoders (CLIPTextModel: OpenAI CLIP or OpenCLIP names) --------------------------------


def clip_layout(config: dict[str, Any]) -> Layout:
    """A CLIP text model's tensors as SD 1.x and SDXL's first encoder hold them
    (`transformers` names under `text_model.`, no prefix here)."""
    width, inner = int(config["hidden_size"]), int(config["intermediate_size"])
    out: Layout = {
        "embeddings.position_embedding.weight": _w(int(config["max_position_embeddings"]), width),
        "embeddings.token_embedding.weight": _w(int(config["vocab_size"]), width),
    }
    for n in range(int(config["num_hidden_layers"])):
        at = f"encoder.layers.{n}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            _put(out, f"{at}.self_attn.{proj}", _linear(width, width))
        _put(out, f"{at}.layer_norm1", _norm(width))
        _put(out, f"{at}.layer_norm2", _norm(width))
        _put(out, f"{at}.mlp.fc1", _linear(inner, width))
        _put(out, f"{at}.mlp.fc2", _linear(width, inner))
    _put(out, "final_layer_norm", _norm(width))
    return out


def open_clip_layout(config: dict[str, Any], projection: bool) -> Layout:
    """A CLIP text model's tensors in OpenCLIP's layout (SD 2.x, SDXL's second encoder): q, k
    and v stacked in `in_proj`. The loader splits them at the projection's first size, so the
    projection must be `hidden_size` tall where present; SDXL's (`projection`) is loaded too."""
    width, inner = int(config["hidden_size"]), int(config["intermediate_size"])
    out: Layout = {
        "positional_embedding": _w(int(config["max_position_embeddings"]), width),
        "token_embedding.weight": _w(int(config["vocab_size"]), width),
    }
    for n in range(int(config["num_hidden_layers"])):
        at = f"transformer.resblocks.{n}"
        out[f"{at}.attn.in_proj_weight"] = _w(3 * width, width)
        out[f"{at}.attn.in_proj_bias"] = _w(3 * width)
        _put(out, f"{at}.attn.out_proj", _linear(width, width))
        _put(out, f"{at}.ln_1", _norm(width))
        _put(out, f"{at}.ln_2", _norm(width))
        _put(out, f"{at}.mlp.c_fc", _linear(inner, width))
        _put(out, f"{at}.mlp.c_proj", _linear(width, inner))
    _put(out, "ln_final", _norm(width))
    if projection:
        out["text_projection"] = _w(width, int(config["projection_dim"]))
    else:
        out["text_projection"] = Want(((width, None),), optional=True)
    return out


# --- a whole checkpoint ------------------------------------------------------------------------


def _json(folder: Path, part: str) -> dict[str, Any]:
    return dict(json.loads((folder / part / "config.json").read_text()))


def expected_parts(
    folder: Path, arch: str, inpainting: bool = False
) -> dict[str, tuple[str, Layout]]:
    """Part label -> (its key prefix, its tensors) for a single file loaded with config
    `folder`, a diffusers-style folder of an `arch` (sd1, sd2, sdxl) pipeline."""
    parts = {
        "UNet": (UNET, unet_layout(_json(folder, "unet"), inpainting)),
        "VAE": (VAE, vae_layout(_json(folder, "vae"))),
    }
    for label, prefix, sub, open_clip in TEXT_ENCODERS[arch]:
        config = _json(folder, sub)
        if open_clip:
            parts[label] = (prefix, open_clip_layout(config, projection=arch == "sdxl"))
        else:
            parts[label] = (prefix, clip_layout(config))
    return parts


def differences(shapes: Shapes, folder: Path, arch: str) -> list[str]:
    """What keeps `shapes` (a single file's tensors) from loading with config `folder` (of
    architecture `arch`), part by part; empty when it fits."""
    conv_in = shapes.get(UNET + "input_blocks.0.0.weight") or []
    found = []
    for label, (prefix, layout) in expected_parts(folder, arch, conv_in[1:2] == [9]).items():
        for key, want in layout.items():
            shape = shapes.get(prefix + key)
            if shape is None:
                if not want.optional:
                    found.append(f"{label}: {key} is missing")
            elif not want.fits(shape):
                found.append(
                    f"{label}: {key} is {shape}, config {folder.name} expects {want.named()}"
                )
    return found


def check_fit(shapes: Shapes, folder: Path, arch: str) -> None:
    """Refuse a single file that cannot load with config `folder` (of architecture `arch`,
    which the file's was checked to be), naming the first difference of each part that differs.

    Raises
    ------
    ModelFileError
        Some tensor the loader takes is missing or of another shape.
    """
    found = differences(shapes, folder, arch)
    if not found:
        return
    first: dict[str, str] = {}  # part -> its first difference
    for line in found:
        first.setdefault(line.split(":")[0], line)
    named = list(first.values())[:NAMED]
    more = f" (and {len(found) - len(named)} more)" if len(found) > len(named) else ""
    raise ModelFileError(
        f"it does not fit the config {folder.name}: {'; '.join(named)}{more}. A model that "
        "fits no shipped config can be uploaded as a diffusers folder (an uncompressed tar), "
        "which carries its own configs"
    )
