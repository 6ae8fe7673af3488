"""Admin routes: users and API keys, model upload into storage, verification, listing, deletion,
and the inference functions (one per checkpoint).

They live in the shared package so the proxy can describe them in its OpenAPI document; only the
admin function serves them."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.router import APIGatewayRouter

from sdcore.api.errors import json_response
from sdcore.api.schemas import (
    CompleteBody,
    FunctionsDeleteBody,
    FunctionsUpdateBody,
    ModelImportBody,
    ModelRenameBody,
    ModelUploadBody,
    UserBody,
)
from sdcore.clock import iso
from sdcore.composition import get_services
from sdcore.domain.models import FunctionRecord, Model, ModelType, PendingVersion, User
from sdcore.ports import UploadedPart
from sdcore.usecases import auth as auth_cases
from sdcore.usecases import functions as function_cases
from sdcore.usecases import models as model_cases

router = APIGatewayRouter()


def _pending(p: PendingVersion | None) -> dict[str, Any] | None:
    if p is None:
        return None
    return {
        "stage": p.stage.value,
        "sha256": p.sha256 or None,
        "size": p.size or None,
        "bytesDone": p.bytes_done,
        "progress": round(min(1.0, p.bytes_done / p.size), 4) if p.size else None,
        "source": p.source,
        "config": p.config,
        "error": p.error,
        "startedTime": iso(p.started_at),
        "updatedTime": iso(p.updated_at),
    }


def _model(m: Model) -> dict[str, Any]:
    return {
        "name": m.name,
        "type": m.type.value,
        "status": m.status.value,
        "sha256": m.sha256,
        "size": m.size,
        "format": m.format.value if m.format else None,
        "config": m.config,
        "version": m.version,
        "details": m.details,
        "error": m.error,
        "pending": _pending(m.pending),
        "registeredTime": iso(m.registered_at),
        "lastModificationTime": iso(m.modified_at),
    }


def _function(f: FunctionRecord) -> dict[str, Any]:
    return {
        "name": f.name,
        "model": f.model,
        "resources": f.resources,
        "status": f.status,
        "lastUsed": iso(f.last_used),
        "pid": f.pid,  # a local worker process; None on AWS
        "createdTime": iso(f.created_at),
    }


def _user(u: User) -> dict[str, Any]:
    return {
        "name": u.name,
        "role": u.role.value,
        "disabled": u.disabled,
        "createdTime": iso(u.created_at),
    }


@router.post("/admin/users")
def create_user(body: UserBody) -> Response[dict[str, Any]]:
    """Create a user; the answer holds their API key and webhook secret, shown only once."""
    user, key = auth_cases.create_user(get_services(), body.name, body.role)
    return json_response(201, {**_user(user), "apiKey": key, "webhookSecret": user.webhook_secret})


@router.get("/admin/users")
def list_users() -> list[dict[str, Any]]:
    """Every user (never their keys)."""
    svc = get_services()
    out = []
    for user in svc.users.list():
        keys = svc.users.list_keys(user.name)
        out.append(
            {
                **_user(user),
                "keys": [
                    {"prefix": k.prefix, "revoked": k.revoked, "createdTime": iso(k.created_at)}
                    for k in keys
                ],
            }
        )
    return out


@router.post("/admin/users/<name>/revoke")
def revoke_user(name: str) -> dict[str, Any]:
    """Disable a user and revoke all their keys."""
    return _user(auth_cases.revoke_user(get_services(), name))


@router.post("/admin/users/<name>/keys")
def new_key(name: str) -> Response[dict[str, Any]]:
    """Another API key for a user, shown only once."""
    return json_response(201, {"name": name, "apiKey": auth_cases.new_key(get_services(), name)})


@router.post("/admin/models")
def create_upload(body: ModelUploadBody) -> Response[dict[str, Any]]:
    """Start uploading a model (or with "update" a new version of one): presigned part URLs.
    The same file again resumes the upload in progress."""
    plan = model_cases.start_upload(
        get_services(), body.name, body.type, body.size, body.sha256, body.config, body.update
    )
    return json_response(
        201,
        {
            "name": plan.model.name,
            "status": plan.model.status.value,
            "uploadId": plan.upload_id,
            "partSize": plan.part_size,
            "parts": [{"partNumber": n, "url": url} for n, url in enumerate(plan.part_urls, 1)],
        },
    )


@router.post("/admin/models/import")
def import_model(body: ModelImportBody) -> Response[dict[str, Any]]:
    """Import a model from an http(s) URL, as a job: follow it with GET /admin/models/{name}."""
    model = model_cases.start_import(
        get_services(), body.name, body.type, body.url, body.sha256, body.config, body.update
    )
    return json_response(202, _model(model))


@router.post("/admin/models/<name>/complete")
def complete_upload(name: str, body: CompleteBody) -> Response[dict[str, Any]]:
    """Close the upload and queue its verification (size, sha256, format, type): 202; follow
    it with GET /admin/models/{name}."""
    parts = [UploadedPart(part_number=p.partNumber, etag=p.etag) for p in body.parts]
    return json_response(202, _model(model_cases.complete_upload(get_services(), name, parts)))


@router.get("/admin/models/<name>/upload")
def upload_status(name: str) -> dict[str, Any]:
    """Parts received so far of an upload in progress (to resume it)."""
    model, parts = model_cases.upload_status(get_services(), name)
    assert model.pending is not None
    return {
        "name": model.name,
        "uploadId": model.pending.upload_id,
        "partSize": model.pending.part_size,
        "size": model.pending.size,
        "sha256": model.pending.sha256,
        "parts": [{"partNumber": p.part_number, "etag": p.etag} for p in parts],
    }


@router.delete("/admin/models/<name>/upload")
def abort_upload(name: str) -> dict[str, Any]:
    """Abort the upload or import in progress (a model never usable goes with it)."""
    return _model(model_cases.abort_upload(get_services(), name))


@router.get("/admin/models")
def list_models(type: ModelType | None = None) -> list[dict[str, Any]]:  # noqa: A002
    """Every model (or those of one type), with their pending versions."""
    return [_model(m) for m in model_cases.list_models(get_services(), type)]


@router.get("/admin/models/<name>")
def get_model(name: str) -> dict[str, Any]:
    """One model: status, current version, and the progress of a version on its way in."""
    return _model(model_cases.get_model(get_services(), name))


@router.post("/admin/models/<name>/rename")
def rename_model(name: str, body: ModelRenameBody) -> dict[str, Any]:
    """Give a model another name (its function goes; the next task starts one)."""
    return _model(model_cases.rename_model(get_services(), name, body.newName))


@router.delete("/admin/models/<name>")
def delete_model(name: str) -> dict[str, Any]:
    """Delete a model, its files, its inference function and its cached copies."""
    return _model(model_cases.delete_model(get_services(), name))


@router.get("/admin/functions")
def list_functions() -> list[dict[str, Any]]:
    """Every inference function: its model, resources, status and when it was last used."""
    return [_function(f) for f in function_cases.list_functions(get_services())]


@router.post("/admin/functions/batch-update")
def update_functions(body: FunctionsUpdateBody) -> list[dict[str, Any]]:
    """Change the resources, image, env or extra args of the listed models' functions (or all)."""
    records = function_cases.update_functions(get_services(), body.models, body.to_domain())
    return [_function(f) for f in records]


@router.post("/admin/functions/delete")
def delete_functions(body: FunctionsDeleteBody) -> list[str]:
    """Delete the listed models' functions (the next task for a model creates its function)."""
    return function_cases.delete_functions(get_services(), body.models)
