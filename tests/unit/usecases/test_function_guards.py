"""What an admin's batch-update may set on a function that runs as the inference role."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sdcore.api.admin_schemas import FunctionsUpdateBody
from sdcore.errors import InvalidInputError
from sdcore.usecases.functions import check_image

REPO = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/sd-inference"


@pytest.mark.parametrize("image", [f"{REPO}:v2", f"{REPO}@sha256:{'ab' * 32}"])
def test_an_image_of_the_inference_repository_is_accepted(image: str) -> None:
    check_image("sd-inference", image)


@pytest.mark.parametrize(
    "image",
    [
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com/other:v2",  # another repository
        "docker.io/library/python:3.12",  # another registry
        f"{REPO}",  # no tag nor digest
        f"{REPO}-evil:v1",
    ],
)
def test_any_other_image_is_refused_naming_the_field(image: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        check_image("sd-inference", image)
    assert err.value.field == "image"


def test_locally_any_image_is_recorded() -> None:
    check_image("", "anything:latest")


@pytest.mark.parametrize(
    "name", ["LD_PRELOAD", "PYTHONPATH", "PYTHONSTARTUP", "AWS_REGION", "SD_BUCKET", "PATH",
             "_HANDLER", "HF_HUB_OFFLINE", "ld_library_path"],
)  # fmt: skip
def test_reserved_environment_names_are_refused(name: str) -> None:
    with pytest.raises(ValidationError) as err:
        FunctionsUpdateBody(env={name: "x"})
    assert "reserved" in str(err.value)


def test_an_ordinary_environment_name_is_accepted() -> None:
    assert FunctionsUpdateBody(env={"OMP_NUM_THREADS": "4"}).env == {"OMP_NUM_THREADS": "4"}
