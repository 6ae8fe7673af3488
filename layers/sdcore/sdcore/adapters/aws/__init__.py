"""AWS adapters of the ports (boto3: DynamoDB, S3, SQS, Lambda). Each takes its boto3 client and
resource names in its constructor; the composition root builds them from settings."""

from sdcore.adapters.aws.dynamodb import (
    DynamoDBFunctionStore,
    DynamoDBModelStore,
    DynamoDBSlotStore,
    DynamoDBTaskStore,
)
from sdcore.adapters.aws.lambda_fleet import LambdaWorkerFleet, inference_environment
from sdcore.adapters.aws.s3 import S3BlobStore
from sdcore.adapters.aws.sqs import SqsQueue

__all__ = [
    "DynamoDBFunctionStore",
    "DynamoDBModelStore",
    "DynamoDBSlotStore",
    "DynamoDBTaskStore",
    "LambdaWorkerFleet",
    "S3BlobStore",
    "SqsQueue",
    "inference_environment",
]
