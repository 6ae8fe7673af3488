"""Inputs that once reached a 500 are refused with a 4xx naming the field, and nothing is stored
(the local backend, handlers called with real-shaped events)."""

from __future__ import annotations

import base64
import struct
import zlib
from pathlib import Path

import pytest

from proxy_function.app import lambda_handler as proxy
from sdcore.composition import get_services
from sdcore.domain.models import TaskStatus
from sdcore.webui.png_info import read_parameters
from tests.functional.events import Context, api
from tests.functional.test_http_handlers_local import _call, _safetensors, _upload


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb(width: int = 30000, height: int = 30000, text: str | None = None) -> bytes:
    """A ~100-byte PNG that declares width x height pixels (decoding it would take GBs)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    chunks = [_chunk(b"IHDR", header)]
    if text is not None:
        chunks.append(_chunk(b"tEXt", b"parameters\0" + text.encode("latin-1")))
    chunks += [_chunk(b"IDAT", zlib.compress(b"\0" * 64)), _chunk(b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize("size", [(30000, 30000), (1, 2**31 - 1)])
@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("/img2img", lambda png: {"prompt": "x", "init_images": [png]}, "init_images"),
        ("/img2img", lambda png: {"prompt": "x", "init_images": [SMALL], "mask": png}, "mask"),
        ("/extra_images", lambda png: {"image": png}, "image"),
        ("/edits/remove", lambda png: {"image": png}, "image"),
        ("/sdapi/v1/extra-single-image", lambda png: {"image": png}, "image"),
    ],
)
def test_a_decompression_bomb_is_a_422_naming_the_field(
    local_env: Path, route: str, body, field: str, size: tuple[int, int]
) -> None:
    assert _upload("demo", _safetensors())[0] == 200
    status, answer = _call(proxy, "POST", route, body(_b64(bomb(*size))), {"Request-Type": "async"})
    assert status == 422, answer
    assert answer["detail"][0]["loc"][-1] == field or field in str(answer), answer
    assert "too large" in str(answer)
    assert get_services().tasks.list_by_status(TaskStatus.QUEUED) == []


def test_png_info_reads_the_text_without_decoding_the_pixels(
    local_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    png = bomb(text="a cat\nSteps: 20, Seed: 7")
    from PIL import Image

    def no_decoding(*args, **kwargs):
        raise AssertionError("png-info opened the image")

    monkeypatch.setattr(Image, "open", no_decoding)
    assert read_parameters(png) == "a cat\nSteps: 20, Seed: 7"
    status, answer = _call(proxy, "POST", "/sdapi/v1/png-info", {"image": _b64(png)})
    assert status == 200 and answer["info"] == "a cat\nSteps: 20, Seed: 7", answer
    assert answer["items"]["parameters"] == "a cat\nSteps: 20, Seed: 7"


SMALL = base64.b64encode(bomb(8, 8)).decode()


@pytest.mark.parametrize("route", ["/txt2img", "/sdapi/v1/txt2img", "/sdapi/v1/png-info"])
def test_json_nested_ten_thousand_deep_is_a_422(local_env: Path, route: str) -> None:
    deep = '{"prompt": "x", "alwayson_scripts": ' + "[" * 10_000 + "]" * 10_000 + "}"
    event_body = json_event(route, deep)
    answer = proxy(event_body, Context())
    assert answer["statusCode"] == 422, answer
    assert "nested 10001 levels deep; at most 64" in answer["body"]


def json_event(route: str, raw: str) -> dict:
    event = api("POST", route, None, {"Request-Type": "async"})
    event["body"] = raw
    return event


def test_options_are_validated_before_they_are_stored(local_env: Path) -> None:
    assert _upload("demo", _safetensors())[0] == 200
    refused = [
        ({"sd_vae": "v" * 2_000_000}, "sd_vae"),
        ({"sd_vae": "no-such-vae"}, "sd_vae"),
        ({"sd_model_checkpoint": "c" * 300}, "sd_model_checkpoint"),
    ]
    for body, field in refused:
        status, answer = _call(proxy, "POST", "/sdapi/v1/options", body)
        assert status == 422 and answer["detail"][0]["loc"][-1] == field, answer
    assert _call(proxy, "POST", "/sdapi/v1/options", {"sd_vae": "Automatic"})[0] == 200
    status, options = _call(proxy, "GET", "/sdapi/v1/options")
    assert status == 200 and options["sd_vae"] == "Automatic"
