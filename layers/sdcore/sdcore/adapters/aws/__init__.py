"""AWS adapters of the ports (boto3: DynamoDB, S3, SQS, Lambda), one module per store. Each
takes its boto3 client and resource names in its constructor; the composition root builds them
from settings."""

from sdcore.adapters.aws.function_store import DynamoDBFunctionStore
from sdcore.adapters.aws.lambda_fleet import LambdaWorkerFleet, inference_environment
from sdcore.adapters.aws.model_store import DynamoDBModelStore
from sdcore.adapters.aws.s3 import S3BlobStore
from sdcore.adapters.aws.slot_store import DynamoDBSlotStore
from sdcore.adapters.aws.sqs import SqsQueue
from sdcore.adapters.aws.task_store import DynamoDBTaskStore
from sdcore.adapters.aws.user_store import DynamoDBUserStore

__all__ = [
    "DynamoDBFunctionStore",
    "DynamoDBModelStore",
    "DynamoDBSlotStore",
    "DynamoDBTaskStore",
    "DynamoDBUserStore",
    "LambdaWorkerFleet",
    "S3BlobStore",
    "SqsQueue",
    "inference_environment",
]
