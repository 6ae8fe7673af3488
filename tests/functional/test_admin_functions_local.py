"""Admin function routes (/admin/functions...) on the local backend, with real-shaped events.

Workers are stood in for by processes whose command line is a worker's (python -c sleep ...
sdcore.adapters.local.runtime --function <name>): no torch import, and the fleet judges them by
pid and command line as it judges real ones. A test goes on only once the fleet's own judgement
sees the stand-in as a worker (not after some time), and a stand-in lives until the test kills it
(not for a while). Every process started here is killed at the end.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from admin_function.app import lambda_handler as admin
from sdcore.adapters.local import fleet as fleet_module
from sdcore.composition import get_services
from sdcore.domain.models import FunctionRecord, Model, ModelStatus
from sdcore.ports import function_name
from tests.functional.events import Context, api

SLEEP = "import signal; signal.pause()"  # until killed: the test decides when it is gone
_POPEN = subprocess.Popen  # the real one, for when a test patches it


def _call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
    resp = admin(api(method, path, body), Context())
    return resp["statusCode"], json.loads(resp["body"]) if resp.get("body") else None


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def _worker_like(name: str, procs: list[subprocess.Popen[bytes]], **kw: Any) -> Any:
    proc = _POPEN(
        [sys.executable, "-c", SLEEP, "-m", "sdcore.adapters.local.runtime", "--function", name],
        **kw,
    )
    procs.append(proc)
    # Popen returns once the child has called exec, which may not have replaced its command
    # line yet (the fleet reads it to tell a worker): wait until the fleet's own test says it
    # is the worker of `name`, as a listing will judge it
    deadline = time.monotonic() + 30
    while not fleet_module._is_worker(proc.pid, name):
        assert proc.poll() is None, f"the stand-in worker exited ({proc.returncode})"
        assert time.monotonic() < deadline, "the stand-in worker never showed its command line"
        time.sleep(0.01)
    return proc


def _model(name: str) -> None:
    get_services().models.create(
        Model(
            name=name,
            status=ModelStatus.UNLOADED,
            sha256="0" * 64,
            size=1,
            key=f"models/checkpoint/{name}/x",
            registered_at=0,
            modified_at=0,
        )
    )


def _record(model: str, pid: int | None) -> FunctionRecord:
    svc = get_services()
    record = FunctionRecord(
        name=function_name(svc.settings.function_prefix, model),
        model=model,
        status="active",
        pid=pid,
        created_at=1000.0,
        resources={"memoryMb": 3008},
    )
    svc.functions.put(record)
    return record


def test_list_update_and_delete_functions(local_env: Path, procs: list) -> None:
    # Given a function whose worker runs (spawned by another process: the stack's control loop)
    # and one whose worker is gone
    demo = _record("demo", _worker_like(function_name("sd", "demo"), procs).pid)
    other = _record("other", 999_999_999)
    get_services().fleet.invoke(demo, {"taskId": "t1"})

    # When an admin lists them
    status, listed = _call("GET", "/admin/functions")

    # Then status and pid come from the process, not from what was recorded
    assert status == 200
    by_model = {f["model"]: f for f in listed}
    assert by_model["demo"]["status"] == "active" and by_model["demo"]["pid"] == demo.pid
    assert by_model["demo"]["lastUsed"] is not None  # the invoke above
    assert by_model["other"]["status"] == "stopped" and by_model["other"]["pid"] is None
    assert by_model["demo"] == {
        "name": demo.name,
        "model": "demo",
        "resources": {"memoryMb": 3008},
        "status": "active",
        "lastUsed": by_model["demo"]["lastUsed"],
        "pid": demo.pid,
        "createdTime": "1970-01-01T00:16:40.000Z",
    }

    # When the running one gets new env and extra args
    body = {"models": ["demo"], "memory": 4096, "env": {"HF_HOME": "/x"}, "extraArgs": ["--a"]}
    status, updated = _call("POST", "/admin/functions/batch-update", body)

    # Then they are recorded, and the worker is stopped: its owner starts it again with them
    assert status == 200, updated
    [fn] = updated
    assert fn["resources"] == {
        "memoryMb": 4096,
        "env": {"HF_HOME": "/x"},
        "extraArgs": ["--a"],
    }
    assert (fn["status"], fn["pid"]) == ("stopped", None)
    assert procs[0].wait(timeout=15) is not None

    # When every function gets a timeout (models omitted)
    status, updated = _call("POST", "/admin/functions/batch-update", {"timeout": 60})
    assert status == 200
    assert sorted(f["model"] for f in updated) == ["demo", "other"]
    assert all(f["resources"]["timeoutS"] == 60 for f in updated)

    # When one is deleted (a model without a function is skipped)
    status, deleted = _call("POST", "/admin/functions/delete", {"models": ["other", "nope"]})
    assert (status, deleted) == (200, [other.name])
    assert [f["model"] for f in _call("GET", "/admin/functions")[1]] == ["demo"]


def test_bad_batch_updates_change_nothing(local_env: Path) -> None:
    _record("demo", None)
    for body in (
        {"models": ["demo"], "env": {"SD_MODEL_NAME": "x"}},  # the function's own variable
        {"models": ["demo"], "env": {"NOT A NAME": "x"}},
        {"models": ["demo"], "memroy": 4096},  # a typo is not silently ignored
        {"models": ["demo"], "memory": 64},
        {"models": []},
    ):
        status, answer = _call("POST", "/admin/functions/batch-update", body)
        assert status == 422, (body, answer)
    status, answer = _call("POST", "/admin/functions/batch-update", {"models": ["demo", "x"]})
    assert status == 404 and "x" in answer["message"]
    assert get_services().functions.list()[0].resources == {"memoryMb": 3008}
    assert _call("POST", "/admin/functions/delete", {})[0] == 422


def test_a_worker_owned_by_the_fleet_restarts_with_the_new_env(
    local_env: Path, procs: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the fleet's own worker (as in the stack's control loop), a stand-in process
    spawned: list[dict[str, str]] = []

    def popen(args: list[str], env: dict[str, str], **kw: Any) -> Any:
        spawned.append(env)
        return _worker_like(args[args.index("--function") + 1], procs, env=env, **kw)

    monkeypatch.setattr(fleet_module.subprocess, "Popen", popen)
    _model("demo")
    svc = get_services()
    first = svc.fleet.ensure(svc.models.get("demo"))
    assert spawned[0]["SD_EXTRA_ARGS"] == "" and "HF_HOME_X" not in spawned[0]

    # When an admin sets env (trying an own name too) and extra args
    changes = {"models": ["demo"], "env": {"HF_HOME_X": "/y"}, "extraArgs": ["--b", "c d"]}
    status, [fn] = _call("POST", "/admin/functions/batch-update", changes)

    # Then the worker is replaced by one that has them, and the old one is gone
    assert status == 200
    assert fn["status"] == "active" and fn["pid"] not in (None, first.pid)
    assert procs[0].poll() is not None
    assert spawned[1]["HF_HOME_X"] == "/y"
    assert spawned[1]["SD_EXTRA_ARGS"] == "--b 'c d'"
    assert spawned[1]["SD_MODEL_NAME"] == "demo"
    [listed] = _call("GET", "/admin/functions")[1]
    assert (listed["status"], listed["pid"]) == ("active", fn["pid"])
    svc.fleet.shutdown()  # type: ignore[attr-defined]
    assert all(p.poll() is not None for p in procs)
