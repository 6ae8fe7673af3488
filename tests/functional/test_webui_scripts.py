"""The webui's scripts over the webui routes: listed with their arguments, run as one task
(the worker gets the whole plan; the work budget counts every job), and 422s naming
`script_name` or `script_args`. The engine runs them in tests/unit/engine/test_scripts.py."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import inference_function.app as inference_app
from proxy_function.app import lambda_handler as proxy
from sdcore import composition
from sdcore.composition import get_services
from sdcore.domain.models import GenerationParams, Model, ModelStatus
from sdcore.ports import Engine, EngineInputs, EngineResult, StepCallback, StepInfo
from tests.functional.events import Context, api


def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
    resp = proxy(api(method, path, body), Context())
    return resp["statusCode"], json.loads(resp["body"]) if resp.get("body") else None


class Recorder(Engine):
    """Reports a step per job and gives one picture per job; keeps the params it ran."""

    model_hash = "0" * 64
    seen: list[GenerationParams] = []

    def load(self) -> None:
        pass

    def run(
        self, params: GenerationParams, inputs: EngineInputs, on_step: StepCallback
    ) -> EngineResult:
        Recorder.seen.append(params)
        jobs = params.script_jobs()
        for n in range(len(jobs)):
            on_step(StepInfo(step=1, steps=1, job_no=n, job_count=len(jobs), elapsed_s=0.0))
        images = [Image.new("RGB", (64, 64)) for _ in jobs]
        return EngineResult(
            images, ["x"] * len(jobs), {"script": params.script and params.script.name}
        )


@pytest.fixture
def worker(local_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SD_WEBUI_TIMEOUT", "0")  # the route answers 504 + taskId; we run it
    monkeypatch.setenv("SD_MODEL_NAME", "demo")
    composition.reset()
    svc = get_services()
    now = svc.clock.now()
    svc.models.create(
        Model(name="demo", status=ModelStatus.UNLOADED, sha256="0" * 64, size=1,
              key="models/demo.safetensors", registered_at=now, modified_at=now)
    )  # fmt: skip
    Recorder.seen = []
    monkeypatch.setattr(inference_app, "load_engine", lambda *_: Recorder())
    monkeypatch.setattr(inference_app, "_engine", None)
    return local_env


def _run(path: str, body: dict[str, Any]) -> tuple[GenerationParams, dict[str, Any]]:
    status, answer = call("POST", path, body)
    assert status == 504, answer
    out = inference_app.lambda_handler({"taskId": answer["taskId"]}, Context())
    assert out["status"] == "succeeded", out
    return Recorder.seen[-1], call("GET", f"/tasks/{answer['taskId']}/progress")[1]


def test_scripts_are_listed_with_their_args(local_env: Path) -> None:
    status, names = call("GET", "/sdapi/v1/scripts")
    assert status == 200 and "x/y/z plot" in names["txt2img"]
    assert "sd upscale" in names["img2img"] and "sd upscale" not in names["txt2img"]
    status, info = call("GET", "/sdapi/v1/script-info")
    xyz = next(s for s in info if s["name"] == "x/y/z plot" and not s["is_img2img"])
    assert xyz["args"][0]["label"] == "X type" and xyz["args"][0]["choices"][4] == "Steps"
    matrix = next(s for s in info if s["name"] == "prompt matrix" and s["is_img2img"])
    assert [a["value"] for a in matrix["args"]] == [False, False, "positive", "comma", 0]


def test_an_xyz_plot_is_one_task_with_every_cell_planned(worker: Path) -> None:
    body = {"prompt": "a cat", "steps": 2, "script_name": "X/Y/Z plot",
            "script_args": [4, "1-3", "", "CFG Scale", "5,7", "", 0, "", ""]}  # fmt: skip
    params, task = _run("/sdapi/v1/txt2img", body)
    jobs = params.script_jobs()
    assert [(j.steps, j.guidance) for j in jobs] == [
        (1, 5.0), (2, 5.0), (3, 5.0), (1, 7.0), (2, 7.0), (3, 7.0)
    ]  # fmt: skip
    assert len({j.seed for j in jobs}) == 1 and jobs[0].seed >= 0  # fixed once for all
    assert task["status"] == "succeeded" and task["state"]["jobCount"] == 6


def test_prompts_from_file_lines_pass_the_prompt_filter(worker: Path) -> None:
    (worker / "blocklist.txt").write_text("forbidden\n")
    args = [False, False, 'a cat\n--prompt "a forbidden thing" --steps 2']
    body = {"prompt": "x", "script_name": "prompts from file or textbox", "script_args": args}
    status, answer = call("POST", "/sdapi/v1/txt2img", body)
    assert status == 422 and answer["detail"][0]["loc"] == ["body", "prompt"]


def test_the_work_budget_counts_every_job(worker: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SD_MAX_TASK_WORK", str(64 * 64 * 2 * 3))
    composition.reset()
    lines = "a\nb\nc\nd"
    script = {"script_name": "prompts from file or textbox", "script_args": [False, False, lines]}
    body = {"prompt": "x", "steps": 2, "width": 64, "height": 64, **script}
    status, answer = call("POST", "/sdapi/v1/txt2img", body)
    assert status == 422, answer
    body["script_args"] = [False, False, "a\nb\nc"]
    status, answer = call("POST", "/sdapi/v1/txt2img", body)
    assert status == 504, answer


def test_sd_upscale_counts_its_tiles(worker: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (48, 48), "red").save(buf, format="PNG")
    image = base64.b64encode(buf.getvalue()).decode()
    body = {"prompt": "x", "init_images": [image], "width": 64, "height": 64, "steps": 2,
            "script_name": "SD upscale", "script_args": [None, 32, "Lanczos", 2]}  # fmt: skip
    params, _ = _run("/sdapi/v1/img2img", body)
    assert params.script is not None and params.script.tile_upscale is not None
    assert params.script.tile_upscale.tiles == 4  # 96x96 in 64x64 tiles sharing 32 px


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"script_name": "img2img alternative test"}, "script_name", "unknown script"),
        ({"script_name": "sd upscale"}, "script_name", "unknown script"),  # img2img only
        ({"script_name": "x/y/z plot", "script_args": [11, "a,b"]}, "script_args", "checkpoint"),
        ({"script_name": "x/y/z plot", "script_args": [99, "1"]}, "script_args", "axis type"),
        ({"script_name": "x/y/z plot", "script_args": ["Steps", "1-3", "", "Sampler", "Euler z"]},
         "script_args", "Euler z"),
        ({"script_name": "x/y/z plot", "script_args": ["Steps", "0-2"]}, "script_args", "steps"),
        ({"script_name": "x/y/z plot", "script_args": ["Prompt S/R", "dog,cat"]},
         "script_args", "dog"),
        ({"script_name": "prompt matrix", "prompt": "no parts"}, "script_args", "|"),
        ({"script_name": "prompts from file or textbox",
          "script_args": [False, False, "--prompt a --restore_faces true"]}, "script_args",
         "restore_faces"),
    ],
)  # fmt: skip
def test_bad_scripts_are_422s_naming_the_field(
    worker: Path, body: dict[str, Any], field: str, words: str
) -> None:
    status, answer = call("POST", "/sdapi/v1/txt2img", {"prompt": "a cat", **body})
    assert status == 422, answer
    detail = answer["detail"][0]
    assert detail["loc"] == ["body", field] and words in detail["msg"], detail


def test_native_routes_refuse_a_script(worker: Path) -> None:
    status, answer = call("POST", "/txt2img", {"prompt": "a|b", "script_name": "prompt matrix"})
    assert status == 422 and answer["detail"][0]["loc"] == ["body", "script_name"]


def test_sd_upscale_reads_only_the_callers_own_image(worker: Path) -> None:
    script = {"script_name": "sd upscale", "script_args": [None, 32, "Lanczos", 2]}
    body = {"prompt": "x", "init_images": ["inputs/someone-else/t/0.png"], **script}
    status, answer = call("POST", "/sdapi/v1/img2img", body)
    assert status == 422 and answer["detail"][0]["loc"] == ["body", "init_images", 0]
    buf = io.BytesIO()
    Image.new("RGB", (48, 48), "red").save(buf, format="PNG")
    body |= {"init_images": [base64.b64encode(buf.getvalue()).decode()], "width": 64, "height": 64}
    body["script_args"] = [None, 32, "ESRGAN_4x", 2]  # no such upscaler model is registered
    status, answer = call("POST", "/sdapi/v1/img2img", body)
    assert status == 422 and "ESRGAN_4x" in answer["detail"][0]["msg"]
    assert answer["detail"][0]["loc"] == ["body", "script_args"]
