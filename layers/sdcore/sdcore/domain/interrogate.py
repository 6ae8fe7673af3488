"""What an interrogation asks of the engine, in domain words: the webui's method (`clip`: a
captioner's caption plus CLIP-ranked words; `deepdanbooru`: a tagger's tags), the registered
model that runs it, and the webui options it honours (read from the caller's settings)."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field


class InterrogateMethod(StrEnum):
    CLIP = "clip"
    DEEPDANBOORU = "deepdanbooru"


class InterrogateSpec(BaseModel):
    """An interrogation's method, model and options (the webui option names in comments)."""

    method: InterrogateMethod
    model: str  # the registered captioner (clip) or tagger (deepdanbooru)
    return_ranks: bool = False  # interrogate_return_ranks: "(text:0.123)"
    # clip: the caption's beam search and length (interrogate_clip_num_beams, _min_length,
    # _max_length), how many words of each list are ranked (interrogate_clip_dict_limit, 0: all)
    # and the lists left out (interrogate_clip_skip_categories)
    num_beams: int = Field(1, ge=1, le=16)
    min_length: int = Field(24, ge=1, le=128)
    max_length: int = Field(48, ge=1, le=256)
    dict_limit: int = Field(1500, ge=0)
    skip_categories: list[str] = Field(default_factory=list)
    # deepdanbooru: interrogate_deepbooru_score_threshold, deepbooru_sort_alpha,
    # deepbooru_use_spaces, deepbooru_escape, deepbooru_filter_tags (comma-separated)
    score_threshold: float = Field(0.5, ge=0, le=1)
    sort_alpha: bool = True
    use_spaces: bool = True
    escape: bool = True
    filter_tags: list[str] = Field(default_factory=list)
