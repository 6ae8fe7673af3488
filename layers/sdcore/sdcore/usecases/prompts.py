"""The prompt filter (seed 001): blocked terms from a file locally, an object on AWS, loaded once
per execution environment and refreshed every minute."""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

from sdcore.errors import InvalidInputError
from sdcore.guards.prompt_filter import FilterCache, load_terms_from_blob, load_terms_from_file
from sdcore.metric_names import PROMPT_REFUSALS
from sdcore.services import Services

# the Services it was made for (weakly: an id() can be reused by the next Services once the
# first is gone, which would hand a new environment the old one's terms) and its cache
_cache: list[tuple[weakref.ref[Services], FilterCache]] = []
FIELDS = ("prompt", "negative_prompt")


def prompt_filter(svc: Services) -> FilterCache:
    cache = next((c for ref, c in _cache if ref() is svc), None)
    if cache is None:
        settings = svc.settings
        if settings.backend == "aws":
            key = settings.blocklist or "config/blocklist.txt"
            cache = FilterCache(lambda: load_terms_from_blob(svc.blobs, key), ttl_s=60)
        else:
            path = Path(settings.blocklist) if settings.blocklist else settings.data_dir
            if path.is_dir() or not settings.blocklist:
                path = settings.data_dir / "blocklist.txt"
            cache = FilterCache(lambda: load_terms_from_file(path), ttl_s=60)
        _cache[:] = [(weakref.ref(svc), cache)]  # one Services per environment; tests make more
    return cache


def check_prompts(svc: Services, body: Any) -> None:
    """Raises InvalidInputError naming the field (never the term) of a blocked prompt."""
    cache = prompt_filter(svc)
    for field in FIELDS:
        text = getattr(body, field, None)
        if text:
            try:
                cache.check(field, text)
            except InvalidInputError:
                svc.metrics.count(PROMPT_REFUSALS, field=field)
                raise
