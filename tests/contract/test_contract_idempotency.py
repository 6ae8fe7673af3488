"""Idempotency persistence contract: the same Powertools scenarios on SqlitePersistenceLayer and
on Powertools' own DynamoDBPersistenceLayer (moto, IdempotencyTable from template.yaml)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyItemAlreadyExistsError,
    IdempotencyItemNotFoundError,
    IdempotencyValidationError,
)
from aws_lambda_powertools.utilities.idempotency.persistence.base import BasePersistenceLayer
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord

from sdcore.adapters.local.db import Database
from sdcore.adapters.local.idempotency import SqlitePersistenceLayer


@pytest.fixture(params=["local", "aws"])
def make_layer(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Callable[[], BasePersistenceLayer]:
    """A fresh layer per call (Powertools configures a layer once), all on one store."""
    if request.param == "local":
        db = Database(tmp_path / "state.db")
        return lambda: SqlitePersistenceLayer(db)
    stack = request.getfixturevalue("aws_stack")
    client, table = stack.client("dynamodb"), stack.names["IdempotencyTable"]
    return lambda: DynamoDBPersistenceLayer(table_name=table, boto3_client=client)


class FakeLambdaContext:
    """What Powertools reads of the Lambda context: the time left, for the in-progress expiry."""

    def __init__(self, remaining_ms: int = 30_000) -> None:
        self.remaining_ms = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def submit_fn(
    layer: BasePersistenceLayer, calls: list[dict[str, Any]], fail: bool = False, **config: Any
) -> Callable[..., dict[str, Any]]:
    """An idempotent `submit(command=...)` keyed on the command's idempotency key."""
    cfg = IdempotencyConfig(event_key_jmespath="key", payload_validation_jmespath="body", **config)
    cfg.register_lambda_context(FakeLambdaContext())

    @idempotent_function(data_keyword_argument="command", persistence_store=layer, config=cfg)
    def submit(command: dict[str, Any]) -> dict[str, Any]:
        calls.append(command)
        if fail:
            raise RuntimeError("inference backend down")
        return {"task_id": f"task-{len(calls)}", "prompt": command["body"]["prompt"]}

    return submit


def command(key: str = "k1", prompt: str = "a red circle") -> dict[str, Any]:
    return {"key": key, "body": {"prompt": prompt, "steps": 20}}


def test_a_repeat_returns_the_stored_result_and_runs_once(make_layer):
    calls: list[dict[str, Any]] = []
    submit = submit_fn(make_layer(), calls)

    first = submit(command=command())
    again = submit(command=command())
    again_elsewhere = submit_fn(make_layer(), calls)(command=command())  # another process
    other = submit(command=command("k2"))

    assert first == again == again_elsewhere == {"task_id": "task-1", "prompt": "a red circle"}
    assert other["task_id"] == "task-2"
    assert len(calls) == 2


def test_another_payload_under_the_same_key_is_a_validation_error(make_layer):
    calls: list[dict[str, Any]] = []
    submit = submit_fn(make_layer(), calls)
    submit(command=command())

    with pytest.raises(IdempotencyValidationError):
        submit(command=command(prompt="a blue square"))
    assert len(calls) == 1


def test_a_record_past_its_expiry_runs_again(make_layer):
    calls: list[dict[str, Any]] = []
    # Records expire 1 s after they are written; expiry is compared in whole seconds.
    submit = submit_fn(make_layer(), calls, expires_after_seconds=1)
    submit(command=command())
    assert submit(command=command())["task_id"] == "task-1"

    time.sleep(2.05)

    assert submit(command=command())["task_id"] == "task-2"
    assert len(calls) == 2


def test_a_failed_call_deletes_its_record_so_a_retry_runs(make_layer):
    calls: list[dict[str, Any]] = []
    with pytest.raises(RuntimeError):
        submit_fn(make_layer(), calls, fail=True)(command=command())

    result = submit_fn(make_layer(), calls)(command=command())

    assert result["task_id"] == "task-2"
    assert len(calls) == 2


def test_a_repeat_while_the_first_call_runs_is_refused(make_layer):
    calls: list[dict[str, Any]] = []
    refused: list[Exception] = []
    cfg = IdempotencyConfig(event_key_jmespath="key", payload_validation_jmespath="body")
    cfg.register_lambda_context(FakeLambdaContext())

    @idempotent_function(
        data_keyword_argument="command", persistence_store=make_layer(), config=cfg
    )
    def submit(command: dict[str, Any]) -> dict[str, Any]:
        calls.append(command)
        try:  # the same request again, while this one is in progress
            submit(command=command)
        except IdempotencyAlreadyInProgressError as e:
            refused.append(e)
        return {"task_id": "task-1"}

    assert submit(command=command()) == {"task_id": "task-1"}
    assert submit(command=command()) == {"task_id": "task-1"}
    assert len(calls) == 1 and len(refused) == 1


# --- the persistence layer's own rules, which the decorator relies on ---------------------------
def configured(make_layer: Callable[[], BasePersistenceLayer]) -> BasePersistenceLayer:
    layer = make_layer()
    layer.configure(IdempotencyConfig(payload_validation_jmespath="body"), "submit")
    return layer


def in_progress(key: str, in_progress_ms_from_now: int, payload_hash: str = "h1") -> DataRecord:
    now = time.time()
    return DataRecord(
        idempotency_key=key,
        status="INPROGRESS",
        expiry_timestamp=int(now) + 3600,
        in_progress_expiry_timestamp=int(now * 1000) + in_progress_ms_from_now,
        payload_hash=payload_hash,
    )


def test_a_call_in_progress_holds_its_key(make_layer):
    layer = configured(make_layer)
    layer._put_record(in_progress("k", 60_000))

    with pytest.raises(IdempotencyItemAlreadyExistsError) as exc:
        layer._put_record(in_progress("k", 60_000))
    assert exc.value.old_data_record is not None
    assert exc.value.old_data_record.status == "INPROGRESS"


def test_a_call_in_progress_past_its_lambda_timeout_frees_its_key(make_layer):
    layer = configured(make_layer)
    layer._put_record(in_progress("k", -1_000))  # its invocation timed out a second ago

    layer._put_record(in_progress("k", 60_000))  # a retry takes the key

    assert layer._get_record("k").in_progress_expiry_timestamp > time.time() * 1000


def test_a_taken_key_with_another_payload_is_a_validation_error(make_layer):
    layer = configured(make_layer)
    layer._put_record(in_progress("k", 60_000, payload_hash="h1"))

    with pytest.raises(IdempotencyValidationError):
        layer._put_record(in_progress("k", 60_000, payload_hash="h2"))


def test_update_then_get_and_delete(make_layer):
    layer = configured(make_layer)
    layer._put_record(in_progress("k", 60_000))
    done = DataRecord(
        idempotency_key="k",
        status="COMPLETED",
        expiry_timestamp=int(time.time()) + 3600,
        response_data='{"task_id": "t1"}',
        payload_hash="h1",
    )

    layer._update_record(done)
    got = layer._get_record("k")
    layer._delete_record(done)

    assert (got.status, got.response_data, got.payload_hash) == (
        "COMPLETED",
        done.response_data,
        "h1",
    )
    with pytest.raises(IdempotencyItemNotFoundError):
        layer._get_record("k")
