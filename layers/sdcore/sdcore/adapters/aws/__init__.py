"""AWS adapters of the ports (boto3: DynamoDB, S3, SQS, Lambda, SageMaker), one module per
store or fleet. Each takes its boto3 client and resource names in its constructor; the
composition root builds them from settings."""

from sdcore.adapters.aws.fleet_router import FleetRouter
from sdcore.adapters.aws.function_store import DynamoDBFunctionStore
from sdcore.adapters.aws.lambda_fleet import LambdaWorkerFleet, inference_environment
from sdcore.adapters.aws.model_store import DynamoDBModelStore
from sdcore.adapters.aws.parked import DynamoDBParkedTasks
from sdcore.adapters.aws.s3 import S3BlobStore
from sdcore.adapters.aws.sagemaker_fleet import SageMakerAsyncFleet
from sdcore.adapters.aws.slot_store import DynamoDBSlotStore
from sdcore.adapters.aws.sqs import SqsQueue
from sdcore.adapters.aws.task_store import DynamoDBTaskStore
from sdcore.adapters.aws.user_store import DynamoDBUserStore

__all__ = [
    "DynamoDBFunctionStore",
    "DynamoDBModelStore",
    "DynamoDBParkedTasks",
    "DynamoDBSlotStore",
    "DynamoDBTaskStore",
    "DynamoDBUserStore",
    "FleetRouter",
    "LambdaWorkerFleet",
    "S3BlobStore",
    "SageMakerAsyncFleet",
    "SqsQueue",
    "inference_environment",
]
