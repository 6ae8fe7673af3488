"""Settings, read once per execution environment from the process environment."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

_ENV = {
    "backend": "SD_BACKEND",
    "data_dir": "SD_DATA_DIR",
    "public_url": "SD_PUBLIC_URL",
    "host": "SD_HOST",
    "port": "PORT",
    "http_workers": "SD_HTTP_WORKERS",
    "tasks_table": "SD_TASKS_TABLE",
    "models_table": "SD_MODELS_TABLE",
    "functions_table": "SD_FUNCTIONS_TABLE",
    "slots_table": "SD_SLOTS_TABLE",
    "users_table": "SD_USERS_TABLE",
    "idempotency_table": "SD_IDEMPOTENCY_TABLE",
    "auth": "SD_AUTH",
    "rate_per_minute": "SD_RATE_PER_MINUTE",
    "max_queued_per_user": "SD_MAX_QUEUED_PER_USER",
    "allow_private_urls": "SD_ALLOW_PRIVATE_URLS",
    "allow_pickle": "SD_ALLOW_PICKLE",
    "blocklist": "SD_BLOCKLIST",
    "webui_timeout_s": "SD_WEBUI_TIMEOUT",
    "bucket": "SD_BUCKET",
    "queue_url": "SD_QUEUE_URL",
    "jobs_queue_url": "SD_JOBS_QUEUE_URL",
    "upload_expiry_s": "SD_UPLOAD_EXPIRY_SECONDS",
    "job_stale_s": "SD_JOB_STALE_SECONDS",
    "import_timeout_s": "SD_IMPORT_TIMEOUT",
    "default_model": "SD_DEFAULT_MODEL",
    "max_concurrency": "SD_MAX_CONCURRENCY",
    "max_per_model": "SD_MAX_PER_MODEL",
    "sync_timeout_s": "SD_SYNC_TIMEOUT",
    "task_ttl_days": "SD_TASK_TTL_DAYS",
    "lease_s": "SD_LEASE_SECONDS",
    "heartbeat_stale_s": "SD_HEARTBEAT_STALE_SECONDS",
    "max_attempts": "SD_MAX_ATTEMPTS",
    "progress_interval_s": "SD_PROGRESS_INTERVAL",
    "preview_every": "SD_PREVIEW_EVERY",
    "url_expires_s": "SD_URL_EXPIRES",
    "requeue_delay_s": "SD_REQUEUE_DELAY",
    "requeue_max_delay_s": "SD_REQUEUE_MAX_DELAY",
    "idle_s": "SD_IDLE_SECONDS",
    "part_size": "SD_PART_SIZE",
    "inference_image_uri": "SD_INFERENCE_IMAGE_URI",
    "inference_role_arn": "SD_INFERENCE_ROLE_ARN",
    "inference_memory_mb": "SD_INFERENCE_MEMORY",
    "inference_timeout_s": "SD_INFERENCE_TIMEOUT",
    "function_prefix": "SD_FUNCTION_PREFIX",
    "model_name": "SD_MODEL_NAME",
    "model_key": "SD_MODEL_KEY",
    "inference_function": "SD_INFERENCE_FUNCTION",
    "model_cache_dir": "SD_MODEL_CACHE_DIR",
    "model_cache_bytes": "SD_MODEL_CACHE_BYTES",
    "device": "SD_DEVICE",
    "extra_args": "SD_EXTRA_ARGS",
}


class Settings(BaseModel):
    """Everything configurable, with the local stack's defaults."""

    backend: Literal["local", "aws"] = "local"
    # local backend
    data_dir: Path = Path("./local-data")
    public_url: str = ""
    host: str = "127.0.0.1"
    port: int = 7860
    http_workers: int = Field(8, ge=1)
    # aws backend
    tasks_table: str = "sd-tasks"
    models_table: str = "sd-models"
    functions_table: str = "sd-functions"
    slots_table: str = "sd-slots"
    users_table: str = "sd-users"
    idempotency_table: str = "sd-idempotency"
    bucket: str = ""
    queue_url: str = ""
    inference_image_uri: str = ""
    inference_role_arn: str = ""
    inference_memory_mb: int = 3008
    inference_timeout_s: int = 900
    function_prefix: str = "sd"
    # the stack's own inference function; its image serves the per-checkpoint functions
    inference_function: str = ""
    # behaviour
    default_model: str = "demo"
    auth: bool = True
    rate_per_minute: int = Field(600, ge=1)
    max_queued_per_user: int = Field(50, ge=1)
    allow_private_urls: bool = False
    # torch .ckpt checkpoints: read with a restricted unpickler at upload and torch's
    # weights_only loader at load; off by default (a pickle is a program)
    allow_pickle: bool = False
    # blocked prompt terms: a file path locally, an object key in the bucket on AWS
    blocklist: str = ""
    webui_timeout_s: float = Field(25.0, ge=0)
    max_concurrency: int = Field(2, ge=0)  # 0 pauses dispatch: tasks are accepted and wait
    max_per_model: int = Field(1, ge=1)
    sync_timeout_s: float = Field(25.0, ge=0)
    task_ttl_days: int = 30
    lease_s: int = 960
    heartbeat_stale_s: float = 60.0
    # runs a task may start; a lost worker's task is retried while it has attempts left
    # (1: never retried, as seed 002's max_delivery=1)
    max_attempts: int = Field(1, ge=1)
    progress_interval_s: float = 0.5
    # a live preview (cheap latent approximation) with progress at most every N steps; 0 = off
    preview_every: int = Field(0, ge=0)
    url_expires_s: int = 3600
    requeue_delay_s: float = 0.25
    # a task over a cap waits requeue_delay_s, doubling per wait up to this
    requeue_max_delay_s: float = 4.0
    idle_s: float = 300.0
    part_size: int = Field(64 * 1024 * 1024, ge=5 * 1024 * 1024)
    # model jobs (verify an upload, import from a URL): a queue the admin function consumes
    jobs_queue_url: str = ""
    # an upload not completed this long after it started is aborted by the sweep (on AWS the
    # bucket's AbortIncompleteMultipartUpload rule does the same to the parts: 7 days)
    upload_expiry_s: float = Field(7 * 86400, gt=0)
    # a model job silent this long has died (a Lambda job stops at 15 minutes)
    job_stale_s: float = Field(1200, gt=0)
    # how long an import may download for (under the admin function's 900 s on AWS)
    import_timeout_s: float = Field(840, gt=0)
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
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        values = {field: env[name] for field, name in _ENV.items() if env.get(name, "") != ""}
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The environment that reproduces these settings in a child process."""
        return {name: str(getattr(self, field)) for field, name in _ENV.items()}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.from_env()
