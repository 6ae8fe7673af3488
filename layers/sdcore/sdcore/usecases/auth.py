"""Users, API keys and per-user limits."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from sdcore.domain.models import ApiKey, Role, User, UserChanges
from sdcore.errors import (
    AuthError,
    ConflictError,
    ForbiddenError,
    InvalidInputError,
    NotFoundError,
    OverCapError,
    over_active_limit,
)
from sdcore.metric_names import THROTTLED
from sdcore.services import Services

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
KEY_PREFIX = "sd_"


@dataclass(frozen=True)
class Principal:
    """Who is calling."""

    user: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


# When auth is off (SD_AUTH=false) every call acts as this admin.
ANONYMOUS = Principal(user="anonymous", role=Role.ADMIN)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _issue_key(svc: Services, user: str) -> str:
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    svc.users.put_key(
        ApiKey(key_hash=hash_key(key), user=user, prefix=key[:8], created_at=svc.clock.now())
    )
    return key


def create_user(svc: Services, name: str, role: Role) -> tuple[User, str]:
    """Create a user and their first API key; the key is returned once and stored hashed.

    Raises
    ------
    InvalidInputError
        A bad name.
    ConflictError
        The name is taken.
    """
    if not NAME_RE.match(name):
        raise InvalidInputError("name", "lowercase letters, digits, '.', '_', '-'; at most 63")
    user = User(
        name=name,
        role=role,
        created_at=svc.clock.now(),
        webhook_secret=secrets.token_hex(32),
    )
    svc.users.create(user)
    return user, _issue_key(svc, name)


def new_key(svc: Services, name: str) -> str:
    """Another key for an existing user. Raises NotFoundError."""
    user = svc.users.get(name)
    if user.disabled:
        raise ConflictError(f"user {name} is revoked")
    return _issue_key(svc, name)


def list_users(svc: Services) -> list[tuple[User, list[ApiKey]]]:
    """Every user with their keys (stored hashed: only prefixes can be shown)."""
    return [(user, svc.users.list_keys(user.name)) for user in svc.users.list()]


def revoke_user(svc: Services, name: str) -> User:
    """Disable a user and revoke every key. Raises NotFoundError."""
    svc.users.get(name)
    svc.users.revoke_keys(name)
    return svc.users.update(name, UserChanges(disabled=True))


def _credentials(headers: dict[str, str]) -> tuple[str, str | None]:
    """The key in the request, and the user name if HTTP Basic named one."""
    lower = {k.lower(): v for k, v in headers.items()}
    auth = lower.get("authorization", "").strip()
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip(), None
    if auth[:6].lower() == "basic ":
        try:
            user, _, key = base64.b64decode(auth[6:].strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise AuthError("malformed Basic credentials") from None
        return key, user
    if lower.get("x-api-key"):
        return lower["x-api-key"].strip(), None
    if auth and " " not in auth:  # a bare token, as PAI-EAS clients send it (seed 002)
        return auth, None
    raise AuthError("missing API key: send Authorization: Bearer <key> or x-api-key")


def authenticate(svc: Services, headers: dict[str, str]) -> Principal:
    """Who the request's key belongs to. Raises AuthError."""
    if not svc.settings.auth:
        return ANONYMOUS
    key, basic_user = _credentials(headers)
    found = svc.users.find_key(hash_key(key)) if key else None
    if found is None or found.revoked or (basic_user and basic_user != found.user):
        raise AuthError("invalid API key")
    try:
        user = svc.users.get(found.user)
    except NotFoundError:
        raise AuthError("invalid API key") from None
    if user.disabled:
        raise AuthError("invalid API key")
    return Principal(user=user.name, role=user.role)


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise ForbiddenError("this route needs an admin key")


def check_rate(svc: Services, principal: Principal) -> None:
    """Requests per minute per user, over a sliding minute: this minute's count plus the last
    one's, weighted by how much of it the minute still covers (fixed windows let twice the
    limit through across a boundary). Raises OverCapError."""
    if principal is ANONYMOUS:
        return
    now, limit = svc.clock.now(), svc.settings.rate_per_minute
    window = int(now // 60)
    count = svc.users.hit(f"{principal.user}#{window}", (window + 2) * 60)
    if count > limit:  # over on this minute alone: until it ends
        svc.metrics.count(THROTTLED, limit="rate", user=principal.user)
        raise OverCapError(
            f"over {limit} requests per minute", max(1, math.ceil((window + 1) * 60 - now))
        )
    previous = svc.users.peek(f"{principal.user}#{window - 1}")
    covered = 1 - (now - window * 60) / 60  # of the last minute, still in the sliding one
    if previous * covered + count > limit:
        # when the last minute's share has shrunk enough for this request
        free_at = window * 60 + 60 * (1 - (limit - count) / previous)
        svc.metrics.count(THROTTLED, limit="rate", user=principal.user)
        raise OverCapError(f"over {limit} requests per minute", max(1, math.ceil(free_at - now)))


def check_queue_quota(svc: Services, principal: Principal) -> None:
    """Queued-or-running tasks per user. Raises OverCapError."""
    since = svc.clock.now() - 86400  # tasks older than a day are ended by the reaper or TTL
    active = svc.tasks.count_active(principal.user, since)
    if active >= svc.settings.max_queued_per_user:
        svc.metrics.count(THROTTLED, limit="queue", user=principal.user)
        raise OverCapError(
            over_active_limit(active, svc.settings.max_queued_per_user), retry_after_s=5
        )


def bootstrap_admin(svc: Services, name: str = "admin") -> str:
    """A deployment's first admin and their key (on AWS: the admin function invoked directly,
    which only the account's operators may do). Returns the key, shown once.

    Raises
    ------
    ConflictError
        An admin exists already (they issue keys with POST /admin/users/{name}/keys).
    """
    if any(user.role is Role.ADMIN and not user.disabled for user in svc.users.list()):
        raise ConflictError("an admin exists: issue keys with POST /admin/users/{name}/keys")
    return create_user(svc, name, Role.ADMIN)[1]


def bootstrap_local(svc: Services, data_dir: Path) -> dict[str, str] | None:
    """At a local stack's first start: an admin key and one user key, written to
    `credentials.json` (mode 0600). Returns them when created, None when users exist."""
    if svc.users.list():
        return None
    _, admin_key = create_user(svc, "admin", Role.ADMIN)
    user, user_key = create_user(svc, "user", Role.USER)
    creds = {
        "admin_key": admin_key,
        "user_key": user_key,
        "user_webhook_secret": user.webhook_secret,
    }
    path = data_dir / "credentials.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(creds, fh, indent=2)
    return creds
