"""The prompt assistant's server-sent events through the local front door really stream: a
token reaches the HTTP client while the language model (a fake OpenAI-compatible server on
127.0.0.1) has not yet sent the rest of its reply."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sdcore.composition import get_services, use_settings
from sdcore.settings import Settings
from sdcore.usecases.auth import bootstrap_local
from sdlocal.cli import main
from sdlocal.server import LocalServer
from tests.openai_server import FakeOpenAI, Reply, fake_openai


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, FakeOpenAI]]:
    data_dir: Path = tmp_path_factory.mktemp("assist")
    with fake_openai() as llm:
        settings = Settings(
            data_dir=data_dir, backend="local", port=0, http_workers=1,
            llm="openai", llm_base_url=llm.base_url, llm_model="tiny", llm_timeout_s=20,
        )  # fmt: skip
        use_settings(settings)
        keys = bootstrap_local(get_services(), data_dir) or {}
        server = LocalServer(settings)
        try:
            host, port = server.server_address
            yield f"http://{host}:{port}", keys["user_key"], llm
        finally:
            server.shutdown()
            server.server_close()
            use_settings(None)


def test_tokens_stream_to_the_client_as_the_model_writes(stack) -> None:
    url, key, llm = stack
    rest = threading.Event()
    pieces = ["Prompt: a red ", "circle\n", "Negative prompt: blurry"]
    llm.replies.put(Reply(pieces, gates={1: rest}))
    headers = {"Authorization": f"Bearer {key}", "Accept": "text/event-stream"}
    body = {"text": "红色的圆形"}
    with httpx.stream("POST", f"{url}/prompts/assist", json=body, headers=headers, timeout=10) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/event-stream"
        lines = r.iter_lines()
        assert next(lines) == "event: token"
        # the first token is here, and the model has not sent its second piece yet
        assert json.loads(next(lines)[len("data: ") :]) == {"text": "Prompt: a red "}
        rest.set()
        text = "\n".join(lines)
    done = text.split("event: done\ndata: ")[1].strip()
    assert json.loads(done) == {"prompt": "a red circle", "negative_prompt": "blurry"}
    # JSON without the Accept header, through the same process
    llm.replies.put(Reply(["Prompt: a blue square"]))
    answer = httpx.post(f"{url}/prompts/assist", json={"text": "蓝色的方形"}, timeout=30,
                        headers={"Authorization": f"Bearer {key}"})  # fmt: skip
    assert answer.json() == {"prompt": "a blue square", "negative_prompt": ""}


def test_sd_assist_prints_the_prompt_as_it_streams(stack, capsys) -> None:
    url, key, llm = stack
    llm.replies.put(Reply(["Prompt: a red circle\n", "Negative prompt: blurry"]))
    assert main(["assist", "红色的圆形", "--url", url, "--key", key]) == 0
    out, err = capsys.readouterr()
    assert out == "a red circle\nNegative prompt: blurry\n"
    assert err == "Prompt: a red circle\nNegative prompt: blurry\n"
    llm.replies.put(Reply(["Prompt: a red circle"]))
    assert main(["assist", "圆", "--no-stream", "--json", "--url", url, "--key", key]) == 0
    assert json.loads(capsys.readouterr().out) == {"prompt": "a red circle", "negative_prompt": ""}
    # an error event ends the command with the API's reason
    llm.replies.put(Reply(status=400))
    assert main(["assist", "圆", "--url", url, "--key", key]) == 1
    assert "HTTP 502" in capsys.readouterr().err
