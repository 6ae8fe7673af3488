"""webui compatibility, users and isolation, over HTTP against the local stack: the unchanged
`webuiapi` client from PyPI, the request shapes of seeds 002 and 004, API keys, per-user
isolation, limits, idempotency, URL inputs, webhooks, history and the OpenAPI document."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import webuiapi
from PIL import Image

from sdcore.webhooks import verify
from tests.smoke import run_smoke
from tests.support_stack import RunningStack

pytestmark = pytest.mark.slow


class _Receiver(BaseHTTPRequestHandler):
    """Serves one PNG (for URL inputs) and records webhook POSTs."""

    png = b""
    posts: list[tuple[dict[str, str], bytes]] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(self.png)))
        self.end_headers()
        self.wfile.write(self.png)

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).posts.append((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()


@pytest.fixture(scope="module")
def receiver() -> Iterator[str]:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buf, format="PNG")
    _Receiver.png = buf.getvalue()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    running = RunningStack(
        tmp_path_factory.mktemp("webui"),
        SD_ALLOW_PRIVATE_URLS="true",  # the tests' own servers are on loopback
        SD_MAX_QUEUED_PER_USER="3",
    )
    (running.data_dir / "blocklist.txt").write_text("# blocked terms\nforbidden\n禁止词\n")
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def webui(stack: RunningStack) -> webuiapi.WebUIApi:
    return webuiapi.WebUIApi(
        host="127.0.0.1", port=stack.port, username="user", password=stack.credentials["user_key"]
    )


def test_webuiapi_txt2img_img2img_extras_pnginfo(webui: webuiapi.WebUIApi) -> None:
    result = webui.txt2img(prompt="a red circle", steps=3, width=64, height=64, seed=11)
    assert result.image.size == (64, 64)
    assert result.info["seed"] == 11 and "Steps: 3" in result.info["infotexts"][0]
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (8, 8, 40, 40))
    inpainted = webui.img2img(
        images=[result.image],
        mask_image=mask,
        prompt="a blue circle",
        steps=4,
        denoising_strength=0.5,
        width=64,
        height=64,
        seed=3,
    )
    assert inpainted.image.size == (64, 64)
    assert "Denoising strength: 0.5" in inpainted.info["infotexts"][0]
    up = webui.extra_single_image(image=result.image, upscaler_1="Lanczos", upscaling_resize=2)
    assert up.image.size == (128, 128)
    same = webui.extra_single_image(image=result.image)  # the client's default upscaler "None"
    assert same.image.size == (64, 64)
    info = webui.png_info(result.image)
    assert "Seed: 11" in info.info and info.json["parameters"]["Seed"] == "11"


def test_webuiapi_models_options_progress_interrupt(webui: webuiapi.WebUIApi) -> None:
    titles = webui.util_get_model_names()
    assert any(t.startswith("demo [") for t in titles)
    webui.util_set_model("demo")
    assert webui.get_options()["sd_model_checkpoint"].startswith("demo [")
    assert "Euler a" in [s["name"] for s in webui.get_samplers()]
    assert webui.get_progress()["state"]["job_count"] >= 0
    assert webui.interrupt() == {} and webui.skip() == {}


def test_interrupt_stops_only_the_callers_task(
    stack: RunningStack, webui: webuiapi.WebUIApi
) -> None:
    # Given a long generation of the user running in the background
    done: dict[str, object] = {}

    def long_call() -> None:
        try:
            done["result"] = webui.txt2img(prompt="slow", steps=150, width=512, height=512)
        except Exception as exc:  # noqa: BLE001
            done["error"] = exc

    worker = threading.Thread(target=long_call)
    worker.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and webui.get_progress()["state"]["sampling_step"] < 1:
        time.sleep(0.2)
    assert webui.get_progress()["progress"] > 0
    # When the admin interrupts, nothing of the user's stops
    admin = httpx.Client(base_url=stack.url, headers=stack.admin_headers, timeout=30)
    admin.post("/sdapi/v1/interrupt")
    assert webui.get_progress()["state"]["interrupted"] is False
    # When the user interrupts, their task ends
    webui.interrupt()
    worker.join(timeout=60)
    assert not worker.is_alive()
    history = httpx.get(f"{stack.url}/tasks?limit=1", headers=stack.headers).json()
    assert history["tasks"][0]["status"] == "cancelled"


def test_seed_002_shapes_bare_token_eas_model_and_task_tag(
    stack: RunningStack, receiver: str
) -> None:
    with httpx.Client(
        base_url=stack.url, timeout=120, headers={"Authorization": stack.credentials["user_key"]}
    ) as eas:
        resp = eas.post(
            "/sdapi/v1/txt2img?task_id=txt2img_0",
            json={
                "alwayson_scripts": {"sd_model_checkpoint": "demo.safetensors", "save_dir": "/x"},
                "steps": 2,
                "prompt": "girls",
                "batch_size": 1,
                "n_iter": 2,
                "width": 64,
                "height": 64,
                "negative_prompt": "ugly, out of frame",
            },
        )
        assert resp.status_code == 200, resp.text
        data = resp.json()
        assert len(data["images"]) == 2 and json.loads(data["info"])["task_id"] == "txt2img_0"
        png = eas.post(
            "/sdapi/v1/png-info", json={"image": "data:image/png;base64," + data["images"][0]}
        ).json()
        assert png["info"].startswith("girls\nNegative prompt: ugly, out of frame\n")
        again = eas.post("/sdapi/v1/txt2img?task_id=txt2img_0", json={"prompt": "girls"})
        assert (
            json.loads(again.json()["info"])["task_id"] == "txt2img_0"
        )  # same task, not a new one
        img = eas.post(
            "/sdapi/v1/img2img?task_id=img2img_0",
            json={
                "prompt": "cute dog",
                "steps": 4,
                "alwayson_scripts": {"image_link": f"{receiver}/boy.png"},
            },
        )
        assert img.status_code == 200, img.text


def test_seed_004_template(stack: RunningStack) -> None:
    template = {
        "prompt": (
            "In the middle of the screen, close shot,best quality, highres, masterpiece, cute"
        ),
        "negative_prompt": "two heads, two mouths, human",
        "seed": -1,
        "batch_size": 4,
        "n_iter": 1,
        "steps": 20,
        "cfg_scale": 7,
        "width": 600,
        "height": 600,
        "eta": 1,
        "sampler_index": "DPM++ SDE Karras",
    }
    with httpx.Client(base_url=stack.url, timeout=120, headers=stack.headers) as api:
        # a sampler neither the webui nor this service has: 422 listing the ones it runs
        refused = api.post("/sdapi/v1/txt2img", json={**template, "sampler_index": "DPM++ 4M"})
        assert refused.status_code == 422
        assert "DPM++ SDE" in refused.json()["detail"][0]["msg"]
        # the template's own sampler (an old suffixed name), small enough for a CPU
        ok = api.post("/sdapi/v1/txt2img", json={**template, "steps": 2, "width": 64, "height": 64})
        assert ok.status_code == 200, ok.text
        assert len(ok.json()["images"]) == 4
        info = json.loads(ok.json()["info"])
        assert "Sampler: DPM++ SDE, Schedule type: Karras," in info["infotexts"][0]
        assert info["all_seeds"] == [info["seed"] + i for i in range(4)]


def test_keys_roles_and_isolation(stack: RunningStack) -> None:
    url = stack.url
    assert httpx.get(f"{url}/models").status_code == 401
    assert httpx.get(f"{url}/models", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert httpx.get(f"{url}/admin/models", headers=stack.headers).status_code == 403
    assert (
        httpx.get(f"{url}/models", headers={"x-api-key": stack.credentials["user_key"]}).status_code
        == 200
    )
    # an admin creates a second user; their key works once shown, and is stored hashed
    created = httpx.post(f"{url}/admin/users", json={"name": "bob"}, headers=stack.admin_headers)
    assert created.status_code == 201
    bob = {"Authorization": f"Bearer {created.json()['apiKey']}"}
    assert created.json()["apiKey"] not in (stack.data_dir / "state.db").read_bytes().decode(
        "latin-1"
    )
    mine = httpx.post(f"{url}/txt2img", json={"steps": 1}, headers=stack.headers, timeout=60).json()
    for path in ("result", "progress"):
        assert httpx.get(f"{url}/tasks/{mine['taskId']}/{path}", headers=bob).status_code == 404
    assert httpx.post(f"{url}/tasks/{mine['taskId']}/cancellation", headers=bob).status_code == 404
    assert mine["images"][0].startswith("outputs/user/")
    # bob may not name the user's result as an input either
    stolen = httpx.post(f"{url}/extra_images", json={"image": mine["images"][0]}, headers=bob)
    assert stolen.status_code == 422
    listed = httpx.get(f"{url}/admin/users", headers=stack.admin_headers).json()
    assert {u["name"] for u in listed} == {"admin", "user", "bob"}
    revoked = httpx.post(f"{url}/admin/users/bob/revoke", headers=stack.admin_headers)
    assert revoked.status_code == 200 and revoked.json()["disabled"] is True
    assert httpx.get(f"{url}/models", headers=bob).status_code == 401


def test_history_idempotency_webhook_filter_and_quota(stack: RunningStack, receiver: str) -> None:
    api = httpx.Client(base_url=stack.url, timeout=120, headers=stack.headers)
    # Idempotency-Key: the same submit twice is one task
    headers = {"Idempotency-Key": "order-42", "Request-Type": "async"}
    first = api.post("/txt2img", json={"prompt": "once", "steps": 1}, headers=headers).json()
    second = api.post("/txt2img", json={"prompt": "once", "steps": 1}, headers=headers).json()
    assert first["taskId"] == second["taskId"]
    clash = api.post("/txt2img", json={"prompt": "other", "steps": 1}, headers=headers)
    assert clash.status_code == 409
    # a client-chosen taskId works the same way
    a = api.post(
        "/txt2img",
        json={"prompt": "x", "steps": 1, "taskId": "client-id-1"},
        headers={"Request-Type": "async"},
    ).json()
    b = api.post(
        "/txt2img",
        json={"prompt": "x", "steps": 1, "taskId": "client-id-1"},
        headers={"Request-Type": "async"},
    ).json()
    assert a["taskId"] == b["taskId"] == "client-id-1"
    # webhook: POSTed when the task ends, signed with the user's secret
    _Receiver.posts.clear()
    done = api.post("/txt2img", json={"prompt": "hook", "steps": 1, "webhook": f"{receiver}/hook"})
    deadline = time.monotonic() + 30
    while not _Receiver.posts and time.monotonic() < deadline:
        time.sleep(0.1)
    hdrs, body = _Receiver.posts[0]
    assert json.loads(body)["taskId"] == done.json()["taskId"]
    secret = stack.credentials["user_webhook_secret"].encode()
    assert verify(secret, body, hdrs["X-Signature-256"])
    # prompt filter: 422 naming the field, not the word
    for text, field in (("a FORBIDDEN thing", "prompt"), ("有禁止词的", "negative_prompt")):
        resp = api.post("/txt2img", json={field: text})
        assert resp.status_code == 422
        assert resp.json()["detail"][0]["loc"] == ["body", field]
        assert "forbidden" not in resp.text.lower() and "禁止词" not in resp.text
    # history: newest first, paged with an opaque cursor, with md5 of each image
    page = api.get("/tasks", params={"limit": 2}).json()
    assert len(page["tasks"]) == 2 and page["cursor"]
    nxt = api.get("/tasks", params={"limit": 2, "cursor": page["cursor"]}).json()
    seen = [t["taskId"] for t in page["tasks"] + nxt["tasks"]]
    assert len(set(seen)) == 4
    assert page["tasks"][0]["timings"]["createdAt"] >= nxt["tasks"][0]["timings"]["createdAt"]
    assert api.get("/tasks", params={"cursor": "garbage!"}).status_code == 422
    succeeded = api.get("/tasks", params={"status": "succeeded", "limit": 1}).json()["tasks"][0]
    assert len(succeeded["md5"]) == len(succeeded["images"]) >= 1
    # quota: at most 3 queued or running per user
    slow = {"prompt": "q", "steps": 150, "width": 512, "height": 512}
    codes = [api.post("/txt2img", json=slow, headers={"Request-Type": "async"}) for _ in range(4)]
    assert codes[-1].status_code == 429 and int(codes[-1].headers["Retry-After"]) >= 1
    for resp in codes:
        if resp.status_code == 202:
            api.post(f"/tasks/{resp.json()['taskId']}/cancellation")


def test_openapi_and_swagger(stack: RunningStack) -> None:
    spec = httpx.get(f"{stack.url}/openapi.json").json()
    for path in ("/txt2img", "/sdapi/v1/txt2img", "/admin/models", "/tasks/{taskId}/result"):
        assert path in spec["paths"]
    docs = httpx.get(f"{stack.url}/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_url_input_guard_refuses_private_addresses_by_default(tmp_path: Path) -> None:
    from sdcore.errors import InvalidInputError
    from sdcore.guards.netguard import check_url

    with pytest.raises(InvalidInputError):
        check_url("http://169.254.169.254/latest/meta-data", allow_private=False, field="image")
    with pytest.raises(InvalidInputError):
        check_url("http://127.0.0.1:1/x.png", allow_private=False, field="image")


def _b64(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_a_new_users_first_steps(stack: RunningStack, receiver: str) -> None:
    """The flow `pytest -m aws` runs against a real deployment (tests/smoke.py), here."""
    _Receiver.posts.clear()
    report = run_smoke(
        stack.url,
        stack.credentials["admin_key"],
        f"{receiver}/hook",
        lambda: list(_Receiver.posts),
        timeout_s=120,
    )
    assert report.async_task and report.sync_task
    assert set(report.seconds) == {"upload", "async", "webhook", "sync", "delete"}
