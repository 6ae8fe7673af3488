"""Moto resources derived from template.yaml: one source of truth for table keys, indexes, TTL,
the bucket's settings and the queues' redrive.

    names = create_resources(boto3.Session(region_name="us-east-1"))   # inside mock_aws()
    env = environment(names)        # the Globals env vars of the functions, refs resolved

or, in a conftest: `aws_stack = aws_stack_fixture()` gives tests an `AwsStack`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

TEMPLATE = Path(__file__).resolve().parent.parent / "template.yaml"
REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
STACK_NAME = "sd-api"  # the stack the tests deploy as (AWS::StackName)


# --- reading the template ------------------------------------------------------------------------
class _Tag:
    """A CloudFormation intrinsic (!Ref, !GetAtt, !Sub, ...), kept as {"Fn": args}."""


class CfnLoader(yaml.SafeLoader):
    """A YAML loader that turns short-form intrinsics into their long form."""


def _intrinsic(loader: CfnLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if tag_suffix == "Ref" else f"Fn::{tag_suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if tag_suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


CfnLoader.add_multi_constructor("!", _intrinsic)


@cache
def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    with path.open() as fh:
        return yaml.load(fh, Loader=CfnLoader)  # a SafeLoader subclass: no arbitrary objects


def resources(of_type: str, path: Path = TEMPLATE) -> dict[str, dict[str, Any]]:
    """Logical id -> Properties of every resource of `of_type`."""
    return {
        logical: res.get("Properties", {})
        for logical, res in load_template(path)["Resources"].items()
        if res["Type"] == of_type
    }


class _Resolver:
    """Resolves the intrinsics used in the resources we create: Ref (parameters take their
    defaults, resources their moto name), GetAtt ...Arn/QueueName, Sub, If."""

    def __init__(self, template: dict[str, Any], names: dict[str, str], arns: dict[str, str]):
        self.template = template
        self.names = names
        self.arns = arns

    def _ref(self, name: str) -> Any:
        params = self.template.get("Parameters", {})
        if name in params:
            return params[name].get("Default", "")
        if name in self.names:
            return self.names[name]
        pseudo = {
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::Partition": "aws",
            "AWS::StackName": STACK_NAME,
        }
        if name in pseudo:
            return pseudo[name]
        return f"unresolved-{name}"  # a resource this helper does not create (e.g. a function)

    def __call__(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self._ref(arg)
            if key == "Fn::GetAtt":
                logical, attr = arg
                if attr == "Arn":
                    return self.arns.get(logical, f"arn:aws:unresolved:{logical}")
                if attr == "QueueName":
                    return self.names[logical].rsplit("/", 1)[-1]
                return f"unresolved-{logical}.{attr}"
            if key == "Fn::Sub":
                text = arg if isinstance(arg, str) else arg[0]
                for ref in _sub_refs(text):
                    base, _, attr = ref.partition(".")
                    got = self({"Fn::GetAtt": [base, attr]}) if attr else self._ref(base)
                    text = text.replace("${" + ref + "}", str(got))
                return text
            if key == "Fn::If":
                return self(arg[1])  # conditions: take the "true" branch
        return {k: self(v) for k, v in value.items()}


def _sub_refs(text: str) -> list[str]:
    out, start = [], 0
    while (i := text.find("${", start)) != -1:
        j = text.index("}", i)
        out.append(text[i + 2 : j])
        start = j + 1
    return out


# --- creating the resources in moto --------------------------------------------------------------
def _clients(session_or_clients: Any) -> dict[str, Any]:
    if isinstance(session_or_clients, dict):
        return session_or_clients
    session = session_or_clients or boto3.Session(region_name=REGION)
    return {svc: session.client(svc, region_name=REGION) for svc in ("dynamodb", "s3", "sqs")}


def _create_table(client: Any, name: str, props: dict[str, Any]) -> str:
    kwargs: dict[str, Any] = {
        "TableName": name,
        "KeySchema": props["KeySchema"],
        "AttributeDefinitions": props["AttributeDefinitions"],
        "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
    }
    if props.get("GlobalSecondaryIndexes"):
        kwargs["GlobalSecondaryIndexes"] = [
            {k: gsi[k] for k in ("IndexName", "KeySchema", "Projection")}
            for gsi in props["GlobalSecondaryIndexes"]
        ]
    arn = client.create_table(**kwargs)["TableDescription"]["TableArn"]
    ttl = props.get("TimeToLiveSpecification")
    if ttl and ttl.get("Enabled"):
        client.update_time_to_live(
            TableName=name,
            TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True},
        )
    return str(arn)


def _create_bucket(client: Any, name: str, props: dict[str, Any]) -> None:
    client.create_bucket(Bucket=name)  # us-east-1: no LocationConstraint
    if "PublicAccessBlockConfiguration" in props:
        client.put_public_access_block(
            Bucket=name, PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"]
        )
    if "BucketEncryption" in props:
        # CloudFormation's ServerSideEncryptionByDefault is the API's ApplyServerSide...
        rules = [
            {"ApplyServerSideEncryptionByDefault": r["ServerSideEncryptionByDefault"]}
            for r in props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        ]
        client.put_bucket_encryption(
            Bucket=name, ServerSideEncryptionConfiguration={"Rules": rules}
        )
    rules = props.get("LifecycleConfiguration", {}).get("Rules", [])
    if rules:
        client.put_bucket_lifecycle_configuration(
            Bucket=name, LifecycleConfiguration={"Rules": [_lifecycle_rule(r) for r in rules]}
        )


def _lifecycle_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """CloudFormation's lifecycle rule shape -> the S3 API's."""
    out: dict[str, Any] = {"ID": rule["Id"], "Status": rule["Status"]}
    out["Filter"] = {"Prefix": rule.get("Prefix", "")}
    if "ExpirationInDays" in rule:
        out["Expiration"] = {"Days": int(rule["ExpirationInDays"])}
    if "AbortIncompleteMultipartUpload" in rule:
        days = int(rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"])
        out["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": days}
    return out


_QUEUE_ATTRIBUTES = {
    "VisibilityTimeout",
    "MessageRetentionPeriod",
    "DelaySeconds",
    "MaximumMessageSize",
    "ReceiveMessageWaitTimeSeconds",
    "SqsManagedSseEnabled",
}


def _queue_attributes(props: dict[str, Any]) -> dict[str, str]:
    attrs = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in props.items()}
    out = {k: v for k, v in attrs.items() if k in _QUEUE_ATTRIBUTES}
    if "RedrivePolicy" in props:
        out["RedrivePolicy"] = json.dumps(props["RedrivePolicy"])
    return out


def create_resources(session_or_clients: Any = None, prefix: str | None = None) -> dict[str, str]:
    """Create the template's DynamoDB tables, S3 bucket and SQS queues (in moto).

    Parameters
    ----------
    session_or_clients
        A boto3 Session, or a dict of clients {"dynamodb", "s3", "sqs"} (e.g. pointed at
        ThreadedMotoServer). None: a default session in us-east-1.
    prefix
        Prepended to every physical name; a random one by default, so that resources created
        in one moto server never collide.

    Returns
    -------
    dict
        Logical id -> physical name (table name, bucket name, queue URL), plus "<id>Arn" keys.
    """
    template = load_template()
    clients = _clients(session_or_clients)
    prefix = prefix if prefix is not None else f"t{uuid.uuid4().hex[:8]}-"
    names: dict[str, str] = {}
    arns: dict[str, str] = {}
    resolve = _Resolver(template, names, arns)

    for logical, props in resources("AWS::DynamoDB::Table").items():
        names[logical] = f"{prefix}{logical}"
        arns[logical] = _create_table(clients["dynamodb"], names[logical], resolve(props))

    for logical, props in resources("AWS::S3::Bucket").items():
        names[logical] = f"{prefix}{logical}".lower()
        arns[logical] = f"arn:aws:s3:::{names[logical]}"
        _create_bucket(clients["s3"], names[logical], resolve(props))

    # Queues that others point at (dead-letter queues) first.
    queues = resources("AWS::SQS::Queue")
    order = sorted(queues, key=lambda q: "RedrivePolicy" in queues[q])
    for logical in order:
        attrs = _queue_attributes(resolve(queues[logical]))
        url = clients["sqs"].create_queue(QueueName=f"{prefix}{logical}", Attributes=attrs)
        names[logical] = url["QueueUrl"]
        arns[logical] = clients["sqs"].get_queue_attributes(
            QueueUrl=names[logical], AttributeNames=["QueueArn"]
        )["Attributes"]["QueueArn"]

    return {**names, **{f"{k}Arn": v for k, v in arns.items()}}


def environment(names: dict[str, str]) -> dict[str, str]:
    """The functions' Globals environment from the template, with resources resolved to `names`
    (parameters take their defaults)."""
    template = load_template()
    resolve = _Resolver(template, names, {})
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    return {k: str(resolve(v)) for k, v in variables.items()}


# --- pytest ------------------------------------------------------------------------------------
@dataclass
class AwsStack:
    """The template's resources in moto, and clients to reach them."""

    names: dict[str, str]
    env: dict[str, str]
    session: Any
    clients: dict[str, Any] = field(default_factory=dict)

    def client(self, service: str) -> Any:
        if service not in self.clients:
            self.clients[service] = self.session.client(service, region_name=REGION)
        return self.clients[service]


def aws_stack_fixture(
    name: str = "aws_stack", scope: str = "function", moto_config: dict[str, Any] | None = None
) -> Callable[..., Iterator[AwsStack]]:
    """A pytest fixture that starts `mock_aws` (in-process) and creates the template's resources.

    In a conftest: ``aws_stack = aws_stack_fixture()``.
    """
    from moto import mock_aws

    @pytest.fixture(name=name, scope=scope)  # type: ignore[call-overload]
    def _fixture() -> Iterator[AwsStack]:
        with mock_aws(config=moto_config or {"lambda": {"use_docker": False}}):
            session = boto3.Session(region_name=REGION)
            clients = _clients(session)  # kept: making a client costs more than using it
            names = create_resources(clients)
            yield AwsStack(names=names, env=environment(names), session=session, clients=clients)

    return _fixture
