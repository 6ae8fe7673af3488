"""Model management: multipart upload into storage, verification, listing, deletion."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.router import APIGatewayRouter

from sdcore.api.errors import json_response
from sdcore.api.schemas import CompleteBody, ModelUploadBody
from sdcore.clock import iso
from sdcore.composition import get_services
from sdcore.domain.models import Model
from sdcore.ports import UploadedPart
from sdcore.usecases import models as model_cases

router = APIGatewayRouter()


def _model(m: Model) -> dict[str, Any]:
    return {
        "name": m.name,
        "type": m.type.value,
        "status": m.status.value,
        "sha256": m.sha256,
        "size": m.size,
        "format": m.format.value if m.format else None,
        "config": m.config,
        "error": m.error,
        "registeredTime": iso(m.registered_at),
        "lastModificationTime": iso(m.modified_at),
    }


@router.post("/admin/models")
def create_upload(body: ModelUploadBody) -> Response[dict[str, Any]]:
    """Register a model and get presigned URLs for its parts."""
    plan = model_cases.start_upload(
        get_services(), body.name, body.type, body.size, body.sha256, body.config
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


@router.post("/admin/models/<name>/complete")
def complete_upload(name: str, body: CompleteBody) -> dict[str, Any]:
    """Join the uploaded parts and verify size and sha256."""
    parts = [UploadedPart(part_number=p.partNumber, etag=p.etag) for p in body.parts]
    return _model(model_cases.complete_upload(get_services(), name, parts))


@router.get("/admin/models")
def list_models() -> list[dict[str, Any]]:
    """Every model, with upload details."""
    return [_model(m) for m in model_cases.list_models(get_services())]


@router.delete("/admin/models/<name>")
def delete_model(name: str) -> dict[str, Any]:
    """Delete a model, its file and its inference function."""
    return _model(model_cases.delete_model(get_services(), name))
