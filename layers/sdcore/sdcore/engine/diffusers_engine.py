"""The diffusers implementation of the engine port: SD 1.x, 2.x and XL checkpoints, webui semantics.

Load once (`load`), run per task (`run`). Webui vocabulary comes in through `GenerationParams`;
diffusers names stay in this package. Not thread-safe: one `run` at a time per engine (each
inference worker serves one task at a time).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from PIL import Image

from sdcore.domain.models import GenerationParams, TaskKind
from sdcore.engine.checkpoints import peak_memory_mb, pick_device
from sdcore.engine.controlnet import ControlNetCache
from sdcore.engine.extras import FaceRestorer, restore_faces, upscale
from sdcore.engine.face_detect import default_detector
from sdcore.engine.face_restore import FaceDetector, FaceRestorerCache
from sdcore.engine.interrogate import InterrogatorCache
from sdcore.engine.jobs import size
from sdcore.engine.model import LoadedModel, load_model
from sdcore.engine.pipeline import generate
from sdcore.engine.removal import remove
from sdcore.engine.report import resample_info
from sdcore.engine.segmenters import SegmenterCache
from sdcore.engine.upscalers import UpscalerCache
from sdcore.errors import InvalidInputError
from sdcore.ports import Engine, EngineInputs, EngineResult, StepCallback
from sdcore.webui.infotext import build_infotext
from sdcore.webui.samplers import NO_UPSCALER

log = logging.getLogger(__name__)


class DiffusersEngine(Engine):
    """One SD 1.x, 2.x or XL checkpoint: a diffusers folder or a single LDM-layout
    `.safetensors` file.

    Parameters
    ----------
    model_path
        A diffusers folder (with `model_index.json`) or a `.safetensors` single-file checkpoint.
    model_name, model_hash
        What the infotext and info report (`Model`, `Model hash` = first 10 hex digits).
    config_dir
        For single files: the local diffusers-style config folder (JSON configs + tokenizer);
        default (None): the bundled one of the file's architecture (`sd15`, `sd2`, `sdxl`),
        told from its keys; for SD 2.x the webui's test picks v-prediction at 768 px or
        epsilon at 512 px. Never fetched from the network.
    device
        "auto" (cuda fp16, else mps, else cpu fp32) or an explicit torch device string.
    allow_pickle
        Load a torch `.ckpt` single file (through torch's weights_only unpickler); refused
        otherwise.
    """

    def __init__(
        self,
        model_path: Path,
        model_name: str,
        model_hash: str,
        config_dir: Path | None = None,
        device: str = "auto",
        allow_pickle: bool = False,
        face_detector: FaceDetector | None = None,
    ) -> None:
        self.model_path = Path(model_path)
        self.model_name = model_name
        self.model_hash = model_hash
        self.config_dir = Path(config_dir) if config_dir is not None else None
        self.device_preference = device
        self.allow_pickle = allow_pickle
        self.device = "unloaded"
        self.dtype: torch.dtype = torch.float32
        self.load_s: float | None = None
        self._model: LoadedModel | None = None
        self._upscalers = UpscalerCache()
        self._controlnets = ControlNetCache()  # ControlNet models, loaded once
        self._interrogators = InterrogatorCache()
        self._segmenters = SegmenterCache()  # removals' segmenters, created when first needed
        # the shipped face detector unless one is given, created when a task first needs it
        self._faces = FaceRestorerCache(face_detector, find_detector=default_detector)

    def load(self) -> None:
        """Load the weights (local files only) and build the three pipelines on shared weights.

        Raises
        ------
        FileNotFoundError
            `model_path` does not exist.
        ValueError
            `model_path` is neither a diffusers folder nor a `.safetensors` file (nor an
            allowed `.ckpt`), or not an SD 1.x, 2.x or XL checkpoint.
        """
        started = time.perf_counter()
        self.device, self.dtype = pick_device(self.device_preference)
        self._model = load_model(
            self.model_path, self.config_dir, self.device, self.dtype, self.allow_pickle
        )
        self.load_s = time.perf_counter() - started
        log.info("loaded %s on %s in %.2fs", self.model_name, self.device, self.load_s)

    @property
    def model(self) -> LoadedModel:
        """The loaded checkpoint (pipelines, encoder, networks, scheduler config)."""
        if self._model is None:
            raise RuntimeError("DiffusersEngine.run before load()")
        return self._model

    @property
    def architecture(self) -> str:
        """sd1, sd2 or sdxl once loaded."""
        return self._model.architecture if self._model is not None else "unloaded"

    @property
    def native_size(self) -> tuple[int, int]:
        """(width, height) the checkpoint was trained at."""
        return self.model.native_size

    def run(
        self, params: GenerationParams, inputs: EngineInputs, on_step: StepCallback
    ) -> EngineResult:
        """Generate `batch_size x batches` images (or one resampled image for extras), with the
        peak memory in `info["peak_memory_mb"]`: the task's peak on CUDA, the worker process's
        peak resident size so far on CPU and MPS.

        Raises
        ------
        InvalidInputError
            A parameter the model cannot honour; `field` is the webui name of the culprit.
        """
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        result = self._run(params, inputs, on_step)
        result.info["peak_memory_mb"] = round(peak_memory_mb(self.device), 1)
        return result

    def _run(
        self, params: GenerationParams, inputs: EngineInputs, on_step: StepCallback
    ) -> EngineResult:
        if params.kind is TaskKind.INTERROGATE:
            return self._interrogate(params, inputs)
        model = self.model
        if params.kind is TaskKind.EXTRAS:
            return self._extras(params, inputs)
        if params.remove is not None:  # segment, then inpaint the mask (engine.removal)
            segmenter = self._segmenters.get(inputs.segmenter, self.device)
            inpaint = lambda job, found: self._run(job, found, on_step)  # noqa: E731
            return remove(params, inputs, segmenter, size(model, params), inpaint)
        pipes = [model.txt2img, model.img2img, model.inpaint]
        first_size = size(model, params)
        with (
            model.networks.applied(params.prompt, inputs, pipes),
            self._controlnets.applied(model.txt2img.unet, params, inputs, first_size) as control,
        ):
            result = generate(
                model,
                params,
                inputs,
                on_step,
                lambda: self._upscalers.models(params, inputs, self.device),
                (self.model_name, self.model_hash, self.device),
            )
        for name, _visibility in params.face_restorers:  # each picture, after decoding
            file = inputs.face_restorers[name]
            result.images = self._faces.restore(
                file, "restore_faces", self.device, result.images, params.codeformer_weight
            )
        if control is not None:  # the control maps asked for, after the pictures
            maps = control.maps()
            result.images.extend(maps)
            result.infotexts.extend("" for _ in maps)
        return result

    def _interrogate(self, params: GenerationParams, inputs: EngineInputs) -> EngineResult:
        """A caption or tags of the task's image, in `info["caption"]`; no pictures."""
        if params.interrogate is None or not inputs.init_images:
            raise InvalidInputError("image", "interrogate needs an image")
        started = time.perf_counter()
        text = self._interrogators.run(
            params.interrogate, inputs.interrogator, inputs.init_images[0], self.device
        )
        info = {"caption": text, "time_s": round(time.perf_counter() - started, 3)}
        return EngineResult(images=[], infotexts=[], info=info)

    def _restorer(self, params: GenerationParams, inputs: EngineInputs) -> FaceRestorer:
        """Extras' face restorers: (name, image) -> the image restored."""
        fields = {"GFPGAN": "gfpgan_visibility", "CodeFormer": "codeformer_visibility"}
        weight = params.codeformer_weight

        def run(name: str, image: Image.Image) -> Image.Image:
            file, field = inputs.face_restorers[name], fields.get(name, "restore_faces")
            return self._faces.restore(file, field, self.device, [image], weight)[0]

        return run

    def _extras(self, params: GenerationParams, inputs: EngineInputs) -> EngineResult:
        """The webui's extras upscale of one image; upscaler "None" gives it back as it was."""
        started = time.perf_counter()
        if not inputs.init_images:
            raise InvalidInputError("image", "extras needs an image")
        source = inputs.init_images[0].convert("RGB")
        image: Image.Image
        if params.upscaler == NO_UPSCALER:
            image, faces = restore_faces(source, params, self._restorer(params, inputs))
            text = build_infotext("", "", [("Postprocess upscaler", NO_UPSCALER), *faces])
            info = resample_info(image, NO_UPSCALER, self.model_name, self.model_hash, started)
            info["infotexts"] = [text]
            return EngineResult(images=[image], infotexts=[text], info=info)
        models = self._upscalers.models(params, inputs, self.device)
        image, fields = upscale(source, params, models)
        image, faces = restore_faces(image, params, self._restorer(params, inputs))
        text = build_infotext("", "", [*fields, *faces])
        info = resample_info(image, params.upscaler, self.model_name, self.model_hash, started)
        info.update(source_width=source.width, source_height=source.height, infotexts=[text])
        return EngineResult(images=[image], infotexts=[text], info=info)
