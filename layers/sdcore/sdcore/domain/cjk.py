"""Chinese text in prompts: what counts as it (Han characters, the CJK punctuation)."""

from __future__ import annotations

import re

# the CJK Unified Ideographs, Extension A, the Compatibility Ideographs and the supplementary
# planes' extensions (B and on)
HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
HAN_RUN = re.compile(f"[{HAN}]+")


def has_cjk(text: str) -> bool:
    """Whether `text` holds a Han character (traditional or simplified Chinese)."""
    return HAN_RUN.search(text) is not None
