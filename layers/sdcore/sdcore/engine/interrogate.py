"""Interrogation (the webui's `/sdapi/v1/interrogate`): what a picture shows, as text.

`clip`: a registered captioner folder's BLIP model captions the picture (beam search and
length from the webui options), then its CLIP model ranks each shipped word list against it
(cosine similarity x 100, softmax over the list, as the webui's interrogator) and the best
matches are appended. `deepdanbooru`: a registered tagger (a multi-label image classifier) scores
every tag with a sigmoid; those over the threshold are written as the webui's DeepDanbooru
does. Models load from local folders only (safetensors weights) and stay cached per file."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from transformers import (
    AutoImageProcessor,
    AutoModelForImageClassification,
    BlipForConditionalGeneration,
    BlipProcessor,
    CLIPModel,
    CLIPProcessor,
)

from sdcore.configs import config_dir
from sdcore.domain.interrogate import InterrogateMethod, InterrogateSpec
from sdcore.errors import InvalidInputError
from sdcore.ports import NetworkFile
from sdcore.webui.interrogate import compose_clip, compose_tags

log = logging.getLogger(__name__)
LISTS_DIR: Path = config_dir("interrogate")


@dataclass(frozen=True)
class Category:
    name: str  # its file's stem: what interrogate_clip_skip_categories names
    topn: int  # how many of its best matches the result takes
    items: tuple[str, ...]


# (name, topn, prefix): the order the result lists them in; artists read "by <name>"
CATEGORIES = (("mediums", 1, ""), ("artists", 1, "by "), ("movements", 1, ""), ("flavors", 3, ""))


def categories(skip: list[str], dict_limit: int) -> list[Category]:
    """The word lists a `clip` interrogation ranks: all but `skip`, each cut to its first
    `dict_limit` words (0: all), as `interrogate_clip_dict_limit` does."""
    found = []
    for name, topn, prefix in CATEGORIES:
        if name in skip:
            continue
        lines = (LISTS_DIR / f"{name}.txt").read_text(encoding="utf-8").splitlines()
        items = tuple(f"{prefix}{line.strip()}" for line in lines if line.strip())
        found.append(Category(name, topn, items[:dict_limit] if dict_limit else items))
    return found


def _on(model: Any, device: str) -> Any:
    """`model` on `device`, in inference mode."""
    return model.to(device).eval()


def _features(output: Any) -> torch.Tensor:
    """Projected embeddings: a tensor, or (transformers 5) an output whose pooler holds them."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class Captioner:
    """A captioner folder: BLIP at its top, CLIP in `clip/`."""

    def __init__(self, folder: Path, device: str) -> None:
        self.device = device
        blip = BlipForConditionalGeneration.from_pretrained(
            folder, local_files_only=True, use_safetensors=True
        )
        self.blip = _on(blip, device)
        self.blip_processor = BlipProcessor.from_pretrained(folder, local_files_only=True)
        clip = CLIPModel.from_pretrained(
            folder / "clip", local_files_only=True, use_safetensors=True
        )
        self.clip = _on(clip, device)
        self.clip_processor = CLIPProcessor.from_pretrained(folder / "clip", local_files_only=True)

    @torch.no_grad()
    def caption(self, image: Image.Image, spec: InterrogateSpec) -> str:
        inputs = self.blip_processor(images=image, return_tensors="pt").to(self.device)
        tokens = self.blip.generate(
            pixel_values=inputs["pixel_values"],
            num_beams=spec.num_beams,
            min_length=spec.min_length,
            max_length=max(spec.max_length, spec.min_length),
        )
        return str(self.blip_processor.decode(tokens[0], skip_special_tokens=True)).strip()

    @torch.no_grad()
    def picture(self, image: Image.Image) -> torch.Tensor:
        """`image`'s CLIP embedding, normalised."""
        pixels = self.clip_processor(images=image, return_tensors="pt")["pixel_values"]
        picture = _features(self.clip.get_image_features(pixel_values=pixels.to(self.device)))
        return picture / picture.norm(dim=-1, keepdim=True)

    @torch.no_grad()
    def rank(
        self, picture: torch.Tensor, items: tuple[str, ...], top: int
    ) -> list[tuple[str, float]]:
        """The `top` best of `items` for the `picture` embedding, each with its softmax share
        over `items`."""
        text = self.clip_processor(
            text=list(items), return_tensors="pt", padding=True, truncation=True
        ).to(self.device)
        words = _features(self.clip.get_text_features(**text))
        words = words / words.norm(dim=-1, keepdim=True)
        shares = (100.0 * picture @ words.T).softmax(dim=-1)[0].float().cpu()
        best = shares.topk(min(top, len(items)))
        return [
            (items[i], float(s)) for s, i in zip(best.values, best.indices.tolist(), strict=True)
        ]

    def interrogate(self, image: Image.Image, spec: InterrogateSpec) -> str:
        caption = self.caption(image, spec)
        found = categories(spec.skip_categories, spec.dict_limit)
        picture = self.picture(image)
        matches = [self.rank(picture, c.items, c.topn) for c in found if c.items]
        return compose_clip(caption, matches, spec.return_ranks)


class Tagger:
    """A tagger folder: a multi-label image classifier whose labels are the tags."""

    def __init__(self, folder: Path, device: str) -> None:
        self.device = device
        model = AutoModelForImageClassification.from_pretrained(
            folder, local_files_only=True, use_safetensors=True
        )
        self.model = _on(model, device)
        self.processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
        self.tags = [
            str(self.model.config.id2label[i]) for i in range(len(self.model.config.id2label))
        ]

    @torch.no_grad()
    def scores(self, image: Image.Image) -> dict[str, float]:
        """Every tag's sigmoid score for `image`."""
        pixels = self.processor(images=image, return_tensors="pt")["pixel_values"]
        logits = self.model(pixel_values=pixels.to(self.device)).logits[0]
        return dict(zip(self.tags, torch.sigmoid(logits.float()).cpu().tolist(), strict=True))

    def interrogate(self, image: Image.Image, spec: InterrogateSpec) -> str:
        return compose_tags(self.scores(image), spec)


class InterrogatorCache:
    """The interrogation models a worker has loaded, by file content (one of each kind kept:
    a newer registration replaces the one before)."""

    def __init__(self) -> None:
        self._loaded: dict[InterrogateMethod, tuple[str, Captioner | Tagger]] = {}

    def get(self, method: InterrogateMethod, file: NetworkFile, device: str) -> Captioner | Tagger:
        held = self._loaded.get(method)
        if held is not None and held[0] == file.sha256:
            return held[1]
        self._loaded.pop(method, None)  # let the old weights go before the new ones load
        started = time.perf_counter()
        kind = Captioner if method is InterrogateMethod.CLIP else Tagger
        model = kind(file.path, device)
        log.info("loaded %s %s in %.2fs", method.value, file.name, time.perf_counter() - started)
        self._loaded[method] = (file.sha256, model)
        return model

    def run(
        self, spec: InterrogateSpec, file: NetworkFile | None, image: Image.Image, device: str
    ) -> str:
        """The text `spec` asks for about `image`.

        Raises
        ------
        InvalidInputError
            No model was fetched for the task (naming `model`).
        """
        if file is None:
            raise InvalidInputError("model", f"no model to run interrogate {spec.method.value}")
        return self.get(spec.method, file, device).interrogate(image.convert("RGB"), spec)
