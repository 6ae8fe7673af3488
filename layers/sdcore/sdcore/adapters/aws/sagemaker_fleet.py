"""A SageMaker asynchronous-inference endpoint per checkpoint: the GPU fleet.

Requests queue inside the endpoint; the task reference goes in through S3 and the endpoint
reports each invocation's end to SNS (control ends a task whose invocation failed). Application
Auto Scaling takes the endpoint to `minInstances` (0 by default) when idle, as AWS documents for
asynchronous endpoints: target tracking on the backlog per instance, and a step policy on the
HasBacklogWithoutCapacity alarm for 0 -> 1 (target tracking cannot wake an endpoint at 0).

The container is the inference image run with `serve` (SageMaker's contract: GET /ping, POST
/invocations on port 8080), which runs the same use case as the Lambda fleet: the task table
stays the one source of truth for status, progress, cancellation and heartbeats.
"""

from __future__ import annotations

import builtins
import json
import logging
import secrets
import shlex
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from sdcore.adapters.aws.lambda_fleet import STACK_TAG, inference_environment
from sdcore.domain.models import FunctionChanges, FunctionRecord, Model
from sdcore.errors import InvalidInputError, NotFoundError
from sdcore.ports import FunctionStore, WorkerFleet, function_name
from sdcore.settings import Settings

logger = logging.getLogger(__name__)

VARIANT = "main"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"
# where invocations' inputs and outputs go in the bucket (the bucket expires them after a day)
INPUT_PREFIX = "sagemaker/inputs/"
OUTPUT_PREFIX = "sagemaker/outputs/"
# the longest an asynchronous invocation may run (SageMaker's most)
INVOCATION_TIMEOUT_S = 3600
# a new instance may take this long to answer /ping: image pull, checkpoint download and load
STARTUP_HEALTH_CHECK_S = 1800
# scale in after this long without backlog; out at once
SCALE_IN_COOLDOWN_S = 600
SCALE_OUT_COOLDOWN_S = 60
# EndpointStatus -> FunctionRecord.status. An endpoint being updated still takes invocations.
_STATES = {
    "InService": "active",
    "Updating": "active",
    "SystemUpdating": "active",
    "Creating": "pending",
    "RollingBack": "pending",
    "Deleting": "stopped",
    "OutOfService": "failed",
    "Failed": "failed",
}
# Settings a SageMaker endpoint takes from its instance type, not from a number
_NOT_HERE = {
    "memory_mb": "memory",
    "cpu": "cpu",
    "gpu_memory_mb": "gpuMemory",
    "timeout_s": "timeout",
}


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _missing(error: ClientError) -> bool:
    """SageMaker says "not found" as a ValidationException with a message."""
    message = str(error.response.get("Error", {}).get("Message", "")).lower()
    return _code(error) in ("ValidationException", "ResourceNotFound") and (
        "could not find" in message or "does not exist" in message or "not found" in message
    )


class SageMakerAsyncFleet(WorkerFleet):
    def __init__(
        self,
        sagemaker: Any,
        runtime: Any,
        autoscaling: Any,
        cloudwatch: Any,
        s3: Any,
        functions: FunctionStore,
        settings: Settings,
        image_uri: Callable[[], str],
        now: Callable[[], float] = time.time,
    ) -> None:
        self.sagemaker, self.runtime = sagemaker, runtime
        self.autoscaling, self.cloudwatch, self.s3 = autoscaling, cloudwatch, s3
        self.functions = functions
        self.settings = settings
        # the image endpoints run when none was chosen: the CUDA build if set, else the
        # Lambda fleet's (the same code; on a GPU instance it runs on the CPU)
        self._image_uri = image_uri
        self.now = now

    # --- names and settings ---------------------------------------------------------------

    def _name(self, model_name: str) -> str:
        return function_name(self.settings.function_prefix, model_name)

    def image_uri(self) -> str:
        return self.settings.sagemaker_image_uri or self._image_uri()

    def _tags(self) -> list[dict[str, str]]:
        stack = self.settings.stack_name
        return [{"Key": STACK_TAG, "Value": stack}] if stack else []

    def _defaults(self) -> dict[str, Any]:
        s = self.settings
        return {
            "fleet": "sagemaker",
            "instanceType": s.sagemaker_instance_type,
            "minInstances": s.sagemaker_min_instances,
            "maxInstances": max(s.sagemaker_max_instances, s.sagemaker_min_instances, 1),
            "concurrency": s.sagemaker_concurrency,
            "imageUri": self.image_uri(),
        }

    def _environment(
        self, model_name: str, model_key: str, env: dict[str, str], extra_args: list[str]
    ) -> dict[str, str]:
        own = inference_environment(self.settings, model_name, model_key)
        # an invocation may run an hour: the task stops with a reason a minute before
        own["SD_TASK_TIME_LIMIT"] = str(INVOCATION_TIMEOUT_S - 60)
        region = self.sagemaker.meta.region_name
        if region:
            own["AWS_DEFAULT_REGION"] = region
        if extra_args:
            own["SD_EXTRA_ARGS"] = shlex.join(extra_args)
        return {**env, **own}  # the admin's variables cannot replace the function's own

    # --- creating ------------------------------------------------------------------------

    def _create_model_and_config(
        self, name: str, model_name: str, model_key: str, resources: dict[str, Any]
    ) -> str:
        """A new SageMaker Model and EndpointConfig for `resources`; returns the config's name.
        Names carry a suffix: a config is immutable, so each change is a new one."""
        suffix = secrets.token_hex(2)
        sagemaker_model = config_name = f"{name}-{suffix}"
        self.sagemaker.create_model(
            ModelName=sagemaker_model,
            ExecutionRoleArn=self.settings.sagemaker_role_arn,
            PrimaryContainer={
                "Image": resources["imageUri"],
                "Environment": self._environment(
                    model_name,
                    model_key,
                    resources.get("env") or {},
                    resources.get("extraArgs") or [],
                ),
            },
            Tags=self._tags(),
        )
        notification = {
            k: v
            for k, v in (
                ("SuccessTopic", self.settings.sagemaker_success_topic_arn),
                ("ErrorTopic", self.settings.sagemaker_error_topic_arn),
            )
            if v
        }
        output: dict[str, Any] = {"S3OutputPath": f"s3://{self.settings.bucket}/{OUTPUT_PREFIX}"}
        if notification:
            output["NotificationConfig"] = notification
        self.sagemaker.create_endpoint_config(
            EndpointConfigName=config_name,
            ProductionVariants=[
                {
                    "VariantName": VARIANT,
                    "ModelName": sagemaker_model,
                    "InstanceType": resources["instanceType"],
                    # an endpoint starts with one instance; it scales to minInstances when idle
                    "InitialInstanceCount": max(1, int(resources["minInstances"])),
                    "ContainerStartupHealthCheckTimeoutInSeconds": STARTUP_HEALTH_CHECK_S,
                }
            ],
            AsyncInferenceConfig={
                "OutputConfig": output,
                "ClientConfig": {
                    "MaxConcurrentInvocationsPerInstance": int(resources["concurrency"])
                },
            },
            Tags=self._tags(),
        )
        return config_name

    def _scale(self, name: str, resources: dict[str, Any]) -> None:
        """The scalable target (min..max instances) and its two policies (idempotent)."""
        target = {
            "ServiceNamespace": "sagemaker",
            "ResourceId": f"endpoint/{name}/variant/{VARIANT}",
            "ScalableDimension": DIMENSION,
        }
        self.autoscaling.register_scalable_target(
            **target,
            MinCapacity=int(resources["minInstances"]),
            MaxCapacity=int(resources["maxInstances"]),
        )
        self.autoscaling.put_scaling_policy(
            **target,
            PolicyName=f"{name}-backlog",
            PolicyType="TargetTrackingScaling",
            TargetTrackingScalingPolicyConfiguration={
                "TargetValue": float(resources["concurrency"]),
                "CustomizedMetricSpecification": {
                    "MetricName": "ApproximateBacklogSizePerInstance",
                    "Namespace": "AWS/SageMaker",
                    "Dimensions": [{"Name": "EndpointName", "Value": name}],
                    "Statistic": "Average",
                },
                "ScaleInCooldown": SCALE_IN_COOLDOWN_S,
                "ScaleOutCooldown": SCALE_OUT_COOLDOWN_S,
            },
        )
        wake = self.autoscaling.put_scaling_policy(
            **target,
            PolicyName=f"{name}-wake",
            PolicyType="StepScaling",
            StepScalingPolicyConfiguration={
                "AdjustmentType": "ChangeInCapacity",
                "MetricAggregationType": "Average",
                "Cooldown": SCALE_OUT_COOLDOWN_S,
                "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}],
            },
        )
        self.cloudwatch.put_metric_alarm(
            AlarmName=f"{name}-wake",
            AlarmDescription="Requests wait and the endpoint has no instance: start one",
            Namespace="AWS/SageMaker",
            MetricName="HasBacklogWithoutCapacity",
            Dimensions=[{"Name": "EndpointName", "Value": name}],
            Statistic="Average",
            Period=60,
            EvaluationPeriods=1,
            Threshold=1,
            ComparisonOperator="GreaterThanOrEqualToThreshold",
            TreatMissingData="missing",
            AlarmActions=[wake["PolicyARN"]],
        )

    def _create(self, name: str, model: Model, resources: dict[str, Any]) -> None:
        config = self._create_model_and_config(name, model.name, model.key, resources)
        try:
            self.sagemaker.create_endpoint(
                EndpointName=name, EndpointConfigName=config, Tags=self._tags()
            )
        except ClientError as e:
            # another control made it at the same moment: theirs stands, ours is retired
            if "already exist" not in str(e).lower():
                raise
            self._delete_config(config)
            return
        logger.info("created endpoint %s for model %s", name, model.name)

    # --- reading -------------------------------------------------------------------------

    def _describe(self, name: str) -> dict[str, Any] | None:
        try:
            return dict(self.sagemaker.describe_endpoint(EndpointName=name))
        except ClientError as e:
            if _missing(e):
                return None
            raise

    def _observed(self, endpoint: dict[str, Any]) -> dict[str, Any]:
        variants = endpoint.get("ProductionVariants") or [{}]
        return {
            "arn": endpoint.get("EndpointArn"),
            "endpointStatus": endpoint.get("EndpointStatus"),
            "endpointConfig": endpoint.get("EndpointConfigName"),
            "currentInstances": variants[0].get("CurrentInstanceCount", 0),
        }

    def _record(self, name: str) -> FunctionRecord | None:
        try:
            return self.functions.get(name)
        except NotFoundError:
            return None

    # --- the port ------------------------------------------------------------------------

    def ensure(self, model: Model) -> FunctionRecord:
        name = self._name(model.name)
        record = self._record(name)
        chosen = (record.resources if record else {}) or {}
        resources = {**self._defaults(), **{k: v for k, v in chosen.items() if v is not None}}
        resources["fleet"] = "sagemaker"
        endpoint = self._describe(name)
        if endpoint is None:
            self._create(name, model, resources)
            self._scale(name, resources)
            endpoint = self._describe(name) or {"EndpointStatus": "Creating"}
        status = _STATES.get(str(endpoint.get("EndpointStatus")), "pending")
        if status == "active":
            self._retire(resources)
        resources.update(self._observed(endpoint))
        updated = record or FunctionRecord(name=name, model=model.name, created_at=self.now())
        updated = updated.model_copy(
            update={"status": status, "model": model.name, "resources": resources}
        )
        if record is None or updated != record:
            self.functions.put(updated)
        return updated

    def invoke(self, record: FunctionRecord, payload: dict[str, Any]) -> None:
        """The task reference as an S3 object, then an asynchronous invocation naming it:
        SageMaker queues it inside the endpoint until an instance takes it."""
        task_id = str(payload["taskId"])
        key = f"{INPUT_PREFIX}{task_id}.json"
        self.s3.put_object(
            Bucket=self.settings.bucket,
            Key=key,
            Body=json.dumps(payload).encode(),
            ContentType="application/json",
        )
        self.runtime.invoke_endpoint_async(
            EndpointName=record.name,
            InputLocation=f"s3://{self.settings.bucket}/{key}",
            InferenceId=task_id,
            ContentType="application/json",
            InvocationTimeoutSeconds=INVOCATION_TIMEOUT_S,
        )
        if record.last_used is None or self.now() - record.last_used >= 60:
            self.functions.touch(record.name, self.now())

    def check(self, model_name: str, changes: FunctionChanges) -> None:
        """Refuse what an endpoint has no setting for, before anything changes."""
        for field, wire in _NOT_HERE.items():
            if getattr(changes, field) is not None:
                raise InvalidInputError(
                    wire, "a SageMaker endpoint takes it from its instance type: set instanceType"
                )
        low = changes.min_instances
        high = changes.max_instances
        if changes.fleet not in (None, "sagemaker"):
            raise InvalidInputError("fleet", "this fleet is sagemaker")
        if low is not None and high is not None and low > high:
            raise InvalidInputError("minInstances", "is more than maxInstances", ("maxInstances",))

    def update(self, model_name: str, changes: FunctionChanges) -> FunctionRecord:
        """A new endpoint config (and model) for an image, env, extra args or instance type,
        then UpdateEndpoint (SageMaker moves the instances over); instance counts only change
        the scalable target. The old config and model go once the update is done."""
        self.check(model_name, changes)
        name = self._name(model_name)
        record = self._record(name)
        endpoint = self._describe(name)
        if record is None or endpoint is None:
            raise NotFoundError(f"model {model_name} has no inference endpoint")
        given = {
            "imageUri": changes.image,
            "env": changes.env,
            "extraArgs": changes.extra_args,
            "instanceType": changes.instance_type,
            "minInstances": changes.min_instances,
            "maxInstances": changes.max_instances,
        }
        resources = {**self._defaults(), **record.resources}
        resources.update({k: v for k, v in given.items() if v is not None})
        if resources["minInstances"] > resources["maxInstances"]:
            raise InvalidInputError("minInstances", "is more than maxInstances", ("maxInstances",))
        new_config = any(
            given[k] is not None for k in ("imageUri", "env", "extraArgs", "instanceType")
        )
        if new_config:
            old = str(endpoint.get("EndpointConfigName", ""))
            key = self._model_key(old)  # the checkpoint's key stays as the endpoint has it
            config = self._create_model_and_config(name, model_name, key, resources)
            self.sagemaker.update_endpoint(EndpointName=name, EndpointConfigName=config)
            resources["retired"] = [*resources.get("retired", []), old]
        self._scale(name, resources)
        endpoint = self._describe(name) or endpoint
        resources.update(self._observed(endpoint))
        updated = record.model_copy(
            update={"status": _STATES.get(str(endpoint.get("EndpointStatus")), "pending"),
                    "resources": resources}
        )  # fmt: skip
        self.functions.put(updated)
        return updated

    def _model_key(self, config_name: str) -> str:
        """The checkpoint's key, as the endpoint's container has it (SD_MODEL_KEY)."""
        config = self.sagemaker.describe_endpoint_config(EndpointConfigName=config_name)
        container = self.sagemaker.describe_model(
            ModelName=config["ProductionVariants"][0]["ModelName"]
        )["PrimaryContainer"]
        return str(container.get("Environment", {}).get("SD_MODEL_KEY", ""))

    def _retire(self, resources: dict[str, Any]) -> None:
        """Delete the configs (and their models) an update left behind, once it is done."""
        for config in resources.pop("retired", []) or []:
            self._delete_config(config)

    def _delete_config(self, config: str) -> None:
        try:
            described = self.sagemaker.describe_endpoint_config(EndpointConfigName=config)
        except ClientError as e:
            if _missing(e):
                return
            raise
        self.sagemaker.delete_endpoint_config(EndpointConfigName=config)
        for variant in described.get("ProductionVariants", []):
            try:
                self.sagemaker.delete_model(ModelName=variant["ModelName"])
            except ClientError as e:
                if not _missing(e):
                    raise

    def _delete(self, name: str) -> None:
        """Scaling, alarm, endpoint, its config and model, then the record."""
        try:
            self.autoscaling.deregister_scalable_target(
                ServiceNamespace="sagemaker",
                ResourceId=f"endpoint/{name}/variant/{VARIANT}",
                ScalableDimension=DIMENSION,
            )  # its policies go with it
        except ClientError as e:
            gone = _code(e) == "ObjectNotFoundException" or "no scalable target" in str(e).lower()
            if not gone:
                raise
        self.cloudwatch.delete_alarms(AlarmNames=[f"{name}-wake"])
        endpoint = self._describe(name)
        if endpoint is not None:
            self.sagemaker.delete_endpoint(EndpointName=name)
            self._delete_config(str(endpoint.get("EndpointConfigName", "")))
        record = self._record(name)
        if record is not None:
            self._retire(dict(record.resources))
        self.functions.delete(name)

    def delete(self, model_name: str) -> None:
        self._delete(self._name(model_name))

    def list(self) -> builtins.list[FunctionRecord]:
        return [r for r in self.functions.list() if r.resources.get("fleet") == "sagemaker"]

    def delete_all(self) -> builtins.list[str]:
        """Every endpoint with this deployment's prefix and tagged with its stack."""
        prefix = f"{self.settings.function_prefix}-"
        names = []
        pages = self.sagemaker.get_paginator("list_endpoints").paginate(NameContains=prefix)
        for page in pages:
            for endpoint in page.get("Endpoints", []):
                if not str(endpoint["EndpointName"]).startswith(prefix):
                    continue
                tags = self.sagemaker.list_tags(ResourceArn=endpoint["EndpointArn"]).get("Tags", [])
                if {t["Key"]: t["Value"] for t in tags}.get(STACK_TAG) == self.settings.stack_name:
                    names.append(str(endpoint["EndpointName"]))
        for name in names:
            self._delete(name)
        return names

    def capacity(self, model_name: str) -> int | None:
        """Tasks one checkpoint runs at once: its most instances times the invocations each
        runs."""
        record = self._record(self._name(model_name))
        resources = {**self._defaults(), **(record.resources if record else {})}
        return int(resources["maxInstances"]) * int(resources["concurrency"])

    def max_task_work(self, model_name: str) -> int | None:
        return self.settings.sagemaker_max_task_work

    def start_timeout_s(self, model_name: str) -> float | None:
        return self.settings.sagemaker_start_timeout_s
