"""Webhook signing and delivery, against a server on 127.0.0.1 only."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from sdcore import webhooks
from sdcore.webhooks import WebhookError, backoff_s, deliver, sign, verify
from tests.unit.guards.test_netguard import LocalServer, server  # noqa: F401 (fixture)

SECRET = b"s3cret"
PAYLOAD = {"task_id": "t-1", "status": "succeeded", "prompt": "一只猫", "images": ["k/0.png"]}


def test_sign_is_github_style_hmac() -> None:
    body = b'{"a":1}'
    expected = hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    assert sign(SECRET, body) == f"sha256={expected}"


@pytest.mark.parametrize(
    "header",
    [None, "", "sha256=", "sha1=abc", "sha256=" + "0" * 64, "sha256=ünïcode", "garbage"],
)
def test_verify_rejects(header: str | None) -> None:
    assert not verify(SECRET, b"body", header)


def test_verify_accepts_and_detects_tampering() -> None:
    header = sign(SECRET, b"body")
    assert verify(SECRET, b"body", header)
    assert not verify(SECRET, b"body ", header)
    assert not verify(b"other", b"body", header)


def test_backoff_schedule() -> None:
    assert [backoff_s(n) for n in range(1, 7)] == [5, 30, 120, 600, 600, 600]
    assert webhooks.MAX_ATTEMPTS == 5
    with pytest.raises(ValueError):
        backoff_s(0)


def test_deliver_signs_exactly_the_bytes_sent(server: LocalServer) -> None:  # noqa: F811
    status = deliver(
        server.url("/hook/200"), PAYLOAD, SECRET, allow_private=True, timeout_s=2, attempt=3
    )
    assert status == 200
    (seen,) = server.seen
    headers = seen["headers"]
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Webhook-Attempt"] == "3"
    assert verify(SECRET, seen["body"], headers["X-Signature-256"])
    assert json.loads(seen["body"]) == PAYLOAD


def test_deliver_non_2xx(server: LocalServer) -> None:  # noqa: F811
    for code in (500, 404, 302):
        with pytest.raises(WebhookError) as err:
            deliver(server.url(f"/hook/{code}"), PAYLOAD, SECRET, allow_private=True, timeout_s=2)
        assert err.value.status == code and err.value.retryable


def test_deliver_timeout(server: LocalServer) -> None:  # noqa: F811
    with pytest.raises(WebhookError, match="timed out") as err:
        deliver(server.url("/slow"), PAYLOAD, SECRET, allow_private=True, timeout_s=0.3)
    assert err.value.retryable


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "10.0.0.1", "169.254.169.254", "[::1]"])
def test_deliver_refuses_private_addresses(server: LocalServer, host: str) -> None:  # noqa: F811
    with pytest.raises(WebhookError) as err:
        deliver(
            server.url("/hook/200", host=host), PAYLOAD, SECRET, allow_private=False, timeout_s=2
        )
    assert not err.value.retryable
    assert server.seen == []


def test_deliver_refuses_bad_scheme() -> None:
    with pytest.raises(WebhookError) as err:
        deliver("file:///etc/passwd", PAYLOAD, SECRET, allow_private=True, timeout_s=1)
    assert not err.value.retryable
