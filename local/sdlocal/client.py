"""A typed HTTP client for the API (httpx): generation, tasks, downloads and model uploads.

The local stack also uses `upload_model` below to register its demo checkpoint.

    from sdlocal.client import Client

    with Client("http://127.0.0.1:7860", api_key="sk-...") as sd:
        task = sd.txt2img("a red circle", steps=20, async_=True)
        result = sd.wait(task["taskId"], on_progress=lambda p: print(p["progress"]))
        sd.download(result, "out")

Every non-2xx answer raises `ApiError`; a 429 is retried after its Retry-After (bounded).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NotRequired, TypedDict, cast
from urllib.parse import quote

import httpx

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
TaskStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


# --- wire types ------------------------------------------------------------------------------


class Timings(TypedDict):
    createdAt: str | None
    startedAt: str | None
    finishedAt: str | None


class TaskResult(TypedDict):
    """The body of /tasks/{taskId}/result and of a sync generation. A 202 answer (async, or a
    sync request that outlasted the server's wait) carries only `taskId` and `status`."""

    taskId: str
    status: TaskStatus
    images: NotRequired[list[str]]
    urls: NotRequired[list[str]]
    md5: NotRequired[list[str]]
    parameters: NotRequired[dict[str, Any]]
    info: NotRequired[dict[str, Any]]
    error: NotRequired[str | None]
    timings: NotRequired[Timings]


class ProgressState(TypedDict):
    samplingStep: int
    samplingSteps: int
    jobNo: int
    jobCount: int
    interrupted: bool


class Progress(TypedDict):
    taskId: str
    status: TaskStatus
    progress: float
    etaRelative: float
    state: ProgressState


class Cancellation(TypedDict):
    taskId: str
    status: TaskStatus
    cancelRequested: bool


class TaskSummary(TypedDict):
    taskId: str
    kind: str
    status: TaskStatus
    model: str | None
    prompt: str
    seed: int | None
    parameters: dict[str, Any]
    images: list[str]
    md5: list[str]
    error: str | None
    timings: Timings


class TaskPage(TypedDict):
    tasks: list[TaskSummary]
    cursor: str | None


class ModelInfo(TypedDict):
    """An entry of GET /models."""

    type: str
    name: str
    status: str
    sha256: str
    size: int
    registeredTime: str | None
    lastModificationTime: str | None
    error: str | None


class PendingInfo(TypedDict):
    """A version on its way in: stage uploading|verifying|importing, progress, or why it
    failed."""

    stage: str
    sha256: str | None
    size: int | None
    bytesDone: int
    progress: float | None
    source: str | None
    config: str
    error: str | None
    startedTime: str | None
    updatedTime: str | None


class AdminModel(ModelInfo):
    """An entry of GET /admin/models, and the answer of complete/import/delete/rename."""

    format: NotRequired[str | None]
    config: NotRequired[str | None]
    version: NotRequired[int]
    pending: NotRequired[PendingInfo | None]


class PartUrl(TypedDict):
    partNumber: int
    url: str


class UploadPlan(TypedDict):
    name: str
    status: str
    uploadId: str
    partSize: int
    parts: list[PartUrl]


class UploadedPart(TypedDict):
    partNumber: int
    etag: str


class UploadStatus(TypedDict):
    name: str
    uploadId: str
    partSize: int
    size: int
    sha256: str
    parts: list[UploadedPart]


class UploadResult(TypedDict):
    """What `Client.upload_model` did: the final model, the local sha256, and which parts it
    sent and which it skipped because the server already held them (a resumed upload)."""

    model: AdminModel
    sha256: str
    uploadId: str
    uploadedParts: list[int]
    skippedParts: list[int]


@dataclass(frozen=True)
class UploadEvent:
    """Reported to `upload_model`'s on_progress callback (calls are serialised).

    phase: "hash" while the local sha256 is computed (bytes_done over the file), then "part"
    once per part sent or skipped (`part_number`, `skipped`; bytes_done counts both), then
    "verify" while the server reads the file back (bytes_done as it reports it), then
    "complete" when the server has verified the file.
    """

    phase: Literal["hash", "part", "verify", "complete"]
    bytes_done: int
    bytes_total: int
    part_number: int | None = None
    skipped: bool = False
    sha256: str | None = None


# --- errors ----------------------------------------------------------------------------------


class ApiError(Exception):
    """A non-2xx answer. `status` is the HTTP status, `body` the decoded JSON (or the text)."""

    def __init__(self, status: int, body: Any, method: str = "", url: str = "") -> None:
        self.status = status
        self.body = body
        self.method = method
        self.url = url
        super().__init__(self.describe())

    @property
    def reason(self) -> str:
        body = self.body
        if isinstance(body, dict):
            if isinstance(body.get("detail"), list):  # 422: [{"loc", "msg", "type"}]
                items = []
                for item in body["detail"]:
                    if not isinstance(item, dict):
                        items.append(str(item))
                        continue
                    loc = [str(p) for p in item.get("loc", []) if p != "body"]
                    where = ".".join(loc)
                    items.append(
                        f"{where}: {item.get('msg', '')}" if where else item.get("msg", "")
                    )
                return "; ".join(items)
            if body.get("message"):
                return str(body["message"])
            if body.get("error"):
                return str(body["error"])
        text = str(body or "").strip()
        return text[:500] if text else "no details"

    def describe(self) -> str:
        where = f" ({self.method} {self.url})" if self.method else ""
        return f"HTTP {self.status}{where}: {self.reason}"


class ChecksumError(Exception):
    """A downloaded image or uploaded part does not match its announced MD5."""


# --- helpers ---------------------------------------------------------------------------------

ImageArg = str | bytes | os.PathLike[str]
ProgressCallback = Callable[[Progress], None]
UploadCallback = Callable[[UploadEvent], None]


def sha256_file(
    path: Path, on_bytes: Callable[[int], None] | None = None, chunk_size: int = 8 * 1024 * 1024
) -> str:
    """The file's SHA-256 (hex); `on_bytes(n)` is called after each chunk read."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
            if on_bytes:
                on_bytes(len(chunk))
    return digest.hexdigest()


def encode_image(image: ImageArg) -> str:
    """A path (Path/PathLike) or raw bytes become base64; a str is sent as is (base64, a data
    URL, an object key such as outputs/..., or an http URL)."""
    if isinstance(image, bytes):
        return base64.b64encode(image).decode()
    if isinstance(image, os.PathLike):
        return base64.b64encode(Path(image).read_bytes()).decode()
    return image


def _strip_etag(etag: str) -> str:
    return etag.strip().strip('"').lower()


def _retry_after(resp: httpx.Response, default: float, cap: float) -> float:
    value = resp.headers.get("Retry-After", "")
    try:
        delay = float(value)
    except ValueError:
        delay = default
    return max(0.0, min(delay, cap))


def _body(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return resp.text


def _drop_none(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


# --- the client ------------------------------------------------------------------------------


class Client:
    """The API over HTTP. Thread-safe for concurrent calls (one httpx.Client underneath)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = 60,
        max_retries: int = 5,
        max_retry_wait_s: float = 30,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_retry_wait_s = max_retry_wait_s
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(
            base_url=self.base_url, timeout=timeout, headers=headers, transport=transport
        )
        # Presigned URLs (image downloads, part uploads) carry their own authorisation: they get
        # no Authorization header (S3 refuses a request that has both).
        self._plain = httpx.Client(timeout=timeout, transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()
        self._plain.close()

    # -- plumbing

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """Send; retry 429 after Retry-After (at most max_retries times); raise ApiError."""
        attempt = 0
        while True:
            resp = self._http.request(
                method,
                path,
                json=json,
                params=_drop_none(params or {}) or None,
                headers=headers,
                timeout=timeout if timeout is not None else self.timeout,
            )
            if resp.status_code == 429 and attempt < self.max_retries:
                attempt += 1
                time.sleep(_retry_after(resp, default=float(attempt), cap=self.max_retry_wait_s))
                continue
            if resp.status_code >= 400:
                raise ApiError(resp.status_code, _body(resp), method, path)
            return resp

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    # -- generation

    def _generate(
        self,
        route: str,
        body: dict[str, Any],
        async_: bool,
        idempotency_key: str | None,
    ) -> TaskResult:
        headers = {"Request-Type": "async" if async_ else "sync"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        # a sync request may be held by the server for its whole wait (~25 s)
        timeout = self.timeout if async_ else max(self.timeout, 60)
        return cast(
            TaskResult,
            self._json("POST", route, json=_drop_none(body), headers=headers, timeout=timeout),
        )

    def txt2img(
        self,
        prompt: str,
        *,
        negative_prompt: str | None = None,
        seed: int | None = None,
        steps: int | None = None,
        cfg_scale: float | None = None,
        width: int | None = None,
        height: int | None = None,
        sampler_name: str | None = None,
        batch_size: int | None = None,
        n_iter: int | None = None,
        stable_diffusion_model: str | None = None,
        async_: bool = False,
        idempotency_key: str | None = None,
        **extra: Any,
    ) -> TaskResult:
        """POST /txt2img. Sync (default): the result, or {"taskId", "status"} if the task
        outlasted the server's wait (then `wait()` on it). async_=True: {"taskId", "status"}."""
        body = {
            "prompt": prompt,
            "negative_prompt": negative_prompt,
            "seed": seed,
            "steps": steps,
            "cfg_scale": cfg_scale,
            "width": width,
            "height": height,
            "sampler_name": sampler_name,
            "batch_size": batch_size,
            "n_iter": n_iter,
            "stable_diffusion_model": stable_diffusion_model,
            **extra,
        }
        return self._generate("/txt2img", body, async_, idempotency_key)

    def img2img(
        self,
        prompt: str,
        init_images: list[ImageArg],
        *,
        mask: ImageArg | None = None,
        denoising_strength: float | None = None,
        negative_prompt: str | None = None,
        seed: int | None = None,
        steps: int | None = None,
        cfg_scale: float | None = None,
        width: int | None = None,
        height: int | None = None,
        sampler_name: str | None = None,
        batch_size: int | None = None,
        n_iter: int | None = None,
        stable_diffusion_model: str | None = None,
        async_: bool = False,
        idempotency_key: str | None = None,
        **extra: Any,
    ) -> TaskResult:
        """POST /img2img (inpainting with `mask`). Images: see `encode_image`."""
        body = {
            "prompt": prompt,
            "init_images": [encode_image(i) for i in init_images],
            "mask": encode_image(mask) if mask is not None else None,
            "denoising_strength": denoising_strength,
            "negative_prompt": negative_prompt,
            "seed": seed,
            "steps": steps,
            "cfg_scale": cfg_scale,
            "width": width,
            "height": height,
            "sampler_name": sampler_name,
            "batch_size": batch_size,
            "n_iter": n_iter,
            "stable_diffusion_model": stable_diffusion_model,
            **extra,
        }
        return self._generate("/img2img", body, async_, idempotency_key)

    def extras(
        self,
        image: ImageArg,
        *,
        upscaling_resize: float | None = None,
        upscaler_1: str | None = None,
        async_: bool = False,
        idempotency_key: str | None = None,
        **extra: Any,
    ) -> TaskResult:
        """POST /extra_images: upscale one image."""
        body = {
            "image": encode_image(image),
            "upscaling_resize": upscaling_resize,
            "upscaler_1": upscaler_1,
            **extra,
        }
        return self._generate("/extra_images", body, async_, idempotency_key)

    def remove(
        self,
        image: ImageArg,
        *,
        prompt: str = "",
        target: str | None = None,
        mask_mode: str | None = None,
        dilate: int | None = None,
        blur: int | None = None,
        async_: bool = False,
        idempotency_key: str | None = None,
        **extra: Any,
    ) -> TaskResult:
        """POST /edits/remove: paint `target` (default person) out of the photo. The result's
        images are the edited photo, then the mask used."""
        body = {
            "image": encode_image(image),
            "prompt": prompt,
            "target": target,
            "maskMode": mask_mode,
            "dilate": dilate,
            "blur": blur,
            **extra,
        }
        return self._generate("/edits/remove", body, async_, idempotency_key)

    # -- templates and batches (JSON documents as the API answers them)

    def templates(self) -> list[dict[str, Any]]:
        """GET /templates: yours, then the shared ones."""
        return cast(list[dict[str, Any]], self._json("GET", "/templates"))

    def template(self, name: str, shared: bool = False) -> dict[str, Any]:
        params = {"shared": "true"} if shared else None
        path = f"/templates/{quote(name, safe='')}"
        return cast(dict[str, Any], self._json("GET", path, params=params))

    def put_template(
        self, name: str, document: Mapping[str, Any], shared: bool = False
    ) -> dict[str, Any]:
        """PUT /templates/{name}: its next version (with `version` in `document`: only if that
        is the stored one)."""
        params = {"shared": "true"} if shared else None
        path = f"/templates/{quote(name, safe='')}"
        return cast(dict[str, Any], self._json("PUT", path, json=dict(document), params=params))

    def delete_template(self, name: str, shared: bool = False) -> None:
        params = {"shared": "true"} if shared else None
        self._request("DELETE", f"/templates/{quote(name, safe='')}", params=params)

    def run_template(
        self,
        name: str,
        prompt: str = "",
        *,
        init_images: list[ImageArg] | None = None,
        overrides: Mapping[str, Any] | None = None,
        async_: bool = False,
        idempotency_key: str | None = None,
    ) -> TaskResult:
        """POST /templates/{name}/run: one task of the template with `prompt` merged in."""
        body = {
            "prompt": prompt,
            "init_images": [encode_image(i) for i in init_images] if init_images else None,
            "overrides": dict(overrides) if overrides else None,
        }
        path = f"/templates/{quote(name, safe='')}/run"
        return self._generate(path, body, async_, idempotency_key)

    def batch(
        self,
        prompt: str,
        *,
        templates: list[str] | None = None,
        folder: str | None = None,
        init_images: list[ImageArg] | None = None,
        grid: bool = True,
        overrides: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """POST /batches: one task per template (by name, or a folder's), `overrides` applied
        to each."""
        body = {
            "prompt": prompt,
            "templates": templates,
            "folder": folder,
            "init_images": [encode_image(i) for i in init_images] if init_images else None,
            "grid": grid,
            "overrides": dict(overrides) if overrides else None,
        }
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        answer = self._json("POST", "/batches", json=_drop_none(body), headers=headers)
        return cast(dict[str, Any], answer)

    def get_batch(self, batch_id: str) -> dict[str, Any]:
        return cast(dict[str, Any], self._json("GET", f"/batches/{quote(batch_id, safe='')}"))

    def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        path = f"/batches/{quote(batch_id, safe='')}/cancellation"
        return cast(dict[str, Any], self._json("POST", path))

    def wait_batch(
        self,
        batch_id: str,
        timeout_s: float = 3600,
        poll_s: float = 1.0,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll GET /batches/{id} until every task ended and the grid (if asked for) is in."""
        deadline = time.monotonic() + timeout_s
        while True:
            state = self.get_batch(batch_id)
            if on_progress is not None:
                on_progress(state)
            if state["status"] != "running":
                return state
            if time.monotonic() > deadline:
                raise TimeoutError(f"batch {batch_id} still running after {timeout_s:g} s")
            time.sleep(poll_s)

    # -- the prompt assistant

    def assist(
        self,
        text: str,
        *,
        template: str | None = None,
        style: str | None = None,
        language: str | None = None,
    ) -> dict[str, str]:
        """POST /prompts/assist: `{"prompt", "negative_prompt"}` for the words `text`."""
        body = _drop_none(
            {"text": text, "template": template, "style": style, "language": language}
        )
        return cast(dict[str, str], self._json("POST", "/prompts/assist", json=body))

    def assist_events(
        self,
        text: str,
        *,
        template: str | None = None,
        style: str | None = None,
        language: str | None = None,
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """POST /prompts/assist as server-sent events: `("token", {"text"})` as the reply is
        written, then `("done", {"prompt", "negative_prompt"})`. An error event raises
        ApiError with its status and body."""
        body = _drop_none(
            {"text": text, "template": template, "style": style, "language": language}
        )
        headers = {"Accept": "text/event-stream"}
        path = "/prompts/assist"
        with self._http.stream("POST", path, json=body, headers=headers) as resp:
            if resp.status_code >= 400:
                resp.read()
                raise ApiError(resp.status_code, _body(resp), "POST", path)
            name = "message"
            for line in resp.iter_lines():
                if line.startswith("event:"):
                    name = line[len("event:") :].strip()
                elif line.startswith("data:"):
                    data = json.loads(line[len("data:") :])
                    if name == "error":
                        status = int(data.pop("status", 500))
                        raise ApiError(status, data, "POST", path)
                    yield name, data

    # -- tasks

    def result(self, task_id: str) -> TaskResult:
        return cast(TaskResult, self._json("GET", f"/tasks/{quote(task_id, safe='')}/result"))

    def progress(self, task_id: str) -> Progress:
        return cast(Progress, self._json("GET", f"/tasks/{quote(task_id, safe='')}/progress"))

    def cancel(self, task_id: str) -> Cancellation:
        path = f"/tasks/{quote(task_id, safe='')}/cancellation"
        return cast(Cancellation, self._json("POST", path))

    def wait(
        self,
        task_id: str,
        on_progress: ProgressCallback | None = None,
        poll_s: float = 0.5,
        timeout_s: float | None = None,
    ) -> TaskResult:
        """Poll /progress until the task ends (calling on_progress with each answer), then
        return its result. Raises TimeoutError after timeout_s (the task goes on)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            progress = self.progress(task_id)
            if on_progress:
                on_progress(progress)
            if progress["status"] in TERMINAL_STATUSES:
                return self.result(task_id)
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"task {task_id} still {progress['status']} after {timeout_s}s")
            time.sleep(poll_s)

    def list_tasks_page(
        self, status: str | None = None, limit: int = 20, cursor: str | None = None
    ) -> TaskPage:
        """One page of GET /tasks (newest first)."""
        params = {"status": status, "limit": limit, "cursor": cursor}
        return cast(TaskPage, self._json("GET", "/tasks", params=params))

    def list_tasks(
        self, status: str | None = None, limit: int | None = None, page_size: int = 50
    ) -> Iterator[TaskSummary]:
        """The caller's tasks, newest first, following the cursor page by page; at most
        `limit` of them (all when None)."""
        cursor: str | None = None
        seen = 0
        while True:
            size = page_size if limit is None else max(1, min(page_size, limit - seen))
            page = self.list_tasks_page(status, size, cursor)
            for task in page["tasks"]:
                if limit is not None and seen >= limit:
                    return
                seen += 1
                yield task
            cursor = page.get("cursor")
            if not cursor or not page["tasks"] or (limit is not None and seen >= limit):
                return

    def download(self, result: TaskResult, out_dir: str | os.PathLike[str]) -> list[Path]:
        """GET each of the result's URLs into out_dir as <taskId>-<n>.png; when the result
        carries md5s, check them (ChecksumError on a mismatch, nothing left behind)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        md5s = result.get("md5") or []
        paths = []
        for n, url in enumerate(result.get("urls") or []):
            if not url.startswith(("http://", "https://")):
                url = self.base_url + "/" + url.lstrip("/")
            resp = self._plain.get(url)
            if resp.status_code >= 400:
                raise ApiError(resp.status_code, _body(resp), "GET", url.split("?")[0])
            data = resp.content
            if n < len(md5s) and md5s[n]:
                got = hashlib.md5(data).hexdigest()
                if got != _strip_etag(md5s[n]):
                    raise ChecksumError(
                        f"image {n} of task {result['taskId']}: md5 {got}, expected {md5s[n]}"
                    )
            path = out / f"{result['taskId']}-{n}.png"
            tmp = path.with_name(path.name + ".part")
            tmp.write_bytes(data)
            tmp.replace(path)
            paths.append(path)
        return paths

    # -- models

    def models(self) -> list[ModelInfo]:
        return cast(list[ModelInfo], self._json("GET", "/models"))

    def admin_models(self) -> list[AdminModel]:
        return cast(list[AdminModel], self._json("GET", "/admin/models"))

    def delete_model(self, name: str) -> AdminModel:
        return cast(AdminModel, self._json("DELETE", f"/admin/models/{quote(name, safe='')}"))

    def admin_model(self, name: str) -> AdminModel:
        """One model with its pending version (admin key)."""
        return cast(AdminModel, self._json("GET", f"/admin/models/{quote(name, safe='')}"))

    def rename_model(self, name: str, new_name: str) -> AdminModel:
        path = f"/admin/models/{quote(name, safe='')}/rename"
        return cast(AdminModel, self._json("POST", path, json={"newName": new_name}))

    def abort_upload(self, name: str) -> AdminModel:
        """Abort the upload or import in progress of `name`."""
        path = f"/admin/models/{quote(name, safe='')}/upload"
        return cast(AdminModel, self._json("DELETE", path))

    def wait_model(
        self,
        name: str,
        on_progress: Callable[[AdminModel], None] | None = None,
        poll_s: float = 0.5,
        timeout_s: float = 3600,
    ) -> AdminModel:
        """Poll the model until its pending version is gone (verified: it is current now) or
        failed (ApiError 409 with the reason, as a task naming it would get)."""
        deadline = time.monotonic() + timeout_s
        while True:
            model = self.admin_model(name)
            if on_progress:
                on_progress(model)
            pending = model.get("pending")
            if pending is None:
                return model
            if pending.get("error"):
                body = {"error": "conflict", "message": f"model {name}: {pending['error']}"}
                raise ApiError(409, body, "GET", f"/admin/models/{name}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"model {name} still {pending['stage']} after {timeout_s}s")
            time.sleep(poll_s)

    def import_model(
        self,
        url: str,
        name: str,
        type: str = "checkpoint",  # noqa: A002 (the API's field name)
        sha256: str | None = None,
        config: str = "auto",
        update: bool = False,
        wait: bool = True,
        on_progress: Callable[[AdminModel], None] | None = None,
    ) -> AdminModel:
        """Import a model from an http(s) URL (admin key). The server downloads and verifies it
        as a job; with `wait` poll until it is done (ApiError 409 if it was refused)."""
        body = {"name": name, "type": type, "url": url, "sha256": sha256, "config": config,
                "update": update}  # fmt: skip
        model = cast(AdminModel, self._json("POST", "/admin/models/import", json=body))
        return self.wait_model(name, on_progress) if wait else model

    def upload_status(self, name: str) -> UploadStatus:
        path = f"/admin/models/{quote(name, safe='')}/upload"
        return cast(UploadStatus, self._json("GET", path))

    def upload_model(
        self,
        path: str | os.PathLike[str],
        name: str,
        type: str = "checkpoint",  # noqa: A002 (the API's field name)
        config: str = "auto",
        parallel: int = 4,
        on_progress: UploadCallback | None = None,
        part_retries: int = 3,
        update: bool = False,
    ) -> UploadResult:
        """Upload a model file (admin key; `update`: a new version of an existing model):
        sha256 locally, register (or resume the upload in progress for the same
        name/size/sha256), PUT the parts the server does not already hold (a part is skipped
        when the server's ETag equals the local part's MD5) from `parallel` threads, each with
        its Content-MD5 and its answer's ETag checked, then complete and wait while the server
        verifies size, sha256, format and type; a refusal raises ApiError (409) with the
        reason."""
        path = Path(path)
        size = path.stat().st_size
        lock = threading.Lock()
        done = 0

        def report(event: UploadEvent) -> None:
            if on_progress:
                with lock:
                    on_progress(event)

        hashed = 0

        def on_hash(n: int) -> None:
            nonlocal hashed
            hashed += n
            report(UploadEvent("hash", hashed, size))

        sha256 = sha256_file(path, on_hash)
        report(UploadEvent("hash", size, size, sha256=sha256))

        plan = cast(
            UploadPlan,
            self._json(
                "POST",
                "/admin/models",
                json={
                    "name": name,
                    "type": type,
                    "size": size,
                    "sha256": sha256,
                    "config": config,
                    "update": update,
                },  # fmt: skip
            ),
        )
        received: dict[int, str] = {}  # part number -> the server's ETag, as it gave it
        try:
            status = self.upload_status(name)
        except ApiError as exc:
            if exc.status not in (404, 409):  # nothing received (or no upload to resume)
                raise
        else:
            if status.get("uploadId") == plan["uploadId"]:
                received = {p["partNumber"]: p["etag"] for p in status["parts"]}

        part_size = plan["partSize"]
        uploaded: list[int] = []
        skipped: list[int] = []
        etags: dict[int, str] = {}

        def send(part: PartUrl) -> None:
            nonlocal done
            number = part["partNumber"]
            offset = (number - 1) * part_size
            with path.open("rb") as fh:
                fh.seek(offset)
                data = fh.read(part_size)
            md5 = hashlib.md5(data).hexdigest()
            if number in received and _strip_etag(received[number]) == md5:
                etag, was_skipped = received[number], True
            else:
                etag, was_skipped = self._put_part(part["url"], data, md5, part_retries), False
            with lock:
                etags[number] = etag
                (skipped if was_skipped else uploaded).append(number)
                done += len(data)
                now = done
            report(UploadEvent("part", now, size, number, skipped=was_skipped))

        with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
            futures = [pool.submit(send, part) for part in plan["parts"]]
            try:
                for future in futures:
                    future.result()  # re-raise the first failure
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise

        parts = [{"partNumber": n, "etag": etags[n]} for n in sorted(etags)]
        self._json("POST", f"/admin/models/{quote(name, safe='')}/complete", json={"parts": parts})

        def on_verify(current: AdminModel) -> None:
            pending = current.get("pending")
            if pending and pending["stage"] == "verifying":
                report(UploadEvent("verify", pending["bytesDone"], size))

        model = self.wait_model(name, on_verify)
        report(UploadEvent("complete", size, size, sha256=sha256))
        return {
            "model": model,
            "sha256": sha256,
            "uploadId": plan["uploadId"],
            "uploadedParts": sorted(uploaded),
            "skippedParts": sorted(skipped),
        }

    def _put_part(self, url: str, data: bytes, md5: str, retries: int) -> str:
        """PUT one part to its presigned URL with its Content-MD5 (storage refuses a part that
        arrived damaged) and check the ETag it answers is that MD5; retry transport errors,
        5xx and 429."""
        attempt = 0
        headers = {"Content-MD5": base64.b64encode(bytes.fromhex(md5)).decode()}
        while True:
            try:
                resp = self._plain.put(
                    url, content=data, headers=headers, timeout=max(self.timeout, 300)
                )
            except httpx.TransportError:
                if attempt >= retries:
                    raise
            else:
                if resp.status_code < 400:
                    etag = resp.headers.get("ETag")
                    if not etag:
                        raise ApiError(resp.status_code, "part answer has no ETag", "PUT", "")
                    # an S3 part's ETag is its MD5 (with SSE-S3; not with SSE-KMS)
                    if re.fullmatch(r"[0-9a-f]{32}", _strip_etag(etag)) and (
                        _strip_etag(etag) != md5
                    ):
                        raise ChecksumError(f"part ETag {etag} is not the part's MD5 {md5}")
                    return etag
                retryable = resp.status_code == 429 or resp.status_code >= 500
                if not retryable or attempt >= retries:
                    raise ApiError(resp.status_code, _body(resp), "PUT", url.split("?")[0])
            attempt += 1
            time.sleep(min(2.0**attempt, 30))


def upload_model(
    base_url: str,
    path: Path,
    name: str,
    model_type: str = "checkpoint",
    config: str = "auto",
    timeout: float = 600,
    api_key: str | None = None,
) -> dict[str, Any]:
    """Upload a model file through the admin API (register, PUT the parts, complete); returns
    the model. Kept for the local stack's demo registration; see `Client.upload_model`."""
    with Client(base_url, api_key=api_key, timeout=timeout) as client:
        done = client.upload_model(path, name, model_type, config)
        return dict(done["model"])
