"""The webui interrogator's words and its way of writing results, torch-free.

`clip`: the caption, then for each word list (mediums, artists, movements, flavors, shipped in
`sdcore/configs/interrogate/`, read by the engine) its best `topn` matches, each appended
after ", "; with `interrogate_return_ranks` each as `(text:0.123)`, its softmax share over the list.
`deepdanbooru`: the tags scoring at least the threshold (`rating:*` tags left out, as the webui
does), by score or alphabetically, filtered, with spaces and escaped brackets as its options
say, joined with ", "."""

from __future__ import annotations

import re

from sdcore.domain.interrogate import InterrogateSpec

_SPECIAL = re.compile(r"([\\()])")  # what the webui's deepbooru_escape escapes


def _ranked(text: str, score: float, ranks: bool) -> str:
    return f"({text}:{score:.3f})" if ranks else text


def compose_clip(caption: str, matches: list[list[tuple[str, float]]], ranks: bool) -> str:
    """`caption, medium, by artist, movement, flavor, flavor, flavor` (each match a (text,
    share 0..1)), as the webui's interrogator writes it."""
    return ", ".join([caption, *(_ranked(t, s, ranks) for found in matches for t, s in found)])


def compose_tags(scores: dict[str, float], spec: InterrogateSpec) -> str:
    """The tags of `scores` (tag -> sigmoid score) as the webui's DeepDanbooru writes them."""
    kept = {t: s for t, s in scores.items() if s >= spec.score_threshold}
    kept = {t: s for t, s in kept.items() if not t.startswith("rating:")}
    if spec.sort_alpha:
        tags = sorted(kept)
    else:
        tags = sorted(kept, key=lambda t: -kept[t])
    dropped = {t.strip().replace(" ", "_") for t in spec.filter_tags}
    out = []
    for tag in (t for t in tags if t not in dropped):
        text = tag.replace("_", " ") if spec.use_spaces else tag
        if spec.escape:
            text = _SPECIAL.sub(r"\\\1", text)
        out.append(_ranked(text, kept[tag], spec.return_ranks))
    return ", ".join(out)
