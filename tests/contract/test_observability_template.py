"""template.yaml's dashboard and alarms against the code: every metric they read in the
functions' namespace is one `sdcore.metric_names` declares, with the dimensions the EMF adapter
writes for it (its labels, less those written as properties), so a metric renamed or relabelled
in the code fails here instead of leaving a dashboard widget or an alarm silently empty."""

from __future__ import annotations

import json
import re
from typing import Any

from sdcore.metric_names import ALL
from sdcore.ports.metrics import MetricDef
from tests.aws_template import load_template, resources

DECLARED = {m.name: m for m in ALL}
SEARCH = re.compile(r"SEARCH\('\{([^}]*)\}([^']*)'")
INSIGHTS = re.compile(r'SELECT \w+\((\w+)\) FROM SCHEMA\("([^"]+)",\s*([^)]*)\)')


def namespace() -> str:
    return load_template()["Parameters"]["MetricsNamespace"]["Default"]


def written(metric: MetricDef) -> set[str]:
    """The dimensions the EMF adapter writes for `metric` (adapters/aws/metrics.py)."""
    return set(metric.labels) - set(metric.properties)


def _sub(value: Any) -> str:
    """A `!Sub` string with the namespace parameter's default put in (other references stay)."""
    text = value["Fn::Sub"] if isinstance(value, dict) else value
    return text.replace("${MetricsNamespace}", namespace())


def dashboard_uses() -> list[tuple[str, set[str], str]]:
    """(metric, dimensions, where) for every metric of our namespace the dashboard reads."""
    [dashboard] = resources("AWS::CloudWatch::Dashboard").values()
    body = json.loads(_sub(dashboard["DashboardBody"]))
    uses = []
    for widget in body["widgets"]:
        title = widget["properties"]["title"]
        previous: list[Any] = []
        for row in widget["properties"]["metrics"]:
            if isinstance(row[0], dict):  # an expression
                for schema, terms in SEARCH.findall(row[0]["expression"]):
                    ns, *dims = [part.strip() for part in schema.split(",")]
                    if ns == namespace():
                        [name] = re.findall(r'MetricName="([^"]+)"', terms)
                        uses.append((name, set(dims), title))
                continue
            row = _expand(row, previous)
            previous = row
            ns, name, *rest = [r for r in row if not isinstance(r, dict)]
            if ns == namespace():
                uses.append((name, set(rest[0::2]), title))
    return uses


def _expand(row: list[Any], previous: list[Any]) -> list[Any]:
    """A dashboard metric row with CloudWatch's shorthand ("." the same as the row above,
    "..." the row above's leading parts) written out."""
    if row and row[0] == "...":
        plain = [r for r in row[1:] if not isinstance(r, dict)]
        return previous[: len(previous) - len(plain)] + row[1:]
    return [previous[n] if value == "." else value for n, value in enumerate(row)]


def alarm_uses() -> list[tuple[str, set[str], str]]:
    uses = []
    for logical, alarm in resources("AWS::CloudWatch::Alarm").items():
        stats = [alarm] + [
            q["MetricStat"]["Metric"] for q in alarm.get("Metrics", []) if "MetricStat" in q
        ]
        for metric in stats:
            if metric.get("Namespace") == {"Ref": "MetricsNamespace"}:
                dims = {d["Name"] for d in metric.get("Dimensions", [])}
                uses.append((metric["MetricName"], dims, logical))
        for query in alarm.get("Metrics", []):
            for name, ns, dims in INSIGHTS.findall(_sub(query.get("Expression", ""))):
                assert ns == namespace(), logical
                uses.append((name, {d.strip() for d in dims.split(",")}, logical))
    return uses


def test_the_dashboard_reads_declared_metrics_with_written_dimensions() -> None:
    uses = dashboard_uses()
    # the widgets the docs describe: queue depth, waits, run times, failures, cold starts, loads
    assert {name for name, _, _ in uses} >= {
        "tasks_waiting", "tasks_running", "queue_wait_seconds", "run_seconds", "tasks_failed",
        "tasks_succeeded", "cold_starts", "model_loads", "model_load_seconds",
    }  # fmt: skip
    for name, dims, where in uses:
        assert name in DECLARED, f"{where}: {name} is not in sdcore.metric_names"
        assert dims == written(DECLARED[name]), f"{where}: {name} is written with other dimensions"


def test_the_alarms_read_declared_metrics_with_written_dimensions() -> None:
    uses = alarm_uses()
    assert {name for name, _, _ in uses} == {
        "tasks_failed",
        "tasks_succeeded",
        "queue_wait_seconds",
    }
    for name, dims, where in uses:
        assert name in DECLARED, f"{where}: {name} is not in sdcore.metric_names"
        metric = DECLARED[name]
        # a total (no dimensions) exists only for a metric declared with a rollup
        ok = dims == written(metric) or (metric.rollup and not dims)
        assert ok, f"{where}: {name} is written with other dimensions"


def test_the_failure_rate_alarm_divides_failed_by_ended_tasks() -> None:
    alarm = resources("AWS::CloudWatch::Alarm")["FailureRateAlarm"]
    queries = {q["Id"]: q for q in alarm["Metrics"]}
    assert [q["Id"] for q in alarm["Metrics"] if q["ReturnData"]] == ["rate"]
    read = {
        i: q["MetricStat"]["Metric"]["MetricName"] for i, q in queries.items() if "MetricStat" in q
    }
    assert read == {"failed": "tasks_failed", "succeeded": "tasks_succeeded"}
    assert (
        "failed" in queries["ended"]["Expression"] and "succeeded" in queries["ended"]["Expression"]
    )
    assert "/ ended" in _sub(queries["rate"]["Expression"])
    assert alarm["Threshold"] == {"Ref": "FailureAlarmPercent"}


def test_the_namespace_is_the_one_the_functions_write() -> None:
    env = load_template()["Globals"]["Function"]["Environment"]["Variables"]
    assert env["SD_METRICS_NAMESPACE"] == {"Ref": "MetricsNamespace"}


def test_every_function_logs_to_a_log_group_with_a_retention() -> None:
    groups = resources("AWS::Logs::LogGroup")
    functions = resources("AWS::Serverless::Function")
    assert functions
    for logical, function in functions.items():
        ref = function.get("LoggingConfig", {}).get("LogGroup", {}).get("Ref")
        assert ref in groups, f"{logical} logs to no log group of the stack"
        assert groups[ref]["RetentionInDays"] == {"Ref": "LogRetentionDays"}, ref


def test_every_alarm_notifies_the_topic_when_there_is_one() -> None:
    for logical, alarm in resources("AWS::CloudWatch::Alarm").items():
        assert alarm["AlarmActions"] == {
            "Fn::If": ["AlarmsNotify", [{"Ref": "AlarmTopic"}], {"Ref": "AWS::NoValue"}]
        }, logical
