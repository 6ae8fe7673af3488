"""ControlNet over the proxy handler on the local backend: the extension's routes (module list,
detect, version, settings), `alwayson_scripts.controlnet.args` and the native `controlnet`
list taken in, their 422s naming the unit's field, and a task whose units reach the engine
with their models and images fetched (a recording engine stands in for diffusers here; the
pictures a ControlNet makes are tested on the tiny model in tests/unit/engine)."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

import inference_function.app as inference_app
from proxy_function.app import lambda_handler as proxy
from sdcore import composition
from sdcore.composition import get_services
from sdcore.domain.models import Model, ModelFormat, ModelStatus, ModelType
from sdcore.ports import Engine, EngineInputs, EngineResult, StepCallback
from tests.functional.events import Context, api


def _call(method: str, path: str, body: Any = None, query: dict[str, str] | None = None
          ) -> tuple[int, Any]:  # fmt: skip
    event = api(method, path, body)
    if query:
        event["queryStringParameters"] = query
        event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()}
    resp = proxy(event, Context())
    return resp["statusCode"], json.loads(resp["body"]) if resp.get("body") else None


def _circle() -> str:
    image = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(image).ellipse((8, 8, 36, 36), fill="black")
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _register(name: str, kind: ModelType, arch: str) -> None:
    svc = get_services()
    svc.blobs.put(f"models/{name}.safetensors", b"weights", "application/octet-stream")
    svc.models.create(Model(name=name, type=kind, status=ModelStatus.UNLOADED, sha256=name[0] * 64,
                            size=7, key=f"models/{name}.safetensors",
                            format=ModelFormat.SAFETENSORS, registered_at=0, modified_at=0,
                            details={"architecture": arch}))  # fmt: skip


class Recording(Engine):
    """Answers with one grey picture plus the maps asked for, and keeps what it was given."""

    model_hash = "d" * 64
    seen: list[tuple[Any, EngineInputs]] = []

    def load(self) -> None:
        pass

    def run(self, params, inputs: EngineInputs, on_step: StepCallback) -> EngineResult:  # type: ignore[no-untyped-def]
        self.seen.append((params, inputs))
        maps = [Image.new("RGB", (64, 64)) for u in params.controlnet if u.return_map]
        return EngineResult([Image.new("RGB", (64, 64), "grey"), *maps], ["x"] + [""] * len(maps),
                            {})  # fmt: skip


@pytest.fixture
def stack(local_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SD_WEBUI_TIMEOUT", "0")
    monkeypatch.setenv("SD_MODEL_NAME", "demo")
    composition.reset()
    _register("demo", ModelType.CHECKPOINT, "sd1")
    _register("cn-canny", ModelType.CONTROLNET, "sd1")
    _register("xl-canny", ModelType.CONTROLNET, "sdxl")
    monkeypatch.setattr(inference_app, "load_engine", lambda *_: Recording())
    monkeypatch.setattr(inference_app, "_engine", None)
    Recording.seen.clear()
    return local_env


def test_the_extension_routes(stack: Path) -> None:
    assert _call("GET", "/sdapi/v1/controlnet/version") == (200, {"version": 2})
    assert _call("GET", "/sdapi/v1/controlnet/settings")[1] == {"control_net_unit_count": 4}
    status, modules = _call("GET", "/sdapi/v1/controlnet/module_list")
    assert status == 200 and {"none", "canny", "inpaint_only"} <= set(modules["module_list"])
    assert modules["module_detail"]["canny"]["sliders"][1]["value"] == 100
    aliased = _call("GET", "/sdapi/v1/controlnet/module_list", query={"alias_names": "true"})[1]
    assert "invert (from white bg & black line)" in aliased["module_list"]
    status, found = _call("POST", "/sdapi/v1/controlnet/detect", {
        "controlnet_module": "canny", "controlnet_input_images": [_circle()],
        "controlnet_processor_res": 64, "controlnet_threshold_a": 50,
        "controlnet_threshold_b": 100,
    })  # fmt: skip
    assert status == 200 and found["info"] == "Success"
    edges = np.asarray(Image.open(io.BytesIO(base64.b64decode(found["images"][0]))).convert("L"))
    assert edges[22, 5:11].max() == 255 and edges[16:29, 16:29].max() == 0  # a ring
    status, body = _call("POST", "/sdapi/v1/controlnet/detect", {
        "controlnet_module": "openpose", "controlnet_input_images": [_circle()]})  # fmt: skip
    assert status == 422 and body["detail"][0]["loc"] == ["body", "controlnet_module"]
    assert "not available" in body["detail"][0]["msg"] and "canny" in body["detail"][0]["msg"]
    # depth modules are listed (they need a registered preprocessor) and run on the workers
    assert modules["module_detail"]["depth_midas"]["model_free"] is False
    status, body = _call("POST", "/sdapi/v1/controlnet/detect", {
        "controlnet_module": "depth_midas", "controlnet_input_images": [_circle()]})  # fmt: skip
    assert status == 422 and body["detail"][0]["loc"] == ["body", "controlnet_module"]
    assert "save_detected_map" in body["detail"][0]["msg"]


def _unit(**fields: Any) -> dict[str, Any]:
    return {"image": _circle(), "module": "canny", "model": "cn-canny [abcdef12]", **fields}


@pytest.mark.parametrize(
    ("unit", "field"),
    [
        ({"weight": 3}, "weight"),
        ({"model": "nope"}, "model"),
        ({"model": "xl-canny"}, "model"),  # an SDXL ControlNet on an SD 1.x checkpoint
        ({"module": "depth_midas"}, "module"),
        ({"module": "reference_only"}, "module"),
        ({"control_mode": "louder"}, "control_mode"),
        ({"guidance_start": 0.8, "guidance_end": 0.2}, "guidance_end"),
        ({"image": "not base64!"}, "image"),
    ],
)
def test_a_bad_unit_is_refused_naming_its_field(
    stack: Path, unit: dict[str, Any], field: str
) -> None:
    args = [{"enabled": False}, _unit(**unit)]
    request = {"prompt": "x", "alwayson_scripts": {"controlnet": {"args": args}}}
    status, body = _call("POST", "/sdapi/v1/txt2img", request)
    assert status == 422, body
    loc = ["body", "alwayson_scripts", "controlnet", "args", 1, field]
    assert body["detail"][0]["loc"] == loc, body


def test_units_reach_the_engine_with_their_models_and_images(stack: Path) -> None:
    args = [
        _unit(control_mode="My prompt is more important", resize_mode="Just Resize"),
        _unit(module="invert", weight=0.5, control_mode=2, save_detected_map=False),
    ]
    status, body = _call("POST", "/sdapi/v1/txt2img", {
        "prompt": "a blue circle", "steps": 1, "alwayson_scripts": {"ControlNet": {"args": args}},
    })  # fmt: skip
    assert status in (202, 504), body
    task = get_services().tasks.get(body["taskId"])
    first, second = task.params.controlnet
    assert (first.model, first.module, first.control_mode, first.resize_mode, first.return_map) == (
        "cn-canny", "canny", "prompt", 0, True)  # fmt: skip
    assert (first.threshold_a, first.threshold_b, second.control_mode) == (100, 200, "controlnet")
    assert first.image is not None and first.image.startswith("inputs/")
    out = inference_app.lambda_handler({"taskId": body["taskId"]}, Context())
    assert out["status"] == "succeeded"
    _, inputs = Recording.seen[-1]
    assert [c.file.name for c in inputs.controls] == ["cn-canny", "cn-canny"]
    assert inputs.controls[0].image is not None and inputs.controls[0].image.size == (64, 64)
    result = get_services().tasks.get(body["taskId"])
    assert len(result.images) == 2  # the picture and the first unit's control map

    # a depth module runs on the first registered preprocessor, refused while there is none
    depth = [_unit(module="depth_anything")]
    request = {"prompt": "x", "steps": 1, "alwayson_scripts": {"controlnet": {"args": depth}}}
    status, body = _call("POST", "/sdapi/v1/txt2img", request)
    assert status == 422 and body["detail"][0]["loc"][-1] == "module"
    assert "no usable `preprocessor` model is registered" in body["detail"][0]["msg"]
    _register("midas", ModelType.PREPROCESSOR, "DPTForDepthEstimation")
    status, body = _call("POST", "/sdapi/v1/txt2img", request)
    assert status in (202, 504), body
    out = inference_app.lambda_handler({"taskId": body["taskId"]}, Context())
    assert out["status"] == "succeeded"
    control = Recording.seen[-1][1].controls[0]
    assert control.preprocessor is not None and control.preprocessor.name == "midas"

    # natively: the same units under `controlnet`; pydantic names a bad field there too
    status, body = _call("POST", "/txt2img", {"prompt": "x", "controlnet": [_unit(weight=-1)]})
    assert status == 422 and body["detail"][0]["loc"][:4] == ["body", "controlnet", 0, "weight"]
