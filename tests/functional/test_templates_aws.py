"""Templates and a batch's grid through the proxy handler on the AWS adapters (moto's server):
the users table's template items, the grid in S3, and every call held against the proxy's role
in template.yaml (tests/iam.py)."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

from proxy_function.app import lambda_handler as proxy
from sdcore import composition
from sdcore.domain.models import TaskChanges, TaskStatus
from tests.functional.test_aws_path import _http, aws, moto_url  # noqa: F401 (fixtures)
from tests.functional.test_templates_batches import demo_model


def _end(task_id: str) -> None:
    svc = composition.get_services()
    task = svc.tasks.get(task_id)
    svc.tasks.transition(task_id, task.start(svc.clock.now(), None))
    out = io.BytesIO()
    Image.new("RGB", (16, 16), "red").save(out, format="PNG")
    key = f"outputs/{task.owner}/{task_id}/0.png"
    svc.blobs.put(key, out.getvalue(), "image/png")
    changes = TaskChanges(images=[key])
    svc.tasks.transition(task_id, task.end(TaskStatus.SUCCEEDED, svc.clock.now(), changes))


def test_templates_and_a_batch_grid_on_aws(aws: dict[str, Any]) -> None:  # noqa: F811
    composition.get_services().models.create(demo_model())
    for name in ("a", "b"):
        body = {"name": name, "steps": 2 if name == "a" else 3, "width": 64, "height": 64}
        assert _http(proxy, "POST", "/templates", body)[0] == 201
    status, put = _http(proxy, "PUT", "/templates/b", {"steps": 4, "version": 1})
    assert status == 200 and put["version"] == 2
    assert [t["name"] for t in _http(proxy, "GET", "/templates")[1]] == ["a", "b"]

    status, batch = _http(proxy, "POST", "/batches", {"templates": ["a", "b"], "prompt": "fox"})
    assert status == 202, batch
    for task in batch["tasks"]:
        _end(task["taskId"])
    status, state = _http(proxy, "GET", f"/batches/{batch['batchId']}")
    assert status == 200 and state["status"] == "succeeded", state
    assert state["grid"] == f"outputs/user/batches/{batch['batchId']}/grid.png"
    assert state["gridUrl"].startswith("http")
    assert _http(proxy, "DELETE", "/templates/a")[0] == 204
    assert [t["name"] for t in _http(proxy, "GET", "/templates")[1]] == ["b"]
