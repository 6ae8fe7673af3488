"""Blocked-term prompt filter: one Aho-Corasick pass over the prompt, whatever the list's size.

Normalisation, the same for terms and text: Unicode NFKC (full-width "ａｂｃ" becomes "abc"),
casefold, and runs of whitespace collapsed to one space.

Word boundaries: a term that is all ASCII after normalisation matches whole words only: the
characters just before and after the match must not be ASCII letters or digits, so "ass" does not
block "class" or "assets" but does block "ass!", "_ass_" and "傻ass". Any other term (Chinese, or
anything holding a non-ASCII character) matches anywhere: Chinese has no spaces between words.

Term files hold one term a line; blank lines and lines starting with `#` are ignored.

The automaton runs over UTF-8 bytes (carried in a latin-1 `str`), not characters: pyahocorasick
finds a node's child by a linear scan, and with thousands of Chinese terms the root would have
thousands of children, making a check ~40x slower. UTF-8 is self-synchronising, so a byte match
of a term is always a character match; no node has more than 256 children.
"""

from __future__ import annotations

import logging
import threading
import time
import unicodedata
from collections.abc import Callable, Iterable
from pathlib import Path

import ahocorasick

from sdcore.errors import InvalidInputError, NotFoundError
from sdcore.ports import BlobStore

logger = logging.getLogger(__name__)


def normalize(text: str) -> str:
    """NFKC, casefold, whitespace runs collapsed: the form both terms and prompts are matched in."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def _as_bytes(text: str) -> str:
    """The normalised text's UTF-8 bytes, one `str` character each (see the module docstring)."""
    return normalize(text).encode("utf-8").decode("latin-1")


def _is_word_char(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


class PromptFilter:
    """Matches prompts against a fixed set of blocked terms."""

    def __init__(self, terms: Iterable[str]) -> None:
        automaton = ahocorasick.Automaton()
        count = 0
        for raw in terms:
            term = _as_bytes(raw)
            if not term:
                continue
            # The value says how to confirm a hit: its length, and whether it must be a whole word.
            if automaton.add_word(term, (len(term), term.isascii())):
                count += 1
        self._size = count
        self._automaton: ahocorasick.Automaton | None = None
        if count:
            automaton.make_automaton()
            self._automaton = automaton

    def __len__(self) -> int:
        return self._size

    def find(self, text: str) -> bool:
        """Whether `text` contains a blocked term."""
        if self._automaton is None or not text:
            return False
        folded = _as_bytes(text)
        last = len(folded) - 1
        for end, (length, whole_word) in self._automaton.iter(folded):
            if not whole_word:
                return True
            start = end - length + 1
            if (start == 0 or not _is_word_char(folded[start - 1])) and (
                end == last or not _is_word_char(folded[end + 1])
            ):
                return True
        return False

    def check(self, field: str, text: str) -> None:
        """Refuse `text` if it contains a blocked term; the message never names the term.

        Raises
        ------
        InvalidInputError
            `text` contains a blocked term.
        """
        if self.find(text):
            raise InvalidInputError(field, "contains a blocked term")


def parse_terms(text: str) -> list[str]:
    """Terms from a term file's text: one a line, blank lines and `#` comments skipped."""
    terms = []
    for line in text.splitlines():
        term = line.strip()
        if term and not term.startswith("#"):
            terms.append(term)
    return terms


def load_terms_from_file(path: str | Path) -> PromptFilter:
    """A filter from a local term file; a missing file gives an empty filter."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        logger.warning("prompt filter file %s not found: no terms blocked", path)
        return PromptFilter(())
    return PromptFilter(parse_terms(text))


def load_terms_from_blob(blobs: BlobStore, key: str) -> PromptFilter:
    """A filter from a term file stored as an object; a missing object gives an empty filter."""
    try:
        data = blobs.get(key)
    except NotFoundError:
        logger.warning("prompt filter object %s not found: no terms blocked", key)
        return PromptFilter(())
    return PromptFilter(parse_terms(data.decode("utf-8-sig")))


class FilterCache:
    """Holds a filter and rebuilds it with `loader` at most every `ttl_s` seconds.

    Built once per execution environment. If a refresh fails the previous filter stays in use and
    the next try waits another `ttl_s` (a store outage must not fail every request); a failure
    with no previous filter propagates.
    """

    def __init__(
        self,
        loader: Callable[[], PromptFilter],
        ttl_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._loader = loader
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._filter: PromptFilter | None = None
        self._expires_at = 0.0

    def get(self) -> PromptFilter:
        """The current filter, rebuilt first if it is older than `ttl_s`."""
        current = self._filter
        if current is not None and self._clock() < self._expires_at:
            return current
        with self._lock:
            now = self._clock()
            if self._filter is not None and now < self._expires_at:
                return self._filter
            try:
                self._filter = self._loader()
            except Exception:
                if self._filter is None:
                    raise
                logger.exception("prompt filter refresh failed; keeping the previous list")
            self._expires_at = now + self._ttl_s
            return self._filter

    def check(self, field: str, text: str) -> None:
        """`PromptFilter.check` on the current filter."""
        self.get().check(field, text)
