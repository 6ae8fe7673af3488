"""The WorkerFleet contract, over the three adapters: local worker processes, Lambda functions
and SageMaker endpoints (the AWS ones under moto). What each backend does beyond it is in
test_contract_fleet.py (Lambda), test_contract_sagemaker_fleet.py and the local stack's tests."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sdcore.adapters.aws import DynamoDBFunctionStore, LambdaWorkerFleet, SageMakerAsyncFleet
from sdcore.adapters.local.db import Database
from sdcore.adapters.local.fleet import ProcessWorkerFleet
from sdcore.adapters.local.stores import SqliteFunctionStore
from sdcore.clock import Clock
from sdcore.domain.models import FunctionChanges, Model
from sdcore.errors import InvalidInputError, NotFoundError
from sdcore.ports import WorkerFleet, function_name
from sdcore.settings import Settings

REPO = Path(__file__).resolve().parents[2]
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/sd-inference:v1"


@dataclass
class Harness:
    fleet: WorkerFleet
    exists: Callable[[str], bool]  # whether the backend has the function/endpoint
    handed: Callable[[dict[str, Any]], bool]  # whether an invocation reached it
    foreign: FunctionChanges  # a change this backend has no setting for
    foreign_field: str


def _model(name: str) -> Model:
    return Model(name=name, sha256="ab" * 32, size=1, key=f"models/checkpoint/{name}/x",
                 registered_at=1.0, modified_at=1.0)  # fmt: skip


def _local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    handled = tmp_path / "handled.jsonl"
    monkeypatch.setenv("SD_TEST_HANDLED", str(handled))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ["PYTHONPATH"]]))
    settings = Settings(data_dir=tmp_path, inference_handler="tests.contract.fleet_handler.handler")
    db = Database(tmp_path / "state.db")
    fleet = ProcessWorkerFleet(db, SqliteFunctionStore(db), settings, Clock())

    def handed(payload: dict[str, Any]) -> bool:
        deadline = time.monotonic() + 60  # the worker process starts and takes it
        while time.monotonic() < deadline:
            lines = handled.read_text().splitlines() if handled.exists() else []
            if payload in [json.loads(line) for line in lines]:
                return True
            time.sleep(0.05)
        return False

    def exists(name: str) -> bool:
        return any(r.name == name and r.pid for r in fleet.list())

    yield Harness(fleet, exists, handed, FunctionChanges(instance_type="ml.g4dn.xlarge"),
                  "instanceType")  # fmt: skip
    fleet.shutdown()


def _lambda(aws_stack: Any) -> Harness:
    role = aws_stack.client("iam").create_role(
        RoleName="r", AssumeRolePolicyDocument=json.dumps({"Statement": []})
    )["Role"]["Arn"]
    settings = Settings.from_env(
        {**aws_stack.env, "SD_INFERENCE_IMAGE_URI": IMAGE, "SD_INFERENCE_ROLE_ARN": role}
    )
    functions = DynamoDBFunctionStore(aws_stack.client("dynamodb"), settings.functions_table)
    lam = aws_stack.client("lambda")
    fleet = LambdaWorkerFleet(lam, functions, settings, now=time.time)

    def exists(name: str) -> bool:
        return name in {f["FunctionName"] for f in lam.list_functions()["Functions"]}

    # moto runs no image: that the asynchronous invoke was accepted is all there is to see
    return Harness(fleet, exists, lambda payload: True,
                   FunctionChanges(max_instances=2), "maxInstances")  # fmt: skip


def _sagemaker(aws_stack: Any) -> Harness:
    role = aws_stack.client("iam").create_role(
        RoleName="r", AssumeRolePolicyDocument=json.dumps({"Statement": []})
    )["Role"]["Arn"]
    settings = Settings.from_env({**aws_stack.env, "SD_SAGEMAKER_ROLE_ARN": role})
    functions = DynamoDBFunctionStore(aws_stack.client("dynamodb"), settings.functions_table)
    clients = [aws_stack.client(s) for s in ("sagemaker", "sagemaker-runtime",
               "application-autoscaling", "cloudwatch", "s3")]  # fmt: skip
    fleet = SageMakerAsyncFleet(*clients, functions, settings, image_uri=lambda: IMAGE)
    sm, s3 = clients[0], clients[4]

    def exists(name: str) -> bool:
        return name in {e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]}

    def handed(payload: dict[str, Any]) -> bool:  # the input the endpoint reads
        key = f"sagemaker/inputs/{payload['taskId']}.json"
        body = s3.get_object(Bucket=settings.bucket, Key=key)["Body"].read()
        return json.loads(body) == payload

    return Harness(fleet, exists, handed, FunctionChanges(memory_mb=4096), "memory")


@pytest.fixture(params=["local", "lambda", "sagemaker"])
def harness(request: pytest.FixtureRequest, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:  # fmt: skip
    if request.param == "local":
        yield from _local(tmp_path, monkeypatch)
        return
    aws_stack = request.getfixturevalue("aws_stack")
    yield _lambda(aws_stack) if request.param == "lambda" else _sagemaker(aws_stack)


def test_ensure_makes_one_function_per_model_named_from_its_hash(harness: Harness) -> None:
    fleet = harness.fleet
    a = fleet.ensure(_model("sd 1.5 / pruned"))
    again = fleet.ensure(_model("sd 1.5 / pruned"))
    b = fleet.ensure(_model("other"))
    assert a.name == function_name(fleet.settings.function_prefix, "sd 1.5 / pruned")  # type: ignore[attr-defined]
    assert again.name == a.name and again.created_at == a.created_at
    assert b.name != a.name and harness.exists(a.name) and harness.exists(b.name)
    assert sorted(r.model for r in fleet.list()) == ["other", "sd 1.5 / pruned"]


def test_invoke_hands_the_payload_to_the_models_function(harness: Harness) -> None:
    record = harness.fleet.ensure(_model("a"))
    payload = {"taskId": "t-1", "lease": None}
    harness.fleet.invoke(record, payload)
    assert harness.handed(payload)


def test_delete_removes_the_function_and_its_record(harness: Harness) -> None:
    record = harness.fleet.ensure(_model("a"))
    harness.fleet.delete("a")
    harness.fleet.delete("a")  # none left: no error
    assert not harness.exists(record.name)
    assert harness.fleet.list() == []


def test_update_of_a_model_without_a_function_is_not_found(harness: Harness) -> None:
    with pytest.raises(NotFoundError):
        harness.fleet.update("never used", FunctionChanges(env={"A": "1"}))


def test_update_records_the_admins_env(harness: Harness) -> None:
    harness.fleet.ensure(_model("a"))
    updated = harness.fleet.update("a", FunctionChanges(env={"HF_HOME": "/tmp/hf"}))
    assert updated.resources["env"] == {"HF_HOME": "/tmp/hf"}
    assert [r.resources.get("env") for r in harness.fleet.list()] == [{"HF_HOME": "/tmp/hf"}]


def test_each_fleet_refuses_a_setting_it_does_not_have(harness: Harness) -> None:
    harness.fleet.ensure(_model("a"))
    with pytest.raises(InvalidInputError) as refused:
        harness.fleet.check("a", harness.foreign)
    assert refused.value.field == harness.foreign_field


def test_delete_all_removes_every_function(harness: Harness) -> None:
    names = {harness.fleet.ensure(_model(n)).name for n in ("a", "b")}
    assert set(harness.fleet.delete_all()) == names
    assert harness.fleet.list() == [] and not any(harness.exists(n) for n in names)
