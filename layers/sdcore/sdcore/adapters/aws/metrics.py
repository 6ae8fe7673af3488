"""CloudWatch metrics through Powertools' embedded metric format (EMF): the values an
invocation records are buffered, one Powertools EMF provider per set of dimensions, and
written to the function's log as EMF records when the invocation ends (`flush`, called by the
handlers' `observed` decorator), where CloudWatch turns them into metrics: no API call, and
distributions keep every value, so CloudWatch's percentiles (p50, p95, p99) are exact."""

from __future__ import annotations

import threading

from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import (
    AmazonCloudWatchEMFProvider,
)

from sdcore.ports.metrics import MetricDef, Metrics

Key = tuple[tuple[tuple[str, str], ...], tuple[str, ...]]


class EmfMetrics(Metrics):
    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._sets: dict[Key, AmazonCloudWatchEMFProvider] = {}
        # the inference heartbeat and a handler's thread may record at once
        self._lock = threading.Lock()

    def _record(self, metric: MetricDef, value: float, labels: dict[str, str]) -> None:
        key: Key = (tuple(sorted(labels.items())), metric.properties)
        with self._lock:
            self._provider(key).add_metric(name=metric.name, unit=metric.unit.value, value=value)
            if metric.rollup and labels:
                # the same value once more in a record with no dimensions: the total metric
                self._provider(((), ())).add_metric(
                    name=metric.name, unit=metric.unit.value, value=value
                )

    def _provider(self, key: Key) -> AmazonCloudWatchEMFProvider:
        """The buffer of one set of dimension values (and properties); under the lock. A
        provider writes its record early when one metric reaches 100 values."""
        provider = self._sets.get(key)
        if provider is None:
            provider = AmazonCloudWatchEMFProvider(namespace=self.namespace)
            # no implicit `service` dimension (POWERTOOLS_SERVICE_NAME): the dimensions are
            # exactly the metric's declared labels (none for a rollup), which dashboards query
            provider.service = ""
            labels, properties = key
            for name, label in labels:
                if name in properties:
                    provider.add_metadata(name, label)  # searchable, not a dimension
                else:
                    provider.add_dimension(name, label)
            self._sets[key] = provider
        return provider

    def flush(self) -> None:
        """One EMF record (a JSON line on stdout) per set of dimensions recorded."""
        with self._lock:
            sets, self._sets = self._sets, {}
        for provider in sets.values():
            if provider.metric_set:
                provider.flush_metrics()
