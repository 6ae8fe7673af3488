"""Interrogation's engine module on tiny random-weight models: the caption is the BLIP model's
own generate() text, the CLIP-ranked words follow it as the webui writes them, and a tagger's
tags come out over the threshold in the order and form its options ask for."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import BlipForConditionalGeneration, BlipProcessor, CLIPModel, CLIPProcessor

from sdcore.domain.interrogate import InterrogateMethod, InterrogateSpec
from sdcore.engine.interrogate import CATEGORIES, Captioner, InterrogatorCache, Tagger, categories
from sdcore.errors import InvalidInputError
from sdcore.ports import NetworkFile
from tests.interrogators import save_captioner, save_tagger

IMAGE = Image.new("RGB", (40, 30), (200, 40, 10))
RANKED = re.compile(r"^\((.+):(\d\.\d{3})\)$")


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("interrogators")
    return save_captioner(root / "captioner"), save_tagger(root / "tagger")


@pytest.fixture(scope="module")
def captioner(folders: tuple[Path, Path]) -> Captioner:
    return Captioner(folders[0], "cpu")


def clip_spec(**options: object) -> InterrogateSpec:
    return InterrogateSpec.model_validate({"method": "clip", "model": "cap", **options})


def tag_spec(**options: object) -> InterrogateSpec:
    return InterrogateSpec.model_validate({"method": "deepdanbooru", "model": "tag", **options})


def test_the_caption_is_blips_own_text_then_the_best_word_of_each_list(
    folders: tuple[Path, Path], captioner: Captioner
) -> None:
    spec = clip_spec(num_beams=2, min_length=3, max_length=9)
    text = captioner.interrogate(IMAGE, spec)

    blip = BlipForConditionalGeneration.from_pretrained(folders[0]).eval()
    processor = BlipProcessor.from_pretrained(folders[0])
    pixels = processor(images=IMAGE, return_tensors="pt")["pixel_values"]
    tokens = blip.generate(pixel_values=pixels, num_beams=2, min_length=3, max_length=9)
    caption = processor.decode(tokens[0], skip_special_tokens=True).strip()
    assert caption and text.startswith(caption + ", ")

    words = text[len(caption) + 2 :].split(", ")
    lists = categories([], 1500)
    assert [c.name for c in lists] == [name for name, _, _ in CATEGORIES]
    medium, artist, movement, *flavors = words
    assert medium in lists[0].items and movement in lists[2].items
    assert artist.startswith("by ") and artist in lists[1].items
    assert len(flavors) == 3 and set(flavors) <= set(lists[3].items)

    # the medium is the list's best match by CLIP's own similarity
    clip = CLIPModel.from_pretrained(folders[0] / "clip").eval()
    clip_processor = CLIPProcessor.from_pretrained(folders[0] / "clip")
    with torch.no_grad():
        inputs = clip_processor(text=list(lists[0].items), images=IMAGE, return_tensors="pt",
                                padding=True)  # fmt: skip
        logits = clip(**inputs).logits_per_image[0]
    assert medium == lists[0].items[int(logits.argmax())]


def test_ranks_skipped_lists_and_the_dict_limit(captioner: Captioner) -> None:
    spec = clip_spec(min_length=2, max_length=4, return_ranks=True, dict_limit=2,
                     skip_categories=["artists", "movements"])  # fmt: skip
    words = captioner.interrogate(IMAGE, spec).split(", ")[-3:]  # medium + 2 flavors (limit 2)
    lists = categories(["artists", "movements"], 2)
    assert [len(c.items) for c in lists] == [2, 2]
    found = [RANKED.match(w) for w in words]
    assert all(found), words
    texts = [m[1] for m in found if m]
    shares = [float(m[2]) for m in found if m]
    assert texts[0] in lists[0].items and set(texts[1:]) == set(lists[1].items)
    assert 0.5 <= shares[0] <= 1 and abs(sum(shares[1:]) - 1) < 0.002  # softmax over 2 words
    assert shares[1] >= shares[2]


def test_tags_over_the_threshold_as_the_options_write_them(folders: tuple[Path, Path]) -> None:
    tagger = Tagger(folders[1], "cpu")
    scores = tagger.scores(IMAGE)
    assert scores == pytest.approx({"zebra": 0.9, "cat_(animal)": 0.7, "apple": 0.6,
                                    "red_sky": 0.3, "rating:safe": 0.95})  # fmt: skip
    # the webui defaults: alphabetical, spaces, escaped brackets, no rating tags
    assert tagger.interrogate(IMAGE, tag_spec()) == r"apple, cat \(animal\), zebra"
    by_score = tag_spec(sort_alpha=False, use_spaces=False, escape=False)
    assert tagger.interrogate(IMAGE, by_score) == "zebra, cat_(animal), apple"
    ranked = tag_spec(sort_alpha=False, score_threshold=0.65, return_ranks=True)
    assert tagger.interrogate(IMAGE, ranked) == r"(zebra:0.900), (cat \(animal\):0.700)"
    low = tag_spec(sort_alpha=False, score_threshold=0.2, filter_tags=["cat (animal)"])
    assert tagger.interrogate(IMAGE, low) == "zebra, apple, red sky"


def test_the_cache_loads_each_file_once_and_needs_one(folders: tuple[Path, Path]) -> None:
    cache = InterrogatorCache()
    file = NetworkFile("tagger", "ab" * 32, folders[1])
    first = cache.get(InterrogateMethod.DEEPDANBOORU, file, "cpu")
    assert cache.get(InterrogateMethod.DEEPDANBOORU, file, "cpu") is first
    assert cache.run(tag_spec(), file, IMAGE.convert("L"), "cpu") == r"apple, cat \(animal\), zebra"
    with pytest.raises(InvalidInputError) as err:
        cache.run(tag_spec(), None, IMAGE, "cpu")
    assert err.value.field == "model"
