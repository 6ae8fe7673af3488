"""WorkerFleet on AWS: a Lambda function per checkpoint, from the inference image (moto).

The local fleet (a worker process per checkpoint) is exercised by the local stack's tests.
"""

from __future__ import annotations

import json

import pytest

from sdcore.adapters.aws import DynamoDBFunctionStore, LambdaWorkerFleet
from sdcore.domain.models import FunctionChanges, Model
from sdcore.errors import NotFoundError
from sdcore.ports import function_name
from sdcore.settings import Settings

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/sd-inference:python3.12-v1"


@pytest.fixture
def fleet(aws_stack):
    role = aws_stack.client("iam").create_role(
        RoleName="sd-inference",
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "lambda.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
        ),
    )["Role"]
    env = {
        **aws_stack.env,
        "SD_INFERENCE_IMAGE_URI": IMAGE,
        "SD_INFERENCE_ROLE_ARN": role["Arn"],
        "SD_INFERENCE_MEMORY": "2048",
        "SD_INFERENCE_TIMEOUT": "600",
    }
    settings = Settings.from_env(env)
    functions = DynamoDBFunctionStore(aws_stack.client("dynamodb"), settings.functions_table)
    return LambdaWorkerFleet(aws_stack.client("lambda"), functions, settings, now=lambda: 1000.0)


def make_model(name: str = "sd 1.5 / pruned (emaonly)") -> Model:
    return Model(
        name=name,
        sha256="ab" * 32,
        size=1,
        key=f"models/{name}/model.safetensors",
        registered_at=1.0,
        modified_at=1.0,
    )


def test_ensure_creates_a_function_named_from_the_model_hash(fleet, aws_stack):
    model = make_model()

    record = fleet.ensure(model)

    assert record.name == function_name(fleet.settings.function_prefix, model.name)
    assert record.model == model.name and record.status in {"pending", "active"}
    config = aws_stack.client("lambda").get_function(FunctionName=record.name)["Configuration"]
    assert config["PackageType"] == "Image"
    assert config["Role"] == fleet.settings.inference_role_arn
    assert (config["MemorySize"], config["Timeout"]) == (2048, 600)
    env = config["Environment"]["Variables"]
    assert env["SD_BACKEND"] == "aws"
    assert env["SD_MODEL_NAME"] == model.name
    assert env["SD_MODEL_KEY"] == model.key
    # what the function inherits reads back into the same settings
    child = Settings.from_env(env)
    for field in ("tasks_table", "models_table", "functions_table", "slots_table", "bucket"):
        assert getattr(child, field) == getattr(fleet.settings, field)
    assert child.queue_url == fleet.settings.queue_url
    assert fleet.list() == [record]


def test_ensure_is_idempotent_and_refreshes_the_status(fleet, aws_stack):
    first = fleet.ensure(make_model())

    again = fleet.ensure(make_model())

    assert again.name == first.name
    assert again.status == "active"  # moto's functions are Active at once
    assert again.created_at == first.created_at
    names = [f["FunctionName"] for f in aws_stack.client("lambda").list_functions()["Functions"]]
    assert names.count(first.name) == 1
    assert [r.name for r in fleet.list()] == [first.name]


def test_one_function_per_model(fleet):
    a = fleet.ensure(make_model("a"))
    b = fleet.ensure(make_model("b"))
    assert a.name != b.name
    assert sorted(r.model for r in fleet.list()) == ["a", "b"]


def test_invoke_hands_the_task_over_asynchronously(fleet):
    record = fleet.ensure(make_model())

    fleet.invoke(record, {"taskId": "t1"})

    assert fleet.functions.get(record.name).last_used == 1000.0


def test_delete_removes_function_and_record(fleet, aws_stack):
    record = fleet.ensure(make_model())

    fleet.delete(make_model().name)
    fleet.delete(make_model().name)  # no function: no error

    assert fleet.list() == []
    with pytest.raises(aws_stack.client("lambda").exceptions.ResourceNotFoundException):
        aws_stack.client("lambda").get_function(FunctionName=record.name)


def test_ensure_without_image_is_an_error(fleet):
    fleet.settings = fleet.settings.model_copy(update={"inference_image_uri": ""})
    with pytest.raises(RuntimeError, match="SD_INFERENCE_IMAGE_URI"):
        fleet.ensure(make_model())


def test_without_an_image_setting_the_default_function_lends_its_image(fleet, aws_stack):
    # Given the stack's own inference function (template.yaml: InferenceFunction)
    lam = aws_stack.client("lambda")
    lam.create_function(
        FunctionName="stack-InferenceFunction",
        PackageType="Image",
        Code={"ImageUri": IMAGE.replace("v1", "v2")},
        Role=fleet.settings.inference_role_arn,
    )
    fleet.settings = fleet.settings.model_copy(update={"inference_image_uri": ""})
    fleet.image_from_function = "stack-InferenceFunction"

    record = fleet.ensure(make_model())

    lent = lam.get_function(FunctionName="stack-InferenceFunction")["Code"]
    expected = lent.get("ResolvedImageUri") or lent["ImageUri"]  # pinned to the digest
    assert lam.get_function(FunctionName=record.name)["Code"]["ImageUri"] == expected
    assert record.resources["imageUri"] == expected


def test_update_applies_memory_timeout_env_and_image_and_keeps_its_own_env(fleet, aws_stack):
    model = make_model()
    record = fleet.ensure(model)
    lam = aws_stack.client("lambda")
    own = lam.get_function(FunctionName=record.name)["Configuration"]["Environment"]["Variables"]
    image = IMAGE.replace("v1", "v3")

    updated = fleet.update(
        model.name,
        FunctionChanges(
            memory_mb=4096,
            timeout_s=300,
            cpu=2.0,
            env={"HF_HOME": "/tmp/hf", "SD_MODEL_NAME": "ignored"},  # an own name: kept as is
            extra_args=["--lowvram", "a b"],
            image=image,
        ),
    )

    function = lam.get_function(FunctionName=record.name)
    config = function["Configuration"]
    assert (config["MemorySize"], config["Timeout"]) == (4096, 300)
    env = config["Environment"]["Variables"]
    assert env["HF_HOME"] == "/tmp/hf"
    assert {k: env[k] for k in own} == own  # SD_MODEL_NAME and the rest untouched
    assert env["SD_EXTRA_ARGS"] == "--lowvram 'a b'"
    assert function["Code"]["ImageUri"] == image
    stored = fleet.functions.get(record.name)
    assert stored == updated
    assert stored.resources["memoryMb"] == 4096 and stored.resources["timeoutS"] == 300
    assert stored.resources["imageUri"] == image and stored.resources["cpu"] == 2.0
    assert stored.resources["extraArgs"] == ["--lowvram", "a b"]
    # a later ensure (every dispatch) keeps what the admin set
    assert fleet.ensure(model).resources == stored.resources


def test_update_of_a_model_without_function_is_not_found(fleet):
    with pytest.raises(NotFoundError):
        fleet.update("never used", FunctionChanges(memory_mb=4096))


def test_lambda_refuses_a_checkpoint_too_large_for_its_functions(fleet):
    sd15, sdxl = make_model("sd15"), make_model("sdxl")
    sd15.details, sdxl.details = {"architecture": "sd1"}, {"architecture": "sdxl"}
    assert fleet.settings.inference_memory_mb == 2048  # this fixture's functions
    assert "SD 1.x needs about" in (fleet.refuses(sd15) or "")
    fleet.settings.inference_memory_mb = 10240  # Lambda's most: SD 1.x fits, SDXL never does
    assert fleet.refuses(sd15) is None
    reason = fleet.refuses(sdxl) or ""
    assert reason.startswith("SDXL needs about 19.3 GB") and "10240 MB" in reason
    assert fleet.refuses(make_model("no architecture recorded")) is None


def test_a_created_function_never_retries_and_reports_failures_to_control(fleet, aws_stack):
    fleet.settings.inference_failure_queue_arn = "arn:aws:sqs:us-east-1:123456789012:failures"
    record = fleet.ensure(make_model("reports failures"))
    config = aws_stack.client("lambda").get_function_event_invoke_config(FunctionName=record.name)
    assert config["MaximumRetryAttempts"] == 0
    assert config["DestinationConfig"]["OnFailure"]["Destination"].endswith(":failures")


# --- the fleet's life with the stack: tags, deploys, deletion ---------------------------------


def _stack_image_function(fleet, lam, image: str) -> None:
    """The stack's own inference function (template.yaml: InferenceFunction), whose image the
    fleet follows when SD_INFERENCE_IMAGE_URI is not set (as deployed)."""
    lam.create_function(
        FunctionName="stack-InferenceFunction",
        PackageType="Image",
        Code={"ImageUri": image},
        Role=fleet.settings.inference_role_arn,
    )
    fleet.settings = fleet.settings.model_copy(update={"inference_image_uri": ""})
    fleet.image_from_function = "stack-InferenceFunction"


def _deploy(fleet, lam, image: str, after_s: float) -> str:
    """A deploy that changes only the image: the stack's function moves, and time passes."""
    lam.update_function_code(FunctionName="stack-InferenceFunction", ImageUri=image)
    start = fleet.now()
    fleet.now = lambda: start + after_s
    code = lam.get_function(FunctionName="stack-InferenceFunction")["Code"]
    return str(code.get("ResolvedImageUri") or code["ImageUri"])


def _image_of(lam, name: str) -> str:
    return str(lam.get_function(FunctionName=name)["Code"]["ImageUri"])


def test_created_functions_are_tagged_with_their_stack(fleet, aws_stack):
    fleet.settings.stack_name = "sd-prod"
    record = fleet.ensure(make_model())
    lam = aws_stack.client("lambda")
    tags = lam.list_tags(Resource=record.resources["arn"])["Tags"]
    assert tags["sd:stack"] == "sd-prod"


def test_a_deploy_moves_each_function_to_the_new_image_on_its_next_dispatch(fleet, aws_stack):
    lam = aws_stack.client("lambda")
    _stack_image_function(fleet, lam, IMAGE)
    record = fleet.ensure(make_model())
    before = _image_of(lam, record.name)

    deployed = _deploy(fleet, lam, IMAGE.replace("v1", "v2"), after_s=1.0)
    assert fleet.ensure(make_model()).resources["imageUri"] == before  # read a minute at most
    fleet.now = lambda: 1000.0 + 61.0
    moved = fleet.ensure(make_model())

    assert deployed != before
    assert _image_of(lam, record.name) == deployed
    assert moved.resources["imageUri"] == deployed
    assert fleet.functions.get(record.name).resources["imageUri"] == deployed
    # and once moved, a dispatch changes nothing more
    assert fleet.ensure(make_model()) == moved


def test_an_image_an_admin_chose_stays_through_deploys_until_pointed_back(fleet, aws_stack):
    lam = aws_stack.client("lambda")
    _stack_image_function(fleet, lam, IMAGE)
    model = make_model()
    record = fleet.ensure(model)
    own = IMAGE.replace("v1", "admin")
    fleet.update(model.name, FunctionChanges(image=own))

    deployed = _deploy(fleet, lam, IMAGE.replace("v1", "v2"), after_s=61.0)
    assert fleet.ensure(model).resources["imageUri"] == own
    assert _image_of(lam, record.name) == own

    # pointed back at the deployed image, it follows deploys again
    fleet.update(model.name, FunctionChanges(image=deployed))
    assert fleet.functions.get(record.name).resources["pinnedImage"] == ""
    again = _deploy(fleet, lam, IMAGE.replace("v1", "v3"), after_s=61.0)
    assert fleet.ensure(model).resources["imageUri"] == again
    assert _image_of(lam, record.name) == again


def test_delete_all_deletes_only_this_stacks_functions(fleet, aws_stack):
    lam = aws_stack.client("lambda")
    fleet.settings.stack_name = "sd-prod"
    ours = [fleet.ensure(make_model(name)).name for name in ("a", "b")]
    # same prefix, another stack's; and one not made by any fleet
    other = function_name(fleet.settings.function_prefix, "c")
    lam.create_function(
        FunctionName=other,
        PackageType="Image",
        Code={"ImageUri": IMAGE},
        Role=fleet.settings.inference_role_arn,
        Tags={"sd:stack": "sd-staging"},
    )
    lam.create_function(
        FunctionName="unrelated",
        PackageType="Image",
        Code={"ImageUri": IMAGE},
        Role=fleet.settings.inference_role_arn,
    )

    deleted = fleet.delete_all()

    assert sorted(deleted) == sorted(ours)
    left = {f["FunctionName"] for f in lam.list_functions()["Functions"]}
    assert left == {other, "unrelated"}
    assert fleet.list() == []
    assert fleet.delete_all() == []  # again: nothing to do, no error
