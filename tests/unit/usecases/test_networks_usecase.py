"""Extra networks through the use cases: a LoRA, VAE or embedding named by a task is checked at
submit (422 on its field) and reaches the engine as a file fetched through the blob store into
the model cache, like a checkpoint."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from sdcore.domain.models import (
    GenerationParams,
    ImageInput,
    Lease,
    Model,
    ModelChanges,
    ModelFormat,
    ModelStatus,
    ModelType,
    TaskKind,
    TaskStatus,
)
from sdcore.errors import ConflictError, InvalidInputError
from sdcore.ports import EngineInputs, EngineResult, StepCallback
from sdcore.services import Services
from sdcore.usecases.control import dispatch_task
from sdcore.usecases.inference import run_task
from sdcore.usecases.submit import submit_task
from tests.model_files import (
    embedding_shapes,
    lora_shapes,
    safetensors,
    upscaler_shapes,
    vae_shapes,
)
from tests.unit.usecases.conftest import ScriptedEngine, png

FILES = {
    ("detail", ModelType.LORA): safetensors(lora_shapes()),
    ("soft-vae", ModelType.VAE): safetensors(vae_shapes()),
    ("shiny", ModelType.EMBEDDING): safetensors(embedding_shapes()),
    ("unused", ModelType.EMBEDDING): safetensors(embedding_shapes(3)),
}


class RecordingEngine(ScriptedEngine):
    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[EngineInputs] = []

    def run(
        self, params: GenerationParams, inputs: EngineInputs, on_step: StepCallback
    ) -> EngineResult:
        self.inputs.append(inputs)
        return super().run(params, inputs, on_step)


def _register(svc: Services, name: str, kind: ModelType, data: bytes, **fields: Any) -> None:
    key = f"models/{kind.value}/{name}/1.safetensors"
    svc.blobs.put(key, data)
    values: dict[str, Any] = {
        "name": name,
        "type": kind,
        "status": ModelStatus.UNLOADED,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "key": key,
        "format": ModelFormat.SAFETENSORS,
        "registered_at": 0,
        "modified_at": 0,
    }
    svc.models.create(Model(**{**values, **fields}))


@pytest.fixture
def networks(svc: Services, tmp_path: Path) -> Services:
    svc.settings.model_cache_dir = tmp_path / "cache"
    for (name, kind), data in FILES.items():
        _register(svc, name, kind, data)
    return svc


def _run(svc: Services, **fields: Any) -> tuple[TaskStatus, EngineInputs]:
    params = GenerationParams(kind=TaskKind.TXT2IMG, steps=1, **fields)
    task = submit_task(svc, params, None, [])
    dispatch_task(svc, task.task_id)
    _, payload = svc.fleet.invocations[-1]  # type: ignore[attr-defined]
    engine = RecordingEngine()
    status = run_task(svc, engine, task.task_id, Lease.model_validate(payload["lease"]))
    return status, engine.inputs[0]


def test_the_worker_gets_the_named_files_from_the_model_cache(networks: Services) -> None:
    status, inputs = _run(
        networks, prompt="a shiny cat <lora:detail:0.7>", negative_prompt="", vae="soft-vae"
    )
    assert status is TaskStatus.SUCCEEDED
    cache = networks.settings.model_cache_dir
    lora = inputs.loras["detail"]
    assert lora.path.read_bytes() == FILES[("detail", ModelType.LORA)]
    assert lora.path.parent == cache / lora.sha256
    assert inputs.vae is not None and inputs.vae.name == "soft-vae"
    assert inputs.vae.path.read_bytes() == FILES[("soft-vae", ModelType.VAE)]
    # only the embeddings the prompts name, as whole words
    assert [e.name for e in inputs.embeddings] == ["shiny"]


def test_an_embedding_in_the_negative_prompt_counts_and_a_part_of_a_word_does_not(
    networks: Services,
) -> None:
    _, inputs = _run(networks, prompt="unusedness", negative_prompt="(shiny:1.2)")
    assert [e.name for e in inputs.embeddings] == ["shiny"]


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"prompt": "x <lora:nope:1>"}, "prompt", "unknown lora 'nope'"),
        ({"prompt": "x <lora:soft-vae:1>"}, "prompt", "soft-vae is a vae, not a lora"),
        ({"vae": "nope"}, "sd_vae", "unknown vae 'nope'"),
        ({"vae": "detail"}, "sd_vae", "detail is a lora, not a vae"),
    ],
)
def test_unknown_or_mistyped_networks_are_refused_at_submit(
    networks: Services, fields: dict[str, Any], field: str, words: str
) -> None:
    params = GenerationParams(kind=TaskKind.TXT2IMG, **fields)
    with pytest.raises(InvalidInputError) as err:
        submit_task(networks, params, None, [])
    assert err.value.field == field and words in str(err.value)


def test_a_lora_not_ready_is_a_conflict(networks: Services) -> None:
    _register(networks, "half", ModelType.LORA, b"x", status=ModelStatus.REGISTERING)
    params = GenerationParams(kind=TaskKind.TXT2IMG, prompt="<lora:half>")
    with pytest.raises(ConflictError):
        submit_task(networks, params, None, [])


def test_a_lora_deleted_after_submit_fails_the_task_naming_it(networks: Services) -> None:
    params = GenerationParams(kind=TaskKind.TXT2IMG, prompt="<lora:detail>", steps=1)
    task = submit_task(networks, params, None, [])
    networks.models.update("detail", ModelChanges(status=ModelStatus.DELETED))
    dispatch_task(networks, task.task_id)
    _, payload = networks.fleet.invocations[-1]  # type: ignore[attr-defined]
    lease = Lease.model_validate(payload["lease"])
    assert run_task(networks, RecordingEngine(), task.task_id, lease) is TaskStatus.FAILED
    assert "unknown lora 'detail'" in (networks.tasks.get(task.task_id).error or "")


def test_extras_with_a_registered_upscaler_gets_its_file(networks: Services) -> None:
    data = safetensors(upscaler_shapes())
    _register(networks, "4x-tiny", ModelType.UPSCALER, data)
    params = GenerationParams(
        kind=TaskKind.EXTRAS, upscaler="4x-tiny", upscaler_2="Nearest", upscaler_2_visibility=0.5
    )
    task = submit_task(networks, params, None, [ImageInput(field="image", data=png())])
    dispatch_task(networks, task.task_id)
    _, payload = networks.fleet.invocations[-1]  # type: ignore[attr-defined]
    engine = RecordingEngine()
    run_task(networks, engine, task.task_id, Lease.model_validate(payload["lease"]))
    assert list(engine.inputs[0].upscalers) == ["4x-tiny"]  # Nearest is built in
    assert engine.inputs[0].upscalers["4x-tiny"].path.read_bytes() == data


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"upscaler": "nope"}, "upscaler_1"),
        ({"upscaler_2": "detail", "upscaler_2_visibility": 0.3}, "upscaler_2"),
    ],
)
def test_extras_with_an_unknown_upscaler_is_refused_at_submit(
    networks: Services, fields: dict[str, Any], field: str
) -> None:
    params = GenerationParams(kind=TaskKind.EXTRAS, **fields)
    with pytest.raises(InvalidInputError) as err:
        submit_task(networks, params, None, [ImageInput(field="image", data=png())])
    assert err.value.field == field


def test_a_hires_fix_with_a_registered_upscaler_gets_its_file(networks: Services) -> None:
    data = safetensors(upscaler_shapes())
    _register(networks, "4x-tiny", ModelType.UPSCALER, data)
    params = GenerationParams(kind=TaskKind.TXT2IMG, steps=3, hires=True, hr_upscaler="4x-tiny")
    task = submit_task(networks, params, None, [])
    dispatch_task(networks, task.task_id)
    _, payload = networks.fleet.invocations[-1]  # type: ignore[attr-defined]
    engine = RecordingEngine()
    run_task(networks, engine, task.task_id, Lease.model_validate(payload["lease"]))
    assert engine.inputs[0].upscalers["4x-tiny"].path.read_bytes() == data
    # built-in hires upscalers need no file; an unknown name is refused at submit
    latent = GenerationParams(kind=TaskKind.TXT2IMG, steps=3, hires=True, hr_upscaler="Latent")
    submit_task(networks, latent, None, [])
    unknown = GenerationParams(kind=TaskKind.TXT2IMG, steps=3, hires=True, hr_upscaler="nope")
    with pytest.raises(InvalidInputError) as err:
        submit_task(networks, unknown, None, [])
    assert err.value.field == "hr_upscaler"
