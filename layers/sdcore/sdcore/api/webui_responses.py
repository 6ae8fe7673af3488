"""Response bodies of the webui-compatible routes (`/sdapi/v1`), in the webui's own shapes:
images as plain base64, `info` as a JSON string, listings as the webui lists them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class Empty(BaseModel):
    """The webui answers these calls with an empty JSON object."""

    model_config = ConfigDict(extra="forbid")


class Images(BaseModel):
    images: list[str]  # plain base64 PNGs (a data-URL prefix would break webui clients)
    parameters: dict[str, Any]  # the request as sent
    info: str  # JSON: seeds, sizes, infotexts, task_id


class ExtrasImage(BaseModel):
    html_info: str = ""
    image: str


class ExtrasImages(BaseModel):
    html_info: str = ""
    images: list[str]


class Interrogation(BaseModel):
    caption: str  # clip: "caption, medium, by artist, movement, flavors"; deepdanbooru: tags


class PngInfo(BaseModel):
    info: str
    items: dict[str, str]
    parameters: dict[str, Any]


class ProgressState(BaseModel):
    skipped: bool
    interrupted: bool
    job: str
    job_count: int
    job_timestamp: str = "0"
    job_no: int
    sampling_step: int
    sampling_steps: int


class Progress(BaseModel):
    progress: float
    eta_relative: float
    state: ProgressState
    current_image: str | None
    textinfo: str | None = None


class SdModel(BaseModel):
    title: str
    model_name: str
    hash: str
    sha256: str
    filename: str
    config: str | None


class SdVae(BaseModel):
    model_name: str
    filename: str


class Lora(BaseModel):
    name: str
    alias: str
    path: str
    metadata: dict[str, Any]


class Embedding(BaseModel):
    step: int | None = None
    sd_checkpoint: str | None = None
    sd_checkpoint_name: str | None = None
    shape: Any = None
    vectors: Any = None


class Embeddings(BaseModel):
    loaded: dict[str, Embedding]
    skipped: dict[str, Embedding] = {}


class Upscaler(BaseModel):
    name: str
    model_name: str | None
    model_path: str | None
    model_url: str | None = None
    scale: float


class ControlnetModels(BaseModel):
    model_list: list[str]


class Sampler(BaseModel):
    name: str
    aliases: list[str]
    options: dict[str, Any]


class Scheduler(BaseModel):
    name: str
    label: str
    aliases: list[str] | None
    default_rho: float
    need_inner_model: bool


class Scripts(BaseModel):
    txt2img: list[str] = []
    img2img: list[str] = []


class Options(BaseModel):
    """Every webui setting (see sdcore.webui.options); these are the ones clients read most."""

    model_config = ConfigDict(extra="allow")
    sd_model_checkpoint: str
    sd_vae: str
    samples_format: str = "png"
    sd_checkpoint_hash: str


class Hypernetwork(BaseModel):
    name: str
    path: str | None


class FaceRestorer(BaseModel):
    name: str
    cmd_dir: str | None


class Realesrgan(BaseModel):
    name: str
    path: str | None
    scale: int | None


class PromptStyle(BaseModel):
    name: str
    prompt: str | None
    negative_prompt: str | None


class Memory(BaseModel):
    ram: dict[str, Any]  # free, used, total (bytes), or error
    cuda: dict[str, Any]  # system/active/allocated/... (bytes), or error


class Extension(BaseModel):
    name: str
    remote: str
    branch: str
    commit_hash: str
    version: str
    commit_date: str
    enabled: bool


class ScriptArg(BaseModel):
    label: str | None = None
    value: Any = None
    minimum: Any = None
    maximum: Any = None
    step: Any = None
    choices: list[str] | None = None


class ScriptInfo(BaseModel):
    name: str | None = None
    is_alwayson: bool | None = None
    is_img2img: bool | None = None
    args: list[ScriptArg]


class LatentUpscaleMode(BaseModel):
    name: str


class SdModule(BaseModel):
    model_name: str
    filename: str
