"""What `sam build` would deploy, built here and run: the layer and the zip functions are built for
the Lambda runtime (scripts/build_artifacts.py), then each handler is imported from the built
artifacts in a clean interpreter (no site-packages) and given one event against moto's server.

A dependency missing from the layer's requirements, or one that cannot be resolved for Amazon
Linux 2, fails here; a test of the source tree cannot see either."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from sdcore.composition import build_services
from sdcore.domain.models import Model, ModelFormat, ModelStatus, Role, TaskStatus
from sdcore.settings import Settings
from sdcore.usecases.auth import create_user
from tests import iam
from tests.aws_template import REGION, create_resources, environment
from tests.cloudformation import CloudFormation

REPO = Path(__file__).resolve().parents[2]
EVENTS = REPO / "tests" / "events"
RUNNER = Path(__file__).with_name("artifact_runner.py")
FUNCTIONS = {
    "ProxyFunction": "proxy_function.app.lambda_handler",
    "AdminFunction": "admin_function.app.lambda_handler",
    "ControlFunction": "control_function.app.lambda_handler",
}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sam-build")
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "build_artifacts.py"), "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=900,
    )
    return out


@dataclass
class Deployed:
    """The template's resources in a moto server, the functions' environment, and keys."""

    env: dict[str, str]
    user_key: str
    admin_key: str


@pytest.fixture(scope="module")
def deployed() -> Iterator[Deployed]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = dict(os.environ)
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    try:
        session = boto3.Session(region_name=REGION)
        clients = {s: session.client(s) for s in ("dynamodb", "s3", "sqs")}
        env = {**environment(create_resources(clients)), "AWS_ENDPOINT_URL": endpoint}
        svc = build_services(Settings.from_env(env))
        _, admin_key = create_user(svc, "admin", Role.ADMIN)
        _, user_key = create_user(svc, "user", Role.USER)
        svc.models.create(
            Model(name="demo", status=ModelStatus.UNLOADED, format=ModelFormat.SAFETENSORS,
                  sha256="a" * 64, size=1, key="models/checkpoint/demo/x", registered_at=1,
                  modified_at=1)
        )  # fmt: skip
        yield Deployed(env, user_key, admin_key)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        server.stop()


def run(built: Path, function: str, event: dict, env: dict[str, str], tmp: Path) -> dict:
    """One event through `function`'s handler, imported from the build in a clean interpreter."""
    path = tmp / f"{function}.json"
    path.write_text(json.dumps(event))
    child_env = {
        **env,
        "PATH": "/usr/bin:/bin",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        "HOME": str(tmp),
    }
    done = subprocess.run(
        [sys.executable, "-S", "-E", str(RUNNER), str(built / function),
         str(built / "SharedLayer" / "python"), FUNCTIONS[function], str(path)],
        env=child_env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    answer: dict = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["from_site_packages"] == [], "imported from outside the artifacts"
    # every call the built function made is one its role in template.yaml allows
    calls = [iam.Call(function, c["service"], c["operation"], c["params"], env)
             for c in answer["calls"]]  # fmt: skip
    assert [d for call in calls for d in iam.allowed(call)] == []
    return answer


def api_event(method: str, path: str, key: str, body: dict | None = None) -> dict:
    event = json.loads((EVENTS / "apigw_txt2img.json").read_text())
    headers = {**event["headers"], "Authorization": f"Bearer {key}"}
    event.update(
        resource=path,
        path=path,
        httpMethod=method,
        headers=headers,
        multiValueHeaders={k: [v] for k, v in headers.items()},
        body=json.dumps(body) if body is not None else None,
    )
    event["requestContext"] = {**event["requestContext"], "path": path, "httpMethod": method}
    return event


def test_the_layer_and_functions_build_for_the_lambda_runtime(built: Path) -> None:
    layer = built / "SharedLayer" / "python"
    assert (layer / "sdcore" / "api" / "routes" / "native.py").is_file()
    assert not (layer / "sdlocal").exists()  # the local toolbox is not deployed
    assert {p.name for p in layer.glob("*.so")} >= {"ahocorasick.cpython-311-x86_64-linux-gnu.so"}
    for function in FUNCTIONS:
        assert (built / function).is_dir()


def test_the_proxy_takes_a_task_from_the_built_artifacts(
    built: Path, deployed: Deployed, tmp_path: Path
) -> None:
    event = api_event("POST", "/txt2img", deployed.user_key, {"prompt": "a red circle"})
    answer = run(built, "ProxyFunction", event, deployed.env, tmp_path)
    assert answer["result"]["statusCode"] == 202, answer["result"]
    assert json.loads(answer["result"]["body"])["status"] == "queued"
    operations = {(c["service"], c["operation"]) for c in answer["calls"]}
    # the task and its owner's queued-task counter are written in one transaction
    assert ("dynamodb", "TransactWriteItems") in operations
    assert ("sqs", "SendMessage") in operations


def test_admin_lists_models_from_the_built_artifacts(
    built: Path, deployed: Deployed, tmp_path: Path
) -> None:
    event = api_event("GET", "/admin/models", deployed.admin_key)
    answer = run(built, "AdminFunction", event, deployed.env, tmp_path)
    assert answer["result"]["statusCode"] == 200, answer["result"]
    assert [m["name"] for m in json.loads(answer["result"]["body"])] == ["demo"]


def test_control_runs_its_schedule_from_the_built_artifacts(
    built: Path, deployed: Deployed, tmp_path: Path
) -> None:
    # the tasks queued by this module's earlier tests (the proxy's) are still waiting: no
    # control has run to hand them over
    svc = build_services(Settings.from_env(deployed.env))
    queued = len(svc.tasks.list_by_status(TaskStatus.QUEUED, 100))
    event = json.loads((EVENTS / "schedule.json").read_text())
    answer = run(built, "ControlFunction", event, deployed.env, tmp_path)
    assert answer["result"] == {
        "reaped": [],
        "swept": [],
        "unloaded": [],
        "load": {"slots": 0, "waiting": queued, "running": 0},  # the gauges it sampled
    }
    assert any(c["service"] == "dynamodb" for c in answer["calls"])


def test_control_answers_the_stacks_deletion_from_the_built_artifacts(
    built: Path, deployed: Deployed, tmp_path: Path, cloudformation: CloudFormation
) -> None:
    event = {
        **json.loads((EVENTS / "cfn_delete.json").read_text()),
        "ResponseURL": cloudformation.url,
    }
    answer = run(built, "ControlFunction", event, deployed.env, tmp_path)
    assert answer["result"]["Status"] == "SUCCESS", answer["result"]
    assert [a["Status"] for a in cloudformation.answers] == ["SUCCESS"]
    assert ("lambda", "ListFunctions") in {(c["service"], c["operation"]) for c in answer["calls"]}
