"""The webui's prompt syntax: emphasis, BREAK, 75-token chunks, extra-network tags; and the
embeddings built from them on the tiny model."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from sdcore.engine.conditioning import PromptEncoder
from sdcore.engine.diffusers_engine import DiffusersEngine
from sdcore.errors import InvalidInputError
from sdcore.ports import EngineInputs
from sdcore.webui.prompt_syntax import (
    BREAK,
    Vocabulary,
    chunk_prompt,
    extract_networks,
    lora_tags,
    parse_prompt_attention,
)

from .support import Steps, gen

# --- emphasis: the examples the webui documents for its parser ---------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("normal text", [("normal text", 1.0)]),
        ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
        ("(unbalanced", [("unbalanced", 1.1)]),
        ("\\(literal\\]", [("(literal]", 1.0)]),
        ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
        (
            "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
            [
                ("a ", 1.0),
                ("house", 1.3 * 1.1 * 1.1),
                (" ", 1.1),
                ("on", 1.0),
                (" a ", 1.1),
                ("hill", 0.55),
                (", sun, ", 1.1),
                ("sky", 1.1**4),
                (".", 1.1),
            ],
        ),
        ("[faded]", [("faded", 1 / 1.1)]),
        ("((a) b:1.5)", [("a", 1.1 * 1.5), (" b", 1.5)]),
        ("time: 12:30", [("time: 12:30", 1.0)]),  # colons not closing a group are text
        ("stray) and ] brackets", [("stray) and ] brackets", 1.0)]),
        ("\\\\ back\\slash", [("\\ back\\slash", 1.0)]),
        ("a BREAK b", [("a", 1.0), (BREAK, -1.0), ("b", 1.0)]),
        ("", [("", 1.0)]),
    ],
)
def test_parse_prompt_attention(text: str, expected: list[tuple[str, float]]) -> None:
    got = parse_prompt_attention(text)
    assert [t for t, _ in got] == [t for t, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected])


def test_lora_tags_have_the_webui_text_encoder_and_unet_multipliers() -> None:
    tags = lora_tags("<lora:a> <lora:b:0.5> <lora:c:0.5:0.8> <lora:d:te=0.2:unet=0.9:dyn=4> "
                     "<lora:e:0.3:unet=0> <hypernet:h:1>")  # fmt: skip
    assert [(t.name, t.te, t.unet) for t in tags] == [
        ("a", 1.0, 1.0),
        ("b", 0.5, 0.5),  # the UNet follows the text encoder unless given
        ("c", 0.5, 0.8),
        ("d", 0.2, 0.9),
        ("e", 0.3, 0.0),
    ]
    with pytest.raises(InvalidInputError, match="'x' is not a number") as err:
        lora_tags("<lora:a:1:x>", field="negative_prompt")
    assert err.value.field == "negative_prompt"


def test_extract_networks_strips_tags_and_returns_loras() -> None:
    text, loras = extract_networks("a cat <lora:ink:0.6>, <lora:paper> <hypernet:h:1> on a mat")
    assert text == "a cat ,   on a mat"
    assert loras == [("ink", 0.6), ("paper", 1.0)]
    assert extract_networks("no tags (here:1.2)") == ("no tags (here:1.2)", [])
    with pytest.raises(InvalidInputError) as err:
        extract_networks("<lora:ink:heavy>", field="negative_prompt")
    assert err.value.field == "negative_prompt"


def test_unclosed_tags_and_long_spaces_parse() -> None:
    # sizes at which the earlier quadratic sweeps took seconds; their speed is a benchmark's
    # business (a wall-clock bound here failed on a busy machine)
    assert extract_networks("<a:" * 5_000) == ("<a:" * 5_000, [])
    assert parse_prompt_attention(" " * 20_000 + "BREAK x") == [
        (BREAK, -1.0),
        ("x", 1.0),
    ]
    assert parse_prompt_attention("a  BREAK  b BREAKING") == [
        ("a", 1.0),
        (BREAK, -1.0),
        ("b BREAKING", 1.0),
    ]
    # unbalanced brackets by the thousand (a quadratic sweep took seconds)
    assert len(parse_prompt_attention("(a" * 10_000)) > 1000
    assert parse_prompt_attention("(a)" * 6_000) == [("a" * 6_000, 1.1)]


def test_zero_weights_and_break_inside_a_group() -> None:
    assert parse_prompt_attention("(a:0) b (c:0)d") == [("a", 0), (" b ", 1), ("c", 0), ("d", 1)]
    assert parse_prompt_attention("(x BREAK y)") == [("x", 1.1), (BREAK, -1.0), ("y", 1.1)]
    assert parse_prompt_attention("((a)) b")[-1] == (" b", 1.0)  # exactly 1 after the groups


# --- chunks of 75 tokens ----------------------------------------------------------------------

VOCAB = Vocabulary(bos=1000, eos=1001, pad=1001, comma=44)


def words(text: str) -> list[int]:
    """A stand-in tokenizer: one token per word, "," is the comma token."""
    return [44 if w == "," else len(w) for w in text.replace(",", " , ").split()]


def test_short_prompt_is_one_padded_chunk_with_multipliers() -> None:
    [chunk] = chunk_prompt(parse_prompt_attention("a (bb:1.5) ccc"), words, VOCAB)
    assert len(chunk.tokens) == len(chunk.multipliers) == 77
    assert chunk.tokens[:5] == [1000, 1, 2, 3, 1001] and chunk.tokens[-1] == 1001
    assert chunk.multipliers[:4] == [1.0, 1.0, 1.5, 1.0]
    assert set(chunk.multipliers[4:]) == {1.0}


def test_openclip_chunks_keep_one_end_token_then_pad() -> None:
    """SD 2.x and SDXL's second encoder: the webui writes the end token after the text and
    fills the rest with the pad token (0, "!"), where CLIP pads with the end token itself."""
    openclip = Vocabulary(bos=1000, eos=1001, pad=0, comma=44)
    [chunk] = chunk_prompt(parse_prompt_attention("a bb ccc"), words, openclip)
    assert chunk.tokens[:5] == [1000, 1, 2, 3, 1001] and set(chunk.tokens[5:]) == {0}
    [full] = chunk_prompt(parse_prompt_attention("x " * 75), words, openclip)
    assert full.tokens == [1000] + [1] * 75 + [1001]
    [empty] = chunk_prompt(parse_prompt_attention(""), words, openclip)
    assert empty.tokens == [1000, 1001] + [0] * 75


def test_long_prompts_fill_75_token_chunks_and_break_starts_a_new_one() -> None:
    chunks = chunk_prompt(parse_prompt_attention("x " * 160), words, VOCAB)
    assert len(chunks) == 3
    assert [sum(t == 1 for t in c.tokens) for c in chunks] == [75, 75, 10]
    broken = chunk_prompt(parse_prompt_attention("x x BREAK x"), words, VOCAB)
    assert [sum(t == 1 for t in c.tokens) for c in broken] == [2, 1]
    assert chunk_prompt(parse_prompt_attention(""), words, VOCAB)[0].tokens == [1000] + [1001] * 76


def test_a_full_chunk_moves_the_words_after_its_last_comma_to_the_next() -> None:
    # 70 words, a comma, 4 words: the chunk is full (75); the 76th word would split "w w w w"
    # from its comma, so the 4 words after the comma move on
    text = "x " * 70 + ", " + "w " * 4 + "y"
    first, second = chunk_prompt(parse_prompt_attention(text), words, VOCAB)
    assert first.tokens[1:72] == [1] * 70 + [44] and set(first.tokens[72:]) == {1001}
    assert second.tokens[1:6] == [1, 1, 1, 1, 1]  # "w w w w y"
    # without a comma in the last 20 tokens nothing moves
    far = "x " * 10 + ", " + "w " * 64 + "y"
    a, b = chunk_prompt(parse_prompt_attention(far), words, VOCAB)
    assert sum(t != 1001 for t in a.tokens[1:-1]) == 75 and b.tokens[1] == 1


# --- embeddings on the tiny model --------------------------------------------------------------


@pytest.fixture(scope="module")
def encoder(engine: DiffusersEngine) -> PromptEncoder:
    assert engine.model.encoder is not None
    return engine.model.encoder


def test_embeddings_are_77_per_chunk_and_prompt_and_negative_match(encoder: PromptEncoder) -> None:
    long = "a red circle, " * 40  # well over 75 tokens with the byte-level tiny vocabulary
    assert len(encoder.chunks(long)) >= 2
    pair = encoder.encode_pair(long, "blurry", clip_skip=1)
    cond, uncond = pair.cond, pair.uncond
    assert pair.pooled is None  # SD 1.x has no pooled conditioning
    assert cond.shape == uncond.shape
    assert cond.shape[1] == 77 * len(encoder.chunks(long))


def test_emphasis_one_is_plain_and_other_weights_change_the_embedding(
    encoder: PromptEncoder,
) -> None:
    def enc(text: str) -> torch.Tensor:
        return encoder.encode_chunks(encoder.chunks(text), 1)[0]

    plain = enc("a red circle")
    assert torch.equal(enc("a (red:1.0) circle"), plain)
    assert torch.equal(enc("a red circle <lora:ink:0.8>"), plain)  # tags never reach CLIP
    strong = enc("a (red:1.5) circle")
    assert not torch.allclose(strong, plain)
    assert not torch.allclose(enc("a [red] circle"), plain)


def test_emphasis_keeps_the_chunk_mean(encoder: PromptEncoder) -> None:
    # the random tiny encoder's final layer norm has zero bias, so its outputs have mean ~0;
    # a trained one does not: give a copy a bias to see the webui's mean-preserving rescale
    text_encoder = copy.deepcopy(encoder.text_encoder)
    text_encoder.final_layer_norm.bias.data += 0.5
    biased = PromptEncoder(encoder.tokenizer, text_encoder)
    plain = biased.encode_chunks(biased.chunks("a red circle"), 1)[0]
    strong = biased.encode_chunks(biased.chunks("a (red circle:1.6)"), 1)[0]
    assert not torch.allclose(strong, plain)
    assert strong.mean().item() == pytest.approx(plain.mean().item(), rel=1e-4)


def test_clip_skip_takes_an_earlier_layer_and_is_bounded(encoder: PromptEncoder) -> None:
    chunks = encoder.chunks("a red circle")
    assert not torch.allclose(
        encoder.encode_chunks(chunks, 2)[0], encoder.encode_chunks(chunks, 1)[0]
    )
    with pytest.raises(InvalidInputError) as err:
        encoder.encode_chunks(chunks, encoder.layers + 1)
    assert err.value.field == "clip_skip"


def test_prompt_past_75_tokens_still_changes_the_image(engine: DiffusersEngine) -> None:
    head = "a red circle " * 40
    assert len(engine.model.encoder.chunks(head)) >= 2  # type: ignore[union-attr]
    a = engine.run(gen(prompt=head), EngineInputs(), Steps()).images[0]
    b = engine.run(gen(prompt=head + "blue"), EngineInputs(), Steps()).images[0]
    same = engine.run(gen(prompt=head), EngineInputs(), Steps()).images[0]
    assert np.array_equal(np.asarray(a), np.asarray(same))
    assert not np.array_equal(np.asarray(a), np.asarray(b))
