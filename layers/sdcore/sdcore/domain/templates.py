"""Templates (named, versioned generation requests a user or an admin keeps) and batches (one task
per template, compared in a labelled grid when every task has ended)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from sdcore.domain.params import TaskKind

# the owner of the shared templates an admin keeps: no user is named "" (names have 1+ chars)
SHARED = ""
# a template's name: no "#" (store keys), "/" nor space (URL paths); also a file name on export
TEMPLATE_NAME = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$"


class Template(BaseModel):
    """A named generation request: `fields` are the native API's fields (webui wire names, as
    validated at save), `prompt_template` the prompt a caller's words go into."""

    owner: str  # a user, or SHARED
    name: str
    kind: TaskKind  # txt2img or img2img
    fields: dict[str, Any] = Field(default_factory=dict)
    prompt_template: str = ""
    system_prompt: str = ""
    description: str = ""
    folder: str = ""  # a tag: a batch may run every template of one folder
    version: int = 1
    updated_at: float = 0.0

    @property
    def shared(self) -> bool:
        return self.owner == SHARED

    @property
    def base_prompt(self) -> str:
        """The prompt a caller's words are merged into: `prompt_template`, else the fields'."""
        return self.prompt_template or str(self.fields.get("prompt", ""))


class BatchEntry(BaseModel):
    """One template of a batch and the task it made."""

    template: str
    task_id: str
    label: str  # the template's name and the parameters in which it differs from the others


class Batch(BaseModel):
    batch_id: str
    owner: str
    prompt: str
    entries: list[BatchEntry]
    grid: bool  # draw a comparison grid once every task has ended
    grid_key: str | None = None  # the grid's object, once drawn
    created_at: float
    expires_at: int = 0  # epoch seconds, as the tasks'
