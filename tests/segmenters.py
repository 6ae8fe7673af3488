"""A tiny random-weight SegFormer built offline and saved as the folder the service registers as
a `segmenter`: its classifier's bias alone sets each class's probability, whatever the picture
(`car` everywhere, `person` nowhere)."""

from __future__ import annotations

import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported: nothing may reach the hub

import torch
from transformers import (
    SegformerConfig,
    SegformerForSemanticSegmentation,
    SegformerImageProcessor,
)

LABELS = ["background", "person", "car"]
BIAS = [0.0, -6.0, 6.0]  # softmax: car ~1, person ~0


def save_segmenter(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    labels = dict(enumerate(LABELS))
    config = SegformerConfig(
        num_encoder_blocks=1, depths=[1], sr_ratios=[1], hidden_sizes=[8], patch_sizes=[7],
        strides=[4], num_attention_heads=[1], mlp_ratios=[2], decoder_hidden_size=8,
        num_labels=len(labels), id2label=labels, label2id={v: k for k, v in labels.items()},
    )  # fmt: skip
    model = SegformerForSemanticSegmentation(config)
    with torch.no_grad():
        model.decode_head.classifier.weight.zero_()
        model.decode_head.classifier.bias.copy_(torch.tensor(BIAS))
    model.save_pretrained(path)
    SegformerImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return path
