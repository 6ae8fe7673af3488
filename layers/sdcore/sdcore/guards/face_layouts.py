"""The tensor names a face restorer file must hold, read without torch from the sizes its own
tensors give (levels, MLP layers, transformer layers, fused resolutions): GFPGAN's clean network
(GFPGANv1Clean) and CodeFormer, as the engine's `face_archs` builds them. An upload whose names
differ is refused naming the first few unexpected and missing ones."""

from __future__ import annotations

import re

from sdcore.guards.model_bytes import Shapes

# the tensors that mark each architecture
MARKERS = {
    "GFPGAN": (
        "conv_body_first.weight",
        "final_linear.weight",
        "stylegan_decoder.constant_input.weight",
    ),
    "CodeFormer": ("quantize.embedding.weight", "position_emb", "feat_emb.weight"),
}
_WB = ("weight", "bias")


def architecture(shapes: Shapes) -> str | None:
    """`GFPGAN` or `CodeFormer`: the face restorer architecture `shapes` are, or None."""
    for label, markers in MARKERS.items():
        if all(k in shapes for k in markers):
            return label
    return None


def _count(shapes: Shapes, prefix: str) -> int:
    found = {int(m[1]) for k in shapes if (m := re.match(rf"{re.escape(prefix)}(\d+)\.", k))}
    return max(found) + 1 if found else 0


def _conv(prefix: str, bias: bool = True) -> list[str]:
    return [f"{prefix}.{p}" for p in (_WB if bias else ("weight",))]


def _parts(prefix: str, parts: tuple[str, ...]) -> list[str]:
    return [k for part in parts for k in _conv(f"{prefix}.{part}")]


def _gfpgan(shapes: Shapes) -> set[str]:
    ups = _count(shapes, "conv_body_up.")  # levels - 1: 8 px .. the picture's size
    keys = [*_conv("conv_body_first"), *_conv("final_conv"), *_conv("final_linear")]
    for i in range(ups):
        for side in ("conv_body_down", "conv_body_up"):
            keys += [*_conv(f"{side}.{i}.conv1"), *_conv(f"{side}.{i}.conv2")]
            keys.append(f"{side}.{i}.skip.weight")
        keys += _conv(f"toRGB.{i}")
        for cond in ("condition_scale", "condition_shift"):
            keys += [*_conv(f"{cond}.{i}.0"), *_conv(f"{cond}.{i}.2")]
    dec = "stylegan_decoder"
    mlp = len({k.split(".")[2] for k in shapes if k.startswith(f"{dec}.style_mlp.")})
    keys += [k for j in range(mlp) for k in _conv(f"{dec}.style_mlp.{2 * j + 1}")]
    keys.append(f"{dec}.constant_input.weight")

    def modulated(prefix: str) -> list[str]:
        return [f"{prefix}.modulated_conv.weight", *_conv(f"{prefix}.modulated_conv.modulation")]

    for conv in ("style_conv1", *(f"style_convs.{j}" for j in range(2 * ups))):
        keys += [*modulated(f"{dec}.{conv}"), f"{dec}.{conv}.weight", f"{dec}.{conv}.bias"]
    for rgb in ("to_rgb1", *(f"to_rgbs.{i}" for i in range(ups))):
        keys += [*modulated(f"{dec}.{rgb}"), f"{dec}.{rgb}.bias"]
    keys += [f"{dec}.noises.noise{n}" for n in range(2 * ups + 1)]
    return set(keys)


def _resblock(prefix: str, shapes: Shapes) -> list[str]:
    keys = _parts(prefix, ("norm1", "conv1", "norm2", "conv2"))
    first = shapes.get(f"{prefix}.conv1.weight") or [0, 0]
    return keys + (_conv(f"{prefix}.conv_out") if first[0] != first[1] else [])


def _vqgan_blocks(shapes: Shapes, prefix: str) -> list[str]:
    """Each block's names by the kind its names in the file say (ResBlock, attention,
    resampling conv, conv, norm): the engine rebuilds the blocks the same way."""
    keys: list[str] = []
    for i in range(_count(shapes, f"{prefix}.")):
        p = f"{prefix}.{i}"
        if f"{p}.conv1.weight" in shapes:
            keys += _resblock(p, shapes)
        elif f"{p}.q.weight" in shapes:
            keys += [
                k for part in ("norm", "q", "k", "v", "proj_out") for k in _conv(f"{p}.{part}")
            ]
        elif f"{p}.conv.weight" in shapes:
            keys += _conv(f"{p}.conv")
        else:
            keys += _conv(p)
    return keys


def _codeformer(shapes: Shapes) -> set[str]:
    keys = [*_vqgan_blocks(shapes, "encoder.blocks"), *_vqgan_blocks(shapes, "generator.blocks")]
    keys += ["quantize.embedding.weight", "position_emb", *_conv("feat_emb")]
    for i in range(_count(shapes, "ft_layers.")):
        p = f"ft_layers.{i}"
        keys += [f"{p}.self_attn.in_proj_weight", f"{p}.self_attn.in_proj_bias"]
        keys += _conv(f"{p}.self_attn.out_proj")
        keys += [
            k for part in ("linear1", "linear2", "norm1", "norm2") for k in _conv(f"{p}.{part}")
        ]
    keys += [*_conv("idx_pred_layer.0"), "idx_pred_layer.1.weight"]
    fused = {m[1] for k in shapes if (m := re.match(r"fuse_convs_dict\.(\d+)\.", k))}
    for size in fused:
        p = f"fuse_convs_dict.{size}"
        keys += _resblock(f"{p}.encode_enc", shapes)
        keys += [k for part in ("scale", "shift") for i in (0, 2) for k in _conv(f"{p}.{part}.{i}")]
    return set(keys)


def layout_mismatch(shapes: Shapes) -> str | None:
    """Why `shapes` are not a whole GFPGAN or CodeFormer file (the first few unexpected and
    missing tensor names), or None."""
    label = architecture(shapes)
    if label is None:
        missing = [k for ks in MARKERS.values() for k in ks if k not in shapes]
        return (
            "not a GFPGAN (GFPGANv1Clean) or CodeFormer layout: unexpected "
            f"{', '.join(sorted(shapes)[:4])}; missing {', '.join(missing[:4])}"
        )
    wanted = _gfpgan(shapes) if label == "GFPGAN" else _codeformer(shapes)
    unexpected, missing = sorted(set(shapes) - wanted), sorted(wanted - set(shapes))
    if not unexpected and not missing:
        return None
    return (
        f"the tensors do not fit the {label} layout: unexpected "
        f"{', '.join(unexpected[:4]) or 'none'}; missing {', '.join(missing[:4]) or 'none'}"
    )
