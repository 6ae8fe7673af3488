"""Wire models of the caller's prompt styles."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from sdcore.domain.models import PromptStyle


class StyleFields(BaseModel):
    """A prompt style's texts: `{prompt}` marks where a request's prompt goes, else the style is
    appended after ", " (likewise the negative prompt)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"prompt": "{prompt}, film grain", "negative_prompt": ""}]},
    )
    prompt: str = Field("", max_length=4000)
    negative_prompt: str = Field("", max_length=4000)


class StyleBody(StyleFields):
    name: str = Field(..., min_length=1, max_length=128, pattern=r"^[^/]+$")

    def to_domain(self) -> PromptStyle:
        """The style in domain words."""
        return PromptStyle(name=self.name, prompt=self.prompt, negative_prompt=self.negative_prompt)
