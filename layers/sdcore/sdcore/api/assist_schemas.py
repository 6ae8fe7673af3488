"""Wire models of the prompt assistant (POST /prompts/assist)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from sdcore.domain.templates import TEMPLATE_NAME
from sdcore.usecases.assist import Assisted, AssistRequest

MAX_TEXT = 2000  # a few words to a paragraph; the model's reply is bounded too


class AssistBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"text": "红色的圆形，白色背景", "language": "zh"}]},
    )
    text: str = Field(
        ..., min_length=1, max_length=MAX_TEXT, description="the user's words, in any language"
    )
    template: str | None = Field(
        None,
        pattern=TEMPLATE_NAME,
        description="a template: its assistant system prompt, prompt skeleton, negative prompt",
    )
    style: str | None = Field(
        None, min_length=1, max_length=128, description="one of your prompt styles, applied last"
    )
    language: str | None = Field(
        None,
        pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$",
        description="the language `text` is in, as a BCP 47 tag (zh, zh-TW, en)",
    )

    def to_request(self) -> AssistRequest:
        return AssistRequest(self.text, self.template, self.style, self.language)


class AssistAnswer(BaseModel):
    prompt: str = Field(description="an English prompt")
    negative_prompt: str

    @classmethod
    def of(cls, made: Assisted) -> AssistAnswer:
        return cls(prompt=made.prompt, negative_prompt=made.negative_prompt)
