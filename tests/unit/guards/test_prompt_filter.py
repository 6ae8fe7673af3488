"""Prompt filter: matching rules, loading from files and objects, and the refresh cache."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from sdcore.adapters.local.blobs import FileBlobStore
from sdcore.errors import InvalidInputError
from sdcore.guards.prompt_filter import (
    FilterCache,
    PromptFilter,
    load_terms_from_blob,
    load_terms_from_file,
    parse_terms,
)

TERMS = ["ass", "Bad Word", "暴力", "色情内容", "r2d2"]


@pytest.fixture
def pf() -> PromptFilter:
    return PromptFilter(TERMS)


@pytest.mark.parametrize(
    "text",
    [
        "ass",
        "what an ASS.",
        "ass-hat",
        "_ass_",
        "傻ass傻",
        "a bad word here",
        "a BAD   WORD here",  # whitespace runs collapse
        "ＡＳＳ",  # full-width folds to ASCII under NFKC
        "这是暴力",
        "暴力的画面",
        "含有色情内容的图片",
        "R2D2 robot",
    ],
)
def test_blocked(pf: PromptFilter, text: str) -> None:
    assert pf.find(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "a classic class",
        "assets and passes",
        "badword",  # the term has a space
        "a bad words list",
        "r2d22",
        "xr2d2",
        "暴",
        "色情",
        "a red circle",
    ],
)
def test_allowed(pf: PromptFilter, text: str) -> None:
    assert not pf.find(text)


def test_whole_word_hit_found_after_an_earlier_partial_one() -> None:
    # "ass" inside "class" is rejected, the later standalone "ass" still counts
    assert PromptFilter(["ass"]).find("class ass")


def test_non_ascii_latin_terms_match_anywhere_and_fold_case() -> None:
    pf = PromptFilter(["Café", "Straße"])
    assert pf.find("CAFÉ noir") and pf.find("cafés")  # non-ASCII: no word boundary
    # "Straße" casefolds to "strasse": ASCII, so a whole word
    assert pf.find("die STRASSE") and pf.find("die Straße")
    assert not pf.find("strassen")
    assert not pf.find("cafe")


def test_check_names_field_not_word(pf: PromptFilter) -> None:
    with pytest.raises(InvalidInputError) as err:
        pf.check("negative_prompt", "这是暴力")
    assert err.value.field == "negative_prompt"
    assert err.value.message == "contains a blocked term"
    assert "暴力" not in str(err.value)
    pf.check("prompt", "a red circle")  # no error


def test_empty_filter() -> None:
    empty = PromptFilter(["", "   "])
    assert len(empty) == 0
    assert not empty.find("anything at all")


def test_parse_terms_skips_comments_and_blanks() -> None:
    text = "# header\nass\n\n  暴力  \n   # indented comment\nbad word\n"
    assert parse_terms(text) == ["ass", "暴力", "bad word"]


def test_load_from_file(tmp_path: Path) -> None:
    path = tmp_path / "blocked.txt"
    path.write_text("# list\nass\n暴力\n", encoding="utf-8-sig")
    pf = load_terms_from_file(path)
    assert len(pf) == 2 and pf.find("暴力") and pf.find("ass")
    assert len(load_terms_from_file(tmp_path / "missing.txt")) == 0


def test_load_from_blob(tmp_path: Path) -> None:
    blobs = FileBlobStore(tmp_path, "http://127.0.0.1:1")
    blobs.put("config/blocked.txt", "ass\n# c\n暴力\n".encode())
    pf = load_terms_from_blob(blobs, "config/blocked.txt")
    assert len(pf) == 2 and pf.find("很暴力")
    assert len(load_terms_from_blob(blobs, "config/missing.txt")) == 0


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_cache_rebuilds_at_most_every_ttl() -> None:
    clock = FakeClock()
    lists = [["ass"], ["暴力"]]
    calls = []

    def loader() -> PromptFilter:
        calls.append(clock.now)
        return PromptFilter(lists[min(len(calls), 2) - 1])

    cache = FilterCache(loader, ttl_s=60, clock=clock)
    assert cache.get().find("ass")
    clock.now = 59
    assert cache.get().find("ass")
    assert calls == [0.0]
    clock.now = 60
    assert cache.get().find("暴力") and not cache.get().find("ass")
    assert calls == [0.0, 60]
    with pytest.raises(InvalidInputError):
        cache.check("prompt", "暴力")


def test_cache_keeps_previous_filter_when_refresh_fails() -> None:
    clock = FakeClock()
    results: list[object] = [PromptFilter(["ass"]), RuntimeError("store down")]

    def loader() -> PromptFilter:
        result = results.pop(0) if results else PromptFilter(["暴力"])
        if isinstance(result, Exception):
            raise result
        return result  # type: ignore[return-value]

    cache = FilterCache(loader, ttl_s=10, clock=clock)
    assert cache.get().find("ass")
    clock.now = 10
    assert cache.get().find("ass")  # refresh failed, old list kept
    clock.now = 15
    assert cache.get().find("ass")  # no retry before another ttl
    clock.now = 20
    assert cache.get().find("暴力")


def test_cache_first_load_failure_propagates() -> None:
    def loader() -> PromptFilter:
        raise RuntimeError("store down")

    with pytest.raises(RuntimeError):
        FilterCache(loader, ttl_s=10).get()


def test_large_list_is_fast() -> None:
    # A coarse guard only; benchmarks/prompt_filter.py measures properly.
    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz"
    terms = ["".join(rng.choices(letters, k=rng.randint(4, 10))) for _ in range(7500)]
    terms += ["".join(chr(rng.randint(0x4E00, 0x9FFF)) for _ in range(2)) for _ in range(7500)]
    pf = PromptFilter(terms)
    prompt = ("a photograph of a lighthouse at dusk, dramatic clouds, " * 4)[:200]
    start = time.perf_counter()
    for _ in range(200):
        pf.find(prompt)
    per_check = (time.perf_counter() - start) / 200
    assert per_check < 0.001  # ~10 us measured; generous because the CPU is shared
