"""ModelStore and FunctionStore contracts."""

from __future__ import annotations

import pytest

from sdcore.domain.models import (
    FunctionRecord,
    Model,
    ModelChanges,
    ModelFormat,
    ModelStage,
    ModelStatus,
    ModelType,
    PendingVersion,
)
from sdcore.errors import ConflictError, NotFoundError, StaleWriteError


def make_model(name: str = "sd15", **kw: object) -> Model:
    fields: dict[str, object] = {
        "sha256": "ab" * 32,
        "size": 4_265_380_512,
        "key": f"models/{name}/model.safetensors",
        "registered_at": 1000.0,
        "modified_at": 1000.0,
    }
    return Model(name=name, **{**fields, **kw})  # type: ignore[arg-type]


def make_pending(key: str = "models/checkpoint/sd15/v2", **kw: object) -> PendingVersion:
    fields: dict[str, object] = {
        "stage": ModelStage.UPLOADING,
        "sha256": "cd" * 32,
        "size": 7 << 30,
        "upload_id": "u-1",
        "part_size": 64 << 20,
        "started_at": 1000.25,
        "updated_at": 1000.5,
    }
    return PendingVersion(key=key, **{**fields, **kw})  # type: ignore[arg-type]


def test_create_then_get_round_trips(ports):
    model = make_model(
        format=ModelFormat.SAFETENSORS,
        type=ModelType.LORA,
        version=3,
        details={"rank": 8, "note": 0.5},
        pending=make_pending(source="https://example.com/m.safetensors"),
    )
    ports.models.create(model)
    assert ports.models.get("sd15") == model


def test_update_only_while_the_pending_version_is_the_same(ports):
    ports.models.create(make_model(pending=make_pending()))
    verifying = make_pending(stage=ModelStage.VERIFYING, bytes_done=123, upload_id=None)

    model = ports.models.update(
        "sd15", ModelChanges(pending=verifying), pending_key="models/checkpoint/sd15/v2"
    )

    assert model.pending == verifying and ports.models.get("sd15").pending == verifying
    with pytest.raises(StaleWriteError):  # another version replaced it
        ports.models.update(
            "sd15", ModelChanges(pending=None), pending_key="models/checkpoint/sd15/v1"
        )
    ports.models.update("sd15", ModelChanges(pending=None))
    with pytest.raises(StaleWriteError):  # nothing pending any more
        ports.models.update("sd15", ModelChanges(size=1), pending_key="models/checkpoint/sd15/v2")
    assert ports.models.get("sd15").pending is None and ports.models.get("sd15").size != 1


def test_create_existing_conflicts(ports):
    ports.models.create(make_model())
    with pytest.raises(ConflictError):
        ports.models.create(make_model(size=1))


def test_get_missing_is_not_found(ports):
    with pytest.raises(NotFoundError):
        ports.models.get("nope")


def test_deleted_model_reads_as_missing_and_can_be_created_again(ports):
    ports.models.create(make_model())
    ports.models.update("sd15", ModelChanges(status=ModelStatus.DELETED))

    with pytest.raises(NotFoundError):
        ports.models.get("sd15")
    ports.models.create(make_model(size=7))

    assert ports.models.get("sd15").size == 7
    assert ports.models.get("sd15").status is ModelStatus.REGISTERING


def test_update_with_expected_status(ports):
    ports.models.create(make_model())

    model = ports.models.update(
        "sd15",
        ModelChanges(status=ModelStatus.UNLOADED, modified_at=1001.5),
        {ModelStatus.REGISTERING},
    )

    assert (model.status, model.modified_at) == (ModelStatus.UNLOADED, 1001.5)
    assert ports.models.get("sd15") == model
    with pytest.raises(StaleWriteError):
        ports.models.update(
            "sd15", ModelChanges(status=ModelStatus.LOADING), {ModelStatus.REGISTERING}
        )
    assert ports.models.get("sd15").status is ModelStatus.UNLOADED


def test_update_without_expected_and_clearing_a_field(ports):
    ports.models.create(make_model(error="sha256 mismatch"))

    model = ports.models.update("sd15", ModelChanges(error=None))

    assert model.error is None
    assert ports.models.get("sd15").error is None


def test_update_missing_is_not_found(ports):
    with pytest.raises(NotFoundError):
        ports.models.update("nope", ModelChanges(status=ModelStatus.LOADED))
    with pytest.raises(NotFoundError):
        ports.models.update(
            "nope", ModelChanges(status=ModelStatus.LOADED), {ModelStatus.REGISTERING}
        )


def test_list_excludes_deleted_sorted_by_name(ports):
    for name in ["zeta", "alpha", "mid"]:
        ports.models.create(make_model(name))
    ports.models.update("mid", ModelChanges(status=ModelStatus.DELETED))

    assert [m.name for m in ports.models.list()] == ["alpha", "zeta"]


def make_function(name: str = "sd-0123", **kw: object) -> FunctionRecord:
    return FunctionRecord(name=name, model="sd15", created_at=1000.0, **kw)  # type: ignore[arg-type]


def test_functions_put_get_list_delete(ports):
    record = make_function(resources={"memoryMb": 3008, "cpu": 2.0}, last_used=1001.5)

    ports.functions.put(record)
    ports.functions.put(make_function("sd-0001"))

    assert ports.functions.get("sd-0123") == record
    assert [r.name for r in ports.functions.list()] == ["sd-0001", "sd-0123"]
    ports.functions.delete("sd-0123")
    with pytest.raises(NotFoundError):
        ports.functions.get("sd-0123")
    assert [r.name for r in ports.functions.list()] == ["sd-0001"]
    ports.functions.delete("sd-0123")  # deleting again is fine


def test_functions_put_replaces(ports):
    ports.functions.put(make_function())
    ports.functions.put(make_function(status="active", pid=None))
    assert ports.functions.get("sd-0123").status == "active"
