"""The NSFW censor through the handlers, with the real open_nsfw classifier: the caller's own
setting (GET /account, PUT /account/censor), and a task whose picture the censor blurs. Benign
test pictures score far below any real threshold, so the threshold is set just above zero to
make the classifier's verdict "over" for them: the path is the one a flagged picture takes."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import inference_function.app as inference_app
from proxy_function.app import lambda_handler as proxy
from sdcore import composition
from sdcore.composition import get_services
from sdcore.domain.models import Model, ModelStatus
from sdcore.ports import Engine, EngineInputs, EngineResult, StepCallback
from tests.functional.events import Context, api


def call(method: str, path: str, body: Any = None, headers=None) -> tuple[int, Any]:
    resp = proxy(api(method, path, body, headers), Context())
    return resp["statusCode"], json.loads(resp["body"]) if resp.get("body") else None


class Checkerboard(Engine):
    model_hash = "0" * 64

    def load(self) -> None:
        pass

    def run(self, params, inputs: EngineInputs, on_step: StepCallback) -> EngineResult:  # type: ignore[no-untyped-def]
        board = (np.indices((64, 64)).sum(axis=0) // 4 % 2 * 255).astype(np.uint8)
        return EngineResult([Image.fromarray(board).convert("RGB")], ["x"], {})


@pytest.fixture
def censored(local_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))  # onnxruntime writes its caches under HOME
    monkeypatch.setenv("SD_CENSOR", "flag")
    monkeypatch.setenv("SD_CENSOR_THRESHOLD", "0.000001")
    monkeypatch.setenv("SD_MODEL_NAME", "demo")
    composition.reset()
    svc = get_services()
    now = svc.clock.now()
    model = Model(name="demo", status=ModelStatus.UNLOADED, sha256="0" * 64, size=1,
                  key="models/demo.safetensors", registered_at=now, modified_at=now)  # fmt: skip
    svc.models.create(model)
    monkeypatch.setattr(inference_app, "load_engine", lambda *_: Checkerboard())
    monkeypatch.setattr(inference_app, "_engine", None)
    return local_env


def _one_task() -> tuple[dict[str, Any], np.ndarray]:
    """An async task run by the inference handler: its `info.censor` and its picture."""
    status, task = call("POST", "/txt2img", {"prompt": "x", "steps": 1}, {"Request-Type": "async"})
    assert status == 202, task
    out = inference_app.lambda_handler({"taskId": task["taskId"]}, Context())
    assert out["status"] == "succeeded"
    result = call("GET", f"/tasks/{task['taskId']}/result")[1]
    key = result["images"][0]
    picture = np.asarray(Image.open(io.BytesIO(get_services().blobs.get(key))), dtype=np.float32)
    return result["info"]["censor"], picture


def test_a_user_tightens_the_censor_and_their_picture_comes_back_blurred(censored: Path) -> None:
    assert call("GET", "/account")[1]["censor"] == {
        "deployment": "flag", "yours": None, "effective": "flag",
    }  # fmt: skip
    status, body = call("PUT", "/account/censor", {"censor": "lenient"})
    assert status == 422 and body["detail"][0]["loc"] == ["body", "censor"]
    status, body = call("PUT", "/account/censor", {"censor": "blur"})
    assert status == 200 and body["censor"]["effective"] == "blur"

    record, picture = _one_task()
    assert (record["mode"], record["classifier"], record["blurred"]) == ("blur", "open_nsfw", [0])
    assert 0 <= record["scores"][0] < 0.2  # a checkerboard: benign, as judged
    assert picture.std() < 10  # the 0/255 checkerboard, blurred to grey

    # asking for less than the deployment's changes nothing: flag still applies
    assert call("PUT", "/account/censor", {"censor": "off"})[1]["censor"]["effective"] == "flag"


def test_flag_records_the_real_classifiers_scores_after_the_task_ends(censored: Path) -> None:
    record, picture = _one_task()
    assert (record["mode"], record["classifier"], record["flagged"]) == ("flag", "open_nsfw", [0])
    assert 0 <= record["scores"][0] < 0.2 and "blurred" not in record
    assert picture.std() > 100  # the checkerboard as drawn: flag changes no picture
