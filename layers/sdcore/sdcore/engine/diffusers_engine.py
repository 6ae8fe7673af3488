"""The diffusers implementation of the engine port: SD 1.x, 2.x and XL checkpoints, webui semantics.

Load once (`load`), run per task (`run`). Webui vocabulary comes in through `GenerationParams`;
diffusers names stay in this package. Not thread-safe: one `run` at a time per engine (each
inference worker serves one task at a time).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import torch
from PIL import Image

from sdcore.domain.models import GenerationParams, TaskKind
from sdcore.engine.batch import (
    Member,
    generate_batch,
    groups,
    prepare_all,
    shared_inputs,
    sub_batches,
)
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
from sdcore.errors import DomainError, InvalidInputError
from sdcore.ports import BatchItem, Engine, EngineInputs, EngineResult, StepCallback
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
        self._restore_faces(params, inputs, result)
        if control is not None:  # the control maps asked for, after the pictures
            maps = control.maps()
            result.images.extend(maps)
            result.infotexts.extend("" for _ in maps)
        return result

    def _restore_faces(
        self, params: GenerationParams, inputs: EngineInputs, result: EngineResult
    ) -> None:
        for name, _visibility in params.face_restorers:  # each picture, after decoding
            file = inputs.face_restorers[name]
            result.images = self._faces.restore(
                file, "restore_faces", self.device, result.images, params.codeformer_weight
            )

    def run_batch(self, items: Sequence[BatchItem]) -> list[EngineResult | DomainError]:
        """Generate tasks of equal `batch_key` as one pipeline call each group
        (`sdcore.engine.batch`): one answer per item, in order, each as `run` gives it alone
        (its pictures equal up to float rounding) with `info["batch"]`: `size` (tasks in its
        call), `images` (pictures in its call), `calls` (the calls its group took: tasks whose
        prompts have more 75-token chunks run in a call of their own).

        Per task: its own progress (job 0 of 1); a STOP drops that task (`interrupted`, no
        pictures) and the call goes on for the others; a SKIP ends that task's pass there (its
        latents are kept as they were and decoded with the others', so it gets the partial
        pictures its lone run gives; a skip in the first pass of a hires fix leaves its
        second pass out). A task that cannot share a call exactly (`batch.groups`) runs alone
        through `run`; a DomainError from one task is its answer, the others still run.
        """
        answers: list[EngineResult | DomainError | None] = [None] * len(items)
        found, alone = groups(self.model, items)
        for group in found:
            for i, answer in zip(group, self._run_group([items[i] for i in group]), strict=True):
                answers[i] = answer
        for i in alone:
            answers[i] = self._run_alone(items[i])
        return [a for a in answers if a is not None]

    def _run_alone(self, item: BatchItem) -> EngineResult | DomainError:
        try:
            return self.run(item.params, item.inputs, item.on_step)
        except DomainError as exc:
            return exc

    def _run_group(self, items: list[BatchItem]) -> list[EngineResult | DomainError]:
        model, first = self.model, items[0]
        pipes = [model.txt2img, model.img2img, model.inpaint]
        stack = ExitStack()
        try:  # the key makes the LoRA tags equal: the first prompt's switch on everyone's
            stack.enter_context(model.networks.applied(first.params.prompt, shared_inputs(items),
                                                       pipes))  # fmt: skip
        except DomainError:  # a file that does not fit: each task alone, with its own answer
            return [self._run_alone(item) for item in items]
        with stack:
            answers = prepare_all(model, items)
            calls = sub_batches([m for m in answers if isinstance(m, Member)])
            done = {id(m): r for call in calls for m, r in zip(call, self._call(call, len(calls)),
                                                               strict=True)}  # fmt: skip
        out: list[EngineResult | DomainError] = []
        for answer in answers:
            result = done[id(answer)] if isinstance(answer, Member) else answer
            if isinstance(answer, Member) and isinstance(result, EngineResult):
                try:  # after decoding, per task, as `run` does
                    self._restore_faces(answer.item.params, answer.item.inputs, result)
                except DomainError as exc:
                    result = exc
            out.append(result)
        return out

    def _call(self, call: list[Member], calls: int) -> list[EngineResult | DomainError]:
        """One pipeline call of the group's `calls`; a DomainError (from the settings the
        tasks share, e.g. the hires upscaler's file) is every task's answer."""
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        params, inputs = call[0].item.params, call[0].item.inputs
        identity = (self.model_name, self.model_hash, self.device)
        try:
            results = generate_batch(self.model, params, call,
                                     lambda: self._upscalers.models(params, inputs, self.device),
                                     identity)  # fmt: skip
        except DomainError as exc:
            return [exc for _ in call]
        peak = round(peak_memory_mb(self.device), 1)
        for result in results:
            result.info["peak_memory_mb"] = peak
            result.info["batch"]["calls"] = calls
        return list(results)

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
