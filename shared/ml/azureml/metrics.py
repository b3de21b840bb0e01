"""Requests per minute of an online endpoint, per deployment, from Azure Monitor (azure-monitor-querymetrics)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from shared.ml.azureml.errors import METRICS_ROLE, translated
from shared.ml.port import DeploymentHealth

NAMESPACE = "Microsoft.MachineLearningServices/workspaces/onlineEndpoints"
METRIC = "RequestsPerMinute"
# The aggregation the metric is documented with; asked for under Total it may come back empty, which
# would make a busy endpoint read as idle. Supported metrics for this namespace:
# https://learn.microsoft.com/azure/azure-monitor/reference/supported-metrics/microsoft-machinelearningservices-workspaces-onlineendpoints-metrics
AGGREGATION = "Average"
DEPLOYMENT_DIMENSION = "deployment"
# RequestsPerMinute split by status class ("2xx", "4xx", "5xx"), and the p95 latency in ms, both by deployment and
# under the same Average aggregation (same supported-metrics page). Mirrored requests count under the deployment
# they are mirrored to, which is how the safe-rollout guide watches a mirror:
# https://learn.microsoft.com/azure/machine-learning/how-to-safely-rollout-managed-endpoints
STATUS_CLASS_DIMENSION = "statusCodeClass"
LATENCY_METRIC = "RequestLatency_P95"
MINUTE = timedelta(minutes=1)
MAX_SERIES = 100


def minute_span(start: datetime, end: datetime) -> int:
    """How many minutes, counting the one `start` falls in, lie between `start` and `end`."""
    return int((end - start.replace(second=0, microsecond=0)) / MINUTE) + 1


def minute_counts(
    series: Iterable[tuple[str, Iterable[tuple[datetime, float | None]]]], start: datetime, end: datetime
) -> dict[str, list[int]]:
    """Per deployment, one count per minute from `start` to `end`; a minute Azure Monitor left out (or None) is 0.

    A positive value counts at least 1: an average below 0.5 still means the minute had requests.
    """
    first = start.replace(second=0, microsecond=0)
    minutes = minute_span(start, end)
    counts: dict[str, list[int]] = {}
    for deployment, points in series:
        row = counts.setdefault(deployment, [0] * minutes)
        for moment, value in points:
            index = int((moment - first) / MINUTE)
            if 0 <= index < minutes and value is not None and value > 0:
                row[index] += max(1, round(value))
    return counts


class AzureMonitorRequestMetrics:
    """Reads `RequestsPerMinute` through a `MetricsClient` per region (made on first use, then kept)."""

    def __init__(self, credential: Any, client_factory: Callable[[str, Any], Any] | None = None) -> None:
        self._credential = credential
        self._client_factory = client_factory or _metrics_client
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def requests_per_minute(
        self, endpoint_id: str, region: str, start: datetime, end: datetime
    ) -> dict[str, list[int]]:
        """Counts per deployment of the endpoint with ARM id `endpoint_id`, minute by minute."""
        with translated(f"reading {METRIC} of {endpoint_id.rsplit('/', 1)[-1]}", role=METRICS_ROLE):
            results = self._client(region).query_resources(
                resource_ids=[endpoint_id],
                metric_namespace=NAMESPACE,
                metric_names=[METRIC],
                timespan=(start, end),
                granularity=MINUTE,
                aggregations=[AGGREGATION],
                filter=f"{DEPLOYMENT_DIMENSION} eq '*'",
                max_results=MAX_SERIES,
            )
        series = []
        for result in results:
            for metric in result.metrics:
                for element in metric.timeseries:
                    dimensions = {key.lower(): value for key, value in (element.metadata_values or {}).items()}
                    points = [(point.timestamp, point.average) for point in element.data]
                    series.append((str(dimensions.get(DEPLOYMENT_DIMENSION, "")), points))
        return minute_counts(series, start, end)

    def deployment_health(
        self, endpoint_id: str, region: str, deployment: str, start: datetime, end: datetime
    ) -> DeploymentHealth:
        """The deployment's requests, 5xx answers and p95 latency (the worst minute's) from `start` to `end`."""
        where = f"{DEPLOYMENT_DIMENSION} eq '{deployment}'"
        query: dict[str, Any] = {
            "resource_ids": [endpoint_id],
            "metric_namespace": NAMESPACE,
            "timespan": (start, end),
            "granularity": MINUTE,
            "aggregations": [AGGREGATION],
            "max_results": MAX_SERIES,
        }
        name = endpoint_id.rsplit("/", 1)[-1]
        with translated(f"reading {METRIC} and {LATENCY_METRIC} of {name}/{deployment}", role=METRICS_ROLE):
            counted = self._client(region).query_resources(
                metric_names=[METRIC], filter=f"{where} and {STATUS_CLASS_DIMENSION} eq '*'", **query
            )
            timed = self._client(region).query_resources(metric_names=[LATENCY_METRIC], filter=where, **query)
        requests = errors = 0
        for dimensions, values in _series(counted):
            # As in `minute_counts`: a positive average below 0.5 still means the minute had requests.
            count = sum(max(1, round(value)) for value in values if value > 0)
            requests += count
            if str(dimensions.get(STATUS_CLASS_DIMENSION.lower(), "")).startswith("5"):
                errors += count
        latencies = [value for _, values in _series(timed) for value in values]
        return DeploymentHealth(requests, errors, max(latencies) if requests and latencies else None)

    def _client(self, region: str) -> Any:
        with self._lock:
            if region not in self._clients:
                self._clients[region] = self._client_factory(region, self._credential)
            return self._clients[region]


def _series(results: Iterable[Any]) -> list[tuple[dict[str, Any], list[float]]]:
    """Each time series' dimensions (names in lower case) and its Average values, the None ones left out."""
    found = []
    for result in results:
        for metric in result.metrics:
            for element in metric.timeseries:
                dimensions = {key.lower(): value for key, value in (element.metadata_values or {}).items()}
                found.append((dimensions, [point.average for point in element.data if point.average is not None]))
    return found


def _metrics_client(region: str, credential: Any) -> Any:
    from azure.monitor.querymetrics import MetricsClient

    return MetricsClient(f"https://{region}.metrics.monitor.azure.com", credential)
