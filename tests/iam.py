"""IAM proven against the calls the code makes. moto enforces no IAM, so the tests hold every AWS
call a function makes (and every presigned URL it signs: its holder acts with the function's
role) against that function's role in template.yaml, as SAM expands it (policy templates,
managed policies, event-source permissions).

Both sides meet in "logical" names: a call's table, bucket, queue, function or role is named by
the template resource it was configured with (the function's environment at the time of the
call says which), and the roles' ARNs are resolved with the same logical names. So the check
does not depend on how a test names its moto resources.
"""

from __future__ import annotations

import copy
import fnmatch
import os
import re
import sys
import threading
from dataclasses import dataclass
from functools import cache
from typing import Any

from tests.aws_template import ACCOUNT, REGION, _Resolver, load_template

# the module of each function's handler -> the function's logical id
FUNCTION_MODULES = {
    "proxy_function": "ProxyFunction",
    "admin_function": "AdminFunction",
    "control_function": "ControlFunction",
    "inference_function": "InferenceFunction",
}
# what the managed policies SAM attaches allow, as far as the code's calls go
MANAGED = {
    "AWSLambdaBasicExecutionRole": [("logs:*", "*")],
    "AWSXrayWriteOnlyAccess": [("xray:*", "*")],
    "AWSLambdaSQSQueueExecutionRole": [
        ("sqs:ReceiveMessage", "*"),
        ("sqs:DeleteMessage", "*"),
        ("sqs:GetQueueAttributes", "*"),
    ],
}
_PREFIX = re.compile(r"^t[0-9a-f]{8}-")


@dataclass(frozen=True)
class Call:
    """One AWS API call (or presigned URL), with the environment it was made under."""

    function: str  # logical id
    service: str
    operation: str
    params: dict[str, Any]
    env: dict[str, str]


# --- the roles ---------------------------------------------------------------------------------


def _arn(logical: str, kind: str) -> str:
    return {
        "AWS::DynamoDB::Table": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{logical}",
        "AWS::S3::Bucket": f"arn:aws:s3:::{logical}",
        "AWS::SQS::Queue": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{logical}",
        "AWS::Serverless::Function": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{logical}",
        "AWS::IAM::Role": f"arn:aws:iam::{ACCOUNT}:role/{logical}",
    }.get(kind, f"arn:aws:unknown:::{logical}")


class _LogicalResolver(_Resolver):
    """Resolves resources to their logical names, parameters named by env to placeholders, and
    Fn::Sub's variable maps."""

    def _ref(self, name: str) -> Any:
        if name in self.template.get("Parameters", {}) and name in _PARAMETER_PLACEHOLDERS:
            return name
        return super()._ref(name)

    def __call__(self, value: Any) -> Any:
        if (
            isinstance(value, dict)
            and list(value) == ["Fn::Sub"]
            and isinstance(value["Fn::Sub"], list)
        ):
            text, variables = value["Fn::Sub"]
            for var, got in variables.items():
                text = text.replace("${" + var + "}", str(self(got)))
            return super().__call__({"Fn::Sub": text})
        return super().__call__(value)


# parameters the functions' environment carries (a call is normalised with the value it had)
_PARAMETER_PLACEHOLDERS = {"FunctionPrefix": "SD_FUNCTION_PREFIX"}


@cache
def _expanded() -> dict[str, Any]:
    """The template as SAM transforms it (roles with policy templates expanded)."""
    from samtranslator.translator.transform import transform

    template = copy.deepcopy(load_template())
    for resource in template["Resources"].values():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::Serverless::Function":
            if props.get("PackageType") == "Image":
                props["ImageUri"] = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/sd:latest"
            else:
                props["CodeUri"] = "s3://bucket/code.zip"
        if resource["Type"] == "AWS::Serverless::LayerVersion":
            props["ContentUri"] = "s3://bucket/layer.zip"

    class _NoManagedPolicies:
        def load(self) -> dict[str, str]:
            return {}

    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)
    return dict(transform(template, {}, _NoManagedPolicies()))


@cache
def role_statements(function: str) -> list[tuple[str, str]]:
    """(action pattern, resource pattern) pairs the function's role allows."""
    template = load_template()
    names = {logical: logical for logical in template["Resources"]}
    arns = {logical: _arn(logical, r["Type"]) for logical, r in template["Resources"].items()}
    resolve = _LogicalResolver(template, names, arns)
    expanded = _expanded()
    role_ref = expanded["Resources"][function]["Properties"]["Role"]
    role = expanded["Resources"][role_ref["Fn::GetAtt"][0]]["Properties"]
    allowed: list[tuple[str, str]] = []
    documents = [policy["PolicyDocument"] for policy in role.get("Policies", [])]
    for arn in role.get("ManagedPolicyArns", []):
        if isinstance(arn, dict) and "Ref" in arn:  # a managed policy of the template's own
            documents.append(template["Resources"][arn["Ref"]]["Properties"]["PolicyDocument"])
        else:
            allowed += MANAGED.get(str(arn).rsplit("/", 1)[-1], [])
    for document in documents:
        for statement in document["Statement"]:
            statement = resolve(statement)  # a conditional statement: as if its condition held
            if statement.get("Effect") != "Allow":
                continue
            actions = statement["Action"]
            resources = resolve(statement.get("Resource", "*"))
            for action in [actions] if isinstance(actions, str) else actions:
                for resource in [resources] if isinstance(resources, str) else resources:
                    allowed.append((action, str(resource)))
    return allowed


# --- the calls ---------------------------------------------------------------------------------


@cache
def _env_resources() -> dict[str, tuple[str, str]]:
    """Env var -> (logical id, resource type) of what the template sets it to."""
    template = load_template()
    found: dict[str, tuple[str, str]] = {}
    blocks = [template["Globals"]["Function"]["Environment"]["Variables"]]
    for resource in template["Resources"].values():
        blocks.append(resource.get("Properties", {}).get("Environment", {}).get("Variables", {}))
    types = {logical: r["Type"] for logical, r in template["Resources"].items()}
    for block in blocks:
        for var, value in block.items():
            if isinstance(value, dict) and "Ref" in value and value["Ref"] in types:
                found[var] = (value["Ref"], types[value["Ref"]])
            elif isinstance(value, dict) and "Fn::GetAtt" in value:
                found[var] = (value["Fn::GetAtt"][0], types[value["Fn::GetAtt"][0]])
    return found


def _logical(physical: str, env: dict[str, str]) -> str:
    """A physical table/bucket/queue/function/role name -> the logical id it was set up as."""
    for var, (logical, _kind) in _env_resources().items():
        value = env.get(var)
        if value and (physical == value or physical == value.rsplit("/", 1)[-1]):
            return logical
    for placeholder, var in _PARAMETER_PLACEHOLDERS.items():
        prefix = env.get(var)
        if prefix and physical.startswith(prefix + "-"):
            return placeholder + physical[len(prefix) :]
    return physical


def requests(call: Call) -> list[tuple[str, str]]:
    """The (IAM action, resource ARN) pairs `call` needs."""
    p, env = call.params, call.env

    def table(name: str, index: str | None = None) -> str:
        arn = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{_logical(name, env)}"
        return f"{arn}/index/{index}" if index else arn

    if call.service == "dynamodb":
        if "Transact" in p:
            ops = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem",
                   "ConditionCheck": "ConditionCheckItem", "Get": "GetItem"}  # fmt: skip
            return [(f"dynamodb:{ops[op]}", table(name)) for op, name in p["Transact"]]
        if "Tables" in p:
            return [(f"dynamodb:{call.operation}", table(name)) for name in p["Tables"]]
        return [(f"dynamodb:{call.operation}", table(p["TableName"], p.get("IndexName")))]
    if call.service == "s3":
        bucket = f"arn:aws:s3:::{_logical(p.get('Bucket', ''), env)}"
        obj = f"{bucket}/{p.get('Key', '*')}"
        s3 = {
            "GetObject": ("s3:GetObject", obj), "HeadObject": ("s3:GetObject", obj),
            "PutObject": ("s3:PutObject", obj), "CreateMultipartUpload": ("s3:PutObject", obj),
            "UploadPart": ("s3:PutObject", obj), "CompleteMultipartUpload": ("s3:PutObject", obj),
            "AbortMultipartUpload": ("s3:AbortMultipartUpload", obj),
            "ListParts": ("s3:ListMultipartUploadParts", obj),
            "DeleteObject": ("s3:DeleteObject", obj), "DeleteObjects": ("s3:DeleteObject", obj),
            "ListObjectsV2": ("s3:ListBucket", bucket), "ListObjects": ("s3:ListBucket", bucket),
            "ListMultipartUploads": ("s3:ListBucketMultipartUploads", bucket),
        }  # fmt: skip
        if call.operation == "DeleteObjects":  # each key it deletes
            return [("s3:DeleteObject", f"{bucket}/{key}") for key in p.get("Keys", ["*"])]
        action, resource = s3.get(call.operation, (f"s3:{call.operation}", obj))
        return [(action, resource)]
    if call.service == "sqs":
        name = _logical(p.get("QueueUrl", p.get("QueueName", "")), env)
        action = "sqs:SendMessage" if call.operation.startswith("SendMessage") else call.operation
        return [(action if ":" in action else f"sqs:{action}",
                 f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}")]  # fmt: skip
    if call.service == "lambda":
        target = p.get("FunctionName") or p.get("Resource")  # ListTags names it by its ARN
        name = _logical(str(target or "*").rsplit(":", 1)[-1], env)
        function = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
        action = (
            "lambda:InvokeFunction" if call.operation == "Invoke" else f"lambda:{call.operation}"
        )
        needed = [(action, function if target else "*")]
        if p.get("Tagged"):  # tags given at creation need TagResource too
            needed.append(("lambda:TagResource", function))
        if "Role" in p:
            role = _logical(str(p["Role"]), env)
            needed.append(
                ("iam:PassRole", _arn(role, "AWS::IAM::Role") if ":" not in role else role)
            )
        return needed
    if call.service in ("api.sagemaker", "runtime.sagemaker"):
        needed = [_sagemaker(call, env)]
        if p.get("Tagged"):  # tags given at creation need AddTags too
            needed.append(("sagemaker:AddTags", needed[0][1]))
        if "ExecutionRoleArn" in p:  # the role the endpoint's container runs as
            role = _logical(str(p["ExecutionRoleArn"]), env)
            needed.append(
                ("iam:PassRole", _arn(role, "AWS::IAM::Role") if ":" not in role else role)
            )
        return needed
    if call.service == "monitoring":  # CloudWatch: alarms by name
        names = p.get("AlarmNames") or [p.get("AlarmName", "*")]
        return [(f"cloudwatch:{call.operation}",
                 f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{_logical(str(n), env)}")
                for n in names]  # fmt: skip
    return [(f"{call.service}:{call.operation}", "*")]


# a SageMaker call's resource kind, by the parameter that names it
_SAGEMAKER_NAMES = (("EndpointName", "endpoint"), ("EndpointConfigName", "endpoint-config"),
                    ("ModelName", "model"))  # fmt: skip


def _sagemaker(call: Call, env: dict[str, str]) -> tuple[str, str]:
    """SageMaker names resources by kind (model, endpoint-config, endpoint), in lowercase."""
    p = call.params
    action = f"sagemaker:{call.operation}"
    if "ResourceArn" in p:  # ListTags, AddTags
        kind, _, name = str(p["ResourceArn"]).rsplit(":", 1)[-1].partition("/")
        return action, f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:{kind}/{_logical(name.lower(), env)}"
    for key, kind in _SAGEMAKER_NAMES:
        if key in p:
            name = _logical(str(p[key]).lower(), env)
            return action, f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:{kind}/{name}"
    return action, "*"


def allowed(call: Call) -> list[str]:
    """What `call` needs and its function's role does not allow (empty: allowed)."""
    statements = role_statements(call.function)
    return [
        f"{call.function}: {action} on {resource}"
        for action, resource in requests(call)
        if not any(
            fnmatch.fnmatchcase(action, a) and fnmatch.fnmatchcase(resource, r)
            for a, r in statements
        )
    ]


# --- recording ---------------------------------------------------------------------------------

KEYS = ("TableName", "IndexName", "Bucket", "Key", "Prefix", "QueueUrl", "QueueName",
        "FunctionName", "Role", "Resource", "EndpointName", "EndpointConfigName", "ModelName",
        "ResourceArn", "AlarmName", "ExecutionRoleArn")  # fmt: skip
ENV = tuple(_PARAMETER_PLACEHOLDERS.values())


def params_of(params: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = {k: params[k] for k in KEYS if isinstance(params.get(k), str)}
    if params.get("Tags"):
        found["Tagged"] = True
    if isinstance(params.get("AlarmNames"), list):
        found["AlarmNames"] = list(params["AlarmNames"])
    if "RequestItems" in params:
        found["Tables"] = sorted(params["RequestItems"])
    if isinstance(params.get("Delete"), dict):
        found["Keys"] = [str(o.get("Key", "")) for o in params["Delete"].get("Objects", [])]
    if "TransactItems" in params:
        found["Transact"] = [
            [op, item[op]["TableName"]] for item in params["TransactItems"] for op in item
        ]
    return found


def _function_on(frame: Any) -> str | None:
    while frame is not None:
        top = str(frame.f_globals.get("__name__", "")).split(".", 1)[0]
        if top in FUNCTION_MODULES:
            return FUNCTION_MODULES[top]
        frame = frame.f_back
    return None


def calling_function() -> str | None:
    """The function whose handler is on this thread's stack, else the function that started
    this thread (a function's own threads, e.g. the heartbeat of a running task); None: test
    code itself. Other threads' stacks are never walked: a running thread's frames may be
    freed while another thread reads them (the interpreter crashed doing so)."""
    found = _function_on(sys._getframe(1))
    return found or getattr(threading.current_thread(), _STARTED_BY, None)


_STARTED_BY = "_iam_started_by"
_thread_start = threading.Thread.start


def _start_recording_function(self: threading.Thread) -> None:
    """Thread.start, marking the new thread with the function that starts it (its handler on
    the starting thread's stack, or the function that started the starting thread)."""
    starter = _function_on(sys._getframe(1))
    starter = starter or getattr(threading.current_thread(), _STARTED_BY, None)
    if starter is not None:
        setattr(self, _STARTED_BY, starter)
    _thread_start(self)


threading.Thread.start = _start_recording_function  # type: ignore[method-assign]


def snapshot_env() -> dict[str, str]:
    names = set(_env_resources()) | set(ENV)
    return {k: v for k, v in os.environ.items() if k in names}
