"""The composition root: builds every adapter from settings, once per execution environment."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache, wraps
from typing import Any, TypeVar, cast

from sdcore.clock import Clock, IdFactory
from sdcore.metric_names import COLD_STARTS
from sdcore.ports import WorkerFleet
from sdcore.ports.assistant import ChatModel, Translator
from sdcore.ports.censor import Censor
from sdcore.services import Services
from sdcore.settings import Settings, get_settings


def build_services(
    settings: Settings, clock: Clock | None = None, ids: IdFactory | None = None
) -> Services:
    clock = clock or Clock()
    ids = ids or IdFactory()
    if settings.backend == "aws":
        return _build_aws(settings, clock, ids)
    return _build_local(settings, clock, ids)


# Each backend's adapters are imported only when they are built: a Lambda function never loads
# the local ones, and the local stack never needs boto3.
def _build_local(settings: Settings, clock: Clock, ids: IdFactory) -> Services:
    from sdcore.adapters.local.blobs import FileBlobStore
    from sdcore.adapters.local.db import Database
    from sdcore.adapters.local.fleet import ProcessWorkerFleet
    from sdcore.adapters.local.idempotency import SqlitePersistenceLayer
    from sdcore.adapters.local.metrics import PrometheusMetrics, metrics_dir
    from sdcore.adapters.local.parked import SqliteParkedTasks
    from sdcore.adapters.local.queue import SqliteQueue
    from sdcore.adapters.local.stores import (
        SqliteFunctionStore,
        SqliteModelStore,
        SqliteSlotStore,
        SqliteTaskStore,
        SqliteUserStore,
    )
    from sdcore.adapters.local.templates import SqliteBatchStore, SqliteTemplateStore
    from sdcore.adapters.local.tracing import LogTracing
    from sdcore.usecases.control import worker_gone

    db = Database(settings.data_dir / "state.db")
    functions = SqliteFunctionStore(db)
    fleet = ProcessWorkerFleet(db, functions, settings, clock)
    services = Services(
        settings=settings,
        tasks=SqliteTaskStore(db),
        models=SqliteModelStore(db),
        functions=functions,
        slots=SqliteSlotStore(db),
        queue=SqliteQueue(db, "tasks", now=clock.now),
        blobs=FileBlobStore(settings.data_dir, settings.base_url, now=clock.now),
        fleet=fleet,
        users=SqliteUserStore(db),
        metrics=PrometheusMetrics(metrics_dir(settings.data_dir)),
        tracing=LogTracing(),
        idempotency=SqlitePersistenceLayer(db),
        clock=clock,
        ids=ids,
        jobs=SqliteQueue(db, "model-jobs", max_receives=3, now=clock.now),
        censor=_censor(settings),
        templates=SqliteTemplateStore(db),
        batches=SqliteBatchStore(db),
        chat=_chat(settings),
        translator=_translator(),
        parked=SqliteParkedTasks(db),
    )
    # a worker process this one spawned died holding tasks: they are lost now, not when their
    # heartbeat goes stale (the reaper stays for what no parent sees)
    fleet.on_exit = lambda held: worker_gone(services, held)
    return services


def _build_aws(settings: Settings, clock: Clock, ids: IdFactory) -> Services:
    import boto3
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer
    from botocore.config import Config

    from sdcore.adapters.aws import (
        DynamoDBFunctionStore,
        DynamoDBModelStore,
        DynamoDBSlotStore,
        DynamoDBTaskStore,
        DynamoDBUserStore,
        FleetRouter,
        LambdaWorkerFleet,
        S3BlobStore,
        SageMakerAsyncFleet,
        SqsQueue,
    )
    from sdcore.adapters.aws.metrics import EmfMetrics
    from sdcore.adapters.aws.parked import DynamoDBParkedTasks
    from sdcore.adapters.aws.template_store import DynamoDBBatchStore, DynamoDBTemplateStore
    from sdcore.adapters.xray import XRayTracing

    dynamodb = boto3.client("dynamodb")
    sqs = boto3.client("sqs")
    functions = DynamoDBFunctionStore(dynamodb, settings.functions_table)
    models = DynamoDBModelStore(dynamodb, settings.models_table)
    lambda_fleet = LambdaWorkerFleet(
        boto3.client("lambda"), functions, settings, image_from_function=settings.inference_function
    )
    # made on first use: only control creates and invokes endpoints (a client costs tens of
    # milliseconds of every function's cold start)
    sagemaker_fleet = SageMakerAsyncFleet(
        LazyClient("sagemaker"),
        LazyClient("sagemaker-runtime"),
        LazyClient("application-autoscaling"),
        LazyClient("cloudwatch"),
        LazyClient("s3"),
        functions,
        settings,
        image_uri=lambda_fleet.image_uri,
    )
    fleets: dict[str, WorkerFleet] = {"lambda": lambda_fleet, "sagemaker": sagemaker_fleet}
    return Services(
        settings=settings,
        tasks=DynamoDBTaskStore(dynamodb, settings.tasks_table),
        models=models,
        functions=functions,
        slots=DynamoDBSlotStore(dynamodb, settings.slots_table),
        queue=SqsQueue(sqs, settings.queue_url),
        # SigV4 for presigned URLs: SigV2 (botocore's default for some endpoints) signs
        # Content-MD5, so a part PUT carrying one would not match; S3 also refuses SigV2 for
        # buckets created since 2020. Virtual-hosted addressing puts the region in the URL's
        # host (bucket.s3.<region>.amazonaws.com): the default signs for the global host,
        # which outside us-east-1 redirects, and a redirected presigned PUT fails.
        blobs=S3BlobStore(
            boto3.client(
                "s3", config=Config(signature_version="s3v4", s3={"addressing_style": "virtual"})
            ),
            settings.bucket,
        ),
        fleet=FleetRouter(fleets, functions, models, settings),
        users=DynamoDBUserStore(dynamodb, settings.users_table),
        metrics=EmfMetrics(settings.metrics_namespace),
        tracing=XRayTracing(),
        idempotency=DynamoDBPersistenceLayer(table_name=settings.idempotency_table),
        clock=clock,
        ids=ids,
        jobs=SqsQueue(sqs, settings.jobs_queue_url) if settings.jobs_queue_url else None,
        censor=_censor(settings),
        # in the users table, under prefixes of their own (adapters/aws/template_store.py)
        templates=DynamoDBTemplateStore(dynamodb, settings.users_table),
        batches=DynamoDBBatchStore(dynamodb, settings.users_table),
        chat=_chat(settings),
        translator=_translator(),
        # on the task items themselves, in a sparse index of the tasks table
        parked=DynamoDBParkedTasks(dynamodb, settings.tasks_table),
    )


def _censor(settings: Settings) -> Censor | None:
    """The censor SD_CENSOR_BACKEND names (None when SD_CENSOR is off); nothing is loaded or
    connected until it first judges a picture."""
    if settings.censor == "off":
        return None
    if settings.censor_backend == "rekognition":
        from sdcore.adapters.aws.rekognition_censor import RekognitionCensor

        return RekognitionCensor(LazyClient("rekognition"))
    from sdcore.adapters.censor.opennsfw import OpenNsfwCensor

    return OpenNsfwCensor()


def _chat(settings: Settings) -> ChatModel | None:
    """The prompt assistant's language model SD_LLM names (None when off); nothing is
    connected until it is first asked.

    Raises ValueError for a model (or an OpenAI-compatible base URL) not given."""
    if settings.llm == "off":
        return None
    if not settings.llm_model:
        raise ValueError(f"SD_LLM={settings.llm} needs SD_LLM_MODEL")
    if settings.llm == "bedrock":
        from botocore.config import Config

        from sdcore.adapters.llm.bedrock import BedrockChat

        # one try per call, each read bounded: BedrockChat retries within one deadline
        config = Config(
            read_timeout=settings.llm_timeout_s,
            connect_timeout=min(settings.llm_timeout_s, 5),
            retries={"total_max_attempts": 1},
        )
        client = LazyClient("bedrock-runtime", config=config)
        return BedrockChat(client, settings.llm_model, settings.llm_timeout_s, settings.llm_retries)
    if not settings.llm_base_url:
        raise ValueError("SD_LLM=openai needs SD_LLM_BASE_URL")
    from sdcore.adapters.llm.openai_compat import OpenAICompatibleChat

    key: str | Callable[[], str] = settings.llm_api_key
    if settings.llm_api_key_secret:
        from sdcore.adapters.aws.secret import SecretValue

        key = SecretValue(LazyClient("secretsmanager"), settings.llm_api_key_secret)
    return OpenAICompatibleChat(
        settings.llm_base_url,
        settings.llm_model,
        settings.llm_timeout_s,
        settings.llm_retries,
        api_key=key,
    )


def _translator() -> Translator | None:
    """The offline Chinese-to-English translator, where its dictionary is installed (None
    elsewhere: a request asking for `translate` is refused); it loads on first use."""
    from sdcore.adapters.zh.translator import OfflineTranslator

    return OfflineTranslator() if OfflineTranslator.installed() else None


class LazyClient:
    """A boto3 client made when first used."""

    def __init__(self, service: str, config: Any = None) -> None:
        self._service = service
        self._config = config
        self._client: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client(self._service, config=self._config)
        return getattr(self._client, name)


_given: Settings | None = None
_warm: set[str] = set()  # the functions this execution environment has served an event of
Handler = TypeVar("Handler", bound=Callable[..., Any])


def observed(function: str) -> Callable[[Handler], Handler]:
    """A function's entry point, measured: its execution environment's first event counts as a
    cold start, and the metrics the event's use cases recorded are flushed when it ends (on
    AWS: written to the log as EMF records), whether it raised or not. What the last event
    was about (its task id on the log lines and trace) is forgotten when it starts."""

    def decorate(handler: Handler) -> Handler:
        @wraps(handler)
        def measured(*args: Any, **kwargs: Any) -> Any:
            svc = get_services()
            svc.tracing.begin()  # the last event's task id is not this one's
            metrics = svc.metrics
            if function not in _warm:
                _warm.add(function)
                metrics.count(COLD_STARTS, function=function)
            try:
                return handler(*args, **kwargs)
            finally:
                metrics.flush()

        return cast(Handler, measured)

    return decorate


@lru_cache(maxsize=1)
def get_services() -> Services:
    """This execution environment's services, built once: from the settings `use_settings`
    gave, else from the process environment."""
    return build_services(_given or get_settings())


def use_settings(settings: Settings | None) -> None:
    """Build this execution environment's services from `settings` instead of the environment
    (the local stack's processes; None: the environment again)."""
    global _given
    _given = settings
    reset()


def reset() -> None:
    """Forget the cached services and settings (tests change the environment between cases)."""
    get_services.cache_clear()
    get_settings.cache_clear()
