"""Infotext (build, parse, paste into a request) and the webui routes of issue 6's generation
fields: samplers, schedulers, png-info, 422s naming the field, skip. No torch needed."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
from PIL import Image
from pydantic import ValidationError

from proxy_function.app import lambda_handler as proxy
from sdcore.api.schemas import Img2ImgBody, Txt2ImgBody
from sdcore.composition import get_services
from sdcore.domain.models import (
    GenerationParams,
    Model,
    ModelStatus,
    TaskChanges,
    TaskKind,
    TaskStatus,
    TaskTransition,
)
from sdcore.errors import InvalidInputError
from sdcore.usecases.tasks import request_skip
from sdcore.webui.infotext import (
    build_infotext,
    generation_infotext,
    parse_infotext,
    request_fields,
)
from sdcore.webui.png_info import png_bytes
from sdcore.webui.samplers import SAMPLERS, SCHEDULES
from tests.functional.events import Context, api

# Infotexts as webui versions write them (1.10 with schedule type, LoRA and hires fields; 1.5
# with a suffixed sampler, variation and resize; a multi-line prompt with a quoted value).
WEBUI_110 = (
    "masterpiece, best quality, (blue eyes:1.2), <lora:add_detail:0.5>\n"
    "Negative prompt: (worst quality:1.4), lowres, bad anatomy\n"
    "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 3052196349, "
    "Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.5, "
    'Clip skip: 2, Hires upscale: 2, Hires upscaler: Latent, Lora hashes: "add_detail: '
    '7c6bad76eb54", Version: v1.10.1'
)
WEBUI_15 = (
    "a photo of an astronaut riding a horse on mars\n"
    "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 1234, Size: 512x512, "
    "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Variation seed: 42, "
    "Variation seed strength: 0.3, Seed resize from: 768x512, ENSD: 31337, Version: v1.5.1"
)
WEBUI_MULTILINE = (
    "a cat,\nsitting on a chair\n"
    "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 64x64, Model: demo, "
    'TI hashes: "easynegative: c74b4e810b03"'
)


def test_parse_webui_110_sample() -> None:
    fields = parse_infotext(WEBUI_110)
    assert fields["Prompt"] == "masterpiece, best quality, (blue eyes:1.2), <lora:add_detail:0.5>"
    assert fields["Negative prompt"] == "(worst quality:1.4), lowres, bad anatomy"
    assert fields["Sampler"] == "DPM++ 2M" and fields["Schedule type"] == "Karras"
    assert (fields["Size-1"], fields["Size-2"]) == ("512", "768") and "Size" not in fields
    assert fields["Lora hashes"] == "add_detail: 7c6bad76eb54"  # unquoted
    assert fields["Clip skip"] == "2" and fields["Version"] == "v1.10.1"
    assert fields["Hires upscaler"] == "Latent"


def test_parse_webui_15_sample_splits_the_suffixed_sampler() -> None:
    fields = parse_infotext(WEBUI_15)
    assert fields["Sampler"] == "DPM++ 2M" and fields["Schedule type"] == "Karras"
    assert fields["Negative prompt"] == "" and fields["Clip skip"] == "1"  # webui defaults
    assert (fields["Seed resize from-1"], fields["Seed resize from-2"]) == ("768", "512")
    assert fields["Variation seed"] == "42" and fields["ENSD"] == "31337"


def test_parse_multiline_prompt_and_text_without_parameters() -> None:
    fields = parse_infotext(WEBUI_MULTILINE)
    assert fields["Prompt"] == "a cat,\nsitting on a chair"
    assert fields["TI hashes"] == "easynegative: c74b4e810b03"
    assert parse_infotext("just a prompt") == {
        "Prompt": "just a prompt",
        "Negative prompt": "",
        "Clip skip": "1",
        "Schedule type": "Automatic",
    }


def test_build_quotes_values_with_commas_colons_and_newlines() -> None:
    text = build_infotext(
        "p", "", [("Steps", 20), ("Lora hashes", "a: 1, b: 2"), ("Gone", None), ("Note", 'x"y')]
    )
    assert text == 'p\nSteps: 20, Lora hashes: "a: 1, b: 2", Note: x"y'
    assert parse_infotext(text)["Lora hashes"] == "a: 1, b: 2"


def test_our_infotext_round_trips_into_the_same_request() -> None:
    params = GenerationParams(
        kind=TaskKind.IMG2IMG,
        prompt="a (red:1.2) circle\nsecond line",
        negative_prompt="blurry, dark",
        steps=12,
        guidance=5.5,
        sampler="DPM++ SDE",
        scheduler="Exponential",
        subseed_strength=0.25,
        seed_resize_from_w=96,
        seed_resize_from_h=64,
        clip_skip=2,
        denoising_strength=0.6,
        mask_blur=3,
    )
    text = generation_infotext(
        params,
        seed=77,
        subseed=88,
        width=64,
        height=48,
        model_name="demo",
        model_hash="ab" * 32,
        sampler="DPM++ SDE",
        schedule="Exponential",
        inpaint=True,
        extra=[("Hires upscale", 2)],
    )
    assert text.splitlines()[-1] == (
        "Steps: 12, Sampler: DPM++ SDE, Schedule type: Exponential, CFG scale: 5.5, Seed: 77, "
        "Size: 64x48, Model hash: ababababab, Model: demo, Variation seed: 88, "
        "Variation seed strength: 0.25, Seed resize from: 96x64, Denoising strength: 0.6, "
        "Clip skip: 2, Mask blur: 3, Hires upscale: 2"
    )
    fields = request_fields(text, img2img=True)
    assert fields == {
        "prompt": params.prompt,
        "negative_prompt": "blurry, dark",
        "steps": 12,
        "sampler_name": "DPM++ SDE",
        "scheduler": "Exponential",
        "cfg_scale": 5.5,
        "seed": 77,
        "width": 64,
        "height": 48,
        "subseed": 88,
        "subseed_strength": 0.25,
        "seed_resize_from_w": 96,
        "seed_resize_from_h": 64,
        "clip_skip": 2,
        "denoising_strength": 0.6,
        "mask_blur": 3,
    }
    plain = text.replace(", Hires upscale: 2", "")
    assert "denoising_strength" not in request_fields(plain)  # txt2img takes no img2img fields
    # ... but with hires fields the strength is the hires pass's, and the fix is on (webui paste)
    hires = request_fields(text)
    assert (hires["enable_hr"], hires["hr_scale"], hires["denoising_strength"]) == (True, 2, 0.6)


def test_a_pasted_infotext_fills_what_the_request_leaves_out() -> None:
    body = Txt2ImgBody(infotext=WEBUI_110, seed=7, width=64)
    params, _, _ = body.to_domain()
    assert params.seed == 7 and params.width == 64  # explicit fields win
    assert params.height == 768 and params.steps == 28 and params.guidance == 7.0
    assert (params.sampler, params.scheduler, params.clip_skip) == ("DPM++ 2M", "Karras", 2)
    assert params.negative_prompt == "(worst quality:1.4), lowres, bad anatomy"
    # its hires fields turn the hires fix on, with the infotext's strength
    assert (params.hires, params.hr_scale, params.hr_upscaler) == (True, 2.0, "Latent")
    assert params.denoising_strength == 0.5
    img = Img2ImgBody(infotext=WEBUI_15, init_images=["outputs/u/t/0.png"])
    p2, _, _ = img.to_domain()
    assert (p2.sampler, p2.scheduler, p2.subseed, p2.subseed_strength) == (
        "DPM++ 2M",
        "Karras",
        42,
        0.3,
    )
    assert (p2.seed_resize_from_w, p2.seed_resize_from_h) == (768, 512)
    # the webui's override_settings spelling of clip skip
    assert Txt2ImgBody(override_settings={"CLIP_stop_at_last_layers": 3}).clip_skip == 3


def test_bad_names_are_field_errors() -> None:
    with pytest.raises(ValidationError) as err:
        Txt2ImgBody(sampler_name="Euler b")
    assert err.value.errors()[0]["loc"] == ("sampler_name",)
    assert "DPM++ 2M SDE" in str(err.value)
    with pytest.raises(ValidationError) as err:
        Txt2ImgBody(scheduler="Aligned Steps")
    assert err.value.errors()[0]["loc"] == ("scheduler",)
    with pytest.raises(InvalidInputError) as inv:
        Txt2ImgBody(infotext="p\nSteps: 2, Sampler: Euler, Schedule type: Wavy, Seed: 1")
    assert inv.value.field == "infotext"
    # values that are not numbers are left out, as the webui's paste leaves them
    odd = request_fields("p\nSteps: many, CFG scale: nan, Seed: 1e999, Size: 64x64")
    assert odd["width"] == 64 and "steps" not in odd and "seed" not in odd
    suffixed, _, _ = Txt2ImgBody(sampler_name="DPM++ 2M SDE Karras").to_domain()
    assert (suffixed.sampler, suffixed.scheduler) == ("DPM++ 2M SDE", "Karras")


# --- the routes -------------------------------------------------------------------------------


def _call(method: str, path: str, body: object = None) -> tuple[int, object]:
    resp = proxy(api(method, path, body), Context())
    return resp["statusCode"], json.loads(resp["body"]) if resp.get("body") else None


def test_samplers_and_schedulers_list_what_runs(local_env: Path) -> None:
    status, samplers = _call("GET", "/sdapi/v1/samplers")
    assert status == 200 and [s["name"] for s in samplers] == list(SAMPLERS)
    by_name = {s["name"]: s for s in samplers}
    assert by_name["DPM++ 2M"]["options"] == {"scheduler": "karras"}
    assert "k_euler_a" in by_name["Euler a"]["aliases"]
    status, schedulers = _call("GET", "/sdapi/v1/schedulers")
    assert [s["label"] for s in schedulers] == [s.label for s in SCHEDULES]
    assert schedulers[2] == {
        "name": "karras",
        "label": "Karras",
        "aliases": None,
        "default_rho": 7.0,
        "need_inner_model": False,
    }


def test_unknown_sampler_and_schedule_are_422s_naming_the_field(local_env: Path) -> None:
    status, body = _call("POST", "/sdapi/v1/txt2img", {"sampler_name": "Euler b"})
    assert status == 422 and body["detail"][0]["loc"] == ["body", "sampler_name"]
    assert "DPM++ SDE" in body["detail"][0]["msg"]
    status, body = _call("POST", "/txt2img", {"scheduler": "Polynomial"})
    assert status == 422 and body["detail"][0]["loc"] == ["body", "scheduler"]
    status, body = _call("POST", "/txt2img", {"infotext": "p\nSteps: 1, Schedule type: x, Seed: 1"})
    assert status == 422 and body["detail"][0]["loc"] == ["body", "infotext"]


def test_png_info_parses_a_webui_png(local_env: Path) -> None:
    data = png_bytes(Image.new("RGB", (4, 4)), WEBUI_110)
    status, body = _call("POST", "/sdapi/v1/png-info", {"image": base64.b64encode(data).decode()})
    assert status == 200 and body["info"] == WEBUI_110
    assert body["parameters"]["Schedule type"] == "Karras"
    assert body["parameters"]["Size-2"] == "768"


def test_skip_marks_the_running_task_and_progress_shows_the_preview(local_env: Path) -> None:
    svc = get_services()
    svc.models.create(
        Model(name="demo", status=ModelStatus.UNLOADED, sha256="0" * 64, size=1, key="k",
              registered_at=0, modified_at=0)
    )  # fmt: skip
    status, queued = _call("POST", "/txt2img", {"prompt": "x", "n_iter": 2})
    assert status == 202
    task_id = queued["taskId"]
    svc.tasks.transition(
        task_id, TaskTransition.between({TaskStatus.QUEUED}, TaskStatus.RUNNING, started_at=1.0)
    )
    svc.tasks.update_running(task_id, TaskChanges(current_image="aGk=", job_count=2))
    assert _call("POST", "/sdapi/v1/skip") == (200, {})
    assert svc.tasks.get(task_id).skip_requests == 1
    status, progress = _call("GET", "/sdapi/v1/progress")
    assert progress["current_image"] == "aGk=" and progress["state"]["skipped"] is True
    status, native = _call("GET", f"/tasks/{task_id}/progress")
    assert native["currentImage"] == "aGk=" and native["state"]["skipped"] is True
    request_skip(svc, task_id)
    assert svc.tasks.get(task_id).skip_requests == 2


def test_long_lines_parse_in_linear_time() -> None:
    # a 40,000-character line without a colon once took minutes (regex backtracking)
    started = time.perf_counter()
    assert parse_infotext("a" * 40_000)["Prompt"] == "a" * 40_000
    parse_infotext("a b-c/d " * 5_000 + ", x: y")
    assert request_fields("p\n" + "a" * 39_000) == {"prompt": "p\n" + "a" * 39_000,
                                                   "negative_prompt": "", "clip_skip": 1,
                                                   "scheduler": "Automatic"}  # fmt: skip
    assert time.perf_counter() - started < 2
