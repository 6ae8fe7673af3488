"""The composition root: builds every adapter from settings, once per execution environment."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from sdcore.clock import Clock, IdFactory
from sdcore.ports import WorkerFleet
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
    from sdcore.adapters.local.queue import SqliteQueue
    from sdcore.adapters.local.stores import (
        SqliteFunctionStore,
        SqliteModelStore,
        SqliteSlotStore,
        SqliteTaskStore,
        SqliteUserStore,
    )
    from sdcore.adapters.local.templates import SqliteBatchStore, SqliteTemplateStore
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
        idempotency=SqlitePersistenceLayer(db),
        clock=clock,
        ids=ids,
        jobs=SqliteQueue(db, "model-jobs", max_receives=3, now=clock.now),
        censor=_censor(settings),
        templates=SqliteTemplateStore(db),
        batches=SqliteBatchStore(db),
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
    from sdcore.adapters.aws.template_store import DynamoDBBatchStore, DynamoDBTemplateStore

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
        idempotency=DynamoDBPersistenceLayer(table_name=settings.idempotency_table),
        clock=clock,
        ids=ids,
        jobs=SqsQueue(sqs, settings.jobs_queue_url) if settings.jobs_queue_url else None,
        censor=_censor(settings),
        # in the users table, under prefixes of their own (adapters/aws/template_store.py)
        templates=DynamoDBTemplateStore(dynamodb, settings.users_table),
        batches=DynamoDBBatchStore(dynamodb, settings.users_table),
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


class LazyClient:
    """A boto3 client made when first used."""

    def __init__(self, service: str) -> None:
        self._service = service
        self._client: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client(self._service)
        return getattr(self._client, name)


_given: Settings | None = None


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
