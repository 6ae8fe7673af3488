"""Templates, batches with their comparison grid, and the simple API, over the proxy handler on
the local backend. No worker runs: tasks stay queued, and a test ends them as a worker would."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from proxy_function.app import lambda_handler as proxy
from sdcore import composition
from sdcore.composition import get_services
from sdcore.domain.models import (
    Model,
    ModelFormat,
    ModelStatus,
    ModelType,
    Role,
    Task,
    TaskChanges,
    TaskStatus,
)
from sdcore.usecases.auth import create_user
from tests.functional import events
from tests.functional.events import Context, api


def _call(method: str, path: str, body: object = None, **headers: str) -> tuple[int, Any]:
    path, _, query = path.partition("?")
    event = api(method, path, body, headers=headers)
    event["queryStringParameters"] = dict(p.split("=") for p in query.split("&")) if query else None
    event["multiValueQueryStringParameters"] = None
    resp = proxy(event, Context())
    return resp["statusCode"], json.loads(resp["body"]) if resp.get("body") else None


def _admin(method: str, path: str, body: object = None) -> tuple[int, Any]:
    return _call(method, path, body, **events.ADMIN_HEADERS)


def demo_model() -> Model:
    """A checkpoint registered, never loaded: no worker runs here."""
    return Model(name="demo", type=ModelType.CHECKPOINT, status=ModelStatus.UNLOADED,
                 sha256="ab" * 32, size=1, key="models/demo", format=ModelFormat.SAFETENSORS,
                 registered_at=0, modified_at=0)  # fmt: skip


@pytest.fixture
def stack(local_env: Path) -> Iterator[Path]:
    composition.reset()
    get_services().models.create(demo_model())
    yield local_env


def _finish(task_id: str, colour: str | None) -> None:
    """End a queued task as its worker would: one picture of `colour`, or failed (None)."""
    svc = get_services()
    task = svc.tasks.get(task_id)
    svc.tasks.transition(task_id, task.start(svc.clock.now(), None))
    if colour is None:
        change = task.end(TaskStatus.FAILED, svc.clock.now(), TaskChanges(error="out of memory"))
    else:
        key = f"outputs/{task.owner}/{task_id}/0.png"
        out = io.BytesIO()
        Image.new("RGB", (32, 32), colour).save(out, format="PNG")
        svc.blobs.put(key, out.getvalue(), "image/png")
        change = task.end(TaskStatus.SUCCEEDED, svc.clock.now(), TaskChanges(images=[key]))
    svc.tasks.transition(task_id, change)


def _task(task_id: str) -> Task:
    return get_services().tasks.get(task_id)


def test_templates_are_validated_versioned_and_run_as_one_task(stack: Path) -> None:
    poster = {"name": "poster", "promptTemplate": "{prompt}, flat poster", "steps": 4,
              "width": 64, "height": 64, "folder": "looks", "description": "flat"}  # fmt: skip
    status, made = _call("POST", "/templates", poster)
    assert status == 201, made
    assert made["version"] == 1 and made["steps"] == 4 and made["shared"] is False
    assert _call("POST", "/templates", poster)[0] == 409

    # checked by the request's own schema, the field named
    status, body = _call("POST", "/templates", {"name": "bad", "steps": 0})
    assert status == 422 and body["detail"][0]["loc"] == ["body", "steps"]
    status, body = _call("POST", "/templates", {"name": "bad", "stepz": 4})
    assert status == 422 and body["detail"][0]["loc"] == ["body", "stepz"]
    assert _call("POST", "/templates", {"name": "a/b"})[0] == 422

    # a change names the version it is based on
    change = {"promptTemplate": "{prompt}, flat poster", "steps": 6, "width": 64, "height": 64}
    assert _call("PUT", "/templates/poster", {**change, "version": 7})[0] == 409
    status, put = _call("PUT", "/templates/poster", {**change, "version": 1})
    assert status == 200 and put["version"] == 2 and put["steps"] == 6 and put["folder"] == ""

    status, ran = _call("POST", "/templates/poster/run", {"prompt": "a fox",
                        "overrides": {"seed": 5}}, **{"Request-Type": "async"})  # fmt: skip
    assert status == 202, ran
    task = _task(ran["taskId"])
    assert task.params.prompt == "a fox, flat poster"
    assert (task.params.steps, task.params.seed, task.params.width) == (6, 5, 64)
    status, body = _call("POST", "/templates/poster/run", {"prompt": "x",
                         "overrides": {"steps": 999}})  # fmt: skip
    assert status == 422 and body["detail"][0]["loc"] == ["body", "overrides", "steps"]
    status, body = _call("POST", "/templates/poster/run", {"prompt": "x", "init_images": ["x"]})
    assert status == 422 and body["detail"][0]["loc"] == ["body", "init_images"]

    # shared templates: an admin's to change, everyone's to read and run
    assert _call("POST", "/templates?shared=true", {"name": "house"})[0] == 403
    assert _admin("POST", "/templates?shared=true", {"name": "house", "steps": 3})[0] == 201
    listed = _call("GET", "/templates")[1]
    assert [(t["name"], t["shared"]) for t in listed] == [("poster", False), ("house", True)]
    assert _call("GET", "/templates/house")[1]["steps"] == 3

    assert _call("DELETE", "/templates/poster")[0] == 204
    assert _call("GET", "/templates/poster")[0] == 404


def test_a_folder_runs_as_a_batch_and_ends_in_a_labelled_grid(stack: Path) -> None:
    for name, steps, cfg in (("a", 4, 7), ("b", 4, 5), ("c", 2, 5)):
        body = {"name": name, "steps": steps, "cfg_scale": cfg, "width": 64, "height": 64,
                "folder": "cmp", "prompt": "studio light"}  # fmt: skip
        assert _call("POST", "/templates", body)[0] == 201
    assert _call("POST", "/templates", {"name": "other", "folder": "else"})[0] == 201

    status, batch = _call("POST", "/batches", {"folder": "cmp", "prompt": "a red circle"})
    assert status == 202, batch
    assert [t["template"] for t in batch["tasks"]] == ["a", "b", "c"]
    assert batch["tasks"][0]["label"] == "a\ncfg_scale: 7\nsteps: 4"
    assert _task(batch["tasks"][2]["taskId"]).params.prompt == "a red circle, studio light"
    assert batch["status"] == "running" and batch["grid"] is None

    ids = [t["taskId"] for t in batch["tasks"]]
    _finish(ids[0], "red")
    _finish(ids[1], None)
    status, state = _call("GET", f"/batches/{batch['batchId']}")
    assert state["progress"] == pytest.approx(2 / 3, abs=1e-3) and state["gridUrl"] is None
    _finish(ids[2], "blue")
    status, state = _call("GET", f"/batches/{batch['batchId']}")
    assert status == 200 and state["status"] == "partial" and state["progress"] == 1
    grid = Image.open(io.BytesIO(get_services().blobs.get(state["grid"])))
    assert grid.width == 3 * 32 and grid.height > 32  # a row of three under their labels
    assert grid.getpixel((5, grid.height - 5)) == (255, 0, 0)
    assert grid.getpixel((32 + 5, grid.height - 5)) == (0, 0, 0)  # the failed one: blank
    assert grid.getpixel((64 + 5, grid.height - 5)) == (0, 0, 255)
    assert state["gridUrl"]
    assert _call("GET", f"/batches/{batch['batchId']}")[1]["grid"] == state["grid"]

    # another caller cannot see it; bad batches are refused before any task is recorded
    _, other_key = create_user(get_services(), "other", Role.USER)
    other = {"Authorization": f"Bearer {other_key}"}
    assert _call("GET", f"/batches/{batch['batchId']}", **other)[0] == 404
    assert _call("POST", f"/batches/{batch['batchId']}/cancellation", **other)[0] == 404
    before = len(get_services().tasks.list_by_owner("user", limit=100))
    status, body = _call("POST", "/batches", {"templates": ["a", "nope"], "prompt": "x"})
    assert status == 422 and body["detail"][0]["loc"] == ["body", "templates"]
    assert _call("POST", "/batches", {"folder": "cmp", "templates": ["a"]})[0] == 422
    assert len(get_services().tasks.list_by_owner("user", limit=100)) == before


def test_a_batch_is_cancelled_as_one(stack: Path) -> None:
    for name in ("a", "b"):
        assert _call("POST", "/templates", {"name": name, "steps": 2})[0] == 201
    batch = _call("POST", "/batches", {"templates": ["a", "b"], "prompt": "x", "grid": False})[1]
    status, state = _call("POST", f"/batches/{batch['batchId']}/cancellation")
    assert status == 200 and state["status"] == "cancelled"
    assert {t["status"] for t in state["tasks"]} == {"cancelled"} and state["grid"] is None


def test_a_batch_takes_overrides_and_an_idempotency_key(stack: Path) -> None:
    for name, steps in (("a", 2), ("b", 3)):
        assert _call("POST", "/templates", {"name": name, "steps": steps, "cfg_scale": 5})[0] == 201
    body = {"templates": ["a", "b"], "prompt": "x", "overrides": {"cfg_scale": 9}}
    status, batch = _call("POST", "/batches", body, **{"Idempotency-Key": "k1"})
    assert status == 202
    tasks = [_task(t["taskId"]) for t in batch["tasks"]]
    assert [(t.params.steps, t.params.guidance) for t in tasks] == [(2, 9), (3, 9)]
    # the same key and body: the same batch, no new task; another body: a conflict
    before = len(get_services().tasks.list_by_owner("user", limit=100))
    again = _call("POST", "/batches", body, **{"Idempotency-Key": "k1"})[1]
    assert again["batchId"] == batch["batchId"]
    assert _call("POST", "/batches", {**body, "prompt": "y"}, **{"Idempotency-Key": "k1"})[0] == 409
    status, refused = _call("POST", "/batches", {**body, "overrides": {"steps": 0}})
    assert status == 422 and refused["detail"][0]["loc"] == ["body", "overrides", "steps"]
    assert len(get_services().tasks.list_by_owner("user", limit=100)) == before


def test_the_simple_api_answers_in_its_envelope(stack: Path) -> None:
    assert _call("POST", "/templates", {"name": "anime", "steps": 3, "prompt": "anime"})[0] == 201
    status, body = _call("POST", "/simple/txt2img", {"prompt": "a cat", "style": "anime",
                         "count": 2, "width": 64, "height": 64})  # fmt: skip
    assert status == 202 and body["code"] == 0, body  # no worker: the wait runs out
    task = _task(body["data"]["taskId"])
    assert (task.params.prompt, task.params.steps, task.params.batch_size) == ("a cat, anime", 3, 2)

    _finish(task.task_id, "green")
    status, body = _call("GET", f"/simple/tasks/{body['data']['taskId']}")
    assert status == 200 and (body["code"], body["msg"]) == (0, "ok")
    assert body["data"]["status"] == "succeeded" and len(body["data"]["images"]) == 1

    status, body = _call("POST", "/simple/txt2img", {"prompt": "a cat", "style": "nope"})
    assert (status, body["code"]) == (422, 422) and body["msg"].startswith("style")
    status, body = _call("POST", "/simple/txt2img", {"prompt": "a cat", "width": 7})
    assert (status, body["code"]) == (422, 422) and "width" in body["msg"]
    status, body = _call("GET", "/simple/tasks/nope1234")
    assert (status, body["code"]) == (404, 404) and body["data"]["error"] == "not_found"
