"""Tiny random-weight interrogation models built offline, saved as the folders the service
registers: a captioner (BLIP captioning at its top, CLIP in `clip/`) and a tagger (a ViT
multi-label classifier whose classifier bias sets each tag's score, whatever the picture)."""

from __future__ import annotations

import io
import math
import os
import tarfile
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported: nothing may reach the hub

import torch
from transformers import (
    BertTokenizer,
    BlipConfig,
    BlipForConditionalGeneration,
    BlipImageProcessor,
    BlipProcessor,
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPProcessor,
    CLIPTokenizer,
    ViTConfig,
    ViTForImageClassification,
    ViTImageProcessor,
)

from sdlocal.demo import tiny

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "photo", "of", "cat", "dog", "red",
         "blue", "painting", "the", "in", "on", "sky", "tree", "house", "small"]  # fmt: skip
# tag -> the score the tagger gives it (rating tags are left out of results, as the webui does)
TAG_SCORES = {"zebra": 0.9, "cat_(animal)": 0.7, "apple": 0.6, "red_sky": 0.3, "rating:safe": 0.95}
_LAYERS = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
           "num_attention_heads": 2}  # fmt: skip
_VISION = {**_LAYERS, "image_size": 32, "patch_size": 8}


def save_captioner(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    text = {**_LAYERS, "vocab_size": len(WORDS), "max_position_embeddings": 64,
            "bos_token_id": 2, "eos_token_id": 3, "pad_token_id": 0, "sep_token_id": 3}  # fmt: skip
    blip = BlipForConditionalGeneration(
        BlipConfig(vision_config=_VISION, text_config=text, projection_dim=16)
    )
    blip.save_pretrained(path)
    size = {"height": 32, "width": 32}
    tokenizer = BertTokenizer(str(path / "vocab.txt"))
    BlipProcessor(
        image_processor=BlipImageProcessor(size=size), tokenizer=tokenizer
    ).save_pretrained(path)
    clip_tokenizer = CLIPTokenizer.from_pretrained(tiny.CONFIG_DIR / "tokenizer")
    clip_text = {**_LAYERS, "vocab_size": len(clip_tokenizer), "max_position_embeddings": 77,
                 "bos_token_id": clip_tokenizer.bos_token_id,
                 "eos_token_id": clip_tokenizer.eos_token_id,
                 "pad_token_id": clip_tokenizer.pad_token_id}  # fmt: skip
    clip = CLIPModel(CLIPConfig(text_config=clip_text, vision_config=_VISION, projection_dim=8))
    clip.save_pretrained(path / "clip")
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size=size)
    CLIPProcessor(image_processor=images, tokenizer=clip_tokenizer).save_pretrained(path / "clip")
    return path


def save_tagger(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    labels = dict(enumerate(TAG_SCORES))
    config = ViTConfig(**_VISION, num_labels=len(labels), id2label=labels,
                       label2id={t: i for i, t in labels.items()},
                       problem_type="multi_label_classification")  # fmt: skip
    model = ViTForImageClassification(config)
    with torch.no_grad():  # scores set by the bias alone: sigmoid(logit(p)) = p
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(
            torch.tensor([math.log(p / (1 - p)) for p in TAG_SCORES.values()])
        )
    model.save_pretrained(path)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return path


def tar_folder(folder: Path) -> bytes:
    """An uncompressed tar of the folder's contents, as an upload sends it."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for item in sorted(folder.rglob("*")):
            tar.add(item, arcname=item.relative_to(folder).as_posix(), recursive=False)
    return buf.getvalue()
