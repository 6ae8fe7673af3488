"""Face restoration's webui fields over the proxy handler on the local backend: txt2img's
`restore_faces` with the `face_restoration*` / `code_former_weight` options, extras'
`gfpgan_visibility` / `codeformer_visibility`, the 422s naming the field when no face restorer
of the kind is registered, and `/sdapi/v1/face-restorers`. No worker runs: tasks stay queued."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy_function.app import lambda_handler as proxy
from sdcore import composition
from sdcore.composition import get_services
from sdcore.domain.models import Model, ModelFormat, ModelStatus, ModelType, Task
from tests.functional.events import Context, api
from tests.unit.usecases.conftest import png


def _call(method: str, path: str, body: object = None) -> tuple[int, Any]:
    resp = proxy(api(method, path, body), Context())
    return resp["statusCode"], json.loads(resp["body"]) if resp.get("body") else None


def _model(name: str, kind: ModelType, architecture: str | None = None) -> Model:
    details = {"architecture": architecture} if architecture else {}
    return Model(name=name, type=kind, status=ModelStatus.UNLOADED, sha256="ab" * 32, size=1,
                 key=f"models/{name}", format=ModelFormat.SAFETENSORS, registered_at=0,
                 modified_at=0, details=details)  # fmt: skip


@pytest.fixture
def stack(local_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("SD_WEBUI_TIMEOUT", "0")
    composition.reset()
    get_services().models.create(_model("demo", ModelType.CHECKPOINT))
    yield local_env


def _register_codeformer() -> None:
    get_services().models.create(_model("codeformer-v0.1", ModelType.FACE_RESTORER, "CodeFormer"))


def _queued(path: str, body: dict[str, Any]) -> Task:
    status, answer = _call("POST", path, body)
    assert status in (202, 504), answer
    return get_services().tasks.get(answer["taskId"])


def test_without_a_face_restorer_the_fields_are_refused_by_name(stack: Path) -> None:
    status, body = _call("POST", "/sdapi/v1/txt2img", {"prompt": "x", "restore_faces": True})
    assert status == 422 and "restore_faces" in json.dumps(body)
    image = {"image": "data:image/png;base64," + __import__("base64").b64encode(png()).decode()}
    for field in ("gfpgan_visibility", "codeformer_visibility"):
        status, body = _call("POST", "/sdapi/v1/extra-single-image", {**image, field: 0.5})
        assert status == 422 and field in json.dumps(body), body
    # restoration not asked for: nothing is needed
    assert _queued("/sdapi/v1/txt2img", {"prompt": "x"}).params.face_restorers == []


def test_restore_faces_takes_the_options_model_and_weight(stack: Path) -> None:
    _register_codeformer()
    assert _call("GET", "/sdapi/v1/face-restorers")[1] == [
        {"name": "codeformer-v0.1", "cmd_dir": None}
    ]
    p = _queued("/sdapi/v1/txt2img", {"prompt": "x", "restore_faces": True}).params
    assert (p.face_restorers, p.codeformer_weight) == ([("CodeFormer", 1.0)], 0.5)
    # the saved options: the face_restoration switch and the weight
    _call("POST", "/sdapi/v1/options", {"face_restoration": True, "code_former_weight": 0.2})
    p = _queued("/sdapi/v1/txt2img", {"prompt": "x"}).params
    assert (p.face_restorers, p.codeformer_weight) == ([("CodeFormer", 1.0)], 0.2)
    assert (
        _queued("/sdapi/v1/txt2img", {"prompt": "x", "restore_faces": False}).params.face_restorers
        == []
    )
    # a registered model by name; a kind none is registered of is refused
    overrides = {"face_restoration_model": "codeformer-v0.1"}
    p = _queued("/sdapi/v1/txt2img", {"prompt": "x", "override_settings": overrides}).params
    assert p.face_restorers == [("codeformer-v0.1", 1.0)]
    overrides = {"face_restoration_model": "GFPGAN"}
    status, body = _call(
        "POST", "/sdapi/v1/txt2img", {"prompt": "x", "override_settings": overrides}
    )
    assert status == 422 and "restore_faces" in json.dumps(body)


def test_extras_visibility_and_weight_reach_the_task(stack: Path) -> None:
    _register_codeformer()
    image = {"image": "data:image/png;base64," + __import__("base64").b64encode(png()).decode()}
    body = {**image, "upscaler_1": "None", "codeformer_visibility": 0.7, "codeformer_weight": 0.3}
    p = _queued("/sdapi/v1/extra-single-image", body).params
    assert (p.face_restorers, p.codeformer_weight) == ([("CodeFormer", 0.7)], 0.3)


def test_a_pasted_infotext_turns_restoration_on_and_merges_settings(stack: Path) -> None:
    _register_codeformer()
    text = "a face\nSteps: 4, Sampler: Euler a, Seed: 7, Face restoration: codeformer-v0.1, "
    text += "Size: 64x64, Eta: 0.5"
    body = {"infotext": text, "override_settings": {"s_noise": 0.9}}
    p = _queued("/sdapi/v1/txt2img", body).params
    assert p.face_restorers == [("codeformer-v0.1", 1.0)] and p.seed == 7
    # the request's override_settings and the pasted ones are merged key by key
    assert (p.eta_ancestral, p.s_noise) == (0.5, 0.9)
