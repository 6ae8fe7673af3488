"""The offline Chinese-to-English translator: opencc, jieba and the CC-CEDICT dictionary that the
install step took out of its wheel, with the image-prompt glossary on top."""

from __future__ import annotations

import pytest

from sdcore.adapters.zh import cedict
from sdcore.adapters.zh.translator import OfflineTranslator, read_glossary

pytestmark = pytest.mark.skipif(
    not OfflineTranslator.installed(), reason="run `python -m sdcore.adapters.zh.cedict` first"
)


@pytest.fixture(scope="module")
def translator() -> OfflineTranslator:
    return OfflineTranslator()


@pytest.mark.parametrize(
    ("chinese", "english"),
    [
        ("红色的圆形，白色背景", "red circle, white background"),
        # traditional characters, a full stop, full-width brackets
        ("紅色的圓形，白色背景。", "red circle, white background"),
        ("（蓝色的正方形）【高清】", "(blue square)[high resolution]"),
        # English, weights and network tags kept as written (a tag's Chinese name too)
        (
            "a cat, 蓝色的天空 (红色：1.2) <lora:风格:0.8>",
            "a cat, blue sky (red:1.2) <lora:风格:0.8>",
        ),
        # words the glossary does not hold come from CC-CEDICT: word by word, in Chinese order
        ("一只可爱的小猫，水彩风格，杰作", "a cute kitten, watercolor style, masterpiece"),
        ("我爱北京天安门", "I love Beijing Tiananmen Gate"),
        # a word in neither goes character by character; a character in neither is dropped
        ("红猫𠀀", "red cat"),
    ],
)
def test_chinese_becomes_english_word_by_word(
    translator: OfflineTranslator, chinese: str, english: str
) -> None:
    assert translator.translate(chinese) == english
    assert translator.translate(chinese) == english  # deterministic, from the loaded tables


def test_text_without_chinese_is_kept_as_it_is(translator: OfflineTranslator) -> None:
    text = "a red circle,  on 1,000 <lora:x:1> (white:1.2)\n"
    assert translator.translate(text) is text


def test_the_glossary_overrides_the_dictionarys_first_gloss() -> None:
    words = cedict.load()
    glossary = read_glossary()
    # CC-CEDICT's first usable glosses are not what a prompt wants for these
    assert (words["红色"], words["圆形"], words["鸟"]) != ("red", "circle", "bird")
    assert (glossary["红色"], glossary["圆形"], glossary["鸟"]) == ("red", "circle", "bird")
    assert glossary["的"] == "" and glossary["白色背景"] == "white background"


def test_the_dictionary_reduction_picks_a_usable_gloss() -> None:
    text = "\n".join([
        "# CC-CEDICT",
        "山 山 [Shan1] /surname Shan/",
        "山 山 [shan1] /mountain/hill/",
        "畫 画 [hua4] /to draw/picture/",
        "北京 北京 [Bei3 jing1] /Beijing, capital of People's Republic of China/",
        "咊 和 [he2] /old variant of 和[he2]/",
        "和 和 [he2] /and/together with/",
        "個 个 [ge4] /classifier for people or objects in general/individual/",
        "的 的 [de5] /(possessive particle)/",
    ])  # fmt: skip
    assert cedict.reduce(text) == {
        "山": "mountain", "画": "draw", "北京": "Beijing", "和": "and", "个": "individual",
    }  # fmt: skip
