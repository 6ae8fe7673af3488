"""A tiny random-weight DPT depth estimator built offline and saved as the folder the service
registers as a `preprocessor` (the ControlNet depth modules run it)."""

from __future__ import annotations

import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported: nothing may reach the hub

import torch
from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor


def save_depth_model(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    config = DPTConfig(
        hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32,
        image_size=32, patch_size=8, backbone_out_indices=[0, 1, 2, 3],
        neck_hidden_sizes=[8, 8, 8, 8], fusion_hidden_size=8, head_in_index=-1,
    )  # fmt: skip
    model = DPTForDepthEstimation(config)
    with torch.no_grad():  # weights large enough that the depth follows the picture
        for name, param in model.named_parameters():
            if name.startswith(("neck.", "head.")) and param.dim() == 4:
                param.normal_(0, 0.5)
        model.head.head[4].bias.fill_(1.0)  # above the final ReLU
    model.save_pretrained(path)
    DPTImageProcessor(size={"height": 32, "width": 32}, keep_aspect_ratio=False).save_pretrained(
        path
    )
    return path
