"""TemplateStore and BatchStore contract, on SQLite and DynamoDB (the users table)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdcore.adapters.aws.template_store import DynamoDBBatchStore, DynamoDBTemplateStore
from sdcore.adapters.local.db import Database
from sdcore.adapters.local.templates import SqliteBatchStore, SqliteTemplateStore
from sdcore.domain.params import TaskKind
from sdcore.domain.templates import SHARED, Batch, BatchEntry, Template
from sdcore.errors import ConflictError, NotFoundError, StaleWriteError
from sdcore.ports.templates import BatchStore, TemplateStore


@pytest.fixture(params=["local", "aws"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[TemplateStore, BatchStore]:
    if request.param == "local":
        db = Database(tmp_path / "state.db")
        return SqliteTemplateStore(db), SqliteBatchStore(db)
    stack = request.getfixturevalue("aws_stack")
    ddb, table = stack.client("dynamodb"), stack.names["UsersTable"]
    return DynamoDBTemplateStore(ddb, table), DynamoDBBatchStore(ddb, table)


def _template(name: str, owner: str = "alice", version: int = 1, **fields: object) -> Template:
    return Template(owner=owner, name=name, kind=TaskKind.TXT2IMG, fields=dict(fields),
                    prompt_template="{prompt}, oil", folder="f", version=version,
                    updated_at=12.5)  # fmt: skip


def test_templates_are_versioned_per_owner_and_listed_by_name(stores):
    templates, _ = stores
    templates.put(_template("b", steps=4), 0)
    templates.put(_template("a", cfg_scale=6.5, controlnet=[{"module": "canny"}]), 0)
    templates.put(_template("a", owner=SHARED), 0)
    assert templates.get("alice", "a") == _template(
        "a", cfg_scale=6.5, controlnet=[{"module": "canny"}]
    )
    assert [t.name for t in templates.list("alice")] == ["a", "b"]
    assert [t.owner for t in templates.list(SHARED)] == [SHARED]
    assert templates.list("bob") == []

    # a write must name the version it replaces: a lost race is refused, not merged
    with pytest.raises(StaleWriteError):
        templates.put(_template("b", version=2), 0)
    with pytest.raises(StaleWriteError):
        templates.put(_template("b", version=3), 2)
    templates.put(_template("b", version=2, steps=8), 1)
    assert templates.get("alice", "b").fields == {"steps": 8}

    templates.delete("alice", "b")
    assert [t.name for t in templates.list("alice")] == ["a"]
    with pytest.raises(NotFoundError):
        templates.get("alice", "b")
    with pytest.raises(NotFoundError):
        templates.delete("alice", "b")


def test_batches_keep_their_tasks_and_their_first_grid(stores):
    _, batches = stores
    entry = BatchEntry(template="a", task_id="t1", label="a\nsteps: 4")
    batch = Batch(batch_id="b1", owner="alice", prompt="fox", grid=True, created_at=1.5,
                  expires_at=99, entries=[entry])  # fmt: skip
    batches.create(batch)
    with pytest.raises(ConflictError):
        batches.create(batch)
    assert batches.get("b1") == batch
    assert batches.set_grid("b1", "outputs/alice/batches/b1/grid.png").grid_key is not None
    assert batches.set_grid("b1", "other").grid_key == "outputs/alice/batches/b1/grid.png"
    assert batches.get("b1").grid_key == "outputs/alice/batches/b1/grid.png"
    with pytest.raises(NotFoundError):
        batches.get("nope")
    with pytest.raises(NotFoundError):
        batches.set_grid("nope", "k")
