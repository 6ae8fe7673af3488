"""The metrics port: counters, distributions and gauges, each with its labels, recorded by the
use cases (never ad hoc by handlers). Every metric is declared once in `sdcore.metric_names`;
an adapter refuses a metric recorded with labels other than those it declares, so what the code
emits and what the dashboards read cannot drift apart silently.

Two adapters: CloudWatch's embedded metric format through Powertools on AWS
(`sdcore.adapters.aws.metrics`), Prometheus' client locally (`sdcore.adapters.local.metrics`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import StrEnum


class MetricKind(StrEnum):
    COUNTER = "counter"  # a count of events (Prometheus: `<name>_total`)
    DISTRIBUTION = "distribution"  # one value per event: CloudWatch percentiles, a histogram
    GAUGE = "gauge"  # a level, sampled


class Unit(StrEnum):
    """CloudWatch's units (EMF); Prometheus names carry no unit beyond the metric's name."""

    COUNT = "Count"
    SECONDS = "Seconds"
    BYTES = "Bytes"
    PER_SECOND = "Count/Second"


@dataclass(frozen=True)
class MetricDef:
    """One metric: its name (the same on CloudWatch and, prefixed `sd_`, on Prometheus), what
    it is, its unit, its labels (CloudWatch dimensions) and what it means."""

    name: str
    kind: MetricKind
    unit: Unit
    labels: tuple[str, ...]
    help: str
    # labels too many-valued to be CloudWatch dimensions (each value would be a metric of its
    # own, billed monthly): written into the EMF record as properties, searchable with Logs
    # Insights; Prometheus keeps them as labels
    properties: tuple[str, ...] = ()
    # a distribution's histogram buckets (Prometheus); CloudWatch keeps the values themselves
    buckets: tuple[float, ...] = ()
    # CloudWatch: also written with no dimensions, the total over every label value (Prometheus
    # sums labels at query time). Alarms need it: one cannot take a percentile of a SEARCH
    # over checkpoints, nor do math on a Metrics Insights query
    rollup: bool = False

    def check(self, labels: dict[str, str]) -> None:
        """Raises ValueError when `labels` are not exactly the declared ones."""
        if set(labels) != set(self.labels):
            raise ValueError(
                f"metric {self.name} takes labels {sorted(self.labels)}, got {sorted(labels)}"
            )


class Metrics(ABC):
    """Where the use cases' figures go. Label values are strings; an empty value is recorded
    as "none" (CloudWatch refuses empty dimensions)."""

    def count(self, metric: MetricDef, value: float = 1, /, **labels: str) -> None:
        """Add `value` to a counter. Raises ValueError for a metric of another kind or labels
        other than the declared ones."""
        self._checked(metric, MetricKind.COUNTER, labels)
        self._record(metric, value, _clean(labels))

    def observe(self, metric: MetricDef, value: float, /, **labels: str) -> None:
        """One value of a distribution (a wait, a duration, a size). Raises as `count`."""
        self._checked(metric, MetricKind.DISTRIBUTION, labels)
        self._record(metric, value, _clean(labels))

    def gauge(self, metric: MetricDef, value: float, /, **labels: str) -> None:
        """The current level of a gauge. Raises as `count`."""
        self._checked(metric, MetricKind.GAUGE, labels)
        self._record(metric, value, _clean(labels))

    @staticmethod
    def _checked(metric: MetricDef, kind: MetricKind, labels: dict[str, str]) -> None:
        if metric.kind is not kind:
            raise ValueError(f"metric {metric.name} is a {metric.kind}, not a {kind}")
        metric.check(labels)

    @abstractmethod
    def _record(self, metric: MetricDef, value: float, labels: dict[str, str]) -> None:
        """Record one value of a checked metric."""

    def flush(self) -> None:  # noqa: B027 (only a buffering adapter has something to do)
        """Write out what was recorded (the end of an invocation). A no-op where every value
        is written as it is recorded."""


def _clean(labels: dict[str, str]) -> dict[str, str]:
    return {k: (str(v) if v not in (None, "") else "none") for k, v in labels.items()}
