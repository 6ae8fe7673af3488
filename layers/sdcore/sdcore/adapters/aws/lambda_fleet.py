"""A Lambda function per checkpoint, created from the inference container image on first use.

Lambda has no GPUs: this fleet serves small or distilled checkpoints on CPU. The GPU fleet is
SageMaker asynchronous inference (sagemaker_fleet.py); FleetRouter puts each checkpoint on one.
"""

from __future__ import annotations

import builtins
import json
import logging
import shlex
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from sdcore.domain.models import FunctionChanges, FunctionRecord, Model
from sdcore.errors import InvalidInputError, NotFoundError
from sdcore.ports import FunctionStore, WorkerFleet, function_name
from sdcore.settings import Settings

logger = logging.getLogger(__name__)

# What an inference function inherits from its creator's settings (by variable: env_name()).
_INHERITED = (
    "SD_TASKS_TABLE",
    "SD_MODELS_TABLE",
    "SD_FUNCTIONS_TABLE",
    "SD_SLOTS_TABLE",
    "SD_BUCKET",
    "SD_QUEUE_URL",
    "SD_FUNCTION_PREFIX",
    "SD_DEFAULT_MODEL",
    "SD_PROGRESS_INTERVAL",
    "SD_HEARTBEAT_STALE_SECONDS",
    "SD_LEASE_SECONDS",
    "SD_URL_EXPIRES",
    "SD_ALLOW_PICKLE",
    "SD_TASK_TIME_LIMIT",
    "SD_MAX_BATCH",  # a worker claims compatible queued tasks to run with its own
)
# Lambda's function State -> FunctionRecord.status. An Inactive function (idle for weeks) is
# recreated by Lambda on its next invoke, so it is on its way back, not gone.
_STATES = {"Active": "active", "Pending": "pending", "Inactive": "pending", "Failed": "failed"}


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def inference_environment(settings: Settings, model_name: str, model_key: str) -> dict[str, str]:
    """The environment of the inference function (or endpoint) that serves a model."""
    inherited = settings.to_env()
    env = {name: inherited[name] for name in _INHERITED}
    env.update({"SD_BACKEND": "aws", "SD_MODEL_NAME": model_name, "SD_MODEL_KEY": model_key})
    return env


TOUCH_EVERY_S = 60.0
# changes that only a SageMaker endpoint takes (field -> its name in the API)
_INSTANCE_FIELDS = {
    "instance_type": "instanceType",
    "min_instances": "minInstances",
    "max_instances": "maxInstances",
}
# how often a warm control reads the deployed inference image again (a deploy moves functions)
IMAGE_CHECK_EVERY_S = 60.0


# the tag that says which deployment (CloudFormation stack) a function belongs to
STACK_TAG = "sd:stack"
# Peak memory of loading a checkpoint of each architecture and running it on a CPU in fp32, as
# benchmarks/full_size_load.py measured it (MB, resident, fp16 files of the real size, 2026-12-05;
# a 512x512 run adds about 1 GB of activations); Lambda gives a function 10240 at most.
PEAK_MEMORY_MB = {"sd1": 6573, "sd2": 7852, "sdxl": 19811}
LABELS = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL"}


class LambdaWorkerFleet(WorkerFleet):
    def __init__(
        self,
        client: Any,
        functions: FunctionStore,
        settings: Settings,
        image_from_function: str = "",
        ephemeral_mb: int = 10240,
        now: Callable[[], float] = time.time,
    ) -> None:
        """`image_from_function`: when settings name no inference image, use the image of this
        function (the stack's InferenceFunction: template.yaml passes SD_INFERENCE_FUNCTION)."""
        self.client = client
        self.functions = functions
        self._touched: dict[str, float] = {}
        self.settings = settings
        self.image_from_function = image_from_function
        self._image: str | None = None
        self._image_at = 0.0
        # Checkpoints are copied to /tmp before loading: give it room (Lambda's maximum).
        self.ephemeral_mb = ephemeral_mb
        self.now = now

    def refuses(self, model: Model) -> str | None:
        """A checkpoint whose architecture needs more memory than the functions get (SDXL: about
        20 GB in fp32 on a CPU; Lambda's most is 10 GB)."""
        arch = str(model.details.get("architecture", ""))
        need = PEAK_MEMORY_MB.get(arch, 0)
        have = self.settings.inference_memory_mb
        if need <= have:
            return None
        return (
            f"{LABELS[arch]} needs about {need / 1024:.1f} GB of memory to load and run on a CPU; "
            f"this deployment's inference functions have {have} MB (Lambda's most is 10240)"
        )

    def _name(self, model_name: str) -> str:
        return function_name(self.settings.function_prefix, model_name)

    def _resources(self, config: dict[str, Any], image: str) -> dict[str, Any]:
        """What Lambda says the function has. An admin's cpu, gpu memory, env and extra args
        are kept beside these in the record (Lambda has no cpu or gpu setting to read back)."""
        return {
            "fleet": "lambda",
            "arn": config.get("FunctionArn"),
            "imageUri": image,
            "memoryMb": config.get("MemorySize", self.settings.inference_memory_mb),
            "timeoutS": config.get("Timeout", self.settings.inference_timeout_s),
        }

    def _describe(self, name: str) -> tuple[dict[str, Any], str] | None:
        """The function's configuration and image, or None if there is no such function. The
        configuration carries the image's other names (its digest form) under `_images`."""
        try:
            resp = self.client.get_function(FunctionName=name)
        except ClientError as e:
            if _code(e) == "ResourceNotFoundException":
                return None
            raise
        code = resp.get("Code", {})
        images = {str(code[k]) for k in ("ImageUri", "ResolvedImageUri") if code.get(k)}
        return {**resp["Configuration"], "_images": images}, str(code.get("ImageUri", ""))

    def image_uri(self) -> str:
        """The inference image: from settings, else the one `image_from_function` runs."""
        if self.settings.inference_image_uri:
            return self.settings.inference_image_uri
        stale = self._image is None or self.now() - self._image_at >= IMAGE_CHECK_EVERY_S
        if stale and self.image_from_function:
            # read again now and then: a deploy that changes only the image leaves this (warm)
            # function as it was, and its cached image would be the old one
            code = self.client.get_function(FunctionName=self.image_from_function)["Code"]
            # The digest-pinned form, so every function runs exactly the deployed image.
            self._image = str(code.get("ResolvedImageUri") or code.get("ImageUri") or "")
            self._image_at = self.now()
        if not self._image:
            raise RuntimeError("no inference image: set SD_INFERENCE_IMAGE_URI")
        return self._image

    def _create(
        self, name: str, model: Model, chosen: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """Create the function; None if someone else created it first. `chosen`: what an
        admin set before it existed (a move from another fleet): memory, timeout, image, env
        and extra args."""
        if not self.settings.inference_role_arn:
            raise RuntimeError("no role for inference functions: set SD_INFERENCE_ROLE_ARN")
        chosen = chosen or {}
        description = f"Stable Diffusion inference for one checkpoint: {model.name}"
        variables = {
            **(chosen.get("env") or {}),
            **inference_environment(self.settings, model.name, model.key),
        }
        if chosen.get("extraArgs"):
            variables["SD_EXTRA_ARGS"] = shlex.join(chosen["extraArgs"])
        try:
            return dict(
                self.client.create_function(
                    FunctionName=name,
                    PackageType="Image",
                    Code={"ImageUri": chosen.get("pinnedImage") or self.image_uri()},
                    Role=self.settings.inference_role_arn,
                    MemorySize=chosen.get("memoryMb") or self.settings.inference_memory_mb,
                    Timeout=chosen.get("timeoutS") or self.settings.inference_timeout_s,
                    EphemeralStorage={"Size": self.ephemeral_mb},
                    Description=description[:256],
                    Environment={"Variables": variables},
                    Tags=self._tags(),
                )
            )
        except ClientError as e:
            if _code(e) == "ResourceConflictException":
                return None
            if _code(e) == "InvalidParameterValueException":
                message = str(e.response.get("Error", {}).get("Message", ""))
                raise InvalidInputError("functions", message or "refused by Lambda") from None
            raise
        finally:
            self._configure_invocations(name)

    def _tags(self) -> dict[str, str]:
        return {STACK_TAG: self.settings.stack_name} if self.settings.stack_name else {}

    def _configure_invocations(self, name: str) -> None:
        """No retry of a failed invocation (a task runs at most once per dispatch: the reaper
        retries), and the failure reported to control's queue, which ends the task with the
        reason (an out-of-memory kill while loading would otherwise leave it queued)."""
        kwargs: dict[str, Any] = {"MaximumRetryAttempts": 0}
        if self.settings.inference_failure_queue_arn:
            kwargs["DestinationConfig"] = {
                "OnFailure": {"Destination": self.settings.inference_failure_queue_arn}
            }
        try:
            self.client.put_function_event_invoke_config(FunctionName=name, **kwargs)
        except ClientError as e:
            if _code(e) != "ResourceNotFoundException":  # the create failed: nothing to set
                raise

    def ensure(self, model: Model) -> FunctionRecord:
        name = self._name(model.name)
        found = self._describe(name)
        if found is None:
            try:
                chosen = self.functions.get(name).resources
            except NotFoundError:
                chosen = {}
            created = self._create(name, model, chosen)
            found = (created, self.image_uri()) if created else self._describe(name)
            if found is None:  # created and deleted again in between: let the caller retry
                raise RuntimeError(f"function {name} vanished while being created")
            logger.info("created inference function %s for model %s", name, model.name)
        config, image = found
        status = _STATES.get(str(config.get("State", "Pending")), "pending")
        new = False
        try:
            record = self.functions.get(name)
        except NotFoundError:
            record = FunctionRecord(name=name, model=model.name, created_at=self.now())
            new = True
        if self._reimage(name, config, record):
            image = self.image_uri()  # Lambda runs the old image until the update is done
        updated = record.model_copy(
            update={
                "status": status,
                "model": model.name,
                "resources": {**record.resources, **self._resources(config, image)},
            }
        )
        if new or updated != record:
            self.functions.put(updated)  # not on every dispatch: only when something changed
        return updated

    def _reimage(self, name: str, config: dict[str, Any], record: FunctionRecord) -> bool:
        """After a deploy the stack's image (its digest) changed: move the function to it (not
        one an admin pointed at an image of their own, nor one busy with another update). True
        if moved."""
        images = config.get("_images") or set()
        if record.resources.get("pinnedImage") or not images or self.image_uri() in images:
            return False
        if config.get("LastUpdateStatus") == "InProgress":
            return False
        try:
            self.client.update_function_code(FunctionName=name, ImageUri=self.image_uri())
        except ClientError as e:
            if _code(e) in ("ResourceConflictException", "ResourceNotFoundException"):
                return False  # updating already, or gone: the next dispatch looks again
            raise
        logger.info("moved inference function %s to the deployed image", name)
        return True

    def delete_all(self) -> builtins.list[str]:
        """Every function named with this deployment's prefix and tagged with its stack (a
        function of another stack that shares the prefix is left alone)."""
        prefix = f"{self.settings.function_prefix}-"
        names = []
        for page in self.client.get_paginator("list_functions").paginate():
            for function in page.get("Functions", []):
                if not str(function["FunctionName"]).startswith(prefix):
                    continue
                tags = self.client.list_tags(Resource=function["FunctionArn"]).get("Tags", {})
                if tags.get(STACK_TAG) == self.settings.stack_name:
                    names.append(str(function["FunctionName"]))
        for name in names:
            self._delete(name)
        return names

    def _touch(self, name: str, now: float) -> None:
        # `last_used` is for people reading the function list: a write a minute at most per
        # function, not one per task (table writes per task are a cost)
        if now - self._touched.get(name, 0.0) >= TOUCH_EVERY_S:
            self._touched[name] = now
            self.functions.touch(name, now)

    def invoke(self, record: FunctionRecord, payload: dict[str, Any]) -> None:
        # "Event": Lambda queues the invocation durably and retries it; we do not wait.
        self.client.invoke(
            FunctionName=record.name,
            InvocationType="Event",
            Payload=json.dumps(payload).encode(),
        )
        self._touch(record.name, self.now())

    def delete(self, model_name: str) -> None:
        self._delete(self._name(model_name))

    def _delete(self, name: str) -> None:
        """The function (if it is still there), then its record."""
        try:
            self.client.delete_function(FunctionName=name)
        except ClientError as e:
            if _code(e) != "ResourceNotFoundException":
                raise
        self.functions.delete(name)

    def update(self, model_name: str, changes: FunctionChanges) -> FunctionRecord:
        """UpdateFunctionConfiguration (memory, timeout, environment), then UpdateFunctionCode
        when an image is given. The admin's env is merged under the function's own SD_*
        variables, which it cannot replace; extra args go in SD_EXTRA_ARGS. Lambda has no cpu
        (it follows memory) nor gpu setting: those are recorded for a fleet that has them."""
        name = self._name(model_name)
        found = self._describe(name)
        if found is None:
            raise NotFoundError(f"model {model_name} has no inference function")
        config, _ = found
        try:
            record = self.functions.get(name)
        except NotFoundError:
            record = FunctionRecord(name=name, model=model_name, created_at=self.now())
        params: dict[str, Any] = {}
        if changes.memory_mb is not None:
            params["MemorySize"] = changes.memory_mb
        if changes.timeout_s is not None:
            params["Timeout"] = changes.timeout_s
        if changes.env is not None or changes.extra_args is not None:
            current = dict(config.get("Environment", {}).get("Variables", {}))
            own = {k: v for k, v in current.items() if k.startswith("SD_")}
            admin_env = record.resources.get("env") or {}
            if changes.env is not None:
                admin_env = changes.env
            extra = record.resources.get("extraArgs") or []
            if changes.extra_args is not None:
                extra = changes.extra_args
            own["SD_EXTRA_ARGS"] = shlex.join(extra)
            params["Environment"] = {"Variables": {**admin_env, **own}}
        try:
            if params:
                self.client.update_function_configuration(FunctionName=name, **params)
            if changes.image is not None:
                if params:  # one update at a time: a second one now is a ResourceConflict
                    self._wait_updated(name)
                self.client.update_function_code(FunctionName=name, ImageUri=changes.image)
        except ClientError as e:
            if _code(e) == "InvalidParameterValueException":
                message = str(e.response.get("Error", {}).get("Message", ""))
                raise InvalidInputError("functions", message or "refused by Lambda") from None
            if _code(e) == "ResourceNotFoundException":
                raise NotFoundError(f"model {model_name} has no inference function") from None
            raise
        config, image = self._describe(name) or (config, "")
        given: dict[str, Any] = {
            "cpu": changes.cpu,
            "gpuMemoryMb": changes.gpu_memory_mb,
            "env": changes.env,
            "extraArgs": changes.extra_args,
        }
        if changes.image is not None:
            # an image an admin chose stays: a deploy does not move the function off it (until
            # they point it back at the deployed image)
            given["pinnedImage"] = changes.image if changes.image != self.image_uri() else ""
        resources = {
            **record.resources,
            **{k: v for k, v in given.items() if v is not None},
            **self._resources(config, image),
        }
        status = _STATES.get(str(config.get("State", "Pending")), "pending")
        record = record.model_copy(update={"resources": resources, "status": status})
        self.functions.put(record)
        logger.info("updated inference function %s", name)
        return record

    def _wait_updated(self, name: str) -> None:
        self.client.get_waiter("function_updated_v2").wait(
            FunctionName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 300}
        )

    def list(self) -> list[FunctionRecord]:
        return [r for r in self.functions.list() if r.resources.get("fleet", "lambda") == "lambda"]

    def check(self, model_name: str, changes: FunctionChanges) -> None:
        """A Lambda function has no instances: those belong to the SageMaker fleet."""
        if changes.fleet not in (None, "lambda"):
            raise InvalidInputError("fleet", "this fleet is lambda")
        for field, wire in _INSTANCE_FIELDS.items():
            if getattr(changes, field) is not None:
                raise InvalidInputError(
                    wire, "a Lambda function has none: move the model with fleet: sagemaker"
                )
