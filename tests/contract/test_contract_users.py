"""UserStore contract: users, hashed API keys and rate counters, on SQLite and DynamoDB."""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from sdcore.adapters.aws import DynamoDBUserStore
from sdcore.adapters.local.db import Database
from sdcore.adapters.local.stores import SqliteUserStore
from sdcore.domain.models import ApiKey, Role, User, UserChanges
from sdcore.errors import ConflictError, NotFoundError
from sdcore.ports import UserStore


@pytest.fixture(params=["local", "aws"])
def users(request: pytest.FixtureRequest, tmp_path: Path) -> UserStore:
    if request.param == "local":
        return SqliteUserStore(Database(tmp_path / "state.db"))
    stack = request.getfixturevalue("aws_stack")
    return DynamoDBUserStore(stack.client("dynamodb"), stack.names["UsersTable"])


def make_user(name: str = "alice", **kw: object) -> User:
    return User(name=name, created_at=1000.0, **kw)  # type: ignore[arg-type]


def make_key(user: str, secret: str, created_at: float = 1000.0) -> ApiKey:
    digest = hashlib.sha256(secret.encode()).hexdigest()
    return ApiKey(key_hash=digest, user=user, prefix=secret[:6], created_at=created_at)


def test_create_then_get_round_trips(users):
    user = make_user(role=Role.ADMIN, options={"sd_model_checkpoint": "demo"})

    users.create(user)

    assert users.get("alice") == user


def test_create_existing_conflicts(users):
    users.create(make_user())
    with pytest.raises(ConflictError):
        users.create(make_user(role=Role.ADMIN))
    assert users.get("alice").role is Role.USER


def test_get_missing_is_not_found(users):
    with pytest.raises(NotFoundError):
        users.get("nobody")


def test_list_by_name_without_keys_or_counters(users):
    for name in ["carol", "alice", "bob"]:
        users.create(make_user(name))
    users.put_key(make_key("alice", "sk-alice-1"))
    users.hit("alice#1000", expires_at=1060.0)

    assert [u.name for u in users.list()] == ["alice", "bob", "carol"]


def test_update_sets_fields(users):
    users.create(make_user())

    updated = users.update("alice", UserChanges(disabled=True, options={"sd_vae": "ema"}))

    assert (updated.disabled, updated.options) == (True, {"sd_vae": "ema"})
    assert users.get("alice") == updated
    assert users.update("alice", UserChanges()) == updated  # nothing to set


def test_update_missing_is_not_found(users):
    with pytest.raises(NotFoundError):
        users.update("nobody", UserChanges(disabled=True))
    with pytest.raises(NotFoundError):
        users.get("nobody")  # and the update did not create it


def test_keys_are_found_by_hash_and_listed_per_user(users):
    users.create(make_user("alice"))
    users.create(make_user("bob"))
    a1, a2 = make_key("alice", "sk-a1", 1001.0), make_key("alice", "sk-a2", 1002.0)
    b1 = make_key("bob", "sk-b1")
    for key in (a1, a2, b1):
        users.put_key(key)

    assert users.find_key(a2.key_hash) == a2
    assert users.find_key(hashlib.sha256(b"sk-unknown").hexdigest()) is None
    assert sorted(users.list_keys("alice"), key=lambda k: k.created_at) == [a1, a2]
    assert users.list_keys("bob") == [b1]
    assert users.list_keys("carol") == []


def test_revoke_keys_counts_live_keys_once(users):
    users.create(make_user("alice"))
    users.create(make_user("bob"))
    for secret in ("sk-a1", "sk-a2", "sk-a3"):
        users.put_key(make_key("alice", secret))
    users.put_key(make_key("bob", "sk-b1"))
    dead = make_key("alice", "sk-a0").model_copy(update={"revoked": True})
    users.put_key(dead)

    assert users.revoke_keys("alice") == 3
    assert users.revoke_keys("alice") == 0
    assert users.revoke_keys("nobody") == 0
    assert all(k.revoked for k in users.list_keys("alice"))
    assert users.find_key(make_key("alice", "sk-a1").key_hash).revoked
    assert not users.find_key(make_key("bob", "sk-b1").key_hash).revoked


def test_hit_counts_from_one_per_counter(users):
    assert [users.hit("alice#1000", 1060.0) for _ in range(3)] == [1, 2, 3]
    assert users.hit("bob#1000", 1060.0) == 1
    assert users.hit("alice#1001", 1061.0) == 1
    assert (users.peek("alice#1000"), users.peek("alice#1001"), users.peek("carol#1")) == (3, 1, 0)


class SerialClient:
    """moto's DynamoDB is not thread-safe (concurrent UpdateItem ADDs lose increments, in-process
    and in its server alike), so on "aws" its calls are serialised, and the test checks instead
    that each hit is one UpdateItem with ADD: no read-modify-write, which DynamoDB makes atomic."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.lock = threading.Lock()
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        def call(**kwargs: Any) -> Any:
            with self.lock:
                self.calls.append((name, kwargs))
                return getattr(self.client, name)(**kwargs)

        return call


def test_hit_is_atomic_under_concurrency(users):
    if isinstance(users, DynamoDBUserStore):
        users.client = SerialClient(users.client)

    # 50 hits from 5 threads: no increment is lost, and every caller sees a distinct value
    with ThreadPoolExecutor(max_workers=5) as pool:
        values = list(pool.map(lambda _: users.hit("alice#2000", 2060.0), range(50)))

    assert sorted(values) == list(range(1, 51))
    assert users.hit("alice#2000", 2060.0) == 51
    if isinstance(users, DynamoDBUserStore):
        assert {name for name, _ in users.client.calls} == {"update_item"}
        assert len(users.client.calls) == 51
        assert all(kw["UpdateExpression"].startswith("ADD ") for _, kw in users.client.calls)
