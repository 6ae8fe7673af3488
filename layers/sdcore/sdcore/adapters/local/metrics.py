"""Prometheus metrics for the local stack, one exposition for all its processes.

The stack's front door, control loop, HTTP function workers and inference workers are separate
processes, so each writes its figures into memory-mapped files in one folder
(`<SD_DATA_DIR>/metrics`: prometheus_client's multiprocess mode) and `exposition` adds them up
when `/metrics` is read. Counters and histograms of processes that exited stay counted; a gauge
shows the value last written by any process (control's schedule samples them)."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector

from sdcore.ports.metrics import MetricDef, MetricKind, Metrics

PREFIX = "sd_"
ENV = "PROMETHEUS_MULTIPROC_DIR"
_lock = threading.Lock()
# per process: the folder its values go to, and the metric objects made for it
_current: dict[str, Any] = {"dir": None, "metrics": {}}


def _use(directory: Path) -> dict[str, Any]:
    """This process's metric objects writing into `directory`. prometheus_client picks its
    multiprocess value class from the environment at import; the class is set here instead,
    so a process (a test run) may move to another stack's folder: values made from then on go
    there. Spawned child processes inherit the variable."""
    with _lock:
        if _current["dir"] != directory:
            directory.mkdir(parents=True, exist_ok=True)
            os.environ[ENV] = str(directory)
            values.ValueClass = values.MultiProcessValue()
            _current.update(dir=directory, metrics={})
        metrics: dict[str, Any] = _current["metrics"]
        return metrics


def _make(metric: MetricDef) -> Any:
    name = PREFIX + metric.name
    labels = list(metric.labels)
    # registry=None: values live in the files; the exposition reads them from there
    if metric.kind is MetricKind.COUNTER:
        return Counter(name, metric.help, labels, registry=None)
    if metric.kind is MetricKind.GAUGE:
        return Gauge(name, metric.help, labels, registry=None, multiprocess_mode="mostrecent")
    return Histogram(name, metric.help, labels, registry=None, buckets=metric.buckets)


class PrometheusMetrics(Metrics):
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        _use(directory)

    def _record(self, metric: MetricDef, value: float, labels: dict[str, str]) -> None:
        made = _use(self.directory)
        with _lock:
            if metric.name not in made:
                made[metric.name] = _make(metric)
            family = made[metric.name]
        child = family.labels(**labels) if metric.labels else family
        if metric.kind is MetricKind.COUNTER:
            child.inc(value)
        elif metric.kind is MetricKind.GAUGE:
            child.set(value)
        else:
            child.observe(value)


def metrics_dir(data_dir: Path) -> Path:
    """The stack's metrics folder."""
    return data_dir / "metrics"


def exposition(directory: Path) -> bytes:
    """Prometheus' text format of every process's figures in `directory`."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return generate_latest(registry)


def reset(directory: Path) -> None:
    """Empty the folder: at the stack's start, so that figures are those of this run (and no
    dead process's gauge from an earlier run is shown). This process's values are made anew:
    the files they wrote are gone."""
    with _lock:
        _current.update(dir=None, metrics={})
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
