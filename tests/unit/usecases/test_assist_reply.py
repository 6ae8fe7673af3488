"""Reading a language model's reply: the fixed form, as models actually write it."""

from __future__ import annotations

import pytest

from sdcore.errors import LLMError
from sdcore.usecases.assist import Assisted, answer_format, parse_reply


@pytest.mark.parametrize(
    "reply",
    [
        "Prompt: a red circle, white background\nNegative prompt: blurry, lowres",
        "Here you go:\n\n**Prompt:** a red circle, white background\n"
        "**Negative prompt:** blurry, lowres\n\nEnjoy!",
        '- PROMPT: "a red circle, white background"\n- negative_prompt: `blurry, lowres`',
        "Prompt：a red circle,\nwhite background\n\nNegative Prompt: blurry, lowres",
    ],
)
def test_the_prompts_are_read_from_the_forms_models_write(reply: str) -> None:
    assert parse_reply(reply) == Assisted("a red circle, white background", "blurry, lowres")


def test_a_reply_without_a_prompt_is_an_error() -> None:
    assert parse_reply("Prompt: a cat") == Assisted("a cat", "")
    for reply in ("a cat, sitting", "Negative prompt: blurry", "Prompt:\nNegative prompt: x"):
        with pytest.raises(LLMError, match="no `Prompt:` line"):
            parse_reply(reply)


def test_the_form_asked_for_is_the_form_read() -> None:
    lines = answer_format().splitlines()[1:]
    filled = "\n".join(line.split(":")[0] + ": words" for line in lines)
    assert parse_reply(filled) == Assisted("words", "words")
