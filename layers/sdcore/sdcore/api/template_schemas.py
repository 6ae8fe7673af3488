"""Wire models of templates, batches and the simple API. A template's generation fields are the
native request's (webui wire names), checked by that request's own schema."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sdcore.api.schemas import Img2ImgBody, Txt2ImgBody
from sdcore.clock import iso
from sdcore.domain.params import TaskKind
from sdcore.domain.templates import SHARED, TEMPLATE_NAME, Template
from sdcore.errors import InvalidInputError
from sdcore.usecases.batches import BatchState
from sdcore.usecases.submit import Submission

_BODIES: dict[TaskKind, type[Txt2ImgBody | Img2ImgBody]] = {
    TaskKind.TXT2IMG: Txt2ImgBody,
    TaskKind.IMG2IMG: Img2ImgBody,
}
# a template's tasks get their own ids: a client task id would make every run the first task
_NOT_IN_TEMPLATES = frozenset({"taskId"})
# stands in for the input image an img2img template is run with, to check the rest at save
_SOME_INPUT = "inputs/template/check.png"


def template_submission(kind: TaskKind, fields: dict[str, Any]) -> tuple[Submission, list[str]]:
    """The request `fields` make, as the native route of `kind` parses it, and the prompt styles
    they name. Raises InvalidInputError naming the first bad field (also an unknown one: a
    template keeps only what a request takes)."""
    body_type = _BODIES[kind]
    for key in fields:
        if key not in body_type.model_fields or key in _NOT_IN_TEMPLATES:
            raise InvalidInputError(key, f"not a field of a {kind.value} request")
    try:
        body = body_type.model_validate(fields)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"]) or "body"
        raise InvalidInputError(where, error["msg"]) from None
    return body.to_submission(), body.styles


def check_template_fields(kind: TaskKind, fields: dict[str, Any]) -> None:
    """Raise InvalidInputError where `fields` would not make a request of `kind` (an img2img
    template may leave its input image to the run)."""
    if kind is TaskKind.IMG2IMG and "init_images" not in fields:
        fields = {**fields, "init_images": [_SOME_INPUT]}
    template_submission(kind, fields)


class TemplateFields(BaseModel):
    """A template: its type, texts, and any field of a native txt2img/img2img request (LoRA tags
    in the prompt, `sd_vae`, the hires fix, `controlnet` units, ...) at the top level."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "templateType": "txt2img",
                    "description": "flat poster look",
                    "promptTemplate": "{prompt}, flat colours, poster",
                    "folder": "posters",
                    "steps": 20,
                    "cfg_scale": 6,
                    "width": 512,
                    "height": 768,
                }
            ]
        },
    )
    templateType: Literal["txt2img", "img2img"] = "txt2img"  # noqa: N815 (wire name)
    description: str = Field("", max_length=2000)
    promptTemplate: str = Field(  # noqa: N815
        "", max_length=20_000, description="the prompt; `{prompt}` marks where a run's goes"
    )
    systemPrompt: str = Field(  # noqa: N815
        "", max_length=20_000, description="the prompt assistant's system prompt"
    )
    folder: str = Field("", max_length=128, description="a tag: POST /batches runs a folder")
    version: int | None = Field(
        None, ge=0, description="the version this change is based on: 409 if it is not current"
    )

    @property
    def fields(self) -> dict[str, Any]:
        """The generation fields."""
        return dict(self.model_extra or {})

    @model_validator(mode="after")
    def _generation_fields(self) -> TemplateFields:
        check_template_fields(TaskKind(self.templateType), self.fields)
        return self

    def to_domain(self, name: str) -> Template:
        """The template in domain words (its owner, version and time are set when saved)."""
        return Template(
            owner=SHARED,
            name=name,
            kind=TaskKind(self.templateType),
            fields=self.fields,
            prompt_template=self.promptTemplate,
            system_prompt=self.systemPrompt,
            description=self.description,
            folder=self.folder,
        )


class TemplateBody(TemplateFields):
    name: str = Field(..., pattern=TEMPLATE_NAME, description="letters, digits, '.', '_', '-'")


class TemplateView(BaseModel):
    """A stored template: its fields as saved, `version` (1 on creation, +1 a change) and when it
    last changed; `shared`: an admin's, seen by everyone."""

    model_config = ConfigDict(extra="allow")
    name: str
    templateType: str  # noqa: N815
    description: str
    promptTemplate: str  # noqa: N815
    systemPrompt: str  # noqa: N815
    folder: str
    shared: bool
    version: int
    updatedAt: str | None  # noqa: N815

    @classmethod
    def of(cls, t: Template) -> TemplateView:
        return cls(
            name=t.name,
            templateType=t.kind.value,
            description=t.description,
            promptTemplate=t.prompt_template,
            systemPrompt=t.system_prompt,
            folder=t.folder,
            shared=t.shared,
            version=t.version,
            updatedAt=iso(t.updated_at),
            **t.fields,
        )


_TRANSLATE = (
    "put the Chinese of the prompts into English before encoding (as the request field "
    "`translate`; unset: the template's, else the deployment's SD_TRANSLATE)"
)


def _with_translate(overrides: dict[str, Any], translate: bool | None) -> dict[str, Any]:
    return overrides if translate is None else {**overrides, "translate": translate}


class RunBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"prompt": "a red fox"}]}
    )
    prompt: str = Field("", max_length=20_000, description="merged into the template's prompt")
    init_images: list[str] | None = Field(
        None, min_length=1, max_length=8, description="an img2img template's input images"
    )
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="request fields that replace the template's"
    )
    translate: bool | None = Field(None, description=_TRANSLATE)

    def all_overrides(self) -> dict[str, Any]:
        """`overrides`, with `translate` when given."""
        return _with_translate(self.overrides, self.translate)


class BatchBody(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"folder": "posters", "prompt": "a red fox"}]},
    )
    templates: list[str] | None = Field(None, min_length=1, max_length=16)
    folder: str | None = Field(None, min_length=1, max_length=128)
    prompt: str = Field("", max_length=20_000)
    init_images: list[str] | None = Field(None, min_length=1, max_length=8)
    grid: bool = Field(True, description="draw a comparison grid when every task has ended")
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="request fields applied to every template's request (not `prompt`)",
    )
    translate: bool | None = Field(None, description=_TRANSLATE)

    def all_overrides(self) -> dict[str, Any]:
        """`overrides`, with `translate` when given."""
        return _with_translate(self.overrides, self.translate)


class BatchTask(BaseModel):
    template: str
    label: str
    taskId: str  # noqa: N815
    status: str
    progress: float
    images: list[str]
    error: str | None


class BatchView(BaseModel):
    """A batch: every task's status, the progress of all together (0..1), and the comparison
    grid's object key and expiring URL once every task has ended (null before, or without)."""

    batchId: str  # noqa: N815
    status: str = Field(description="running, succeeded, partial, failed or cancelled")
    progress: float
    prompt: str
    tasks: list[BatchTask]
    grid: str | None
    gridUrl: str | None  # noqa: N815

    @classmethod
    def of(cls, state: BatchState) -> BatchView:
        tasks = [
            BatchTask(
                template=entry.template,
                label=entry.label,
                taskId=task.public_id,
                status=task.status.value,
                progress=1.0 if task.status.terminal else task.progress,
                images=task.images,
                error=task.error,
            )
            for entry, task in zip(state.batch.entries, state.tasks, strict=True)
        ]
        return cls(
            batchId=state.batch.batch_id,
            status=state.status,
            progress=round(state.progress, 4),
            prompt=state.batch.prompt,
            tasks=tasks,
            grid=state.batch.grid_key,
            gridUrl=state.grid_url,
        )
