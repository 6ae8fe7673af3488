"""Tiny model files with the key layouts of each model type, written without torch: a
safetensors header (names, dtypes, shapes, offsets) and zeroed data. What `sdcore.guards.modelfiles`
checks is the layout, so these are what a real file of each type looks like to it. A checkpoint
holds every tensor its config loads (the layout `sdcore.guards.checkpoint_fit` computes, which
tests/unit/engine/test_checkpoint_fit.py holds against diffusers' own loader)."""

from __future__ import annotations

import io
import json
import tarfile
from math import prod

from sdcore import configs
from sdcore.guards.checkpoint_fit import expected_parts
from sdcore.guards.model_layouts import config_architecture

Shapes = dict[str, list[int]]


def safetensors(
    shapes: Shapes, dtype: str = "F16", metadata: dict[str, str] | None = None
) -> bytes:
    width = {"F16": 2, "F32": 4, "U8": 1, "F8_E4M3": 1}[dtype]
    header: dict[str, object] = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    for name, shape in shapes.items():
        size = prod(shape) * width
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)  # safetensors pads the header to 8 bytes
    return len(raw).to_bytes(8, "little") + raw + b"\0" * offset


def checkpoint_shapes(config: str = "tiny-sd") -> Shapes:
    """The LDM/webui single-file layout of the shipped config `config`: every tensor it loads."""
    folder = configs.config_dir(config)
    arch = config_architecture(folder)
    assert arch is not None
    shapes: Shapes = {}
    for prefix, layout in expected_parts(folder, arch).values():
        for key, want in layout.items():
            first = want.shapes[0]  # any size goes where None: SD 2.x's unused text projection
            shapes[prefix + key] = [int(d if d is not None else first[0] or 0) for d in first]
    return shapes


def checkpoint(
    extra: Shapes | None = None, metadata: dict[str, str] | None = None, config: str = "tiny-sd"
) -> bytes:
    """A single-file checkpoint of config `config` (and the `extra` tensors) in fp8, as some
    checkpoints ship: one byte a weight keeps the tiny one at 2.7 MB, inside one 5 MiB part."""
    return safetensors({**checkpoint_shapes(config), **(extra or {})}, "F8_E4M3", metadata)


def vae_shapes() -> Shapes:
    return {
        "encoder.conv_in.weight": [32, 3, 3, 3],
        "encoder.conv_out.weight": [8, 32, 3, 3],
        "decoder.conv_in.weight": [32, 4, 3, 3],
        "decoder.conv_out.weight": [3, 32, 3, 3],
        "quant_conv.weight": [8, 8, 1, 1],
        "post_quant_conv.weight": [4, 4, 1, 1],
    }


def lora_shapes(rank: int = 4) -> Shapes:
    """kohya's layout: lora_down [rank, in], lora_up [out, rank], alpha []."""
    out: Shapes = {}
    for module, (width_in, width_out) in {
        "lora_unet_down_blocks_0_attentions_0_proj_in": (32, 32),
        "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn1_to_q": (64, 64),
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj": (32, 32),
    }.items():
        out[f"{module}.lora_down.weight"] = [rank, width_in]
        out[f"{module}.lora_up.weight"] = [width_out, rank]
        out[f"{module}.alpha"] = []
    return out


def embedding_shapes(vectors: int = 2, width: int = 32) -> Shapes:
    return {"emb_params": [vectors, width]}


def upscaler_shapes(scale: int = 2) -> Shapes:
    """Real-ESRGAN's compact (SRVGG) layout: body.0 takes RGB, the last conv gives 3*scale^2."""
    return {
        "body.0.weight": [16, 3, 3, 3],
        "body.0.bias": [16],
        "body.1.weight": [16],
        "body.2.weight": [16, 16, 3, 3],
        "body.4.weight": [3 * scale * scale, 16, 3, 3],
    }


def controlnet_shapes() -> Shapes:
    """The LDM ControlNet layout (control_v11*.safetensors)."""
    return {
        "control_model.input_hint_block.0.weight": [16, 3, 3, 3],
        "control_model.input_blocks.0.0.weight": [32, 4, 3, 3],
        "control_model.zero_convs.0.0.weight": [32, 32, 1, 1],
        "control_model.middle_block_out.0.weight": [64, 64, 1, 1],
    }


def face_restorer_shapes() -> Shapes:
    """GFPGAN's clean layout (GFPGANv1Clean, sft_half, a latent per layer) at 8 px: one U-Net
    level, one style MLP layer, 8/16 channels, 16-wide styles; every tensor a file holds."""
    c, d, s = 8, 16, 16
    shapes: Shapes = {"conv_body_first.weight": [c, 3, 1, 1], "conv_body_first.bias": [c]}
    shapes |= {"final_conv.weight": [c, c, 3, 3], "final_conv.bias": [c]}
    shapes |= {"final_linear.weight": [4 * s, c * 16], "final_linear.bias": [4 * s]}
    for side in ("conv_body_down.0", "conv_body_up.0"):
        for conv in ("conv1", "conv2"):
            shapes |= {f"{side}.{conv}.weight": [c, c, 3, 3], f"{side}.{conv}.bias": [c]}
        shapes[f"{side}.skip.weight"] = [c, c, 1, 1]
    shapes |= {"toRGB.0.weight": [3, c, 1, 1], "toRGB.0.bias": [3]}
    for cond in ("condition_scale.0", "condition_shift.0"):
        for i in (0, 2):
            shapes |= {f"{cond}.{i}.weight": [c, c, 3, 3], f"{cond}.{i}.bias": [c]}
    dec = "stylegan_decoder"
    shapes |= {f"{dec}.style_mlp.1.weight": [s, s], f"{dec}.style_mlp.1.bias": [s]}
    shapes[f"{dec}.constant_input.weight"] = [1, d, 4, 4]
    for conv, out in (("style_conv1", d), ("style_convs.0", d), ("style_convs.1", d),
                      ("to_rgb1", 3), ("to_rgbs.0", 3)):  # fmt: skip
        kernel = 3 if out == d else 1
        shapes[f"{dec}.{conv}.modulated_conv.weight"] = [1, out, d, kernel, kernel]
        shapes[f"{dec}.{conv}.modulated_conv.modulation.weight"] = [d, s]
        shapes[f"{dec}.{conv}.modulated_conv.modulation.bias"] = [d]
        shapes[f"{dec}.{conv}.bias"] = [1, out, 1, 1]
        if out == d:
            shapes[f"{dec}.{conv}.weight"] = [1]
    for n, side in enumerate((4, 8, 8)):
        shapes[f"{dec}.noises.noise{n}"] = [1, 1, side, side]
    return shapes


def diffusers_tar(
    root: str = "",
    pickle_unet: bool = False,
    pipeline: str = "StableDiffusionPipeline",
    second_encoder: bool = True,
) -> bytes:
    """An uncompressed tar of a diffusers pipeline folder (tiny safetensors components); an
    SDXL one (`pipeline`) has a second text encoder unless `second_encoder` is False."""
    files: dict[str, bytes] = {
        "model_index.json": json.dumps(
            {
                "_class_name": pipeline,
                "unet": ["diffusers", "UNet2DConditionModel"],
                "vae": ["diffusers", "AutoencoderKL"],
                "text_encoder": ["transformers", "CLIPTextModel"],
                "tokenizer": ["transformers", "CLIPTokenizer"],
                "scheduler": ["diffusers", "PNDMScheduler"],
            }
        ).encode(),
        "unet/config.json": b'{"_class_name": "UNet2DConditionModel"}',
        "vae/config.json": b'{"_class_name": "AutoencoderKL"}',
        "vae/diffusion_pytorch_model.safetensors": safetensors(vae_shapes()),
        "text_encoder/config.json": b'{"architectures": ["CLIPTextModel"]}',
        "text_encoder/model.safetensors": safetensors(
            {"embeddings.token_embedding.weight": [100, 32]}
        ),
        "scheduler/scheduler_config.json": b'{"_class_name": "PNDMScheduler"}',
        "tokenizer/tokenizer.json": b"{}",
    }
    if "XL" in pipeline and second_encoder:
        files["text_encoder_2/config.json"] = files["text_encoder/config.json"]
        files["text_encoder_2/model.safetensors"] = files["text_encoder/model.safetensors"]
    unet = safetensors({"conv_in.weight": [32, 4, 3, 3], "conv_out.weight": [4, 32, 3, 3]})
    if pickle_unet:
        files["unet/diffusion_pytorch_model.bin"] = b"\x80\x04" + b"\0" * 64
    else:
        files["unet/diffusion_pytorch_model.safetensors"] = unet
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(f"{root}/{name}" if root else name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


BY_TYPE = {
    "checkpoint": checkpoint,
    "vae": lambda: safetensors(vae_shapes()),
    "lora": lambda: safetensors(lora_shapes()),
    "embedding": lambda: safetensors(embedding_shapes()),
    "upscaler": lambda: safetensors(upscaler_shapes()),
    "controlnet": lambda: safetensors(controlnet_shapes()),
    "face_restorer": lambda: safetensors(face_restorer_shapes()),
}
