"""Request bodies of the admin routes: model uploads and imports, users, inference functions."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sdcore.domain.models import FunctionChanges, ModelType, Role

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# What an admin's env may not set on a function that runs as the inference role: the service's
# own settings, the platform's, and what changes how the runtime loads code or models.
RESERVED_PREFIXES = ("SD_", "AWS_", "LAMBDA_", "_", "LD_", "PYTHON")
RESERVED_NAMES = frozenset({"PATH", "HOME", "TZ", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR",
                            "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "HF_HUB_OFFLINE",
                            "TRANSFORMERS_OFFLINE"})  # fmt: skip


class ModelUploadBody(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "sd15",
                    "type": "checkpoint",
                    "size": 4265146304,
                    "sha256": "6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa",
                }
            ]
        }
    )

    name: str = Field(..., min_length=1, max_length=128)
    type: ModelType = ModelType.CHECKPOINT
    size: int = Field(..., gt=0, le=64 * 1024**3)
    sha256: str = Field(..., pattern=r"^[0-9a-fA-F]{64}$")
    config: str = Field(
        "auto",
        pattern=r"^[A-Za-z0-9._-]{1,64}$",
        description="a checkpoint's config folder; auto: from the file (SD 1.x, 2.x, XL)",
    )
    update: bool = Field(False, description="a new version of an existing model")


class ModelImportBody(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "my-lora",
                    "type": "lora",
                    "url": "https://example.com/my-lora.safetensors",
                }
            ]
        }
    )

    name: str = Field(..., min_length=1, max_length=128)
    type: ModelType = ModelType.CHECKPOINT
    url: str = Field(..., min_length=1, max_length=4096, description="http(s) only")
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$", description="checked if given")
    config: str = Field(
        "auto",
        pattern=r"^[A-Za-z0-9._-]{1,64}$",
        description="a checkpoint's config folder; auto: from the file (SD 1.x, 2.x, XL)",
    )
    update: bool = Field(False, description="a new version of an existing model")


class ModelRenameBody(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"newName": "sd15-v2"}]})

    newName: str = Field(..., min_length=1, max_length=128)  # noqa: N815 (wire name)


class PartBody(BaseModel):
    partNumber: int = Field(..., ge=1, le=10_000)  # noqa: N815 (wire name)
    etag: str = Field(..., min_length=1, max_length=256)


class CompleteBody(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"parts": [{"partNumber": 1, "etag": "9b2cf535f27731c974343645a3985328"}]}]
        }
    )

    parts: list[PartBody] = Field(..., min_length=1, max_length=10_000)


class UserBody(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "alice", "role": "user"}]})

    name: str = Field(..., min_length=1, max_length=63)
    role: Role = Role.USER


class FunctionsUpdateBody(BaseModel):
    """Changes for the inference functions of `models` (omitted: every function). A field left
    out stays as it is; `env` replaces the variables set before (SD_* names are the function's
    own and cannot be set)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"models": ["sd15"], "memory": 10240, "timeout": 900},
                {
                    "models": ["sdxl"],
                    "fleet": "sagemaker",
                    "instanceType": "ml.g5.xlarge",
                    "minInstances": 0,
                    "maxInstances": 2,
                },
            ]
        },
    )

    models: list[str] | None = Field(None, min_length=1, max_length=1000)
    memory: int | None = Field(None, ge=128, le=262_144, description="MB")
    cpu: float | None = Field(None, gt=0, le=256, description="vCPUs")
    gpuMemory: int | None = Field(None, ge=0, le=1_048_576, description="MB")  # noqa: N815
    image: str | None = Field(None, min_length=1, max_length=1024)
    timeout: int | None = Field(None, ge=1, le=86_400, description="seconds")
    env: dict[str, str] | None = Field(None, max_length=100)
    extraArgs: list[str] | None = Field(None, max_length=100)  # noqa: N815
    fleet: Literal["lambda", "sagemaker"] | None = Field(
        None, description="move the model's function to this fleet (AWS)"
    )
    instanceType: str | None = Field(  # noqa: N815
        None, pattern=r"^ml\.[a-z0-9]+\.[a-z0-9]+$", description="a SageMaker instance type"
    )
    minInstances: int | None = Field(None, ge=0, le=100, description="0: scales to zero")  # noqa: N815
    maxInstances: int | None = Field(None, ge=1, le=100)  # noqa: N815

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for name in value or {}:
            if not _ENV_NAME.match(name):
                raise ValueError(f"{name!r} is not an environment variable name")
            upper = name.upper()
            if upper.startswith(RESERVED_PREFIXES) or upper in RESERVED_NAMES:
                reserved = ", ".join(f"{p}*" for p in RESERVED_PREFIXES)
                raise ValueError(
                    f"{name!r} is reserved ({reserved} and {', '.join(sorted(RESERVED_NAMES))})"
                )
        return value

    def to_domain(self) -> FunctionChanges:
        return FunctionChanges(
            memory_mb=self.memory,
            cpu=self.cpu,
            gpu_memory_mb=self.gpuMemory,
            image=self.image,
            timeout_s=self.timeout,
            env=self.env,
            extra_args=self.extraArgs,
            fleet=self.fleet,
            instance_type=self.instanceType,
            min_instances=self.minInstances,
            max_instances=self.maxInstances,
        )


class FunctionsDeleteBody(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"models": ["sd15"]}]})

    models: list[str] = Field(..., min_length=1, max_length=1000)
