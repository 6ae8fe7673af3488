"""The AWS fleets side by side (moto): new checkpoints on the default fleet, batch-update's
`fleet` moves one, and each fleet refuses the settings it does not have."""

from __future__ import annotations

import json

import pytest

from sdcore.adapters.aws import (
    DynamoDBFunctionStore,
    DynamoDBModelStore,
    FleetRouter,
    LambdaWorkerFleet,
    SageMakerAsyncFleet,
)
from sdcore.domain.models import FunctionChanges, Model, ModelStatus
from sdcore.errors import InvalidInputError, NotFoundError
from sdcore.settings import Settings

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/sd-inference:v1"


def _router(aws_stack, default: str = "lambda") -> FleetRouter:
    role = aws_stack.client("iam").create_role(
        RoleName="sd-inference", AssumeRolePolicyDocument=json.dumps({"Statement": []})
    )["Role"]["Arn"]
    settings = Settings.from_env({
        **aws_stack.env, "SD_INFERENCE_IMAGE_URI": IMAGE, "SD_INFERENCE_ROLE_ARN": role,
        "SD_SAGEMAKER_ROLE_ARN": role, "SD_INFERENCE_FLEET": default,
    })  # fmt: skip
    functions = DynamoDBFunctionStore(aws_stack.client("dynamodb"), settings.functions_table)
    models = DynamoDBModelStore(aws_stack.client("dynamodb"), settings.models_table)
    lam = LambdaWorkerFleet(aws_stack.client("lambda"), functions, settings)
    sm = SageMakerAsyncFleet(
        *[aws_stack.client(s) for s in ("sagemaker", "sagemaker-runtime",
          "application-autoscaling", "cloudwatch", "s3")],
        functions, settings, image_uri=lam.image_uri,
    )  # fmt: skip
    return FleetRouter({"lambda": lam, "sagemaker": sm}, functions, models, settings)


def _model(router: FleetRouter, name: str, architecture: str = "sd1") -> Model:
    model = Model(name=name, sha256="ab" * 32, size=1, key=f"models/checkpoint/{name}/x",
                  registered_at=1.0, modified_at=1.0, status=ModelStatus.UNLOADED,
                  details={"architecture": architecture})  # fmt: skip
    router.models.create(model)
    return model


def _where(aws_stack, name: str) -> set[str]:
    functions = aws_stack.client("lambda").list_functions()["Functions"]
    endpoints = aws_stack.client("sagemaker").list_endpoints()["Endpoints"]
    found = {"lambda"} if any(f["FunctionName"] == name for f in functions) else set()
    return found | ({"sagemaker"} if any(e["EndpointName"] == name for e in endpoints) else set())


@pytest.mark.parametrize("default", ["lambda", "sagemaker"])
def test_a_new_checkpoint_goes_on_the_default_fleet(aws_stack, default):
    router = _router(aws_stack, default)
    record = router.ensure(_model(router, "a"))
    assert record.resources["fleet"] == default
    assert _where(aws_stack, record.name) == {default}
    router.invoke(record, {"taskId": "t1"})  # on its own fleet


def test_batch_update_moves_a_checkpoint_to_sagemaker_and_back(aws_stack):
    router = _router(aws_stack)
    model = _model(router, "sdxl", "sdxl")
    assert "SDXL needs" in (router.refuses(model) or "")  # on Lambda
    record = router.ensure(_model(router, "sd15"))
    router.update("sd15", FunctionChanges(env={"A": "1"}))

    moved = router.update(
        "sd15", FunctionChanges(fleet="sagemaker", instance_type="ml.g4dn.2xlarge", max_instances=3)
    )

    assert _where(aws_stack, record.name) == {"sagemaker"}
    assert moved.resources["fleet"] == "sagemaker"
    assert moved.resources["instanceType"] == "ml.g4dn.2xlarge"
    assert router.capacity("sd15") == 3
    assert router.start_timeout_s("sd15") == router.settings.sagemaker_start_timeout_s
    endpoint = aws_stack.client("sagemaker").describe_endpoint(EndpointName=record.name)
    config = aws_stack.client("sagemaker").describe_endpoint_config(
        EndpointConfigName=endpoint["EndpointConfigName"]
    )
    assert config["ProductionVariants"][0]["InstanceType"] == "ml.g4dn.2xlarge"
    model_env = aws_stack.client("sagemaker").describe_model(
        ModelName=config["ProductionVariants"][0]["ModelName"]
    )["PrimaryContainer"]["Environment"]
    assert model_env["A"] == "1"  # the admin's env came along

    back = router.update("sd15", FunctionChanges(fleet="lambda", memory_mb=4096))

    assert _where(aws_stack, record.name) == {"lambda"}
    assert back.resources["fleet"] == "lambda" and back.resources["memoryMb"] == 4096
    config = aws_stack.client("lambda").get_function(FunctionName=record.name)["Configuration"]
    assert config["MemorySize"] == 4096 and config["Environment"]["Variables"]["A"] == "1"
    assert router.capacity("sd15") is None and router.start_timeout_s("sd15") is None


def test_a_checkpoint_without_a_function_can_be_put_on_a_fleet(aws_stack):
    router = _router(aws_stack)
    model = _model(router, "sdxl", "sdxl")
    record = router.update("sdxl", FunctionChanges(fleet="sagemaker", min_instances=1))
    assert _where(aws_stack, record.name) == {"sagemaker"}
    assert router.refuses(model) is None  # a GPU endpoint holds SDXL
    assert router.ensure(model).resources["minInstances"] == 1
    with pytest.raises(NotFoundError):
        router.update("no such model", FunctionChanges(fleet="sagemaker"))


@pytest.mark.parametrize(
    ("fleet", "changes", "field"),
    [
        ("lambda", FunctionChanges(instance_type="ml.g4dn.xlarge"), "instanceType"),
        ("lambda", FunctionChanges(max_instances=2), "maxInstances"),
        ("sagemaker", FunctionChanges(memory_mb=4096), "memory"),
        ("sagemaker", FunctionChanges(fleet="gpu"), "fleet"),
    ],
)
def test_each_fleet_refuses_what_it_has_no_setting_for(aws_stack, fleet, changes, field):
    router = _router(aws_stack, fleet)
    router.ensure(_model(router, "a"))
    with pytest.raises(InvalidInputError) as refused:
        router.check("a", changes)
    assert refused.value.field == field


def test_delete_all_covers_both_fleets(aws_stack):
    router = _router(aws_stack)
    router.settings.stack_name = "sd-prod"
    on_lambda = router.ensure(_model(router, "a")).name
    _model(router, "b")
    on_sagemaker = router.update("b", FunctionChanges(fleet="sagemaker")).name

    assert sorted(router.delete_all()) == sorted([on_lambda, on_sagemaker])
    assert router.list() == []
