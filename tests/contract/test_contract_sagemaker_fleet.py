"""WorkerFleet on SageMaker: an asynchronous-inference endpoint per checkpoint, scaling to zero
(moto; its UpdateEndpoint is added by tests/moto_sagemaker.py)."""

from __future__ import annotations

import json

import pytest

from sdcore.adapters.aws import DynamoDBFunctionStore, SageMakerAsyncFleet
from sdcore.domain.models import FunctionChanges, Model
from sdcore.errors import InvalidInputError, NotFoundError
from sdcore.ports import function_name
from sdcore.settings import Settings

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/sd-inference:cuda-v1"
OK_TOPIC = "arn:aws:sns:us-east-1:123456789012:endpoint-ok"
ERROR_TOPIC = "arn:aws:sns:us-east-1:123456789012:endpoint-error"


@pytest.fixture
def fleet(aws_stack):
    role = aws_stack.client("iam").create_role(
        RoleName="sd-inference", AssumeRolePolicyDocument=json.dumps({"Statement": []})
    )["Role"]
    env = {
        **aws_stack.env,
        "SD_SAGEMAKER_ROLE_ARN": role["Arn"],
        "SD_SAGEMAKER_IMAGE_URI": IMAGE,
        "SD_SAGEMAKER_SUCCESS_TOPIC_ARN": OK_TOPIC,
        "SD_SAGEMAKER_ERROR_TOPIC_ARN": ERROR_TOPIC,
        "SD_SAGEMAKER_MAX_INSTANCES": "2",
        "SD_STACK_NAME": "sd-prod",
    }
    settings = Settings.from_env(env)
    functions = DynamoDBFunctionStore(aws_stack.client("dynamodb"), settings.functions_table)
    clients = [aws_stack.client(s) for s in ("sagemaker", "sagemaker-runtime",
               "application-autoscaling", "cloudwatch", "s3")]  # fmt: skip
    return SageMakerAsyncFleet(*clients, functions, settings, image_uri=lambda: "cpu-image",
                               now=lambda: 1000.0)  # fmt: skip


def make_model(name: str = "sdxl base / 1.0") -> Model:
    return Model(name=name, sha256="ab" * 32, size=1, key=f"models/checkpoint/{name}/x",
                 registered_at=1.0, modified_at=1.0)  # fmt: skip


def _endpoint(aws_stack, name: str) -> dict:
    sm = aws_stack.client("sagemaker")
    endpoint = sm.describe_endpoint(EndpointName=name)
    config = sm.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    model = sm.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
    return {"endpoint": endpoint, "config": config, "model": model}


def _scaling(aws_stack, name: str) -> dict:
    aas = aws_stack.client("application-autoscaling")
    resource = f"endpoint/{name}/variant/main"
    targets = aas.describe_scalable_targets(ServiceNamespace="sagemaker", ResourceIds=[resource])
    policies = aas.describe_scaling_policies(ServiceNamespace="sagemaker", ResourceId=resource)
    alarms = aws_stack.client("cloudwatch").describe_alarms(AlarmNamePrefix=name)
    return {
        "targets": targets["ScalableTargets"],
        "policies": {p["PolicyName"]: p for p in policies["ScalingPolicies"]},
        "alarms": alarms["MetricAlarms"],
    }


def test_ensure_creates_an_async_endpoint_that_scales_to_zero(fleet, aws_stack):
    model = make_model()

    record = fleet.ensure(model)

    assert record.name == function_name(fleet.settings.function_prefix, model.name)
    assert record.status == "active"  # moto's endpoints are InService at once
    made = _endpoint(aws_stack, record.name)
    [variant] = made["config"]["ProductionVariants"]
    assert variant["InstanceType"] == "ml.g4dn.xlarge" and variant["InitialInstanceCount"] == 1
    async_config = made["config"]["AsyncInferenceConfig"]
    assert async_config["ClientConfig"] == {"MaxConcurrentInvocationsPerInstance": 1}
    output = async_config["OutputConfig"]
    assert output["S3OutputPath"] == f"s3://{fleet.settings.bucket}/sagemaker/outputs/"
    assert output["NotificationConfig"] == {"SuccessTopic": OK_TOPIC, "ErrorTopic": ERROR_TOPIC}
    container = made["model"]["PrimaryContainer"]
    assert container["Image"] == IMAGE
    assert made["model"]["ExecutionRoleArn"] == fleet.settings.sagemaker_role_arn
    env = container["Environment"]
    assert (env["SD_MODEL_NAME"], env["SD_MODEL_KEY"]) == (model.name, model.key)
    assert env["SD_BACKEND"] == "aws" and env["AWS_DEFAULT_REGION"] == "us-east-1"
    assert Settings.from_env(env).tasks_table == fleet.settings.tasks_table
    tags = aws_stack.client("sagemaker").list_tags(ResourceArn=made["endpoint"]["EndpointArn"])
    assert {"Key": "sd:stack", "Value": "sd-prod"} in tags["Tags"]
    # scaling: 0..2 instances, backlog target tracking, and a step policy the alarm wakes
    scaling = _scaling(aws_stack, record.name)
    [target] = scaling["targets"]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (0, 2)
    backlog = scaling["policies"][f"{record.name}-backlog"]
    spec = backlog["TargetTrackingScalingPolicyConfiguration"]["CustomizedMetricSpecification"]
    assert spec["MetricName"] == "ApproximateBacklogSizePerInstance"
    wake = scaling["policies"][f"{record.name}-wake"]
    [alarm] = scaling["alarms"]
    assert alarm["MetricName"] == "HasBacklogWithoutCapacity"
    assert alarm["AlarmActions"] == [wake["PolicyARN"]]
    # what /admin/functions shows
    assert record.resources["fleet"] == "sagemaker"
    assert record.resources["endpointStatus"] == "InService"
    assert record.resources["currentInstances"] == 1
    assert fleet.list() == [record]


def test_ensure_is_idempotent(fleet, aws_stack):
    first = fleet.ensure(make_model())
    again = fleet.ensure(make_model())
    assert again == first
    endpoints = aws_stack.client("sagemaker").list_endpoints()["Endpoints"]
    assert [e["EndpointName"] for e in endpoints] == [first.name]


def test_a_creating_endpoint_is_pending(fleet, aws_stack, monkeypatch):
    record = fleet.ensure(make_model())
    real = fleet._describe
    monkeypatch.setattr(
        fleet, "_describe", lambda name: {**(real(name) or {}), "EndpointStatus": "Creating"}
    )
    assert fleet.ensure(make_model()).status == "pending"
    monkeypatch.setattr(fleet, "_describe", real)
    assert fleet.ensure(make_model()).status == "active" == record.status


def test_invoke_puts_the_task_reference_in_s3_and_invokes_asynchronously(
    fleet, aws_stack, monkeypatch
):
    record = fleet.ensure(make_model())
    sent = []
    real = fleet.runtime.invoke_endpoint_async

    def spy(**kwargs):
        sent.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(fleet.runtime, "invoke_endpoint_async", spy)

    fleet.invoke(record, {"taskId": "t-1", "lease": {"slots": ["a"]}})

    [call] = sent
    bucket, key = fleet.settings.bucket, "sagemaker/inputs/t-1.json"
    assert call["EndpointName"] == record.name and call["InferenceId"] == "t-1"
    assert call["InputLocation"] == f"s3://{bucket}/{key}"
    body = aws_stack.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    assert json.loads(body) == {"taskId": "t-1", "lease": {"slots": ["a"]}}
    assert fleet.functions.get(record.name).last_used == 1000.0


def test_update_instance_type_and_image_is_a_new_config_and_the_old_one_goes(fleet, aws_stack):
    model = make_model()
    record = fleet.ensure(model)
    old_config = _endpoint(aws_stack, record.name)["config"]["EndpointConfigName"]
    image = IMAGE.replace("cuda-v1", "cuda-v2")

    updated = fleet.update(
        model.name,
        FunctionChanges(instance_type="ml.g4dn.2xlarge", image=image, env={"HF_HOME": "/tmp/x"}),
    )

    made = _endpoint(aws_stack, record.name)
    assert made["config"]["EndpointConfigName"] != old_config
    assert made["config"]["ProductionVariants"][0]["InstanceType"] == "ml.g4dn.2xlarge"
    assert made["model"]["PrimaryContainer"]["Image"] == image
    env = made["model"]["PrimaryContainer"]["Environment"]
    assert env["HF_HOME"] == "/tmp/x" and env["SD_MODEL_KEY"] == model.key
    assert updated.resources["instanceType"] == "ml.g4dn.2xlarge"
    assert updated.resources["retired"] == [old_config]
    # once the update is done (the next dispatch sees it in service), the old config goes
    again = fleet.ensure(model)
    assert "retired" not in again.resources
    configs = aws_stack.client("sagemaker").list_endpoint_configs()["EndpointConfigs"]
    assert [c["EndpointConfigName"] for c in configs] == [made["config"]["EndpointConfigName"]]
    assert len(aws_stack.client("sagemaker").list_models()["Models"]) == 1


def test_update_instance_counts_changes_only_the_scaling(fleet, aws_stack):
    model = make_model()
    record = fleet.ensure(model)
    config = _endpoint(aws_stack, record.name)["config"]["EndpointConfigName"]

    updated = fleet.update(model.name, FunctionChanges(min_instances=1, max_instances=4))

    [target] = _scaling(aws_stack, record.name)["targets"]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (1, 4)
    assert _endpoint(aws_stack, record.name)["config"]["EndpointConfigName"] == config
    assert (updated.resources["minInstances"], updated.resources["maxInstances"]) == (1, 4)
    assert fleet.capacity(model.name) == 4  # 4 instances x 1 invocation each


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        (FunctionChanges(memory_mb=4096), "memory"),
        (FunctionChanges(timeout_s=60), "timeout"),
        (FunctionChanges(gpu_memory_mb=1), "gpuMemory"),
        (FunctionChanges(min_instances=3, max_instances=2), "minInstances"),
    ],
)
def test_update_refuses_what_an_endpoint_has_no_setting_for(fleet, changes, field):
    fleet.ensure(make_model())
    with pytest.raises(InvalidInputError) as refused:
        fleet.update(make_model().name, changes)
    assert refused.value.field == field


def test_update_of_a_model_without_endpoint_is_not_found(fleet):
    with pytest.raises(NotFoundError):
        fleet.update("never used", FunctionChanges(max_instances=2))


def test_delete_removes_endpoint_config_model_scaling_and_alarm(fleet, aws_stack):
    record = fleet.ensure(make_model())

    fleet.delete(make_model().name)
    fleet.delete(make_model().name)  # nothing left: no error

    sm = aws_stack.client("sagemaker")
    assert sm.list_endpoints()["Endpoints"] == []
    assert sm.list_endpoint_configs()["EndpointConfigs"] == []
    assert sm.list_models()["Models"] == []
    scaling = _scaling(aws_stack, record.name)
    assert scaling["targets"] == [] and scaling["alarms"] == []
    assert fleet.list() == []


def test_delete_all_deletes_only_this_stacks_endpoints(fleet, aws_stack):
    ours = [fleet.ensure(make_model(n)).name for n in ("a", "b")]
    other_stack = fleet.settings.model_copy(update={"stack_name": "sd-staging"})
    theirs = SageMakerAsyncFleet(
        fleet.sagemaker, fleet.runtime, fleet.autoscaling, fleet.cloudwatch, fleet.s3,
        fleet.functions, other_stack, image_uri=lambda: IMAGE,
    )  # fmt: skip
    other = theirs.ensure(make_model("c")).name

    assert sorted(fleet.delete_all()) == sorted(ours)

    left = [e["EndpointName"] for e in aws_stack.client("sagemaker").list_endpoints()["Endpoints"]]
    assert left == [other]
