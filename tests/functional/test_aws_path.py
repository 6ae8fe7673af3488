"""The AWS path end to end at handler level: admin upload with real HTTP PUTs to S3 presigned
URLs, proxy -> DynamoDB + SQS -> control (SQS batch event) -> per-checkpoint Lambda function ->
inference handler -> PNG in S3 -> result with a presigned URL. AWS is moto's HTTP server."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from PIL import Image

from sdcore import composition
from sdcore.domain.models import Model, Role
from sdcore.usecases.auth import create_user
from sdcore.webui.png_info import read_parameters
from sdlocal.client import sha256_file
from tests.aws_template import create_resources, environment
from tests.cloudformation import CloudFormation
from tests.functional import events
from tests.functional.events import Context, api, load
from tests.functional.jobs import run_model_jobs

REGION = "us-east-1"


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    # Lambda: no Docker here; an invoke of an image function only echoes (TOOLCHAIN-NOTES)
    httpx.post(f"{url}/moto-api/config", json={"lambda": {"use_docker": False}})
    yield url
    server.stop()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sdlocal.demo.tiny import save_single_file

    return save_single_file(tmp_path_factory.mktemp("ckpt") / "demo.safetensors")


@pytest.fixture
def aws(moto_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    clients = {
        s: boto3.client(s, region_name=REGION, endpoint_url=moto_url)
        for s in ("dynamodb", "s3", "sqs", "lambda", "iam")
    }
    names = create_resources(clients)
    role = clients["iam"].create_role(
        RoleName=f"role-{names['TasksTable']}",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
    )["Role"]["Arn"]
    env = {
        **environment(names),
        "AWS_ENDPOINT_URL": moto_url,
        "SD_SYNC_TIMEOUT": "0",
        "SD_INFERENCE_IMAGE_URI": "123456789012.dkr.ecr.us-east-1.amazonaws.com/sd:latest",
        "SD_INFERENCE_ROLE_ARN": role,
        "SD_MODEL_CACHE_DIR": str(tmp_path / "cache"),
        "SD_FUNCTION_PREFIX": names["TasksTable"][:9].lower().rstrip("-"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    composition.reset()
    svc = composition.get_services()
    _, admin_key = create_user(svc, "admin", Role.ADMIN)
    _, user_key = create_user(svc, "user", Role.USER)
    monkeypatch.setattr(events, "DEFAULT_HEADERS", {"Authorization": f"Bearer {user_key}"})
    monkeypatch.setattr(events, "ADMIN_HEADERS", {"Authorization": f"Bearer {admin_key}"})
    yield {"clients": clients, "names": names, "env": env}
    composition.reset()


def _http(handler, method: str, path: str, body=None, headers=None) -> tuple[int, Any]:
    resp = handler(api(method, path, body, headers), Context())
    return resp["statusCode"], json.loads(resp["body"]) if resp.get("body") else None


def _upload(path: Path, name: str) -> dict[str, Any]:
    from admin_function.app import lambda_handler as admin

    status, plan = _http(
        admin,
        "POST",
        "/admin/models",
        {
            "name": name,
            "size": path.stat().st_size,
            "sha256": sha256_file(path),
            "config": "tiny-sd",
        },
    )
    assert status == 201, plan
    data = path.read_bytes()
    parts = []
    for part in plan["parts"]:
        n = part["partNumber"]
        chunk = data[(n - 1) * plan["partSize"] : n * plan["partSize"]]
        put = httpx.put(part["url"], content=chunk)
        assert put.status_code == 200, put.text
        parts.append({"partNumber": n, "etag": put.headers["ETag"]})
    status, model = _http(admin, "POST", f"/admin/models/{name}/complete", {"parts": parts})
    assert status == 202 and model["pending"]["stage"] == "verifying", model
    # the verification job, from the SQS job queue, as its event source mapping delivers it
    assert [job["job"] for job in run_model_jobs()] == ["verify"]
    status, model = _http(admin, "GET", f"/admin/models/{name}")
    assert status == 200 and model["pending"] is None, model
    return model


def _control_batch(clients: dict[str, Any], queue_url: str) -> dict[str, Any]:
    """Receive from SQS and hand the batch to control as the event source mapping would."""
    from control_function.app import lambda_handler as control

    received = (
        clients["sqs"]
        .receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, AttributeNames=["All"])
        .get("Messages", [])
    )
    template = load("sqs_task.json")["Records"][0]
    records = [
        {
            **template,
            "messageId": m["MessageId"],
            "receiptHandle": m["ReceiptHandle"],
            "body": m["Body"],
            "md5OfBody": m["MD5OfBody"],
        }
        for m in received
    ]
    result = control({"Records": records}, Context())
    failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
    for m in received:
        if m["MessageId"] not in failed:
            clients["sqs"].delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
    return {"count": len(received), "failed": failed}


def test_proxy_control_inference_on_aws_adapters(
    aws: dict[str, Any],
    tiny_checkpoint: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from proxy_function.app import lambda_handler as proxy

    clients, names = aws["clients"], aws["names"]
    # Given the demo checkpoint uploaded through admin into S3
    model = _upload(tiny_checkpoint, "demo")
    assert model["status"] == "unloaded" and model["format"] == "safetensors"

    # When a client submits async through the proxy
    status, body = _http(
        proxy,
        "POST",
        "/txt2img",
        {"prompt": "a red circle", "seed": 5, "steps": 3},
        {"Request-Type": "async"},
    )
    assert status == 202 and body["status"] == "queued"
    task_id = body["taskId"]
    item = clients["dynamodb"].get_item(
        TableName=names["TasksTable"], Key={"taskId": {"S": task_id}}
    )["Item"]
    assert item["status"]["S"] == "queued" and "expiresAt" in item

    # And control consumes the SQS batch: it creates the checkpoint's function and invokes it
    fleet = composition.get_services().fleet
    invocations: list[dict[str, Any]] = []
    real_invoke = fleet.invoke

    def spy(record, payload):
        invocations.append(payload)
        return real_invoke(record, payload)

    monkeypatch.setattr(fleet, "invoke", spy)
    assert _control_batch(clients, names["TaskQueue"]) == {"count": 1, "failed": set()}
    [payload] = invocations
    functions = clients["lambda"].list_functions()["Functions"]
    [function] = [
        f for f in functions if f["FunctionName"].startswith(aws["env"]["SD_FUNCTION_PREFIX"])
    ]
    assert function["PackageType"] == "Image"
    fn_env = function["Environment"]["Variables"]
    assert fn_env["SD_MODEL_NAME"] == "demo"
    slots = clients["dynamodb"].scan(TableName=names["SlotsTable"])["Items"]
    assert {s["taskId"]["S"] for s in slots} == {task_id}

    # Then the inference handler, run with that function's environment, does the work
    for key, value in fn_env.items():
        monkeypatch.setenv(key, value)
    composition.reset()
    import inference_function.app as inference

    monkeypatch.setattr(inference, "_engine", None)
    out = inference.lambda_handler(payload, Context())
    assert out == {"taskId": task_id, "status": "succeeded"}
    assert clients["dynamodb"].scan(TableName=names["SlotsTable"])["Items"] == []

    status, result = _http(proxy, "GET", f"/tasks/{task_id}/result")
    assert status == 200 and result["status"] == "succeeded"
    assert result["images"] == [f"outputs/user/{task_id}/0.png"]
    png = httpx.get(result["urls"][0])
    assert png.status_code == 200
    assert Image.open(io.BytesIO(png.content)).size == (64, 64)
    assert "Seed: 5" in (read_parameters(png.content) or "")
    status, progress = _http(proxy, "GET", f"/tasks/{task_id}/progress")
    assert progress["progress"] == 1.0 and progress["state"]["samplingSteps"] == 3
    models = {m["name"]: m for m in _http(proxy, "GET", "/models")[1]}
    assert models["demo"]["status"] == "loaded"
    # and each function wrote the task's metrics to its log as EMF records, with their
    # dimensions (the handlers flush them at the end of each invocation)
    emitted, totals = _emf_metrics(capsys.readouterr().out)
    # and the totals the alarms read, written again with no dimensions
    assert totals == {"queue_wait_seconds", "tasks_succeeded"}
    assert emitted["tasks_submitted"] == {("kind", "txt2img"), ("model", "demo")}
    demo_lambda = {("fleet", "lambda"), ("model", "demo")}
    for name in ("tasks_started", "queue_wait_seconds", "tasks_succeeded",
                 "sampling_steps_per_second", "model_load_seconds"):  # fmt: skip
        assert emitted[name] == demo_lambda, name
    for name in ("run_seconds", "end_to_end_seconds"):
        assert emitted[name] == demo_lambda | {("status", "succeeded")}, name
    assert emitted["model_loads"] == demo_lambda | {("outcome", "loaded")}
    assert emitted["model_cache_misses"] == {("type", "checkpoint")}
    assert emitted["verification_seconds"] == {("type", "checkpoint"), ("outcome", "verified")}
    assert emitted["upload_bytes"] == {("type", "checkpoint")}
    # and the admin summary reads the task from DynamoDB's status index (within admin's role)
    from admin_function.app import lambda_handler as admin

    status, stats = _http(admin, "GET", "/admin/stats")
    assert status == 200, stats
    hour = stats["windows"][0]["total"]
    assert (hour["submitted"], hour["succeeded"], hour["runSeconds"]["count"]) == (1, 1, 1)
    assert stats["windows"][0]["models"][0]["fleet"] == "lambda"


def _emf_metrics(out: str) -> tuple[dict[str, set[tuple[str, str]]], set[str]]:
    """Each metric in the EMF records of `out`, with its dimensions and their values, and the
    metrics also written with no dimensions (the totals)."""
    found: dict[str, set[tuple[str, str]]] = {}
    totals: set[str] = set()
    for line in out.splitlines():
        if not line.startswith('{"_aws"'):
            continue
        record = json.loads(line)
        [spec] = record["_aws"]["CloudWatchMetrics"]
        [dimensions] = spec["Dimensions"]
        for metric in spec["Metrics"]:
            if dimensions:
                found[metric["Name"]] = {(d, record[d]) for d in dimensions}
            else:
                totals.add(metric["Name"])
    return found, totals


def test_over_the_cap_waits_and_cancelled_never_runs(
    aws: dict[str, Any], tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from admin_function.app import lambda_handler as admin
    from control_function.app import lambda_handler as control
    from proxy_function.app import lambda_handler as proxy

    clients, names = aws["clients"], aws["names"]
    _upload(tiny_checkpoint, "demo")
    async_ = {"Request-Type": "async"}
    first = _http(proxy, "POST", "/txt2img", {"prompt": "a"}, async_)[1]["taskId"]
    second = _http(proxy, "POST", "/txt2img", {"prompt": "b"}, async_)[1]["taskId"]
    third = _http(proxy, "POST", "/txt2img", {"prompt": "c"}, async_)[1]["taskId"]
    assert _http(proxy, "POST", f"/tasks/{third}/cancellation")[1]["status"] == "cancelled"

    # per-checkpoint cap 1: one is dispatched, one parked (no message left), the cancelled
    # one ends
    assert _control_batch(clients, names["TaskQueue"])["failed"] == set()
    slots = clients["dynamodb"].scan(TableName=names["SlotsTable"])["Items"]
    holders = {s["taskId"]["S"] for s in slots}
    assert len(holders) == 1 and holders <= {first, second}
    attrs = clients["sqs"].get_queue_attributes(
        QueueUrl=names["TaskQueue"], AttributeNames=["All"]
    )["Attributes"]
    waiting = int(attrs["ApproximateNumberOfMessages"]) + int(
        attrs["ApproximateNumberOfMessagesDelayed"]
    )
    assert waiting == 0
    parked = clients["dynamodb"].scan(TableName=names["TasksTable"], IndexName="byParked")
    assert [i["taskId"]["S"] for i in parked["Items"]] == list({first, second} - holders)
    for task_id in (first, second):
        assert _http(proxy, "GET", f"/tasks/{task_id}/result")[1]["status"] == "queued"
    assert _http(proxy, "GET", f"/tasks/{third}/result")[1]["status"] == "cancelled"

    # the schedule's reaper finds nothing lost; the gauges see the two tasks waiting, the
    # first holding the slot it was dispatched with
    scheduled = control(load("schedule.json"), Context())
    assert scheduled == {"reaped": [], "swept": [], "unloaded": [],
                         "load": {"slots": 1, "waiting": 2, "running": 0}}  # fmt: skip

    # deleting the model removes its function
    assert _http(admin, "DELETE", "/admin/models/demo")[0] == 200
    prefix = aws["env"]["SD_FUNCTION_PREFIX"]
    functions = clients["lambda"].list_functions()["Functions"]
    assert [f for f in functions if f["FunctionName"].startswith(prefix)] == []


def _stack_event(cfn: CloudFormation, request_type: str) -> dict[str, Any]:
    return {**load("cfn_delete.json"), "RequestType": request_type, "ResponseURL": cfn.url}


def test_deleting_the_stack_deletes_the_inference_functions_it_created(
    aws: dict[str, Any], cloudformation: CloudFormation, monkeypatch: pytest.MonkeyPatch
) -> None:
    from control_function.app import lambda_handler as control

    clients, prefix = aws["clients"], aws["env"]["SD_FUNCTION_PREFIX"]
    monkeypatch.setenv("SD_STACK_NAME", "sd-api")
    composition.reset()
    svc = composition.get_services()
    for name in ("a", "b"):  # as control makes them on a checkpoint's first task
        model = Model(name=name, sha256="ab" * 32, size=1, key=f"models/{name}/m",
                      registered_at=1.0, modified_at=1.0)  # fmt: skip
        svc.fleet.ensure(model)
    lam = clients["lambda"]
    ours = {f["FunctionName"] for f in lam.list_functions()["Functions"]}
    assert len({n for n in ours if n.startswith(prefix)}) == 2

    def ours_left() -> set[str]:
        return {
            f["FunctionName"]
            for f in lam.list_functions()["Functions"]
            if f["FunctionName"].startswith(prefix)
        }

    # When the stack is created or updated: nothing to do, and CloudFormation is answered
    for kind in ("Create", "Update"):
        control(_stack_event(cloudformation, kind), Context())
    assert [a["Status"] for a in cloudformation.answers] == ["SUCCESS", "SUCCESS"]
    assert len(ours_left()) == 2

    # When it is deleted: every function it created goes, and so do their records
    answer = control(_stack_event(cloudformation, "Delete"), Context())

    assert ours_left() == set()
    assert svc.functions.list() == []
    sent = cloudformation.answers[-1]
    assert sent == {"contentType": "", **answer}
    assert sent["Status"] == "SUCCESS" and sent["Data"] == {"Deleted": 2}
    assert sent["PhysicalResourceId"] == "sd-api-FleetCleanup"
    assert sent["LogicalResourceId"] == "FleetCleanup" and sent["RequestId"]
    # the same id on every answer (a new one would be a replacement: CloudFormation would delete)
    assert {a["PhysicalResourceId"] for a in cloudformation.answers} == {"sd-api-FleetCleanup"}


def test_a_failed_stack_deletion_still_answers_cloudformation(
    aws: dict[str, Any], cloudformation: CloudFormation, monkeypatch: pytest.MonkeyPatch
) -> None:
    from control_function.app import lambda_handler as control

    svc = composition.get_services()

    def refuse() -> list[str]:
        raise RuntimeError("throttled")

    monkeypatch.setattr(svc.fleet, "delete_all", refuse)
    event = {**_stack_event(cloudformation, "Delete"), "PhysicalResourceId": None}
    answer = control(event, Context())

    [sent] = cloudformation.answers
    assert sent["Status"] == answer["Status"] == "FAILED"
    assert sent["Reason"] == "RuntimeError: throttled"
    assert sent["PhysicalResourceId"] == "sd-api-FleetCleanup"  # from the stack's name


def test_a_new_deployments_first_admin_key_comes_from_invoking_admin(
    aws: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from admin_function.app import lambda_handler as admin

    # this fixture's deployment has an admin already: a second is refused
    refused = admin({"bootstrap": "admin", "name": "root"}, Context())
    assert refused == {"error": "an admin exists: issue keys with POST /admin/users/{name}/keys"}

    # a new deployment (empty users table): the first invoke gives the key, once
    fresh = create_resources(aws["clients"])["UsersTable"]
    monkeypatch.setenv("SD_USERS_TABLE", fresh)
    composition.reset()
    made = admin({"bootstrap": "admin"}, Context())
    assert made["user"] == "admin" and made["role"] == "admin" and made["apiKey"]
    status, models = _http(
        admin, "GET", "/admin/models", headers={"Authorization": f"Bearer {made['apiKey']}"}
    )
    assert status == 200 and models == []
    assert "error" in admin({"bootstrap": "admin", "name": "other"}, Context())
    assert admin({"bootstrap": "user"}, Context())["error"].startswith("the only bootstrap")


def _sns_event(message: dict[str, Any], topic: str) -> dict[str, Any]:
    """An SNS delivery to a Lambda subscriber (control), as SNS shapes it."""
    return {"Records": [{
        "EventSource": "aws:sns", "EventVersion": "1.0",
        "EventSubscriptionArn": f"{topic}:0f1e2d3c-aaaa-bbbb-cccc-111122223333",
        "Sns": {"Type": "Notification", "MessageId": "95df01b4-ee98-5cb9-9903-4c221d41eb5e",
                "TopicArn": topic, "Subject": None, "Message": json.dumps(message),
                "Timestamp": "2026-12-05T02:00:00.000Z", "SignatureVersion": "1",
                "Signature": "EXAMPLE", "SigningCertUrl": "EXAMPLE", "UnsubscribeUrl": "EXAMPLE",
                "MessageAttributes": {}},
    }]}  # fmt: skip


def _endpoint_report(task_id: str, endpoint: str, failure: str | None = None) -> dict[str, Any]:
    """What a SageMaker asynchronous endpoint publishes when an invocation ends."""
    report: dict[str, Any] = {
        "awsRegion": REGION, "eventTime": "2026-12-05T02:00:00.000Z",
        "receivedTime": "2026-12-05T01:59:00.000Z", "inferenceId": task_id,
        "eventVersion": "1.0", "eventSource": "aws:sagemaker", "eventName": "InferenceResult",
        "requestParameters": {"endpointName": endpoint, "contentType": "application/json",
                              "inputLocation": f"s3://bucket/sagemaker/inputs/{task_id}.json"},
        "invocationStatus": "Failed" if failure else "Completed",
    }  # fmt: skip
    if failure:
        report["failureReason"] = failure
    return report


def test_a_checkpoint_on_the_sagemaker_fleet_end_to_end(
    aws: dict[str, Any], tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """proxy -> control -> an asynchronous endpoint for the checkpoint -> (the test plays the
    endpoint: the S3 input handed to the container's code) -> PNG in S3 -> SNS -> control."""
    from control_function.app import lambda_handler as control
    from proxy_function.app import lambda_handler as proxy

    clients, names = aws["clients"], aws["names"]
    ok_topic = f"arn:aws:sns:{REGION}:123456789012:endpoint-ok"
    role = clients["iam"].get_role(RoleName=f"role-{names['TasksTable']}")["Role"]["Arn"]
    for key, value in {"SD_INFERENCE_FLEET": "sagemaker", "SD_SAGEMAKER_ROLE_ARN": role,
                       "SD_SAGEMAKER_SUCCESS_TOPIC_ARN": ok_topic,
                       "SD_SAGEMAKER_ERROR_TOPIC_ARN": ok_topic + "-errors"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    composition.reset()
    _upload(tiny_checkpoint, "demo")
    async_ = {"Request-Type": "async"}
    first = _http(proxy, "POST", "/txt2img", {"prompt": "a red circle", "steps": 2}, async_)
    second = _http(proxy, "POST", "/txt2img", {"prompt": "a blue square", "steps": 2}, async_)
    first_id, second_id = first[1]["taskId"], second[1]["taskId"]

    # control makes the checkpoint's endpoint and hands both tasks to it (its cap: 1 instance
    # x 1 invocation, so one now, one waits)
    assert _control_batch(clients, names["TaskQueue"])["failed"] == set()
    sm = boto3.client("sagemaker", region_name=REGION, endpoint_url=aws["env"]["AWS_ENDPOINT_URL"])
    [endpoint] = sm.list_endpoints()["Endpoints"]
    [record] = composition.get_services().fleet.list()
    assert record.name == endpoint["EndpointName"] and record.resources["fleet"] == "sagemaker"
    status, functions = _http(
        __import__("admin_function.app", fromlist=["x"]).lambda_handler,
        "GET",
        "/admin/functions",
        headers=events.ADMIN_HEADERS,
    )
    assert status == 200 and functions[0]["resources"]["endpointStatus"] == "InService"
    assert functions[0]["resources"]["currentInstances"] == 1
    handed = [t for t in (first_id, second_id)
              if composition.get_services().tasks.get(t).dispatched_at]  # fmt: skip
    assert len(handed) == 1
    [task_id] = handed

    # the endpoint's container (its environment, as SageMaker gives it) takes the S3 input
    described = sm.describe_endpoint(EndpointName=endpoint["EndpointName"])
    config = sm.describe_endpoint_config(EndpointConfigName=described["EndpointConfigName"])
    container = sm.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
    for key, value in container["PrimaryContainer"]["Environment"].items():
        monkeypatch.setenv(key, value)
    key = f"sagemaker/inputs/{task_id}.json"
    body = clients["s3"].get_object(Bucket=names["Bucket"], Key=key)["Body"].read()
    composition.reset()
    import inference_function.app as inference

    monkeypatch.setattr(inference, "_engine", None)
    assert inference.handle(json.loads(body)) == {"taskId": task_id, "status": "succeeded"}

    # the endpoint reports it to SNS; control has nothing left to do for it
    for key in ("SD_MODEL_NAME", "SD_MODEL_KEY"):
        monkeypatch.delenv(key)
    composition.reset()
    done = control(_sns_event(_endpoint_report(task_id, endpoint["EndpointName"]), ok_topic),
                   Context())  # fmt: skip
    assert done == {"outcomes": ["ended"]}
    status, result = _http(proxy, "GET", f"/tasks/{task_id}/result")
    assert result["status"] == "succeeded"
    assert Image.open(io.BytesIO(httpx.get(result["urls"][0]).content)).size == (64, 64)

    # the other one's invocation fails on the endpoint: control ends it with the reason
    other = second_id if task_id == first_id else first_id
    reason = "ClientError: Received server error (500) from primary"
    failed = control(_sns_event(_endpoint_report(other, endpoint["EndpointName"], reason),
                                ok_topic + "-errors"), Context())  # fmt: skip
    assert failed == {"outcomes": ["failed"]}
    status, result = _http(proxy, "GET", f"/tasks/{other}/result")
    assert result["status"] == "failed"
    assert result["error"] == f"the inference endpoint failed: {reason}"
