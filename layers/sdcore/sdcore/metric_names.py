"""Every metric the code emits, declared once: names, kinds, units, labels. The dashboards and
docs/observability.md are checked against `ALL`, so a metric cannot be renamed in one place
and not the other."""

from __future__ import annotations

from sdcore.ports.metrics import MetricDef, MetricKind, Unit

COUNTER, DISTRIBUTION, GAUGE = MetricKind.COUNTER, MetricKind.DISTRIBUTION, MetricKind.GAUGE
MODEL_FLEET = ("model", "fleet")
# seconds: a 64x64 CPU task runs in tens of milliseconds, a GPU fleet waking from zero minutes
SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)

# --- a task's life -----------------------------------------------------------------------------
TASKS_SUBMITTED = MetricDef(
    "tasks_submitted", COUNTER, Unit.COUNT, ("model", "kind"), "tasks recorded and queued"
)
TASKS_STARTED = MetricDef(
    "tasks_started", COUNTER, Unit.COUNT, MODEL_FLEET, "tasks an inference function started"
)
TASKS_SUCCEEDED = MetricDef(
    "tasks_succeeded",
    COUNTER,
    Unit.COUNT,
    MODEL_FLEET,
    "tasks that ended with their images",
    rollup=True,  # the failure-rate alarm's denominator
)
TASKS_FAILED = MetricDef(
    "tasks_failed",
    COUNTER,
    Unit.COUNT,
    (*MODEL_FLEET, "reason"),
    "tasks that ended failed, by reason (usecases.measure.FAILURE_REASONS)",
    rollup=True,  # the failure-rate alarm
)
TASKS_CANCELLED = MetricDef(
    "tasks_cancelled", COUNTER, Unit.COUNT, MODEL_FLEET, "tasks cancelled, queued or running"
)
QUEUE_WAIT = MetricDef(
    "queue_wait_seconds",
    DISTRIBUTION,
    Unit.SECONDS,
    MODEL_FLEET,
    "from submit to the start of the run (caps, cold start, model load)",
    buckets=SECONDS_BUCKETS,
    rollup=True,  # the queue-wait alarm's p95 over every checkpoint
)
RUN_TIME = MetricDef(
    "run_seconds",
    DISTRIBUTION,
    Unit.SECONDS,
    (*MODEL_FLEET, "status"),
    "from the start of the run to the task's end",
    buckets=SECONDS_BUCKETS,
)
END_TO_END = MetricDef(
    "end_to_end_seconds",
    DISTRIBUTION,
    Unit.SECONDS,
    (*MODEL_FLEET, "status"),
    "from submit to the task's end",
    buckets=SECONDS_BUCKETS,
)
STEPS_PER_SECOND = MetricDef(
    "sampling_steps_per_second",
    DISTRIBUTION,
    Unit.PER_SECOND,
    MODEL_FLEET,
    "sampling steps the engine ran per second of the task's run",
    buckets=(0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500),
)

# --- inference functions and models ------------------------------------------------------------
COLD_STARTS = MetricDef(
    "cold_starts", COUNTER, Unit.COUNT, ("function",), "execution environments' first events"
)
MODEL_LOADS = MetricDef(
    "model_loads",
    COUNTER,
    Unit.COUNT,
    (*MODEL_FLEET, "outcome"),
    "checkpoint loads into an engine (loaded or failed)",
)
MODEL_LOAD_TIME = MetricDef(
    "model_load_seconds",
    DISTRIBUTION,
    Unit.SECONDS,
    MODEL_FLEET,
    "fetching (on a cache miss) and loading a checkpoint",
    buckets=SECONDS_BUCKETS,
)
CACHE_HITS = MetricDef(
    "model_cache_hits", COUNTER, Unit.COUNT, ("type",), "model files found on local disk"
)
CACHE_MISSES = MetricDef(
    "model_cache_misses", COUNTER, Unit.COUNT, ("type",), "model files downloaded to local disk"
)
CACHE_EVICTIONS = MetricDef(
    "model_cache_evictions",
    COUNTER,
    Unit.COUNT,
    (),
    "model files deleted from local disk to stay under SD_MODEL_CACHE_BYTES",
)

# --- load (sampled by control's schedule) -------------------------------------------------------
SLOTS_IN_USE = MetricDef(
    "slots_in_use", GAUGE, Unit.COUNT, ("model",), "slots held (model 'all': the global cap's)"
)
SLOT_CAP = MetricDef(
    "slot_cap", GAUGE, Unit.COUNT, ("model",), "the cap (model 'all': SD_MAX_CONCURRENCY)"
)
TASKS_WAITING = MetricDef(
    "tasks_waiting", GAUGE, Unit.COUNT, ("model",), "queued tasks (model 'all': every model)"
)
TASKS_RUNNING = MetricDef(
    "tasks_running", GAUGE, Unit.COUNT, ("model",), "running tasks (model 'all': every model)"
)

# --- webhooks, uploads -------------------------------------------------------------------------
WEBHOOK_DELIVERIES = MetricDef(
    "webhook_deliveries",
    COUNTER,
    Unit.COUNT,
    ("outcome",),
    "webhook attempts: delivered, retrying (failed, tried again), gave_up, dropped",
)
UPLOAD_BYTES = MetricDef(
    "upload_bytes",
    DISTRIBUTION,
    Unit.BYTES,
    ("type",),
    "size of each model version verified (uploaded or imported)",
    buckets=(1e6, 1e7, 1e8, 5e8, 1e9, 2e9, 5e9, 1e10),
)
VERIFICATION_TIME = MetricDef(
    "verification_seconds",
    DISTRIBUTION,
    Unit.SECONDS,
    ("type", "outcome"),
    "reading back and checking a model version (outcome: verified or failed)",
    buckets=SECONDS_BUCKETS,
)

# --- refusals ----------------------------------------------------------------------------------
CLIENT_ERRORS = MetricDef(
    "http_client_errors",
    COUNTER,
    Unit.COUNT,
    ("route", "status", "reason"),
    "4xx answers by route template, status and error code",
)
THROTTLED = MetricDef(
    "throttled_requests",
    COUNTER,
    Unit.COUNT,
    ("limit", "user"),
    "429s: over the request rate or the queued-task quota, per user",
    properties=("user",),
)
PROMPT_REFUSALS = MetricDef(
    "prompt_refusals", COUNTER, Unit.COUNT, ("field",), "prompts the prompt filter refused"
)
CENSOR_BLOCKS = MetricDef(
    "censor_refusals",
    COUNTER,
    Unit.COUNT,
    ("stage", "action"),
    "pictures the NSFW censor acted on (input: refused; output: blocked or blurred)",
)

ALL: tuple[MetricDef, ...] = tuple(v for v in globals().values() if isinstance(v, MetricDef))
