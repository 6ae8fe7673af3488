"""Contract suite: every port, both backends. "local" runs the SQLite/filesystem adapters under
tmp_path; "aws" runs the boto3 adapters against moto (in-process), with the tables, bucket and
queues created from template.yaml."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

# Fake credentials, set before any boto3 client exists; never real ones.
for _name, _value in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}.items():
    os.environ[_name] = _value

from sdcore.adapters.aws import (  # noqa: E402
    DynamoDBFunctionStore,
    DynamoDBModelStore,
    DynamoDBSlotStore,
    DynamoDBTaskStore,
    S3BlobStore,
    SqsQueue,
)
from sdcore.adapters.local.blobs import FileBlobStore  # noqa: E402
from sdcore.adapters.local.db import Database  # noqa: E402
from sdcore.adapters.local.queue import SqliteQueue  # noqa: E402
from sdcore.adapters.local.stores import (  # noqa: E402
    SqliteFunctionStore,
    SqliteModelStore,
    SqliteSlotStore,
    SqliteTaskStore,
)
from sdcore.ports import (  # noqa: E402
    BlobStore,
    FunctionStore,
    ModelStore,
    Queue,
    SlotStore,
    TaskStore,
)
from tests.aws_template import AwsStack, aws_stack_fixture, create_resources  # noqa: E402

aws_stack = aws_stack_fixture()


@dataclass
class Ports:
    backend: str
    tasks: TaskStore
    models: ModelStore
    functions: FunctionStore
    slots: SlotStore
    queue: Queue
    blobs: BlobStore


@pytest.fixture(params=["local", "aws"])
def ports(request: pytest.FixtureRequest, tmp_path: Path) -> Ports:
    if request.param == "local":
        db = Database(tmp_path / "state.db")
        return Ports(
            backend="local",
            tasks=SqliteTaskStore(db),
            models=SqliteModelStore(db),
            functions=SqliteFunctionStore(db),
            slots=SqliteSlotStore(db),
            queue=SqliteQueue(db, "tasks"),
            blobs=FileBlobStore(tmp_path, "http://127.0.0.1:1"),
        )
    stack: AwsStack = request.getfixturevalue("aws_stack")
    ddb, names = stack.client("dynamodb"), stack.names
    return Ports(
        backend="aws",
        tasks=DynamoDBTaskStore(ddb, names["TasksTable"]),
        models=DynamoDBModelStore(ddb, names["ModelsTable"]),
        functions=DynamoDBFunctionStore(ddb, names["FunctionsTable"]),
        slots=DynamoDBSlotStore(ddb, names["SlotsTable"]),
        queue=SqsQueue(stack.client("sqs"), names["TaskQueue"]),
        blobs=S3BlobStore(stack.client("s3"), names["Bucket"]),
    )


# --- blobs over real HTTP (presigned URLs, multipart parts) --------------------------------------
@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto as a real HTTP server: presigned URLs are fetched with httpx, which in-process
    mock_aws does not intercept."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@dataclass
class HttpBlobs:
    """A blob store whose part URLs take real PUTs (aws), or a way to stand in for them (local:
    the local HTTP server that serves part URLs is tested elsewhere)."""

    backend: str
    blobs: Any

    def put_part(self, key: str, upload_id: str, number: int, data: bytes) -> str:
        if self.backend == "local":
            return str(self.blobs.write_part(upload_id, number, [data]))
        import httpx

        url = self.blobs.part_url(key, upload_id, number, 300)
        resp = httpx.put(url, content=data, timeout=30)
        resp.raise_for_status()
        return resp.headers["ETag"]


@pytest.fixture(params=["local", "aws"])
def http_blobs(request: pytest.FixtureRequest, tmp_path: Path) -> HttpBlobs:
    if request.param == "local":
        return HttpBlobs("local", FileBlobStore(tmp_path, "http://127.0.0.1:1"))
    endpoint = request.getfixturevalue("moto_server")
    clients = {
        svc: boto3.client(svc, region_name="us-east-1", endpoint_url=endpoint)
        for svc in ("dynamodb", "s3", "sqs")
    }
    names = create_resources(clients)
    return HttpBlobs("aws", S3BlobStore(clients["s3"], names["Bucket"]))
