"""The prompt assistant: a user's few words (often Chinese) to an English prompt and a negative
prompt. With a language model (SD_LLM) the model writes them, in a fixed form this module
parses; without one the offline translator turns the words into English. Either way the
template's prompt skeleton and negative prompt, then the caller's prompt style, are applied, and
the prompt filter judges the result as it judges a user's prompt.

The model's reply streams: each piece is passed on only once the filter has seen it, up to its
last whitespace (a blocked term is never half passed on, and a refusal stops the stream)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from sdcore.configs import config_dir
from sdcore.domain.models import PromptStyle
from sdcore.domain.templates import Template
from sdcore.errors import InvalidInputError, LLMError, NotFoundError
from sdcore.guards.prompt_filter import PromptFilter
from sdcore.ports.assistant import ChatMessage
from sdcore.services import Services
from sdcore.usecases.auth import Principal
from sdcore.usecases.prompts import prompt_filter
from sdcore.usecases.styles import get_style, merge_prompt
from sdcore.usecases.templates import get_template

MAX_TOKENS = 512  # a prompt and a negative prompt fit in far fewer
# the offline assistant reads these languages (the translator's Chinese, and English as is)
OFFLINE_LANGUAGES = ("zh", "en")
CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff]")
# "Prompt: ..." and "Negative prompt: ...", forgiving the markdown a model may add
_LABEL = re.compile(
    r"^[\s>*_`#-]*(?P<label>negative[\s_-]*prompt|prompt)[\s*_`]*[:：]\s*(?P<text>.*)$",
    re.IGNORECASE,
)
_WRAPPING = " \t\"'`*_“”"


@dataclass(frozen=True)
class AssistRequest:
    text: str
    template: str | None = None  # a template's name: its system prompt, skeleton, negative
    style: str | None = None  # one of the caller's prompt styles
    language: str | None = None  # the language `text` is in (e.g. "zh"); None: any


@dataclass(frozen=True)
class Assisted:
    prompt: str
    negative_prompt: str


def default_system_prompt() -> str:
    """The system prompt a template without one of its own gets (configs/assistant)."""
    return (config_dir("assistant") / "system.txt").read_text(encoding="utf-8").strip()


def answer_format() -> str:
    """The form every reply is asked for (appended to every system prompt), which
    `parse_reply` reads."""
    return (config_dir("assistant") / "answer-format.txt").read_text(encoding="utf-8").strip()


def parse_reply(reply: str) -> Assisted:
    """The prompt and negative prompt of a model's reply: a `Prompt:` line and a
    `Negative prompt:` line (labels in any case, markdown and quotes around them dropped;
    lines up to the next label or blank line continue the one before).

    Raises
    ------
    LLMError
        The reply has no prompt.
    """
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in reply.splitlines():
        match = _LABEL.match(line)
        if match:
            key = "negative" if match["label"].lower().startswith("negative") else "prompt"
            current = found.setdefault(key, [])
            current.append(match["text"])
        elif not line.strip():
            current = None
        elif current is not None:
            current.append(line)
    prompt = " ".join(" ".join(found.get("prompt", [])).split()).strip(_WRAPPING)
    negative = " ".join(" ".join(found.get("negative", [])).split()).strip(_WRAPPING)
    if not prompt:
        raise LLMError("the language model's reply has no `Prompt:` line")
    return Assisted(prompt, negative)


def _template(svc: Services, who: Principal, name: str | None) -> Template | None:
    if name is None:
        return None
    try:
        return get_template(svc, who, name)
    except NotFoundError:
        raise InvalidInputError("template", f"no template named {name}") from None


def _style(svc: Services, who: Principal, name: str | None) -> PromptStyle | None:
    if name is None:
        return None
    try:
        return get_style(svc, who, name)
    except NotFoundError:
        raise InvalidInputError("style", f"no style named {name}") from None


def _finish(
    made: Assisted, template: Template | None, style: PromptStyle | None, terms: PromptFilter
) -> Assisted:
    """`made` with the template's skeleton and negative prompt, then the style, applied; the
    result judged by the filter."""
    prompt, negative = made.prompt, made.negative_prompt
    if template is not None:
        prompt = merge_prompt(template.base_prompt, prompt)
        negative = negative or str(template.fields.get("negative_prompt") or "")
    if style is not None:
        prompt = merge_prompt(style.prompt, prompt)
        negative = merge_prompt(style.negative_prompt, negative)
    if terms.find(prompt) or terms.find(negative):
        raise InvalidInputError("text", "the prompt made from it contains a blocked term")
    return Assisted(prompt, negative)


def _filtered(pieces: Iterator[str], terms: PromptFilter) -> Iterator[str]:
    """`pieces` passed on up to each one's last whitespace once the filter has judged all
    passed so far (the rest at the end).

    Raises InvalidInputError (`text`) as soon as the reply holds a blocked term."""
    reply, sent = "", 0
    for piece in pieces:
        reply += piece
        cut = max(reply.rfind(" "), reply.rfind("\n"), reply.rfind("\t")) + 1
        if cut > sent:
            if terms.find(reply[:cut]):
                raise InvalidInputError("text", "the prompt made from it contains a blocked term")
            yield reply[sent:cut]
            sent = cut
    if sent < len(reply):
        if terms.find(reply):
            raise InvalidInputError("text", "the prompt made from it contains a blocked term")
        yield reply[sent:]


def _system(template: Template | None, language: str | None) -> str:
    own = template.system_prompt if template is not None else ""
    parts = [own or default_system_prompt()]
    if language:
        parts.append(f"The user writes in the language tagged {language}.")
    parts.append(answer_format())
    return "\n\n".join(parts)


def _offline_text(svc: Services, text: str, language: str | None) -> str:
    if language and language.split("-")[0].lower() not in OFFLINE_LANGUAGES:
        raise InvalidInputError(
            "language",
            "without a language model (SD_LLM) the assistant reads Chinese and English only",
        )
    if not CJK.search(text):
        return text.strip()
    if svc.translator is None:
        raise InvalidInputError(
            "text", "this deployment has neither a language model nor a translator for it"
        )
    translated = svc.translator.translate(text).strip()
    if not translated:
        raise InvalidInputError("text", "nothing in it could be translated")
    return translated


def start_assist(svc: Services, who: Principal, request: AssistRequest) -> Iterator[str | Assisted]:
    """The assistant's reply to `request`: its text in pieces as they come (a model's raw reply;
    offline, the prompt in one piece), then, last, the `Assisted` prompts.

    What can be checked before the model is asked is checked at once, by this call; what comes
    after raises while the pieces are read.

    Raises
    ------
    InvalidInputError
        An unknown template (`template`) or style (`style`); a blocked term in the text, the
        reply or the result (`text`); offline, a language it cannot read (`language`).
    LLMError
        While reading: the model failed after its retries, or its reply has no prompt.
    """
    terms = prompt_filter(svc).get()
    if terms.find(request.text):
        raise InvalidInputError("text", "contains a blocked term")
    template = _template(svc, who, request.template)
    style = _style(svc, who, request.style)
    if svc.chat is None:  # all known now: a refusal is an answer of its own, not mid-stream
        made = Assisted(_offline_text(svc, request.text, request.language), "")
        return iter([made.prompt, _finish(made, template, style, terms)])
    system = _system(template, request.language)
    pieces = svc.chat.stream(system, [ChatMessage("user", request.text)], MAX_TOKENS)
    return _modelled(_filtered(pieces, terms), template, style, terms)


def _modelled(
    pieces: Iterator[str],
    template: Template | None,
    style: PromptStyle | None,
    terms: PromptFilter,
) -> Iterator[str | Assisted]:
    reply = []
    for piece in pieces:
        reply.append(piece)
        yield piece
    yield _finish(parse_reply("".join(reply)), template, style, terms)


def assist(svc: Services, who: Principal, request: AssistRequest) -> Assisted:
    """The prompt and negative prompt for `request`, whole. Raises as `start_assist`."""
    for item in start_assist(svc, who, request):
        if isinstance(item, Assisted):
            return item
    raise LLMError("the assistant gave no answer")  # start_assist always ends with one
