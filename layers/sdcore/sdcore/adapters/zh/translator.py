"""The offline translator: a prompt's Chinese words in English, word by word, with no model.

Traditional characters become simplified ones (opencc's `t2s`), each run of Chinese is cut into
words (jieba, its own dictionary plus the glossary's words), and each word is looked up in the
image-prompt glossary (`glossary.tsv`), then in CC-CEDICT (`cedict.py`); a word in neither is
translated character by character, and a character in neither is dropped. Chinese punctuation
becomes ", " (quotation marks a space); everything else (English words, weights such as
`(red:1.2)`, `<lora:...>` tags) is kept as written. There is no grammar: word order stays
Chinese, and a word with several senses always gets the same one. Deterministic; the tables load
once per process, on first use.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdcore.adapters.zh.cedict import DICT_FILE, load
from sdcore.domain.cjk import HAN, has_cjk

GLOSSARY_FILE = Path(__file__).with_name("glossary.tsv")

# clause punctuation (full-width and CJK) -> a comma; a full-width colon before a number is a
# weight's colon, as in （红色：1.2）
_CLAUSE = re.compile(r"[，。、；！？…—～·]+|：(?!\s*\d)")
# quotation marks and title brackets (一幅“星空”) -> a space
_QUOTES = re.compile(r"[“”‘’「」『』《》〈〉\u3000]")
# the remaining full-width forms (（）［］：＋ letters and digits) -> their ASCII twins
_FULL_WIDTH = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)}
_BRACKETS = {ord("【"): ord("["), ord("】"): ord("]"), ord("〔"): ord("("), ord("〕"): ord(")")}
_BRACKETS.update(_FULL_WIDTH)
# a network or embedding tag (kept whole, Chinese names included), a run of Chinese, the rest
_PIECE = re.compile(f"(<[^<>]*>)|([{HAN}]+)|([^<{HAN}]+|<)")
_SPACES = re.compile(r"\s+")
_COMMAS = re.compile(r"\s*,[\s,]*")


def read_glossary(path: Path = GLOSSARY_FILE) -> dict[str, str]:
    """The glossary's words ("-": dropped, as "")."""
    words: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        word, _, english = line.partition("\t")
        english = english.strip()
        words[word.strip()] = "" if english == "-" else english
    return words


@dataclass(frozen=True)
class _Loaded:
    to_simplified: Any  # opencc.OpenCC
    segmenter: Any  # jieba.Tokenizer
    glossary: dict[str, str]
    dictionary: dict[str, str]


# the loaded tables, by (dictionary, glossary) file: seconds to load and ~90 MB, so shared
_tables: dict[tuple[Path, Path], _Loaded] = {}
_lock = threading.Lock()


class OfflineTranslator:
    """Chinese to English with opencc, jieba and CC-CEDICT (see the module's docstring)."""

    def __init__(self, dictionary: Path = DICT_FILE, glossary: Path = GLOSSARY_FILE) -> None:
        self._files = (dictionary, glossary)

    @staticmethod
    def installed(dictionary: Path = DICT_FILE) -> bool:
        """Whether the install step wrote the dictionary (`python -m sdcore.adapters.zh.cedict`)."""
        return dictionary.is_file()

    def _load(self) -> _Loaded:
        with _lock:  # once per process (and pair of files), whichever Services asks first
            loaded = _tables.get(self._files)
            if loaded is None:
                import jieba
                import opencc

                logging.getLogger("jieba").setLevel(logging.WARNING)
                dictionary, glossary_file = self._files
                glossary = read_glossary(glossary_file)
                segmenter = jieba.Tokenizer()
                segmenter.initialize()  # the first time, it writes a cache under $TMPDIR
                for word in glossary:
                    segmenter.add_word(word)
                loaded = _Loaded(opencc.OpenCC("t2s"), segmenter, glossary, load(dictionary))
                _tables[self._files] = loaded
            return loaded

    def translate(self, text: str) -> str:
        """`text` with its Chinese words in English (non-CJK text kept as it is)."""
        if not has_cjk(text):
            return text
        loaded = self._load()
        text = _QUOTES.sub(" ", _CLAUSE.sub(",", text)).translate(_BRACKETS)
        out = ""
        for match in _PIECE.finditer(text):
            tag, chinese, rest = match.groups()
            if chinese:
                simplified = loaded.to_simplified.convert(chinese)
                words = (_word(loaded, w) for w in loaded.segmenter.cut(simplified, HMM=False))
                piece = " ".join(w for w in words if w)
                if piece and out and out[-1].isalnum():
                    out += " "
            else:
                piece = tag or rest
                if out and piece[0].isalnum() and out[-1].isalnum():
                    out += " "
            out += piece
        return _COMMAS.sub(", ", _SPACES.sub(" ", out)).strip(" ,")


def _word(loaded: _Loaded, word: str) -> str:
    """A word in English: the glossary's, the dictionary's, else its characters' ("" if none)."""
    for table in (loaded.glossary, loaded.dictionary):
        if word in table:
            return table[word]
    if len(word) == 1:
        return ""
    return " ".join(filter(None, (_word(loaded, char) for char in word)))
