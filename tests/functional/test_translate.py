"""`translate` on the generation routes, over the proxy handler on the local backend: a prompt's
Chinese is put into English by the offline translator before the task is recorded, the prompt
filter judges the translation too, the task keeps what was written, and a deployment default
(SD_TRANSLATE) applies where a request does not say. No worker runs: tasks stay queued."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy_function.app import lambda_handler as proxy
from sdcore import composition
from sdcore.adapters.zh.translator import OfflineTranslator
from sdcore.api.webui_schemas import WebuiImg2Img, WebuiTxt2Img
from sdcore.composition import get_services
from sdcore.domain.models import GenerationParams, Task, TaskKind
from sdcore.domain.scripts import ScriptPlan
from sdcore.usecases.translation import translate_prompts
from sdcore.webui.infotext import generation_infotext, parse_infotext, request_fields
from tests.functional.test_templates_batches import demo_model
from tests.functional.test_webui_interrogate import call

pytestmark = pytest.mark.skipif(
    not OfflineTranslator.installed(), reason="run `python -m sdcore.adapters.zh.cedict` first"
)
CHINESE = "红色的圆形，白色背景"
ENGLISH = "red circle, white background"


@pytest.fixture
def stack(local_env: Path) -> Iterator[Path]:
    composition.reset()
    get_services().models.create(demo_model())
    yield local_env


def _submit(path: str, body: dict[str, Any]) -> Task:
    status, answer = call(proxy, "POST", path, body)
    assert status in (200, 202), answer
    task_id = answer["taskId"] if "taskId" in answer else answer["data"]["taskId"]
    return get_services().tasks.get(task_id)


def _refused(path: str, body: dict[str, Any]) -> tuple[str, str]:
    status, answer = call(proxy, "POST", path, body)
    assert status == 422, answer
    return answer["detail"][0]["loc"][-1], answer["detail"][0]["msg"]


def test_translate_on_the_native_template_batch_and_simple_routes(stack: Path) -> None:
    task = _submit("/txt2img", {"prompt": CHINESE, "negative_prompt": "模糊，水印",
                                "translate": True, "steps": 2})  # fmt: skip
    p = task.params
    assert (p.prompt, p.negative_prompt) == (ENGLISH, "blurry, watermark")
    assert (p.original_prompt, p.original_negative_prompt) == (CHINESE, "模糊，水印")
    status, shown = call(proxy, "GET", f"/tasks/{task.public_id}/result")
    assert status == 200 and shown["parameters"]["prompt"] == ENGLISH
    assert shown["parameters"]["original_prompt"] == CHINESE

    # an English negative prompt stays as it is, with no original recorded
    task = _submit("/txt2img", {"prompt": CHINESE, "negative_prompt": "ugly", "translate": True})
    assert task.params.negative_prompt == "ugly" and task.params.original_negative_prompt is None

    status, made = call(proxy, "POST", "/templates", {"name": "flat",
                        "promptTemplate": "{prompt}, 扁平风格", "steps": 2})  # fmt: skip
    assert status == 201, made
    task = _submit("/templates/flat/run", {"prompt": "蓝色的正方形", "translate": True})
    assert task.params.prompt == "blue square, flat style"
    status, batch = call(proxy, "POST", "/batches", {"templates": ["flat"], "grid": False,
                         "prompt": "蓝色的正方形", "translate": True})  # fmt: skip
    assert status == 202, batch
    assert get_services().tasks.get(batch["tasks"][0]["taskId"]).params.prompt == (
        "blue square, flat style"
    )
    task = _submit("/simple/txt2img", {"prompt": CHINESE, "translate": True})
    assert task.params.prompt == ENGLISH

    # the webui bodies take it as the native ones do
    for body_type in (WebuiTxt2Img, WebuiImg2Img):
        body = body_type.model_validate({"prompt": CHINESE, "translate": True,
                                         "init_images": ["inputs/u/x.png"]})  # fmt: skip
        assert body.to_submission().translate is True


def test_the_deployment_default_and_an_explicit_choice(
    stack: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SD_TRANSLATE=off (the default): as written unless asked
    assert _submit("/txt2img", {"prompt": CHINESE}).params.prompt == CHINESE
    monkeypatch.setenv("SD_TRANSLATE", "cjk")
    composition.reset()
    assert _submit("/txt2img", {"prompt": CHINESE}).params.prompt == ENGLISH
    assert _submit("/txt2img", {"prompt": CHINESE, "translate": False}).params.prompt == CHINESE

    # no translator: asking for one, or Chinese under the default, is a 422 naming translate
    get_services().translator = None
    field, message = _refused("/txt2img", {"prompt": CHINESE})
    assert field == "translate" and "no translator" in message
    assert _refused("/txt2img", {"prompt": "a red circle", "translate": True})[0] == "translate"
    assert _submit("/txt2img", {"prompt": "a red circle"}).params.prompt == "a red circle"


def test_the_prompt_filter_judges_the_translation_too(stack: Path) -> None:
    (stack / "blocklist.txt").write_text("circle\n")
    assert _refused("/txt2img", {"prompt": CHINESE, "translate": True})[0] == "prompt"
    assert _submit("/txt2img", {"prompt": CHINESE}).params.prompt == CHINESE  # not translated


def test_the_infotext_keeps_both_and_pastes_back_without_a_second_translation(
    stack: Path,
) -> None:
    params = GenerationParams(kind=TaskKind.TXT2IMG, prompt=ENGLISH, negative_prompt="blurry",
                              original_prompt=CHINESE, original_negative_prompt="模糊",
                              seed=3, steps=2)  # fmt: skip
    text = generation_infotext(params, seed=3, subseed=0, width=64, height=64, model_name="demo",
                               model_hash="", sampler="Euler", schedule="Automatic")  # fmt: skip
    assert text.startswith(f"{ENGLISH}\nNegative prompt: blurry\n")
    assert text.endswith(f"Original prompt: {CHINESE}, Original negative prompt: 模糊")
    assert parse_infotext(text)["Original prompt"] == CHINESE
    pasted = request_fields(text)
    assert (pasted["prompt"], pasted["negative_prompt"]) == (ENGLISH, "blurry")
    task = _submit("/txt2img", {"infotext": text, "translate": True})
    assert (task.params.prompt, task.params.original_prompt) == (ENGLISH, None)


def test_a_scripts_jobs_prompts_are_translated_too(stack: Path) -> None:
    plan = ScriptPlan(name="x/y/z plot", jobs=[{"prompt": "蓝色的正方形"}, {"seed": 2}])
    params = GenerationParams(kind=TaskKind.TXT2IMG, prompt=CHINESE, script=plan)
    translated = translate_prompts(get_services(), params, True)
    assert [job.prompt for job in translated.script_jobs()] == ["blue square", ENGLISH]
