"""Admin routes: users and API keys, model upload into storage, verification, listing, deletion,
and the inference functions (one per checkpoint). Only the admin function serves them; the
proxy's OpenAPI document describes them too."""

from __future__ import annotations

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.router import APIGatewayRouter

from sdcore.api.admin_schemas import (
    CompleteBody,
    FunctionsDeleteBody,
    FunctionsUpdateBody,
    ModelImportBody,
    ModelRenameBody,
    ModelUploadBody,
    UserBody,
)
from sdcore.api.responses import (
    AdminModel,
    FunctionInfo,
    KeyInfo,
    NewKey,
    PartUrl,
    ReceivedPart,
    UploadPlanBody,
    UploadStatusBody,
    UserCreated,
    UserInfo,
    UserListing,
)
from sdcore.api.routes.common import (
    ADMIN_FUNCTIONS,
    ADMIN_MODELS,
    ADMIN_STATS,
    ADMIN_USERS,
    documented,
    json_body,
)
from sdcore.api.stats_schemas import StatsBody
from sdcore.composition import get_services
from sdcore.domain.models import ModelType
from sdcore.ports import UploadedPart
from sdcore.usecases import auth as auth_cases
from sdcore.usecases import functions as function_cases
from sdcore.usecases import models as model_cases
from sdcore.usecases.stats import task_stats

router = APIGatewayRouter()


def _created(body: object) -> dict[int, dict[str, object]]:
    return {201: {"description": "Created", **json_body(body)}}


def _accepted(body: object) -> dict[int, dict[str, object]]:
    return {202: {"description": "Accepted: a job runs; follow GET /admin/models/{name}",
                  **json_body(body)}}  # fmt: skip


@documented(router.post, "/admin/users", tags=[ADMIN_USERS], responses=_created(UserCreated))
def create_user(body: UserBody) -> Response[UserCreated]:
    """Create a user.

    The answer holds their API key and webhook secret, shown only this once.
    """
    user, key = auth_cases.create_user(get_services(), body.name, body.role)
    created = UserCreated(**UserInfo.of(user).model_dump(), apiKey=key,
                          webhookSecret=user.webhook_secret)  # fmt: skip
    return Response(201, content_types.APPLICATION_JSON, created)


@documented(router.get, "/admin/users", tags=[ADMIN_USERS])
def list_users() -> list[UserListing]:
    """Every user, with the prefixes of their keys (never the keys)."""
    return [
        UserListing(**UserInfo.of(user).model_dump(), keys=[KeyInfo.of(k) for k in keys])
        for user, keys in auth_cases.list_users(get_services())
    ]


@documented(router.post, "/admin/users/<name>/revoke", tags=[ADMIN_USERS])
def revoke_user(name: str) -> UserInfo:
    """Disable a user and revoke all their keys."""
    return UserInfo.of(auth_cases.revoke_user(get_services(), name))


@documented(router.post, "/admin/users/<name>/keys", tags=[ADMIN_USERS],
            responses=_created(NewKey))  # fmt: skip
def new_key(name: str) -> Response[NewKey]:
    """Another API key for a user, shown only this once."""
    key = NewKey(name=name, apiKey=auth_cases.new_key(get_services(), name))
    return Response(201, content_types.APPLICATION_JSON, key)


@documented(router.post, "/admin/models", tags=[ADMIN_MODELS],
            responses=_created(UploadPlanBody))  # fmt: skip
def create_upload(body: ModelUploadBody) -> Response[UploadPlanBody]:
    """Start uploading a model (or with "update" a new version of one).

    Answers presigned part URLs; PUT each part, then POST .../complete. The same file again
    resumes the upload in progress.
    """
    plan = model_cases.start_upload(
        get_services(), body.name, body.type, body.size, body.sha256, body.config, body.update
    )
    out = UploadPlanBody(
        name=plan.model.name,
        status=plan.model.status.value,
        uploadId=plan.upload_id,
        partSize=plan.part_size,
        parts=[PartUrl(partNumber=n, url=url) for n, url in enumerate(plan.part_urls, 1)],
    )
    return Response(201, content_types.APPLICATION_JSON, out)


@documented(router.post, "/admin/models/import", tags=[ADMIN_MODELS],
            responses=_accepted(AdminModel))  # fmt: skip
def import_model(body: ModelImportBody) -> Response[AdminModel]:
    """Import a model from an http(s) URL, as a job."""
    model = model_cases.start_import(
        get_services(), body.name, body.type, body.url, body.sha256, body.config, body.update
    )
    return Response(202, content_types.APPLICATION_JSON, AdminModel.of(model))


@documented(router.post, "/admin/models/<name>/complete", tags=[ADMIN_MODELS],
            responses=_accepted(AdminModel))  # fmt: skip
def complete_upload(name: str, body: CompleteBody) -> Response[AdminModel]:
    """Close the upload and queue its verification (size, sha256, format, type)."""
    parts = [UploadedPart(part_number=p.partNumber, etag=p.etag) for p in body.parts]
    model = model_cases.complete_upload(get_services(), name, parts)
    return Response(202, content_types.APPLICATION_JSON, AdminModel.of(model))


@documented(router.get, "/admin/models/<name>/upload", tags=[ADMIN_MODELS])
def upload_status(name: str) -> UploadStatusBody:
    """Parts received so far of an upload in progress (to resume it)."""
    model, parts = model_cases.upload_status(get_services(), name)
    assert model.pending is not None
    return UploadStatusBody(
        name=model.name,
        uploadId=model.pending.upload_id,
        partSize=model.pending.part_size,
        size=model.pending.size,
        sha256=model.pending.sha256,
        parts=[ReceivedPart(partNumber=p.part_number, etag=p.etag) for p in parts],
    )


@documented(router.delete, "/admin/models/<name>/upload", tags=[ADMIN_MODELS])
def abort_upload(name: str) -> AdminModel:
    """Abort the upload or import in progress (a model never usable goes with it)."""
    return AdminModel.of(model_cases.abort_upload(get_services(), name))


@documented(router.get, "/admin/models", tags=[ADMIN_MODELS])
def list_models(type: ModelType | None = None) -> list[AdminModel]:  # noqa: A002
    """Every model (or those of one type), with their pending versions."""
    return [AdminModel.of(m) for m in model_cases.list_models(get_services(), type)]


@documented(router.get, "/admin/models/<name>", tags=[ADMIN_MODELS])
def get_model(name: str) -> AdminModel:
    """One model: status, current version, and the progress of a version on its way in."""
    return AdminModel.of(model_cases.get_model(get_services(), name))


@documented(router.post, "/admin/models/<name>/rename", tags=[ADMIN_MODELS])
def rename_model(name: str, body: ModelRenameBody) -> AdminModel:
    """Give a model another name (its function goes; the next task starts one)."""
    return AdminModel.of(model_cases.rename_model(get_services(), name, body.newName))


@documented(router.delete, "/admin/models/<name>", tags=[ADMIN_MODELS])
def delete_model(name: str) -> AdminModel:
    """Delete a model, its files, its inference function and its cached copies."""
    return AdminModel.of(model_cases.delete_model(get_services(), name))


@documented(router.get, "/admin/functions", tags=[ADMIN_FUNCTIONS])
def list_functions() -> list[FunctionInfo]:
    """Every inference function: its model, resources, status and when it was last used."""
    return [FunctionInfo.of(f) for f in function_cases.list_functions(get_services())]


@documented(router.post, "/admin/functions/batch-update", tags=[ADMIN_FUNCTIONS])
def update_functions(body: FunctionsUpdateBody) -> list[FunctionInfo]:
    """Change the resources, image, env, extra args or fleet of the listed models' functions."""
    records = function_cases.update_functions(get_services(), body.models, body.to_domain())
    return [FunctionInfo.of(f) for f in records]


@documented(router.post, "/admin/functions/delete", tags=[ADMIN_FUNCTIONS])
def delete_functions(body: FunctionsDeleteBody) -> list[str]:
    """Delete the listed models' functions (the next task for a model creates its function)."""
    return function_cases.delete_functions(get_services(), body.models)


@documented(router.get, "/admin/stats", tags=[ADMIN_STATS])
def stats() -> StatsBody:
    """Task counts and latencies per model over the last hour and day.

    Computed from the task records (statuses, models, timestamps): at most `scanLimit` tasks
    of each status are read; a window with more says `truncated`.
    """
    return StatsBody.of(task_stats(get_services()))
