"""SageMaker's container contract, served by a real process: `python -m inference_function.serve`
(what `docker run <image> serve` runs) against the template's resources in moto's server. A task
is submitted through the proxy; its reference is written to S3 as the SageMaker fleet writes it;
the object's bytes are POSTed to /invocations as SageMaker does with an asynchronous invocation's
input; the task must end succeeded in DynamoDB with its PNG in the bucket."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from PIL import Image

from sdcore import composition
from sdcore.domain.models import Model, ModelFormat, ModelStatus, Role
from sdcore.usecases.auth import create_user
from tests.aws_template import REGION, create_resources, environment
from tests.functional import events
from tests.functional.events import Context, api
from tests.support_stack import SOURCE_PATH

REPO = Path(__file__).resolve().parents[2]
INPUT_PREFIX = "sagemaker/inputs/"  # where the fleet writes a task's reference
START_TIMEOUT_S = 120.0  # imports (torch, diffusers) and the load; ~10 s here


@dataclass
class Deployment:
    """The template's resources in moto, a user's key and the demo checkpoint registered."""

    url: str
    names: dict[str, str]
    env: dict[str, str]
    clients: dict[str, Any]
    model_key: str


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    from moto.server import ThreadedMotoServer

    from sdlocal.demo.tiny import save_single_file

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    try:
        with pytest.MonkeyPatch.context() as mp:
            clients = {
                s: boto3.client(s, region_name=REGION, endpoint_url=url)
                for s in ("dynamodb", "s3", "sqs")
            }
            names = create_resources(clients)
            env = {**environment(names), "AWS_ENDPOINT_URL": url, "SD_SYNC_TIMEOUT": "0"}
            for key, value in env.items():
                mp.setenv(key, value)
            composition.reset()
            svc = composition.get_services()
            _, user_key = create_user(svc, "user", Role.USER)
            mp.setattr(events, "DEFAULT_HEADERS", {"Authorization": f"Bearer {user_key}"})

            # the demo checkpoint as a verified upload leaves it: the file under its version's
            # key, the record usable (what `model_jobs._promote` writes)
            checkpoint = save_single_file(tmp_path_factory.mktemp("ckpt") / "demo.safetensors")
            data = checkpoint.read_bytes()
            model_key = f"models/checkpoint/demo/{svc.ids.new_id()}"
            clients["s3"].put_object(Bucket=names["Bucket"], Key=model_key, Body=data)
            now = svc.clock.now()
            svc.models.create(
                Model(name="demo", status=ModelStatus.UNLOADED, format=ModelFormat.SAFETENSORS,
                      sha256=hashlib.sha256(data).hexdigest(), size=len(data), key=model_key,
                      config="tiny-sd", registered_at=now, modified_at=now)
            )  # fmt: skip
            yield Deployment(url, names, env, clients, model_key)
    finally:
        composition.reset()
        server.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    pings: list[int]

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@pytest.fixture
def served(deployed: Deployment, tmp_path: Path) -> Iterator[Served]:
    """`python -m inference_function.serve` with the environment an endpoint's container has,
    ready: /ping answered 200."""
    port = _free_port()
    env = {
        **deployed.env,
        "SD_MODEL_NAME": "demo",
        "SD_MODEL_KEY": deployed.model_key,
        "SD_SERVE_HOST": "127.0.0.1",
        "SD_SERVE_PORT": str(port),
        "SD_MODEL_CACHE_DIR": str(tmp_path / "models"),
        "AWS_ENDPOINT_URL": deployed.url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "POWERTOOLS_LOG_LEVEL": "INFO",
        "PYTHONPATH": os.pathsep.join([SOURCE_PATH, str(REPO)]),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),
    }
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "inference_function.serve"],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Served(f"http://127.0.0.1:{port}", proc, log, [])
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.pings or server.pings[-1] != 200:
            assert proc.poll() is None, f"serve exited {proc.returncode}:\n{server.tail()}"
            assert time.monotonic() < deadline, f"/ping not 200 in time:\n{server.tail()}"
            try:
                server.pings.append(httpx.get(f"{server.url}/ping", timeout=5).status_code)
            except httpx.TransportError:  # not listening yet: still importing
                pass
            if not server.pings or server.pings[-1] != 200:
                time.sleep(0.1)  # loading: ask again shortly
        yield server
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_an_invocation_runs_its_task_as_the_lambda_handler_does(
    deployed: Deployment, served: Served
) -> None:
    from proxy_function.app import lambda_handler as proxy

    s3, bucket = deployed.clients["s3"], deployed.names["Bucket"]
    # /ping: 503 while the checkpoint loaded (when a ping came in time to see it), then 200
    assert set(served.pings) <= {503, 200} and served.pings[-1] == 200

    # Given a task submitted through the proxy, and its reference written as the fleet writes it
    body = {"prompt": "a red circle", "seed": 5, "steps": 2, "width": 64, "height": 64}
    submitted = proxy(api("POST", "/txt2img", body, {"Request-Type": "async"}), Context())
    assert submitted["statusCode"] == 202, submitted
    task_id = json.loads(submitted["body"])["taskId"]
    key = f"{INPUT_PREFIX}{task_id}.json"
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps({"taskId": task_id}).encode())

    # When SageMaker POSTs the input object's bytes to /invocations
    payload = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    answer = httpx.post(
        f"{served.url}/invocations",
        content=payload,
        headers={"Content-Type": "application/json"},
        timeout=60,
    )

    # Then the answer names the task and how it ended, and the task table and bucket agree
    assert answer.status_code == 200, served.tail()
    assert answer.json() == {"taskId": task_id, "status": "succeeded"}
    item = deployed.clients["dynamodb"].get_item(
        TableName=deployed.names["TasksTable"], Key={"taskId": {"S": task_id}}
    )["Item"]
    assert item["status"]["S"] == "succeeded"
    outputs = s3.list_objects_v2(Bucket=bucket, Prefix="outputs/").get("Contents", [])
    png = f"outputs/user/{task_id}/0.png"
    assert png in {o["Key"] for o in outputs}
    image = Image.open(io.BytesIO(s3.get_object(Bucket=bucket, Key=png)["Body"].read()))
    assert image.format == "PNG" and image.size == (64, 64)

    # And a body that is not a task reference is refused with the reason
    for bad, reason in ((b"{not json", "not JSON"), (b'{"lease": null}', "taskId")):
        refused = httpx.post(f"{served.url}/invocations", content=bad, timeout=10)
        assert refused.status_code == 400 and reason in refused.json()["error"], refused.text

    # And SIGTERM, as SageMaker stops a container, shuts the server down
    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(timeout=15) == 0, served.tail()


@pytest.fixture
def in_process() -> Iterator[tuple[ThreadingHTTPServer, str]]:
    """The server without its load started, to see /ping before and after it."""
    from inference_function.serve import InferenceServer

    server = InferenceServer(("127.0.0.1", 0))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_ping_is_503_while_loading_and_200_even_after_a_failed_load(
    in_process: tuple[Any, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import inference_function.serve as serve

    server, url = in_process
    assert httpx.get(f"{url}/ping").status_code == 503
    assert httpx.get(f"{url}/other").status_code == 404

    def broken() -> None:
        raise RuntimeError("no such file")

    # a failed load is reported per task (abandon_task), so the container is healthy
    monkeypatch.setattr(serve, "engine", broken)
    server.load()
    assert httpx.get(f"{url}/ping").status_code == 200
