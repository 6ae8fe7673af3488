"""Templates (the caller's and the shared ones: create, list, read, replace, delete, run) and
batches of them (one task per template, followed and cancelled as one, compared in a grid)."""

from __future__ import annotations

from typing import Annotated

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.event_handler.router import APIGatewayRouter

from sdcore.api.front_door import front_door_waits
from sdcore.api.responses import TaskAccepted, TaskResult
from sdcore.api.routes.common import (
    GENERATION,
    TEMPLATES,
    documented,
    header,
    json_body,
    principal,
)
from sdcore.api.template_schemas import (
    BatchBody,
    BatchView,
    RunBody,
    TemplateBody,
    TemplateFields,
    TemplateView,
    template_submission,
)
from sdcore.composition import get_services
from sdcore.errors import InvalidInputError
from sdcore.usecases import batches as batch_cases
from sdcore.usecases import templates as template_cases
from sdcore.usecases.submit import Idempotency

router = APIGatewayRouter()
SHARED_QUERY = Annotated[bool, Query(description="the shared template (admins change those)")]


@documented(router.get, "/templates", tags=[TEMPLATES])
def list_templates() -> list[TemplateView]:
    """The caller's templates, then the shared ones."""
    found = template_cases.list_templates(get_services(), principal(router))
    return [TemplateView.of(t) for t in found]


@documented(
    router.post,
    "/templates",
    tags=[TEMPLATES],
    responses={
        201: {"description": "Created (version 1).", **json_body(TemplateView)},
        409: {"description": "The caller (or, shared, everyone) has a template of that name."},
    },
)
def create_template(body: TemplateBody, shared: SHARED_QUERY = False) -> Response[TemplateView]:
    """Save a new template, checked as a request of its type would be."""
    made = template_cases.save_template(
        get_services(), principal(router), body.to_domain(body.name), create=True, shared=shared
    )
    return Response(201, content_types.APPLICATION_JSON, TemplateView.of(made))


@documented(router.get, "/templates/<name>", tags=[TEMPLATES])
def get_template(name: str, shared: SHARED_QUERY = False) -> TemplateView:
    """The caller's template of that name, else the shared one (`shared=true`: only that)."""
    who = principal(router)
    return TemplateView.of(
        template_cases.get_template(get_services(), who, name, True if shared else None)
    )


@documented(router.put, "/templates/<name>", tags=[TEMPLATES])
def put_template(name: str, body: TemplateFields, shared: SHARED_QUERY = False) -> TemplateView:
    """Replace the template of that name (its next version), or add it.

    With `version`, only if that is the stored version (409 otherwise).
    """
    saved = template_cases.save_template(
        get_services(),
        principal(router),
        body.to_domain(name),
        create=False,
        shared=shared,
        expected_version=body.version,
    )
    return TemplateView.of(saved)


@documented(router.delete, "/templates/<name>", tags=[TEMPLATES], responses={204: {}})
def delete_template(name: str, shared: SHARED_QUERY = False) -> Response[None]:
    """Remove a template."""
    template_cases.delete_template(get_services(), principal(router), name, shared)
    return Response(204)


@documented(
    router.post,
    "/templates/<name>/run",
    tags=[TEMPLATES, GENERATION],
    responses={
        200: {"description": "Sync: the task ended.", **json_body(TaskResult)},
        202: {"description": "Async, or a sync wait that ran out.", **json_body(TaskAccepted)},
    },
)
def run_template(name: str, body: RunBody) -> Response[TaskResult | TaskAccepted]:
    """Run a template: one task, the prompt merged into the template's, overrides applied.

    As POST /txt2img: header Request-Type sync (the default) or async; Idempotency-Key.
    """
    request_type = (header(router, "Request-Type") or "sync").lower()
    if request_type not in ("sync", "async"):
        raise InvalidInputError("Request-Type", "must be 'sync' or 'async'")
    svc = get_services()
    key = header(router, "Idempotency-Key")
    sent = {"template": name, **body.model_dump(mode="json")}
    with front_door_waits(router):
        done = template_cases.run_template(
            svc,
            principal(router),
            name,
            body.prompt,
            template_submission,
            init_images=body.init_images,
            overrides=body.all_overrides(),
            idempotency=Idempotency(key, sent) if key is not None else None,
            wait_s=svc.settings.sync_timeout_s if request_type == "sync" else 0,
        )
    if request_type == "async" or not done.task.status.terminal:
        return Response(202, content_types.APPLICATION_JSON, TaskAccepted.of(done.task))
    return Response(200, content_types.APPLICATION_JSON, TaskResult.of(done))


@documented(
    router.post,
    "/batches",
    tags=[TEMPLATES],
    responses={202: {"description": "The batch's tasks are queued.", **json_body(BatchView)}},
)
def create_batch(body: BatchBody) -> Response[BatchView]:
    """Run templates (by name, or a folder) as a batch: one task each, then a grid.

    Poll GET /batches/{batchId}; the grid comes when every task has ended. An Idempotency-Key
    makes a repeat answer the first batch.
    """
    key = header(router, "Idempotency-Key")
    state = batch_cases.create_batch(
        get_services(),
        principal(router),
        body.prompt,
        template_submission,
        names=body.templates,
        folder=body.folder,
        init_images=body.init_images,
        grid=body.grid,
        overrides=body.all_overrides(),
        idempotency=Idempotency(key, body.model_dump(mode="json")) if key is not None else None,
    )
    return Response(202, content_types.APPLICATION_JSON, BatchView.of(state))


@documented(router.get, "/batches/<batchId>", tags=[TEMPLATES])
def get_batch(batchId: str) -> BatchView:  # noqa: N803 (path parameter name)
    """A batch: each task's status, the progress of all, and the grid once all ended."""
    return BatchView.of(batch_cases.get_batch(get_services(), principal(router), batchId))


@documented(router.post, "/batches/<batchId>/cancellation", tags=[TEMPLATES])
def cancel_batch(batchId: str) -> BatchView:  # noqa: N803
    """Cancel every task of a batch that has not ended (idempotent)."""
    return BatchView.of(batch_cases.cancel_batch(get_services(), principal(router), batchId))
