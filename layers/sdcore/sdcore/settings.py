"""Settings, read once per execution environment from the process environment.

Each field is read from `SD_<FIELD>` (pydantic-settings, an empty value means "unset"), except
where a field names its variable itself (`PORT`, and fields whose names carry a unit: e.g.
`sync_timeout_s` is `SD_SYNC_TIMEOUT`). Those names are what `template.yaml`, the docs and
operators use; `env_name` tells a field's variable.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PREFIX = "SD_"


def _env(name: str, field: str) -> AliasChoices:
    """A field read from the variable `name` (also settable by its field name in code)."""
    return AliasChoices(name, field)


class Settings(BaseSettings):
    """Everything configurable, with the local stack's defaults."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX, env_ignore_empty=True, populate_by_name=True, extra="ignore"
    )

    backend: Literal["local", "aws"] = "local"

    # --- the local stack ---------------------------------------------------------------------
    data_dir: Path = Path("./local-data")
    public_url: str = ""
    host: str = "127.0.0.1"
    port: int = Field(7860, validation_alias=_env("PORT", "port"))
    http_workers: int = Field(8, ge=1)
    # function processes one caller may hold at once (0: all but one, at least one): a caller
    # over it gets 429, so another always finds one free
    max_inflight_per_user: int = Field(0, ge=0)
    # the handler a local inference function's process runs (on AWS: the image's CMD)
    inference_handler: str = "inference_function.app.lambda_handler"

    # --- AWS resources (names from template.yaml) --------------------------------------------
    tasks_table: str = "sd-tasks"
    models_table: str = "sd-models"
    functions_table: str = "sd-functions"
    slots_table: str = "sd-slots"
    users_table: str = "sd-users"
    idempotency_table: str = "sd-idempotency"
    bucket: str = ""
    queue_url: str = ""
    # model jobs (verify an upload, import from a URL): a queue the admin function consumes
    jobs_queue_url: str = ""
    # the CloudWatch namespace of the metrics the functions emit (docs/observability.md)
    metrics_namespace: str = "SDServerless"
    # queues whose messages control reads as dead letters (comma-separated queue names): each
    # ends what it was about, with the reason
    dead_letter_queues: str = ""
    # where a per-checkpoint function's failed asynchronous invocations go (Lambda's on-failure
    # destination, an SQS queue ARN): control ends their tasks
    inference_failure_queue_arn: str = ""
    # per-checkpoint inference functions: image, role and resources of the ones control creates
    inference_image_uri: str = ""
    inference_role_arn: str = ""
    inference_memory_mb: int = Field(
        10240, validation_alias=_env("SD_INFERENCE_MEMORY", "inference_memory_mb")
    )
    inference_timeout_s: int = Field(
        900, validation_alias=_env("SD_INFERENCE_TIMEOUT", "inference_timeout_s")
    )
    function_prefix: str = "sd"
    # the deployment the functions control creates belong to (tagged with it; on AWS the
    # CloudFormation stack's name)
    stack_name: str = ""
    # the ECR repository the inference image lives in: an admin may point a function only at an
    # image of it ("" locally, where the image is only recorded)
    inference_repository: str = ""
    # the stack's own inference function; its image serves the per-checkpoint functions
    inference_function: str = ""
    # which fleet a checkpoint's function is made on when nothing was chosen for it: "lambda"
    # (CPU functions) or "sagemaker" (a GPU asynchronous-inference endpoint per checkpoint)
    inference_fleet: Literal["lambda", "sagemaker"] = "lambda"
    # --- the SageMaker fleet (asynchronous-inference endpoints) ---
    sagemaker_role_arn: str = ""
    # the inference image for endpoints (the CUDA build); empty: the Lambda fleet's image
    sagemaker_image_uri: str = ""
    # T4, 16 GB: the cheapest GPU that holds SDXL in fp16 (ml.g5.xlarge, A10G 24 GB, is faster)
    sagemaker_instance_type: str = "ml.g4dn.xlarge"
    sagemaker_min_instances: int = Field(0, ge=0)
    sagemaker_max_instances: int = Field(1, ge=1)
    # invocations an instance runs at once (the engine runs one task at a time)
    sagemaker_concurrency: int = Field(1, ge=1)
    # SNS topics the endpoints report each invocation's end to (control subscribes)
    sagemaker_success_topic_arn: str = ""
    sagemaker_error_topic_arn: str = ""
    # waking an endpoint from zero instances (instance start, image pull, checkpoint download
    # and load) takes minutes: a dispatched task may wait this long to start
    sagemaker_start_timeout_s: float = Field(
        1800.0,
        gt=0,
        validation_alias=_env("SD_SAGEMAKER_START_TIMEOUT", "sagemaker_start_timeout_s"),
    )
    # the serving entrypoint of the inference image (SageMaker's container contract)
    serve_host: str = "0.0.0.0"  # noqa: S104 (SageMaker reaches the container on its port 8080)
    serve_port: int = 8080

    # --- users and guards --------------------------------------------------------------------
    auth: bool = True
    rate_per_minute: int = Field(600, ge=1)
    max_queued_per_user: int = Field(50, ge=1)
    allow_private_urls: bool = False
    # torch .ckpt checkpoints: read with a restricted unpickler at upload and torch's
    # weights_only loader at load; off by default (a pickle is a program)
    allow_pickle: bool = False
    # blocked prompt terms: a file path locally, an object key in the bucket on AWS
    blocklist: str = ""
    # the NSFW censor after decoding: off, flag (scores recorded), blur or block the pictures
    # scoring at least censor_threshold; a user's own setting may only tighten it. Flag
    # locally (a development stack judges, changes nothing); template.yaml sets blur on AWS
    censor: Literal["off", "flag", "blur", "block"] = "flag"
    censor_threshold: float = Field(0.7, gt=0, le=1)
    # which classifier: open_nsfw on onnxruntime in the inference function, or Rekognition
    censor_backend: Literal["opennsfw", "rekognition"] = "opennsfw"
    censor_inputs: bool = False  # judge init images too (over the threshold: no task)

    # --- the prompt assistant (POST /prompts/assist) -----------------------------------------
    # which language model writes prompts: Amazon Bedrock's Converse API, any OpenAI-compatible
    # chat endpoint (hosted, vLLM, Ollama...), or none (off: the offline translator and the
    # template's prompt skeleton)
    llm: Literal["off", "bedrock", "openai"] = "off"
    # the model: a Bedrock model or inference-profile id, or the endpoint's model name
    llm_model: str = ""
    # an OpenAI-compatible API's base URL, up to and including its /v1
    # (https://api.openai.com/v1, http://127.0.0.1:11434/v1)
    llm_base_url: str = ""
    # its key (sent as Authorization: Bearer); empty: none (local servers). An environment
    # variable: keep it out of files under version control
    llm_api_key: str = ""
    # on AWS, the name of a Secrets Manager secret holding that key instead (its SecretString),
    # read when first needed: the key stays out of the function's configuration
    llm_api_key_secret: str = ""
    # the seconds one assist may wait for the model, retries included: checked as pieces come
    # and before each retry; one read may overrun it (docs/configuration.md). API Gateway ends
    # a call at 29 s
    llm_timeout_s: float = Field(
        20.0, gt=0, validation_alias=_env("SD_LLM_TIMEOUT", "llm_timeout_s")
    )
    # further tries after a throttling, 429 or 5xx answer, or a timeout, with back-off
    llm_retries: int = Field(2, ge=0, le=5)
    # what a generation request that does not say `translate` gets: its prompts' Chinese put
    # into English by the offline translator before encoding (cjk), or sent as written (off)
    translate: Literal["off", "cjk"] = "off"

    # --- tasks and control -------------------------------------------------------------------
    default_model: str = "demo"
    max_concurrency: int = Field(2, ge=0)  # 0 pauses dispatch: tasks are accepted and wait
    max_per_model: int = Field(1, ge=1)
    # dynamic batching: a worker that takes a task also takes queued compatible tasks of its
    # checkpoint, up to this many images in all, and runs them as one pipeline call (1: off)
    max_batch: int = Field(1, ge=1)
    # most pixel-steps a task may run on a CPU function (width x height x steps x images, hires
    # pass included; 0: no limit). Locally, 24 SD 1.5 images of 512x512 at 20 steps. On AWS
    # template.yaml sets 3: a guided step takes 5.66 s on 2 cores here in fp32
    # (benchmarks/work_per_image.py), ~2 s on Lambda's 6 vCPUs if it scales with cores (not
    # measured on AWS): 3 images stay well inside the function's 15 min until measured there
    max_task_work: int = Field(512 * 512 * 20 * 24, ge=0)
    # the same on a SageMaker GPU endpoint (an invocation may run an hour): 100 such images, an
    # estimate from the work per image and a GPU's published fp16 rate (not measured on a GPU)
    sagemaker_max_task_work: int = Field(512 * 512 * 20 * 100, ge=0)
    # an admin's task may run this many times a user's budget (per role: 1 = the same)
    admin_task_work_factor: float = Field(1.0, gt=0)
    sync_timeout_s: float = Field(
        25.0, ge=0, validation_alias=_env("SD_SYNC_TIMEOUT", "sync_timeout_s")
    )
    webui_timeout_s: float = Field(
        25.0, ge=0, validation_alias=_env("SD_WEBUI_TIMEOUT", "webui_timeout_s")
    )
    task_ttl_days: int = 30
    lease_s: int = Field(960, validation_alias=_env("SD_LEASE_SECONDS", "lease_s"))
    # a dispatched task still queued this long after has lost its worker before it started
    # (died while loading): the reaper ends it. Lambda's cold start with a 2-8 GB checkpoint
    # copied to /tmp takes minutes; 900 s is the function's own timeout
    start_timeout_s: float = Field(
        900.0, gt=0, validation_alias=_env("SD_START_TIMEOUT", "start_timeout_s")
    )
    # a task running longer than this is stopped between steps and ends `failed` (its slots
    # freed): one task cannot hold a worker for days. Lambda's functions stop at 900 s anyway
    # (template.yaml sets 840: the task ends with a reason instead); an endpoint at 3600
    task_time_limit_s: float = Field(
        3600.0, gt=0, validation_alias=_env("SD_TASK_TIME_LIMIT", "task_time_limit_s")
    )
    heartbeat_stale_s: float = Field(
        60.0, validation_alias=_env("SD_HEARTBEAT_STALE_SECONDS", "heartbeat_stale_s")
    )
    # runs a task may start; a lost worker's task is retried while it has attempts left
    # (1: never retried, as seed 002's max_delivery=1)
    max_attempts: int = Field(1, ge=1)
    progress_interval_s: float = Field(
        0.5, validation_alias=_env("SD_PROGRESS_INTERVAL", "progress_interval_s")
    )
    # a live preview (cheap latent approximation) with progress at most every N steps; 0 = off
    preview_every: int = Field(0, ge=0)
    url_expires_s: int = Field(3600, validation_alias=_env("SD_URL_EXPIRES", "url_expires_s"))
    requeue_delay_s: float = Field(
        0.25, validation_alias=_env("SD_REQUEUE_DELAY", "requeue_delay_s")
    )
    # a task over a cap waits requeue_delay_s, doubling per wait up to this
    requeue_max_delay_s: float = Field(
        4.0, validation_alias=_env("SD_REQUEUE_MAX_DELAY", "requeue_max_delay_s")
    )
    idle_s: float = Field(300.0, validation_alias=_env("SD_IDLE_SECONDS", "idle_s"))

    # --- model management --------------------------------------------------------------------
    part_size: int = Field(64 * 1024 * 1024, ge=5 * 1024 * 1024)
    # an upload not completed this long after it started is aborted by the sweep (on AWS the
    # bucket's AbortIncompleteMultipartUpload rule does the same to the parts: 7 days)
    upload_expiry_s: float = Field(
        7 * 86400, gt=0, validation_alias=_env("SD_UPLOAD_EXPIRY_SECONDS", "upload_expiry_s")
    )
    # a model job silent this long has died (a Lambda job stops at 15 minutes)
    job_stale_s: float = Field(
        1200, gt=0, validation_alias=_env("SD_JOB_STALE_SECONDS", "job_stale_s")
    )
    # how long an import may download for (under the admin function's 900 s on AWS)
    import_timeout_s: float = Field(
        840, gt=0, validation_alias=_env("SD_IMPORT_TIMEOUT", "import_timeout_s")
    )

    # --- one inference function --------------------------------------------------------------
    # an inference function serves exactly one model
    model_name: str = ""
    model_key: str = ""
    model_cache_dir: Path = Path("/tmp/sd-models")
    # downloaded models kept at most (least recently used evicted); Lambda's /tmp is 10 GiB at most
    model_cache_bytes: int = Field(10 * 2**30, ge=0)
    device: str = "auto"
    # the admin's extra arguments for this inference function (shell words; batch-update sets them)
    extra_args: str = ""

    @property
    def base_url(self) -> str:
        return self.public_url.rstrip("/") or f"http://{self.host}:{self.port}"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """The settings `env` gives (and nothing else: the process environment is not read)."""
        values: dict[str, Any] = {}
        for field, info in cls.model_fields.items():
            value = env.get(env_name(field), "")
            values[field] = value if value != "" else info.get_default(call_default_factory=True)
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The environment that reproduces these settings in a child process."""
        return {env_name(field): str(getattr(self, field)) for field in type(self).model_fields}


def env_name(field: str) -> str:
    """The environment variable a settings field is read from."""
    alias = Settings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return PREFIX + field.upper()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
