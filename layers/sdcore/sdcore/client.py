"""A small HTTP client for the API (used by the local stack to register its demo checkpoint)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(8 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def upload_model(
    base_url: str,
    path: Path,
    name: str,
    model_type: str = "checkpoint",
    config: str = "sd15",
    timeout: float = 600,
    api_key: str | None = None,
) -> dict[str, Any]:
    """Upload a model file through the admin API: register, PUT each part, complete."""
    path = Path(path)
    size = path.stat().st_size
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(base_url=base_url, timeout=timeout, headers=headers) as client:
        resp = client.post(
            "/admin/models",
            json={
                "name": name,
                "type": model_type,
                "size": size,
                "sha256": sha256_file(path),
                "config": config,
            },
        )
        resp.raise_for_status()
        plan = resp.json()
        parts = []
        with path.open("rb") as fh:
            for part in plan["parts"]:
                fh.seek((part["partNumber"] - 1) * plan["partSize"])
                # part URLs are presigned: they carry their own authorisation
                put = httpx.put(part["url"], content=fh.read(plan["partSize"]), timeout=timeout)
                put.raise_for_status()
                parts.append({"partNumber": part["partNumber"], "etag": put.headers["ETag"]})
        done = client.post(f"/admin/models/{name}/complete", json={"parts": parts})
        done.raise_for_status()
        return done.json()
