"""Signed webhook delivery: one POST per attempt; the control function schedules the retries.

The receiver checks `X-Signature-256: sha256=<hex>`, an HMAC-SHA256 of the exact body bytes with
the shared secret (the GitHub convention, so existing verifiers work). The body is serialised once
and those bytes are both signed and sent. Delivery goes through the netguard address check and
pins the connection to the checked address. Redirects are not followed: a 3xx is a failure.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import httpx

from sdcore.errors import InvalidInputError
from sdcore.guards import netguard

SIGNATURE_HEADER = "X-Signature-256"
ATTEMPT_HEADER = "X-Webhook-Attempt"
MAX_ATTEMPTS = 5
# Delay after failed attempt n (1-based) before attempt n + 1; the last value is the cap.
_BACKOFF_S = (5.0, 30.0, 120.0, 600.0)


class WebhookError(Exception):
    """A delivery attempt failed. `retryable` is False when retrying cannot help (refused URL)."""

    def __init__(self, message: str, *, status: int | None = None, retryable: bool = True) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable


def _key(secret: bytes | str) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else secret


def sign(secret: bytes, body: bytes) -> str:
    """The `X-Signature-256` value for `body`: `sha256=<hex hmac>`."""
    return "sha256=" + hmac.new(_key(secret), body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, header: str | None) -> bool:
    """Whether `header` is the signature of `body`, compared in constant time."""
    if not header:
        return False
    return hmac.compare_digest(sign(secret, body).encode("ascii"), header.encode("utf-8"))


def encode(payload: dict[str, Any]) -> bytes:
    """The exact bytes sent (and signed) for `payload`."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def backoff_s(attempt: int) -> float:
    """Seconds to wait after failed attempt `attempt` (1-based), capped at the last step.

    Deterministic on purpose; the scheduler may add jitter.
    """
    if attempt < 1:
        raise ValueError("attempt starts at 1")
    return _BACKOFF_S[min(attempt, len(_BACKOFF_S)) - 1]


def deliver(
    url: str,
    payload: dict[str, Any],
    secret: bytes,
    *,
    allow_private: bool,
    timeout_s: float,
    attempt: int = 1,
) -> int:
    """POST `payload` as signed JSON to `url`; return the (2xx) status code.

    Raises
    ------
    WebhookError
        Refused URL or address (`retryable=False`), a non-2xx answer, a timeout or a connection
        failure.
    """
    body = encode(payload)
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(secret, body),
        ATTEMPT_HEADER: str(attempt),
        "User-Agent": "sd-serverless-webhook/1",
    }
    try:
        target = netguard.pin_url(url, allow_private=allow_private, field="webhook")
    except InvalidInputError as exc:
        raise WebhookError(str(exc), retryable=False) from exc
    try:
        with (
            netguard.new_client(timeout_s) as client,
            netguard.open_pinned(client, "POST", target, headers=headers, content=body) as resp,
        ):
            status = resp.status_code
    except httpx.TimeoutException as exc:
        raise WebhookError("webhook timed out") from exc
    except httpx.HTTPError as exc:
        raise WebhookError(f"webhook could not be delivered: {type(exc).__name__}") from exc
    if not 200 <= status < 300:
        raise WebhookError(f"webhook answered HTTP {status}", status=status)
    return status
