"""Write the CLIP tokenizer files (vocab.json, merges.txt, tokenizer_config.json) offline.

Two vocabularies:

* ``--bpe bpe_simple_vocab_16e6.txt.gz``: the real CLIP ViT-L/14 tokenizer SD 1.x uses, built the
  way OpenAI CLIP's ``SimpleTokenizer`` builds it (the file ships in the open-clip-torch wheel:
  ``pip download --no-deps open-clip-torch==3.3.0`` and unzip ``open_clip/``). 49408 tokens,
  ``<|startoftext|>`` = 49406, ``<|endoftext|>`` = 49407.
* ``--tiny``: a small byte-level vocabulary (256 byte symbols, their ``</w>`` forms, a few merges,
  the two special tokens) for the tiny demo model, so its text encoder stays small.
* ``--words w1 w2 ...``: the same byte-level vocabulary with just the merges that make each given
  word one token (the trained shapes demo model: ``--words shapes`` takes its prompt words).

Usage::

    python scripts/make_clip_tokenizer.py --bpe /tmp/oc/open_clip/bpe_simple_vocab_16e6.txt.gz \
        --out layers/sdcore/sdcore/configs/sd15/tokenizer
    python scripts/make_clip_tokenizer.py --tiny \
        --out layers/sdcore/sdcore/configs/tiny-sd/tokenizer
    python scripts/make_clip_tokenizer.py --words shapes \
        --out layers/sdcore/sdcore/configs/demo-shapes/tokenizer
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

# CLIP's vocabulary: 256 byte symbols, 256 `</w>` forms, 48894 merges, 2 special tokens = 49408.
N_MERGES = 49152 - 256 - 2
START, END = "<|startoftext|>", "<|endoftext|>"

# A handful of merges for the tiny vocabulary: enough that BPE actually runs, small enough to read.
TINY_MERGES = [
    "i n", "t h", "a n", "r e", "a r", "e r", "th e</w>", "in g</w>", "o n", "e d</w>",
    "re d</w>", "c i", "ci r", "cir c", "circ l", "circl e</w>", "s q", "u a", "sq ua",
]  # fmt: skip


def bytes_to_unicode() -> dict[int, str]:
    """OpenAI CLIP/GPT-2's reversible map from bytes to printable unicode characters."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def build(merges: list[tuple[str, str]]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary in SimpleTokenizer's order: bytes, bytes + `</w>`, each merge, the specials."""
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += [START, END]
    encoder = {tok: i for i, tok in enumerate(vocab)}
    if len(encoder) != len(vocab):
        raise ValueError("duplicate token in the vocabulary")
    return encoder, merges


def bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP's BPE of one lower-case word (no spaces): the lowest-ranked pair merges first."""
    parts = list(word[:-1]) + [word[-1] + "</w>"]
    while len(parts) > 1:
        pairs = [
            (ranks.get(p, len(ranks)), i) for i, p in enumerate(zip(parts, parts[1:], strict=False))
        ]
        rank, i = min(pairs)
        if rank == len(ranks):
            break
        a, b = parts[i], parts[i + 1]
        merged: list[str] = []
        j = 0
        while j < len(parts):  # merge every occurrence of the pair, left to right
            if j + 1 < len(parts) and parts[j] == a and parts[j + 1] == b:
                merged.append(a + b)
                j += 2
            else:
                merged.append(parts[j])
                j += 1
        parts = merged
    return parts


def word_merges(words: list[str]) -> list[tuple[str, str]]:
    """Merges that make each word a single token.

    Words are taken in order; a word's missing merges are appended after all earlier ones, so
    they can never change how an earlier (already single-token) word splits.
    """
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in words:
        word = word.lower()
        while len(parts := bpe(word, ranks)) > 1:
            pair = (parts[0], parts[1])
            ranks[pair] = len(merges)
            merges.append(pair)
    return merges


def read_bpe(path: Path) -> list[tuple[str, str]]:
    with gzip.open(path) as fh:
        lines = fh.read().decode("utf-8").split("\n")
    # Line 0 is the "#version" header; SimpleTokenizer keeps exactly the next N_MERGES lines.
    merges = [tuple(line.split()) for line in lines[1 : N_MERGES + 1]]
    if len(merges) != N_MERGES or any(len(m) != 2 for m in merges):
        raise ValueError(f"{path} does not look like CLIP's BPE merges file")
    return merges  # type: ignore[return-value]


def write(out: Path, encoder: dict[str, int], merges: list[tuple[str, str]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(encoder, ensure_ascii=False), encoding="utf-8")
    merges_text = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
    (out / "merges.txt").write_text(merges_text, encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "do_lower_case": True,
        "bos_token": START,
        "eos_token": END,
        "unk_token": END,
        "pad_token": END,
        "clean_up_tokenization_spaces": True,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    special = {"bos_token": START, "eos_token": END, "unk_token": END, "pad_token": END}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


def shapes_words() -> list[str]:
    from sdlocal.demo.shapes import WORDS  # torch-free

    return list(WORDS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--bpe", type=Path, help="bpe_simple_vocab_16e6.txt.gz from open_clip")
    group.add_argument("--tiny", action="store_true", help="small byte-level vocabulary")
    group.add_argument(
        "--words", nargs="+", help="words to make single tokens ('shapes': the demo's prompt words)"
    )
    parser.add_argument("--out", type=Path, required=True, help="tokenizer folder to write")
    args = parser.parse_args()
    if args.tiny:
        merges = [tuple(m.split()) for m in TINY_MERGES]
    elif args.words:
        merges = word_merges(shapes_words() if args.words == ["shapes"] else args.words)
    else:
        merges = read_bpe(args.bpe)
    encoder, merges = build(merges)  # type: ignore[arg-type]
    write(args.out, encoder, merges)
    print(f"{args.out}: {len(encoder)} tokens, {len(merges)} merges")


if __name__ == "__main__":
    main()
