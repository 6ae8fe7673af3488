"""The NSFW censor: the policy paths with a censor double whose scores the test chooses, the
real open_nsfw classifier on benign pictures, and the Rekognition adapter against botocore's
Stubber (moto has no DetectModerationLabels)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from botocore.stub import Stubber
from PIL import Image

from sdcore.domain.models import Role, TaskStatus, User, UserChanges
from sdcore.services import Services
from sdcore.usecases.censor import blur, check_mode, strictest
from sdcore.usecases.inference import censor_mode, run_task
from tests.unit.usecases.conftest import ScriptedCensor, ScriptedEngine, dispatched


def _censor(svc: Services) -> ScriptedCensor:
    # the fixture's double (pytest imports conftest under another module name: no isinstance)
    assert svc.censor is not None and svc.censor.name == "scripted"
    return svc.censor  # type: ignore[return-value]


def _pixels(svc: Services, key: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(svc.blobs.get(key))).convert("RGB"), dtype=np.int16)


def test_flag_records_the_scores_and_changes_nothing(svc: Services) -> None:
    svc.settings.censor = "flag"
    _censor(svc).next_scores = [[0.05, 0.93]]
    task_id, lease = dispatched(svc, batch_size=2)
    assert run_task(svc, ScriptedEngine(), task_id, lease) is TaskStatus.SUCCEEDED
    task = svc.tasks.get(task_id)
    assert len(task.images) == 2
    assert task.info["censor"] == {
        "mode": "flag", "classifier": "scripted", "threshold": 0.7, "scores": [0.05, 0.93],
        "flagged": [1],
    }  # fmt: skip
    assert (_pixels(svc, task.images[1]) == [255, 0, 0]).all()  # untouched


def test_blur_returns_the_flagged_pictures_blurred(svc: Services) -> None:
    svc.settings.censor = "blur"
    _censor(svc).next_scores = [[0.7, 0.1]]  # at the threshold counts
    task_id, lease = dispatched(svc, batch_size=2, width=64, height=64)

    class Sharp(ScriptedEngine):
        def run(self, params, inputs, on_step):  # type: ignore[no-untyped-def]
            result = super().run(params, inputs, on_step)
            checker = np.indices((64, 64)).sum(axis=0) % 2 * 255
            result.images = [Image.fromarray(checker.astype(np.uint8)).convert("RGB")] * 2
            return result

    assert run_task(svc, Sharp(), task_id, lease) is TaskStatus.SUCCEEDED
    task = svc.tasks.get(task_id)
    assert task.info["censor"]["blurred"] == [0]
    blurred, kept = _pixels(svc, task.images[0]), _pixels(svc, task.images[1])
    assert blurred.std() < 10 < kept.std()  # a checkerboard blurred to grey; the other kept


def test_block_leaves_the_flagged_out_and_a_task_with_none_left_fails(svc: Services) -> None:
    svc.settings.censor = "block"
    _censor(svc).next_scores = [[0.2, 0.99]]
    task_id, lease = dispatched(svc, batch_size=2)
    assert run_task(svc, ScriptedEngine(), task_id, lease) is TaskStatus.SUCCEEDED
    task = svc.tasks.get(task_id)
    assert len(task.images) == 1 and task.info["censor"]["blocked"] == [1]

    _censor(svc).next_scores = [[0.8]]
    task_id, lease = dispatched(svc)
    assert run_task(svc, ScriptedEngine(), task_id, lease) is TaskStatus.FAILED
    task = svc.tasks.get(task_id)
    assert task.images == [] and task.error is not None
    assert task.error.startswith("blocked by the NSFW censor")


def test_a_user_setting_only_tightens_the_deployments(svc: Services) -> None:
    svc.users.create(User(name="kid", role=Role.USER, created_at=0))
    svc.settings.censor = "blur"
    assert censor_mode(svc, "kid") == "blur"
    svc.users.update("kid", UserChanges(censor="block"))
    assert censor_mode(svc, "kid") == "block"
    svc.users.update("kid", UserChanges(censor="off"))  # asks for less: the deployment's holds
    assert censor_mode(svc, "kid") == "blur"
    assert censor_mode(svc, "nobody") == "blur"
    assert strictest("flag", None, "bogus") == "flag"
    with pytest.raises(Exception, match="censor"):
        check_mode("loose")


def test_off_never_calls_the_classifier(svc: Services) -> None:
    svc.settings.censor = "off"
    task_id, lease = dispatched(svc)
    assert run_task(svc, ScriptedEngine(), task_id, lease) is TaskStatus.SUCCEEDED
    assert _censor(svc).judged == [] and "censor" not in svc.tasks.get(task_id).info


def test_input_images_are_judged_when_the_deployment_asks(svc: Services) -> None:
    from sdcore.usecases.censor import judge_inputs

    svc.settings.censor, svc.settings.censor_inputs = "block", True
    _censor(svc).next_scores = [[0.9]]
    with pytest.raises(Exception, match="init_images|refused by the NSFW censor"):
        judge_inputs(svc, [Image.new("RGB", (8, 8))], "block")
    _censor(svc).next_scores = [[0.9]]
    assert judge_inputs(svc, [Image.new("RGB", (8, 8))], "flag") == {
        "input_scores": [0.9], "inputs_flagged": [0],
    }  # fmt: skip
    svc.settings.censor_inputs = False
    assert judge_inputs(svc, [Image.new("RGB", (8, 8))], "block") is None


def test_flag_scores_after_the_task_is_answered(svc: Services) -> None:
    # flag changes no picture: the task ends (its answer goes out) before the classifier runs
    svc.settings.censor = "flag"
    seen: list[TaskStatus] = []
    task_id, lease = dispatched(svc, batch_size=2)

    class Watching(ScriptedCensor):
        def scores(self, images):  # type: ignore[no-untyped-def]
            seen.append(svc.tasks.get(task_id).status)
            return [0.9, 0.1]

    svc.censor = Watching()
    assert run_task(svc, ScriptedEngine(), task_id, lease) is TaskStatus.SUCCEEDED
    assert seen == [TaskStatus.SUCCEEDED]
    task = svc.tasks.get(task_id)
    assert task.info["censor"]["scores"] == [0.9, 0.1] and task.info["censor"]["flagged"] == [0]
    assert len(task.images) == 2 and task.info["worker_pid"] > 0  # the rest of info is kept


class _Broken(ScriptedCensor):
    def scores(self, images):  # type: ignore[no-untyped-def]
        raise RuntimeError("classifier unusable")


@pytest.mark.parametrize("mode", ["blur", "block"])
def test_a_classifier_failure_fails_the_task_never_returns_an_unjudged_picture(
    svc: Services, mode: str
) -> None:
    svc.settings.censor = mode
    svc.censor = _Broken()
    task_id, lease = dispatched(svc)
    assert run_task(svc, ScriptedEngine(), task_id, lease) is TaskStatus.FAILED
    task = svc.tasks.get(task_id)
    assert task.images == [] and "classifier unusable" in (task.error or "")


def test_a_classifier_failure_in_flag_mode_is_recorded(svc: Services) -> None:
    # flag returns every picture whatever the scores: they were answered before the failure
    svc.settings.censor = "flag"
    svc.censor = _Broken()
    task_id, lease = dispatched(svc)
    assert run_task(svc, ScriptedEngine(), task_id, lease) is TaskStatus.SUCCEEDED
    task = svc.tasks.get(task_id)
    assert len(task.images) == 1
    assert task.info["censor"] == {"mode": "flag", "error": "RuntimeError: classifier unusable"}


def test_blur_hides_detail() -> None:
    checker = (np.indices((128, 128)).sum(axis=0) // 4 % 2 * 255).astype(np.uint8)
    out = np.asarray(blur(Image.fromarray(checker)), dtype=np.float32)
    assert out.std() < 0.05 * checker.std()


# --- the real classifiers ------------------------------------------------------------------------
def test_open_nsfw_runs_offline_and_scores_benign_pictures_low(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # onnxruntime writes its caches under HOME
    from sdcore.adapters.censor.opennsfw import OpenNsfwCensor

    shapes = Image.new("RGB", (256, 256), "white")
    shapes.paste((220, 30, 30), (64, 64, 192, 192))
    gradient = Image.fromarray(np.tile(np.arange(256, dtype=np.uint8), (256, 1))).convert("RGB")
    scores = OpenNsfwCensor().scores([shapes, gradient])
    assert len(scores) == 2 and all(0 <= s < 0.2 for s in scores), scores


def test_rekognition_scores_the_sexual_categories_only() -> None:
    import boto3

    from sdcore.adapters.aws.rekognition_censor import RekognitionCensor

    client = boto3.client("rekognition", region_name="us-east-1")
    labels = [
        {"Name": "Explicit", "Confidence": 91.5, "ParentName": "", "TaxonomyLevel": 1},
        {"Name": "Violence", "Confidence": 99.0, "ParentName": "", "TaxonomyLevel": 1},
    ]
    with Stubber(client) as stub:
        stub.add_response("detect_moderation_labels", {"ModerationLabels": labels})
        stub.add_response("detect_moderation_labels", {"ModerationLabels": labels[1:]})
        scores = RekognitionCensor(client).scores([Image.new("RGB", (8, 8))] * 2)
        stub.assert_no_pending_responses()
    assert scores == [0.915, 0.0]
