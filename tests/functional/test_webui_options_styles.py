"""The webui's read-only listings, its settings (`/sdapi/v1/options`: every key, per caller,
checked, applied to generation) and prompt styles (native CRUD, applied at submit), over the
proxy handler on the local backend. No worker runs: tasks stay queued and are read back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy_function.app import lambda_handler as proxy
from sdcore import composition
from sdcore.composition import get_services
from sdcore.domain.models import (
    GenerationParams,
    Model,
    ModelFormat,
    ModelStatus,
    ModelType,
    Task,
    TaskKind,
)
from sdcore.webui.infotext import generation_infotext
from sdcore.webui.samplers import HIRES_LATENT_UPSCALERS
from tests.functional.events import Context, api

INFO_ROUTES = [
    "cmd-flags",
    "hypernetworks",
    "face-restorers",
    "realesrgan-models",
    "prompt-styles",
    "memory",
    "extensions",
    "script-info",
    "latent-upscale-modes",
    "sd-modules",
]


def _call(method: str, path: str, body: object = None) -> tuple[int, Any]:
    resp = proxy(api(method, path, body), Context())
    return resp["statusCode"], json.loads(resp["body"]) if resp.get("body") else None


def _model(name: str, kind: ModelType = ModelType.CHECKPOINT) -> Model:
    details = {"scale": 2} if kind is ModelType.UPSCALER else {}
    return Model(name=name, type=kind, status=ModelStatus.UNLOADED, sha256="ab" * 32, size=1,
                 key=f"models/{name}", format=ModelFormat.SAFETENSORS, registered_at=0,
                 modified_at=0, details=details)  # fmt: skip


@pytest.fixture
def stack(local_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The local stack with a checkpoint, a VAE and an upscaler registered; webui requests
    answer 504 at once (no worker), leaving their task queued to read back."""
    monkeypatch.setenv("SD_WEBUI_TIMEOUT", "0")
    composition.reset()
    svc = get_services()
    svc.models.create(_model("demo"))
    svc.models.create(_model("kl-f8", ModelType.VAE))
    svc.models.create(_model("RealESRGAN_x2plus", ModelType.UPSCALER))
    yield local_env


def _queued(path: str, body: dict[str, Any]) -> Task:
    """The task a request made (webui: its 504 names it; native: async)."""
    status, answer = _call("POST", path, body)
    assert status in (202, 504), answer
    return get_services().tasks.get(answer["taskId"])


# --- the listings -----------------------------------------------------------------------------


@pytest.mark.parametrize("route", INFO_ROUTES)
def test_each_listing_answers(stack: Path, route: str) -> None:
    status, body = _call("GET", f"/sdapi/v1/{route}")
    assert status == 200, body


def test_listings_describe_this_service(stack: Path) -> None:
    assert _call("GET", "/sdapi/v1/hypernetworks")[1] == []
    assert _call("GET", "/sdapi/v1/face-restorers")[1] == []
    scripts = _call("GET", "/sdapi/v1/script-info")[1]  # the built-in ones (test_webui_scripts)
    assert {s["name"] for s in scripts} >= {"x/y/z plot", "prompt matrix", "sd upscale"}
    assert _call("GET", "/sdapi/v1/extensions")[1] == []
    modes = _call("GET", "/sdapi/v1/latent-upscale-modes")[1]
    assert [m["name"] for m in modes] == list(HIRES_LATENT_UPSCALERS)
    assert _call("GET", "/sdapi/v1/sd-modules")[1] == [
        {"model_name": "kl-f8", "filename": "kl-f8.safetensors"}
    ]
    assert _call("GET", "/sdapi/v1/realesrgan-models")[1] == [
        {"name": "RealESRGAN_x2plus", "path": "RealESRGAN_x2plus.safetensors", "scale": 2}
    ]
    flags = _call("GET", "/sdapi/v1/cmd-flags")[1]
    assert flags["api"] is True and flags["nowebui"] is True
    assert flags["api_auth"] is None and flags["medvram"] is False
    memory = _call("GET", "/sdapi/v1/memory")[1]
    assert memory["ram"]["total"] >= memory["ram"]["used"] > 0
    assert "error" in memory["cuda"] or "system" in memory["cuda"]


# --- options ----------------------------------------------------------------------------------


def test_options_report_every_webui_setting_with_its_default(stack: Path) -> None:
    status, opts = _call("GET", "/sdapi/v1/options")
    assert status == 200 and len(opts) > 250
    assert opts["send_seed"] is True and opts["samples_format"] == "png"
    assert opts["CLIP_stop_at_last_layers"] == 1 and opts["eta_noise_seed_delta"] == 0
    assert opts["eta_ancestral"] == 1.0 and opts["s_noise"] == 1.0
    assert opts["randn_source"] == "CPU"  # where this service draws noise unless asked
    assert opts["sd_model_checkpoint"].startswith("demo [") and opts["sd_vae"] == "Automatic"


def test_options_keep_what_the_caller_sets_typed_as_the_default(stack: Path) -> None:
    values = {"CLIP_stop_at_last_layers": 2, "eta_noise_seed_delta": 31337, "send_seed": False,
              "randn_source": "GPU", "eta_ancestral": 0, "s_noise": 0.9, "sd_vae": "kl-f8",
              "quicksettings_list": ["sd_model_checkpoint", "sd_vae"]}  # fmt: skip
    assert _call("POST", "/sdapi/v1/options", values) == (200, {})
    opts = _call("GET", "/sdapi/v1/options")[1]
    assert {k: opts[k] for k in values} == {**values, "eta_ancestral": 0.0}
    assert isinstance(opts["eta_ancestral"], float) and opts["samples_format"] == "png"


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"no_such_setting": 1}, "no_such_setting"),
        ({"CLIP_stop_at_last_layers": "2"}, "CLIP_stop_at_last_layers"),
        ({"CLIP_stop_at_last_layers": 13}, "CLIP_stop_at_last_layers"),
        ({"eta_noise_seed_delta": 1.5}, "eta_noise_seed_delta"),
        ({"send_seed": 1}, "send_seed"),
        ({"randn_source": "TPU"}, "randn_source"),
        ({"s_noise": 2.0}, "s_noise"),
        ({"api_enable_requests": False}, "api_enable_requests"),
        ({"samples_filename_pattern": "x" * 2000}, "samples_filename_pattern"),
    ],
)
def test_a_bad_setting_is_a_422_naming_it(stack: Path, values: dict[str, Any], key: str) -> None:
    status, body = _call("POST", "/sdapi/v1/options", values)
    assert status == 422 and key in json.dumps(body), body
    assert _call("GET", "/sdapi/v1/options")[1]["CLIP_stop_at_last_layers"] == 1


def test_options_apply_to_a_webui_request_that_leaves_them_out(stack: Path) -> None:
    settings = {"CLIP_stop_at_last_layers": 2, "eta_noise_seed_delta": 31337,
                "randn_source": "GPU", "eta_ancestral": 0.5, "s_noise": 0.95,
                "tiling": True}  # fmt: skip
    _call("POST", "/sdapi/v1/options", settings)
    p = _queued("/sdapi/v1/txt2img", {"prompt": "x"}).params
    assert (p.clip_skip, p.eta_noise_seed_delta, p.randn_source) == (2, 31337, "GPU")
    assert (p.eta_ancestral, p.s_noise, p.tiling) == (0.5, 0.95, True)
    assert _queued("/sdapi/v1/txt2img", {"prompt": "x", "tiling": False}).params.tiling is False
    # the request's own field, then its override_settings, win over the saved setting
    p = _queued("/sdapi/v1/txt2img", {"prompt": "x", "clip_skip": 3}).params
    assert p.clip_skip == 3
    overrides = {"eta_noise_seed_delta": 7, "randn_source": "CPU", "CLIP_stop_at_last_layers": 4}
    p = _queued("/sdapi/v1/txt2img", {"prompt": "x", "override_settings": overrides}).params
    assert (p.clip_skip, p.eta_noise_seed_delta, p.randn_source) == (4, 7, "CPU")
    status, body = _call(
        "POST", "/sdapi/v1/txt2img", {"override_settings": {"eta_noise_seed_delta": "x"}}
    )
    assert status == 422 and "eta_noise_seed_delta" in json.dumps(body)


def test_without_settings_a_webui_request_generates_as_before(stack: Path) -> None:
    p = _queued("/sdapi/v1/txt2img", {"prompt": "x"}).params
    assert (p.clip_skip, p.eta_noise_seed_delta, p.randn_source, p.tiling) == (1, 0, None, False)


def test_infotext_records_ensd_for_ancestral_samplers_and_a_chosen_rng() -> None:
    params = GenerationParams(kind=TaskKind.TXT2IMG, prompt="p", eta_noise_seed_delta=31337,
                              randn_source="CPU", clip_skip=2)  # fmt: skip
    common = dict(seed=1, subseed=1, width=64, height=64, model_name="m", model_hash="h",
                  schedule="Automatic")  # fmt: skip
    text = generation_infotext(params, sampler="Euler a", **common)  # type: ignore[arg-type]
    assert text.endswith("Clip skip: 2, ENSD: 31337, RNG: CPU")
    text = generation_infotext(params, sampler="Euler", **common)  # type: ignore[arg-type]
    assert "ENSD" not in text and "RNG: CPU" in text
    gpu = params.model_copy(update={"randn_source": "GPU", "eta_noise_seed_delta": 0})
    text = generation_infotext(gpu, sampler="Euler a", **common)  # type: ignore[arg-type]
    assert "RNG" not in text and "ENSD" not in text


# --- styles -----------------------------------------------------------------------------------

CINEMA = {"name": "cinema", "prompt": "{prompt}, film grain", "negative_prompt": "blurry"}
SHARP = {"name": "sharp", "prompt": "sharp focus", "negative_prompt": "{prompt}, lowres"}


def test_styles_crud(stack: Path) -> None:
    assert _call("GET", "/styles") == (200, [])
    assert _call("POST", "/styles", CINEMA) == (201, CINEMA)
    assert _call("POST", "/styles", CINEMA)[0] == 409
    assert _call("GET", "/styles/cinema") == (200, CINEMA)
    changed = {"prompt": "{prompt}, 35mm", "negative_prompt": ""}
    assert _call("PUT", "/styles/cinema", changed) == (200, {"name": "cinema", **changed})
    assert _call("PUT", "/styles/sharp", {"prompt": "sharp focus"})[0] == 200
    assert [s["name"] for s in _call("GET", "/sdapi/v1/prompt-styles")[1]] == ["cinema", "sharp"]
    assert _call("DELETE", "/styles/cinema")[0] == 204
    assert _call("GET", "/styles/cinema")[0] == 404
    assert _call("DELETE", "/styles/cinema")[0] == 404
    assert _call("POST", "/styles", {"name": "x", "prompt": "p" * 5000})[0] == 422
    assert _call("POST", "/styles", {"name": "", "prompt": "p"})[0] == 422


def test_styles_apply_at_submit_as_the_webui_applies_them(stack: Path) -> None:
    _call("POST", "/styles", CINEMA)
    _call("POST", "/styles", SHARP)
    body = {"prompt": "a cat", "negative_prompt": "ugly", "styles": ["cinema", "sharp"]}
    for path in ("/txt2img", "/sdapi/v1/txt2img"):
        p = _queued(path, body).params
        assert p.prompt == "a cat, film grain, sharp focus"
        assert p.negative_prompt == "ugly, blurry, lowres"
    p = _queued("/sdapi/v1/txt2img", {"prompt": "", "styles": ["cinema"]}).params
    assert p.prompt == ", film grain"  # "{prompt}" replaced by the empty prompt, as the webui
    p = _queued("/txt2img", {"styles": ["sharp"], "styles_unused": None}).params
    assert p.prompt == "sharp focus"


def test_an_unknown_style_is_a_422_naming_styles(stack: Path) -> None:
    for path in ("/txt2img", "/sdapi/v1/txt2img"):
        status, body = _call("POST", path, {"prompt": "x", "styles": ["nope"]})
        assert status == 422 and "styles" in json.dumps(body) and "nope" in json.dumps(body)
