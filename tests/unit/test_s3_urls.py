"""Presigned URLs name the bucket's region in their host: the global host redirects outside
us-east-1, and a redirected presigned PUT fails."""

from __future__ import annotations

import pytest

from sdcore.composition import build_services
from sdcore.settings import Settings


def test_presigned_urls_are_regional(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    svc = build_services(Settings(backend="aws", bucket="my-bucket"))
    url = svc.blobs.url("outputs/u/t/0.png", 60)
    assert url.startswith("https://my-bucket.s3.eu-west-1.amazonaws.com/outputs/u/t/0.png?")
    part = svc.blobs.part_url("models/checkpoint/m/k", "upload-1", 1, 60)
    assert part.startswith("https://my-bucket.s3.eu-west-1.amazonaws.com/models/")
