"""Opt-in: deploy the stack to a real AWS account and do what a new user does (tests/smoke.py),
then delete the stack and check that no inference function is left behind.

Runs only when asked for and when it can: `pytest -m aws` (the default run deselects the marker)
with AWS credentials, Docker (sam builds the inference image) and an ECR repository for the
image. It never runs in CI. See docs/deploy-aws.md, "The smoke test on a real account".

    SD_AWS_SMOKE_IMAGE_REPOSITORY  the repository's URI
                                   (<account>.dkr.ecr.<region>.amazonaws.com/<name>)
    SD_AWS_SMOKE_STACK             the stack's name (default sd-smoke-<6 hex>); deleted at the end
    SD_AWS_SMOKE_KEEP=1            keep the stack (and the webhook receiver) to look at after
"""

from __future__ import annotations

import base64
import io
import json
import os
import secrets
import shutil
import subprocess
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sdlocal.client import Client
from sdlocal.stack import DEMO_CHECKPOINT
from tests.real_aws import NAMES, STARTED_WITH
from tests.smoke import run_smoke

pytestmark = pytest.mark.aws

REPO = Path(__file__).resolve().parents[2]
# a wait for AWS to settle (IAM propagation, a function becoming Active), bounded
SETTLE_S = 120

RECEIVER = """
import json
def handler(event, context):
    print(json.dumps({"smoke-webhook": {"headers": event.get("headers") or {},
                                        "body": event.get("body") or "",
                                        "base64": bool(event.get("isBase64Encoded"))}}))
    return {"statusCode": 204}
"""


@pytest.fixture(scope="module", autouse=True)
def _real_aws() -> Iterator[None]:
    """The AWS settings the run started with (tests/conftest.py replaced them with fakes),
    for boto3 here and for sam."""
    saved = {name: os.environ.pop(name) for name in NAMES if name in os.environ}
    os.environ.update({k: v for k, v in STARTED_WITH.items() if k != "AWS_ENDPOINT_URL"})
    try:
        yield
    finally:
        for name in NAMES:
            os.environ.pop(name, None)
        os.environ.update(saved)


def _session() -> Any:
    """A session on a real account, or a skip saying what is missing."""
    boto3 = pytest.importorskip("boto3")
    session = boto3.Session(region_name=os.environ.get("AWS_REGION") or None)
    credentials = session.get_credentials()
    if credentials is None or credentials.access_key == "testing" or not session.region_name:
        pytest.skip("no AWS credentials or region (AWS_PROFILE / AWS_REGION)")
    try:
        session.client("sts").get_caller_identity()
    except Exception as e:  # no network, expired or wrong credentials: nothing to test against
        pytest.skip(f"AWS is not reachable with these credentials: {e}")
    return session


def _sam() -> str:
    found = shutil.which("sam")
    if found:
        return found
    subprocess.run(["bash", "scripts/sam.sh", "--version"], cwd=REPO, check=True)  # makes it
    return str(REPO / ".venv-sam" / "bin" / "sam")


def _until(what: str, check: Any, timeout_s: float = SETTLE_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} after {timeout_s}s")
        time.sleep(3)


@dataclass
class Deployment:
    stack: str
    prefix: str
    outputs: dict[str, str]
    session: Any

    def functions(self) -> list[dict[str, Any]]:
        """The inference functions control created for this deployment."""
        pages = self.session.client("lambda").get_paginator("list_functions").paginate()
        return [f for page in pages for f in page["Functions"]
                if f["FunctionName"].startswith(f"{self.prefix}-")]  # fmt: skip


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    repository = os.environ.get("SD_AWS_SMOKE_IMAGE_REPOSITORY", "")
    if not repository:
        pytest.skip("set SD_AWS_SMOKE_IMAGE_REPOSITORY to an ECR repository's URI")
    session = _session()
    stack = os.environ.get("SD_AWS_SMOKE_STACK") or f"sd-smoke-{secrets.token_hex(3)}"
    prefix = stack[:40]
    sam = _sam()
    subprocess.run([sam, "build"], cwd=REPO, check=True)
    subprocess.run(
        [sam, "deploy", "--stack-name", stack, "--resolve-s3", "--no-confirm-changeset",
         "--capabilities", "CAPABILITY_IAM", "--region", session.region_name,
         "--image-repositories", f"InferenceFunction={repository}",
         "--parameter-overrides", f"FunctionPrefix={prefix}",
         f"InferenceImageRepository={repository.split('/', 1)[1]}"],
        cwd=REPO, check=True,
    )  # fmt: skip
    described = session.client("cloudformation").describe_stacks(StackName=stack)["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs", [])}
    try:
        yield Deployment(stack, prefix, outputs, session)
    finally:
        if not os.environ.get("SD_AWS_SMOKE_KEEP"):
            subprocess.run(
                [sam, "delete", "--stack-name", stack, "--no-prompts",
                 "--region", session.region_name],
                cwd=REPO, check=True,
            )  # fmt: skip
            # the stack's InferenceFleet resource deleted the functions control had made
            left = [f["FunctionName"] for f in Deployment(stack, prefix, {}, session).functions()]
            assert left == [], f"left behind by the stack's deletion: {left}"


@dataclass
class Receiver:
    """A webhook receiver on AWS: a function URL whose function logs each POST."""

    url: str
    name: str
    session: Any

    def received(self) -> list[tuple[dict[str, str], bytes]]:
        logs = self.session.client("logs")
        try:
            events = logs.filter_log_events(
                logGroupName=f"/aws/lambda/{self.name}", filterPattern='"smoke-webhook"'
            )["events"]
        except logs.exceptions.ResourceNotFoundException:
            return []  # no POST yet: the log group comes with the first
        out = []
        for event in events:
            line = event["message"]
            hook = json.loads(line[line.index("{") :])["smoke-webhook"]
            body = hook["body"].encode()
            if hook["base64"]:
                body = base64.b64decode(body)
            out.append((hook["headers"], body))
        return out


@pytest.fixture(scope="module")
def receiver(deployment: Deployment) -> Iterator[Receiver]:
    iam, lam = deployment.session.client("iam"), deployment.session.client("lambda")
    name = f"{deployment.stack}-smoke-webhook"[:64]
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
             "Principal": {"Service": "lambda.amazonaws.com"}}]}  # fmt: skip
    role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]
    basic = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
    iam.attach_role_policy(RoleName=name, PolicyArn=basic)
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as zf:
        zf.writestr("receiver.py", RECEIVER)

    def create() -> bool:
        try:
            lam.create_function(
                FunctionName=name,
                Runtime="python3.11",
                Role=role["Arn"],
                Handler="receiver.handler",
                Code={"ZipFile": code.getvalue()},
            )
        except lam.exceptions.InvalidParameterValueException:
            return False  # the new role is not assumable yet
        return True

    try:
        _until("the receiver's role to be assumable", create)
        _until(
            "the receiver to be active",
            lambda: lam.get_function(FunctionName=name)["Configuration"]["State"] == "Active",
        )
        url = lam.create_function_url_config(FunctionName=name, AuthType="NONE")["FunctionUrl"]
        lam.add_permission(FunctionName=name, StatementId="url", Action="lambda:InvokeFunctionUrl",
                           Principal="*", FunctionUrlAuthType="NONE")  # fmt: skip
        lam.add_permission(FunctionName=name, StatementId="invoke", Action="lambda:InvokeFunction",
                           Principal="*", InvokedViaFunctionUrl=True)  # fmt: skip
        yield Receiver(url.rstrip("/") + "/hook", name, deployment.session)
    finally:
        if not os.environ.get("SD_AWS_SMOKE_KEEP"):
            try:
                lam.delete_function(FunctionName=name)
            except lam.exceptions.ResourceNotFoundException:
                pass
            iam.detach_role_policy(RoleName=name, PolicyArn=basic)
            iam.delete_role(RoleName=name)


def test_a_new_user_on_a_fresh_deployment(deployment: Deployment, receiver: Receiver) -> None:
    lam = deployment.session.client("lambda")
    # the first admin key: the admin function invoked directly (only the account may)
    answer = lam.invoke(
        FunctionName=deployment.outputs["AdminFunctionName"],
        Payload=json.dumps({"bootstrap": "admin"}).encode(),
    )
    admin = json.loads(answer["Payload"].read())
    assert "apiKey" in admin, admin

    report = run_smoke(
        deployment.outputs["ApiUrl"], admin["apiKey"], receiver.url, receiver.received
    )
    print(f"smoke on {deployment.stack}: {report.seconds}")
    # the checkpoint's function went with the model
    assert deployment.functions() == []

    # one left for the stack's deletion to remove (the fixture checks it is gone)
    with Client(deployment.outputs["ApiUrl"], admin["apiKey"], timeout=120) as client:
        client.upload_model(DEMO_CHECKPOINT, "left-for-delete", config="demo-shapes")
        task = client.txt2img("a blue square", stable_diffusion_model="left-for-delete",
                              async_=True)  # fmt: skip
        assert client.wait(task["taskId"], poll_s=2, timeout_s=900)["status"] == "succeeded"
    [function] = deployment.functions()
    tags = lam.list_tags(Resource=function["FunctionArn"])["Tags"]
    assert tags["sd:stack"] == deployment.stack
