"""The prompt assistant's ports: a chat model (an LLM) and the offline translator."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ChatMessage:
    role: str  # "user" or "assistant"
    text: str


class ChatModel(Protocol):
    def stream(
        self, system: str, messages: list[ChatMessage], max_tokens: int = 512
    ) -> Iterator[str]:
        """The reply's text in pieces, as they come. Raises LLMError (sdcore.errors) after
        retries."""


class Translator(Protocol):
    def translate(self, text: str) -> str:
        """`text` with its Chinese words in English (non-CJK text kept as it is)."""
