"""The webui's prompt syntax, torch-free: extra-network tags, emphasis, BREAK, 75-token chunks.

Written from the webui's documented behaviour (its wiki, "Attention/emphasis"):

- `(text)` multiplies the attention to `text` by 1.1, `[text]` divides it by 1.1, `(text:1.3)`
  sets the multiplier to 1.3; they nest (multipliers multiply). `\\(`, `\\)`, `\\[`, `\\]` and
  `\\\\` are literal characters. A bracket left open applies to the end of the prompt; a stray
  closing bracket is literal text; a `:` that does not end a `(text:number)` is literal text.
- `BREAK` (upper case, a word on its own) ends the current 75-token chunk, inside brackets too
  (the webui's parser multiplies its marker there, which turns it into weighted text).
- Tokens fill chunks of 75; each chunk becomes BOS + 75 tokens (padded) + EOS = 77 positions,
  encoded separately and concatenated. A chunk that fills up with a comma among its last 20
  tokens is cut after that comma and the rest moves on to the next chunk.
- `<lora:name:weight>` and other `<kind:...>` extra-network tags are removed from the text the
  text encoder sees; `extract_networks` and `lora_tags` return the LoRAs they asked for
  (`<lora:name:te:unet>` or `te=`/`unet=` give the text encoder and the UNet their own weight).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sdcore.errors import InvalidInputError

CHUNK_TOKENS = 75  # tokens per chunk, between BOS and EOS
COMMA_BACKTRACK = 20  # the webui's default "comma padding backtrack"
BREAK = "BREAK"
ROUND, SQUARE = 1.1, 1 / 1.1

# `[^<>]` rather than the webui's `[^>]`: an unclosed tag then costs linear, not quadratic, time
_EXTRA_NETWORK = re.compile(r"<(\w+):([^<>]+)>")
_TOKEN = re.compile(
    r"""
    \\[()\[\]\\]                              # an escaped bracket or backslash
    | :\s*(?P<weight>[+-]?[\d.]+)\s*\)        # ":1.3)" closes a weighted group
    | [()\[\]]                                # a bracket
    | [^\\()\[\]:]+                           # plain text
    | [\\:]                                   # a lone backslash or colon: literal
    """,
    re.VERBOSE,
)
_BREAK = re.compile(r"\bBREAK\b")


@dataclass(frozen=True)
class LoraTag:
    """One `<lora:...>` tag: the webui's text-encoder and UNet multipliers."""

    name: str
    te: float = 1.0
    unet: float = 1.0


def _multiplier(value: str, name: str, field: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise InvalidInputError(
            field, f"LoRA {name!r}: weight {value.strip()!r} is not a number"
        ) from None


def _lora_tag(args: list[str], field: str) -> LoraTag:
    """The webui's arguments: `name[:te[:unet[:dyn]]]`, or named `te=`, `unet=`, `dyn=`; the
    UNet multiplier defaults to the text encoder's, that one to 1. (`dyn`, a rank cut for
    dynamic LoRAs, is accepted and not applied.)"""
    name = args[0].strip()
    positional = [a for a in args[1:] if "=" not in a]
    named = dict(a.split("=", 1) for a in args[1:] if "=" in a)
    named = {k.strip(): v for k, v in named.items()}
    te = _multiplier(positional[0], name, field) if positional and positional[0].strip() else 1.0
    te = _multiplier(named["te"], name, field) if "te" in named else te
    unet = _multiplier(positional[1], name, field) if len(positional) > 1 else te
    unet = _multiplier(named["unet"], name, field) if "unet" in named else unet
    return LoraTag(name, te, unet)


def lora_tags(prompt: str, field: str = "prompt") -> list[LoraTag]:
    """The `<lora:...>` tags of `prompt` in order, with their multipliers.

    Raises
    ------
    InvalidInputError
        A multiplier that is not a number (naming `field`).
    """
    return [
        _lora_tag(m.group(2).split(":"), field)
        for m in _EXTRA_NETWORK.finditer(prompt)
        if m.group(1).lower() in ("lora", "lyco")
    ]


def extract_networks(prompt: str, field: str = "prompt") -> tuple[str, list[tuple[str, float]]]:
    """(prompt without extra-network tags, [(lora name, weight), ...] in prompt order).

    `<lora:name>` means weight 1.0; `<lora:name:0.6>` 0.6 (the text encoder's multiplier, which
    the UNet's follows unless given: `lora_tags` has both). Tags of other kinds
    (`<hypernet:...>`) are removed from the text too, as the webui does, but not returned.

    Raises
    ------
    InvalidInputError
        A LoRA weight that is not a number (naming `field`).
    """
    loras = [(tag.name, tag.te) for tag in lora_tags(prompt, field)]
    return _EXTRA_NETWORK.sub("", prompt), loras


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    """Split a prompt into (text, multiplier) runs; `("BREAK", -1.0)` marks a BREAK.

    Adjacent runs with the same multiplier are merged; an empty prompt is `[("", 1.0)]`.
    """
    runs: list[str] = []
    breaks: set[int] = set()  # indices of BREAK markers (never multiplied)
    # (first run, end run, factor) of each closed or unclosed group, applied in one sweep at the
    # end: multiplying the runs at each closing bracket, as the webui does, is quadratic
    groups: list[tuple[int, int, float]] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def literal(piece: str) -> None:
        # BREAK and the whitespace around it; stripped by hand, since a `\s*` before it in the
        # pattern backtracks quadratically over long runs of spaces
        parts = _BREAK.split(piece)
        for i, part in enumerate(parts):
            if i > 0:
                breaks.add(len(runs))
                runs.append(BREAK)
                part = part.lstrip()
            if i < len(parts) - 1:
                part = part.rstrip()
            runs.append(part)

    for match in _TOKEN.finditer(text):
        token, weight = match.group(0), match.group("weight")
        number = _number(weight) if weight is not None else None
        if token.startswith("\\") and len(token) == 2:
            literal(token[1])
        elif token == "(":
            round_open.append(len(runs))
        elif token == "[":
            square_open.append(len(runs))
        elif number is not None and round_open:
            groups.append((round_open.pop(), len(runs), number))
        elif token == ")" and round_open:
            groups.append((round_open.pop(), len(runs), ROUND))
        elif token == "]" and square_open:
            groups.append((square_open.pop(), len(runs), SQUARE))
        else:
            literal(token)
    groups += [(start, len(runs), ROUND) for start in round_open]
    groups += [(start, len(runs), SQUARE) for start in square_open]

    merged: list[tuple[str, float]] = []
    for i, (piece, mult) in enumerate(zip(runs, _multipliers(len(runs), groups), strict=True)):
        if i in breaks:
            merged.append((BREAK, -1.0))
        elif not piece:
            continue
        elif merged and merged[-1][1] == mult and merged[-1] != (BREAK, -1.0):
            merged[-1] = (merged[-1][0] + piece, mult)
        else:
            merged.append((piece, mult))
    return merged or [("", 1.0)]


def _multipliers(count: int, groups: list[tuple[int, int, float]]) -> list[float]:
    """Each run's product of the factors of the groups covering it, in one sweep."""
    starting: dict[int, list[float]] = {}
    ending: dict[int, list[float]] = {}
    for first, end, factor in groups:
        if first < end:
            starting.setdefault(first, []).append(factor)
            ending.setdefault(end, []).append(factor)
    out: list[float] = []
    product, zeros = 1.0, 0  # the product of the non-zero factors in force, and how many are 0
    active = 0
    for i in range(count):
        for factor in ending.get(i, ()):
            active -= 1
            if factor == 0:
                zeros -= 1
            else:
                product /= factor
        if not active:
            product = 1.0  # no rounding drift carried out of a group
        for factor in starting.get(i, ()):
            active += 1
            if factor == 0:
                zeros += 1
            else:
                product *= factor
        out.append(0.0 if zeros else product)
    return out


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


@dataclass
class Chunk:
    """One 77-position text-encoder input: token ids and their attention multipliers."""

    tokens: list[int] = field(default_factory=list)
    multipliers: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Vocabulary:
    """The ids chunking needs from a tokenizer. `comma` is None when the vocabulary has none."""

    bos: int
    eos: int
    pad: int
    comma: int | None


def chunk_prompt(
    parsed: Sequence[tuple[str, float]],
    tokenize: Callable[[str], list[int]],
    vocab: Vocabulary,
) -> list[Chunk]:
    """Token chunks of a parsed prompt: each BOS + up to 75 tokens + EOS, then padding to 77
    positions, multiplier 1.0 on BOS, EOS and padding. At least one chunk (an empty prompt is
    all padding). The webui's layout: CLIP pads with EOS; OpenCLIP (SD 2.x, SDXL's second
    encoder) keeps one EOS after the tokens and pads with its pad token ("!")."""
    chunks: list[Chunk] = []
    current = Chunk()
    last_comma = -1

    def close() -> None:
        nonlocal current, last_comma
        fill = CHUNK_TOKENS - len(current.tokens)
        current.tokens = [vocab.bos, *current.tokens, vocab.eos, *[vocab.pad] * fill]
        current.multipliers = [1.0, *current.multipliers, *[1.0] * fill, 1.0]
        chunks.append(current)
        current, last_comma = Chunk(), -1

    for text, mult in parsed:
        if text == BREAK and mult == -1.0:
            close()
            continue
        for token in tokenize(text):
            if token == vocab.comma:
                last_comma = len(current.tokens)
            elif (
                len(current.tokens) == CHUNK_TOKENS
                and last_comma != -1
                and len(current.tokens) - last_comma <= COMMA_BACKTRACK
            ):
                # the chunk is full: cut it after its last comma, carry the rest over
                cut = last_comma + 1
                moved = Chunk(current.tokens[cut:], current.multipliers[cut:])
                del current.tokens[cut:], current.multipliers[cut:]
                close()
                current = moved
            if len(current.tokens) == CHUNK_TOKENS:
                close()
            current.tokens.append(token)
            current.multipliers.append(mult)
    if current.tokens or not chunks:
        close()
    return chunks


def mentions(name: str, *texts: str) -> bool:
    """Whether a textual-inversion embedding called `name` is used in any of `texts`: as a
    whole word, as the webui's tokenizer-level match amounts to for names made of words."""
    pattern = re.compile(rf"(?<![\w-]){re.escape(name)}(?![\w-])")
    return any(pattern.search(t) for t in texts)
