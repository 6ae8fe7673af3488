"""What the use cases measure: a task's whole life recorded through the local (Prometheus)
adapter, read back with Prometheus' own parser; the EMF records the AWS adapter writes; the
labels a metric declares are enforced; /admin/stats' figures from the task records."""

from __future__ import annotations

import json
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sdcore import metric_names as names
from sdcore.adapters.aws.metrics import EmfMetrics
from sdcore.adapters.local.metrics import PrometheusMetrics, exposition
from sdcore.domain.models import GenerationParams, Role, TaskKind, TaskStatus
from sdcore.errors import InvalidInputError, OverCapError
from sdcore.services import Services
from sdcore.usecases.auth import Principal, check_queue_quota
from sdcore.usecases.control import dispatch_task
from sdcore.usecases.inference import run_task
from sdcore.usecases.measure import failure_reason, record_load
from sdcore.usecases.prompts import check_prompts
from sdcore.usecases.stats import task_stats
from sdcore.usecases.submit import submit_task
from sdcore.usecases.tasks import request_cancel
from tests.unit.usecases.conftest import ScriptedEngine, dispatched

Samples = dict[str, list[tuple[dict[str, str], float]]]


def scraped(svc: Services) -> Samples:
    """Every sample of the exposition, by sample name, parsed by Prometheus' parser."""
    assert isinstance(svc.metrics, PrometheusMetrics)
    text = exposition(svc.metrics.directory).decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return sum(v for got, v in samples.get(name, []) if labels.items() <= got.items())


def test_a_task_s_whole_life_is_measured_with_its_labels(svc: Services) -> None:
    # Given three tasks of one model: one succeeds, one fails in the engine, one is cancelled
    ok, lease = dispatched(svc, steps=4)
    run_task(svc, ScriptedEngine(), ok, lease)
    bad, lease = dispatched(svc)
    run_task(svc, ScriptedEngine(fail=RuntimeError("out of memory")), bad, lease)
    params = GenerationParams(kind=TaskKind.TXT2IMG, prompt="p")
    request_cancel(svc, submit_task(svc, params, None, []).task_id)
    # and a task left waiting, then the gauges sampled as control's schedule does
    dispatch_task(svc, submit_task(svc, params, "other", []).task_id)
    record_load(svc)

    samples = scraped(svc)

    demo = {"model": "demo", "fleet": "local"}
    assert value(samples, "sd_tasks_submitted_total", model="demo", kind="txt2img") == 3
    assert value(samples, "sd_tasks_started_total", **demo) == 2
    assert value(samples, "sd_tasks_succeeded_total", **demo) == 1
    assert value(samples, "sd_tasks_failed_total", reason="error", **demo) == 1
    assert value(samples, "sd_tasks_cancelled_total", **demo) == 1
    assert value(samples, "sd_queue_wait_seconds_count", **demo) == 2
    assert value(samples, "sd_run_seconds_count", status="succeeded", **demo) == 1
    assert value(samples, "sd_end_to_end_seconds_count", status="cancelled", **demo) == 1
    assert value(samples, "sd_end_to_end_seconds_count", **demo) == 3
    assert value(samples, "sd_sampling_steps_per_second_count", **demo) == 1  # the one that ran
    # the "other" task holds its slot and is dispatched, not yet started: it is waiting
    assert value(samples, "sd_tasks_waiting", model="other") == 1
    assert value(samples, "sd_tasks_waiting", model="demo") == 0
    assert value(samples, "sd_tasks_waiting", model="all") == 1
    assert value(samples, "sd_slots_in_use", model="other") == 1
    assert value(samples, "sd_slot_cap", model="all") == svc.settings.max_concurrency
    assert value(samples, "sd_slot_cap", model="demo") == svc.settings.max_per_model
    # every name emitted is a declared one, with exactly its declared labels
    declared = {"sd_" + m.name: m for m in names.ALL}
    for sample, rows in samples.items():
        base = next(n for n in declared if sample.startswith(n))
        extra = {"le"} if sample.endswith("_bucket") else set()
        for labels, _ in rows:
            assert set(labels) == set(declared[base].labels) | extra, sample


def test_refusals_and_throttles_are_counted(svc: Services) -> None:
    # Given a blocked term, and a user at their queued-task quota
    (svc.settings.data_dir / "blocklist.txt").write_text("forbidden\n")
    svc.settings.max_queued_per_user = 1
    submit_task(svc, GenerationParams(kind=TaskKind.TXT2IMG, prompt="p"), None, [], owner="bob")

    with pytest.raises(InvalidInputError):
        check_prompts(svc, GenerationParams(kind=TaskKind.TXT2IMG, prompt="a forbidden one"))
    with pytest.raises(OverCapError):
        check_queue_quota(svc, Principal(user="bob", role=Role.USER))

    samples = scraped(svc)
    assert value(samples, "sd_prompt_refusals_total", field="prompt") == 1
    assert value(samples, "sd_throttled_requests_total", limit="queue", user="bob") == 1


def test_labels_other_than_the_declared_ones_are_refused(svc: Services) -> None:
    with pytest.raises(ValueError, match="takes labels"):
        svc.metrics.count(names.TASKS_SUBMITTED, model="demo")
    with pytest.raises(ValueError, match="is a counter"):
        svc.metrics.observe(names.TASKS_SUBMITTED, 1.0, model="demo", kind="txt2img")


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        ("worker lost", "worker_lost"),
        ("the inference function did not start the task within 300 s", "never_started"),
        ("time limit: ran longer than 60 s (SD_TASK_TIME_LIMIT)", "time_limit"),
        ("blocked by the NSFW censor: every picture scored [0.9]", "censored"),
        ("model failed to load: boom", "load_failed"),
        ("the inference function failed: Timeout", "function_failed"),
        ("the inference endpoint failed: OOM", "endpoint_failed"),
        ("control could not hand the task to a function (3 tries failed)", "dead_lettered"),
        ("model demo was deleted", "model_unavailable"),
        ("model demo is not ready: failed", "model_unavailable"),
        ("RuntimeError: out of memory", "error"),
    ],
)
def test_a_failure_s_reason_label(error: str, reason: str) -> None:
    assert failure_reason(error) == reason


def emf_records(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith('{"_aws"')]


def test_the_aws_adapter_writes_emf_records_with_their_dimensions(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given figures of two dimension sets, and a per-user one
    metrics = EmfMetrics("SDTest")
    metrics.count(names.TASKS_STARTED, model="demo", fleet="lambda")
    metrics.observe(names.QUEUE_WAIT, 0.5, model="demo", fleet="lambda")
    metrics.observe(names.QUEUE_WAIT, 1.5, model="demo", fleet="lambda")
    metrics.count(names.THROTTLED, limit="rate", user="bob")
    assert emf_records(capsys.readouterr().out) == []  # nothing before the flush

    metrics.flush()

    records = emf_records(capsys.readouterr().out)
    by_dims = {tuple(r["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]): r for r in records}
    started = by_dims[("fleet", "model")]
    spec = started["_aws"]["CloudWatchMetrics"][0]
    assert spec["Namespace"] == "SDTest"
    assert {m["Name"]: m["Unit"] for m in spec["Metrics"]} == {
        "tasks_started": "Count",
        "queue_wait_seconds": "Seconds",
    }
    assert started["model"] == "demo" and started["fleet"] == "lambda"
    assert started["queue_wait_seconds"] == [0.5, 1.5]  # every value: exact percentiles
    # a user is a property of the record (searchable), not a dimension (a metric per user)
    throttled = by_dims[("limit",)]
    assert throttled["user"] == "bob" and throttled["throttled_requests"] == [1.0]
    # a metric declared with a rollup is written once more with no dimensions (its total)
    assert names.QUEUE_WAIT.rollup and not names.TASKS_STARTED.rollup
    total = by_dims[()]
    assert [m["Name"] for m in total["_aws"]["CloudWatchMetrics"][0]["Metrics"]] == [
        "queue_wait_seconds"
    ]
    assert total["queue_wait_seconds"] == [0.5, 1.5] and "model" not in total
    metrics.flush()
    assert emf_records(capsys.readouterr().out) == []  # flushed once


def test_admin_stats_counts_and_times_the_window_s_tasks(svc: Services) -> None:
    for _ in range(2):
        task_id, lease = dispatched(svc, steps=4)
        run_task(svc, ScriptedEngine(), task_id, lease)
    bad, lease = dispatched(svc)
    run_task(svc, ScriptedEngine(fail=RuntimeError("out of memory")), bad, lease)

    stats = task_stats(svc)

    hour = stats.windows[0]
    assert hour.name == "hour" and not hour.truncated and stats.scanned == 3
    total = hour.total
    assert (total.submitted, total.started, total.succeeded, total.failed) == (3, 3, 2, 1)
    assert total.failure_reasons == {"error": 1}
    assert total.queue_wait_s.count == 3 and total.run_s.count == 3
    assert total.end_to_end_s.count == 2 and total.end_to_end_s.p50 is not None
    assert total.steps_per_second.count == 2 and (total.steps_per_second.p50 or 0) > 0
    [model] = hour.models
    assert (model.model, model.fleet, model.figures.succeeded) == ("demo", "local", 2)
    assert stats.windows[1].total.submitted == 3
    assert TaskStatus.SUCCEEDED.value == "succeeded"


def test_the_docs_list_every_metric_with_its_labels() -> None:
    from pathlib import Path

    doc = (Path(__file__).parents[3] / "docs" / "observability.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in doc.splitlines() if line.startswith("| `")}
    for metric in names.ALL:
        row = rows.get(f"`{metric.name}`")
        assert row is not None, f"{metric.name} is not in docs/observability.md"
        labels = row.split("|")[4]
        assert all(f"`{label}`" in labels for label in metric.labels), metric.name
