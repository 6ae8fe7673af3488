"""Property-based API testing against one local stack (dispatch paused: tasks are accepted and
wait, so no CPU goes to generation), where no answer may be a 5xx:

- schemathesis generates requests from /openapi.json (admin key, so every route is reachable);
- hypothesis sends what a schema does not describe: image fields holding truncated, corrupt,
  oversized or decompression-bomb images in every encoding the API takes, and bodies nested
  thousands deep.
"""

from __future__ import annotations

import base64
import io
import json
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.support_stack import RunningStack

pytestmark = pytest.mark.slow
# The webui generation routes wait for their images like the webui; with fuzzed sizes and step
# counts that is minutes on a CPU. They are driven by the webuiapi tests instead.
EXCLUDE = r"^/sdapi/v1/(txt2img|img2img|extra-.*)$"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    running = RunningStack(
        tmp_path_factory.mktemp("fuzz"),
        SD_SYNC_TIMEOUT="0.2",  # sync generation answers 202 at once instead of waiting
        SD_MAX_QUEUED_PER_USER="100000",
        SD_MAX_CONCURRENCY="0",  # accepted tasks wait: the fuzz measures the edge, not the GPU
    ).start()
    yield running
    running.stop()


def test_no_server_errors(stack: RunningStack, tmp_path: Path) -> None:
    schemathesis = Path(sys.executable).with_name("schemathesis")
    run = subprocess.run(
        [
            str(schemathesis),
            "run",
            f"{stack.url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "5",
            "--exclude-path-regex",
            EXCLUDE,
            "-H",
            f"Authorization: Bearer {stack.credentials['admin_key']}",
            "--workers",
            "1",
            "--seed",
            "1",
            "--no-color",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=420,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "passed" in run.stdout


# --- images and nesting ------------------------------------------------------------------------
def _png(width: int = 16, height: int = 16) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


def _declaring(width: int, height: int) -> bytes:
    """A valid small PNG whose header declares another size (CRC fixed): a bomb when large."""
    data = bytearray(_png())
    ihdr = 8 + 8  # signature, then the IHDR chunk's length and type
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13]))
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


SIDES = st.sampled_from([0, 1, 7, 64, 30000, 2**31 - 1])
IMAGE_BYTES = st.one_of(
    st.just(_png()),
    st.builds(_declaring, SIDES, SIDES),
    st.integers(0, len(_png()) - 1).map(lambda n: _png()[:n]),  # truncated
    st.binary(max_size=64),
    st.binary(max_size=32).map(lambda b: b"\x89PNG\r\n\x1a\n" + b),
    st.binary(max_size=32).map(lambda b: b"\xff\xd8\xff\xe0" + b),  # a JPEG's start
    st.binary(max_size=32).map(lambda b: b"GIF89a" + b),
)


@st.composite
def image_field(draw: st.DrawFn) -> str:
    data = draw(IMAGE_BYTES)
    encoded = base64.b64encode(data).decode()
    how = draw(st.sampled_from(["plain", "data-url", "bad-padding", "junk"]))
    if how == "data-url":
        mime = draw(st.sampled_from(["image/png", "image/jpeg", "text/plain", ""]))
        return f"data:{mime};base64,{encoded}"
    if how == "bad-padding":
        return encoded.rstrip("=") + "=" * draw(st.integers(0, 3))
    if how == "junk":
        return draw(st.text(max_size=40))
    return encoded


def _nested(depth: int, kind: str) -> str:
    """JSON nested `depth` deep (built as text: the encoder would recurse too)."""
    if kind == "list":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


# (method, path, body with the image in it): every route where an image enters
IMAGE_ROUTES = [
    ("/img2img", lambda im, mask: {"init_images": [im], "mask": mask, "steps": 1}),
    ("/extra_images", lambda im, _: {"image": im}),
    ("/edits/remove", lambda im, _: {"image": im, "steps": 1}),
    ("/sdapi/v1/png-info", lambda im, _: {"image": im}),
]


def test_images_and_nesting_never_reach_a_server_error(stack: RunningStack) -> None:
    # a user of its own: the schema fuzz before it may have revoked the stack's user
    made = httpx.post(f"{stack.url}/admin/users", headers=stack.admin_headers, timeout=60,
                      json={"name": "images-fuzz", "role": "user"})  # fmt: skip
    assert made.status_code == 201, made.text
    headers = {"Authorization": f"Bearer {made.json()['apiKey']}"}
    client = httpx.Client(base_url=stack.url, headers=headers, timeout=60)
    failures: list[str] = []

    def check(method: str, path: str, body: str) -> None:
        headers = {"Content-Type": "application/json", "Request-Type": "async"}
        resp = client.request(method, path, content=body, headers=headers)
        if resp.status_code >= 500:
            failures.append(f"{method} {path} {body[:200]!r} -> {resp.status_code} {resp.text}")

    @settings(
        max_examples=60,
        deadline=None,
        derandomize=True,  # the same examples every run: a failure is a finding, not noise
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    @given(
        st.sampled_from(IMAGE_ROUTES),
        image_field(),
        st.one_of(st.none(), image_field()),
    )
    def images(route, image: str, mask: str | None) -> None:
        path, build = route
        check("POST", path, json.dumps(build(image, mask)))

    images()
    for depth in (100, 5000, 100_000):
        for kind in ("list", "dict"):
            nested = _nested(depth, kind)
            check("POST", "/txt2img", f'{{"prompt": "x", "styles": {nested}}}')
            check("POST", "/sdapi/v1/options", f'{{"sd_vae": {nested}}}')
            check("POST", "/sdapi/v1/png-info", nested)
    assert client.get("/models").status_code == 200  # and the stack still answers
    assert not failures, "\n".join(failures[:5])
