"""The face restorer a task asks for (by name, or by architecture label as the webui's
`face_restoration_model` names it) is checked at submit and fetched for the worker."""

from __future__ import annotations

import pytest

from sdcore.domain.models import GenerationParams, ImageInput, Lease, ModelType, TaskKind
from sdcore.errors import InvalidInputError
from sdcore.services import Services
from sdcore.usecases.control import dispatch_task
from sdcore.usecases.inference import run_task
from sdcore.usecases.submit import submit_task
from tests.model_files import face_restorer_shapes, safetensors
from tests.unit.usecases.conftest import png
from tests.unit.usecases.test_networks_usecase import RecordingEngine, _register


def test_a_label_resolves_to_the_registered_model_of_that_architecture(
    svc: Services, tmp_path: object
) -> None:
    svc.settings.model_cache_dir = tmp_path / "cache"  # type: ignore[operator]
    data = safetensors(face_restorer_shapes())
    _register(svc, "cf-v0.1", ModelType.FACE_RESTORER, data,
              details={"architecture": "CodeFormer"})  # fmt: skip
    params = GenerationParams(kind=TaskKind.TXT2IMG, steps=1, face_restorers=[("CodeFormer", 1)])
    task = submit_task(svc, params, None, [])
    dispatch_task(svc, task.task_id)
    _, payload = svc.fleet.invocations[-1]  # type: ignore[attr-defined]
    engine = RecordingEngine()
    run_task(svc, engine, task.task_id, Lease.model_validate(payload["lease"]))
    file = engine.inputs[0].face_restorers["CodeFormer"]
    assert file.name == "cf-v0.1" and file.path.read_bytes() == data
    # an architecture none is registered of is refused at submit, naming the field
    extras = GenerationParams(kind=TaskKind.EXTRAS, upscaler="None",
                              face_restorers=[("GFPGAN", 0.5)])  # fmt: skip
    with pytest.raises(InvalidInputError) as err:
        submit_task(svc, extras, None, [ImageInput(field="image", data=png())])
    assert err.value.field == "gfpgan_visibility"
    # a model of another type, named, is refused as such
    _register(svc, "4x", ModelType.UPSCALER, safetensors({"body.0.weight": [8, 3, 3, 3]}))
    named = GenerationParams(kind=TaskKind.TXT2IMG, face_restorers=[("4x", 1.0)])
    with pytest.raises(InvalidInputError, match="upscaler, not a face_restorer") as err:
        submit_task(svc, named, None, [])
    assert err.value.field == "restore_faces"
