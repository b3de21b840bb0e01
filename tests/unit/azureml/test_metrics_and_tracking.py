"""GIVEN Azure Monitor and the workspace's MLflow tracking answering as they do, WHEN the backend reads request
counts and job metrics, THEN it asks the right questions and reads the answers, a missing minute counting as zero.

Relies on azure-facts.md, "Online endpoint metrics" (namespace, RequestsPerMinute with a deployment
dimension, PT1M, regional MetricsClient endpoint, None for quiet minutes).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from shared.errors import AuthorizationError, NotFoundError, TransientError
from shared.ml.azureml.metrics import NAMESPACE, AzureMonitorRequestMetrics, minute_counts
from shared.ml.azureml.tracking import MlflowRestTracking, metrics_of_runs, rest_base
from tests.unit.azureml.conftest import AzureWorld, job_spec
from tests.unit.azureml.fakes import FakeResponse

START = datetime(2026, 11, 20, 9, 0, 30, tzinfo=timezone.utc)
ENDPOINT_ID = (
    "/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws/onlineEndpoints/e"
)
TRACKING_URI = "azureml://eastus.api.azureml.ms/mlflow/v1.0/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws"


def minute(offset: int) -> str:
    return (START.replace(second=0) + timedelta(minutes=offset)).isoformat().replace("+00:00", "Z")


class FakeMetricsClient:
    """Answers query_resources with the SDK's own result objects, built from a service-shaped body; values come
    only under Average, the metric's documented aggregation (azure-facts.md, "Added 2026-12-01")."""

    def __init__(self) -> None:
        self.queries: list[dict[str, Any]] = []

    def query_resources(self, **query: Any) -> list[Any]:
        from azure.monitor.querymetrics import MetricsQueryResult

        self.queries.append(query)
        asked = [aggregation.lower() for aggregation in query["aggregations"]]

        def point(offset: int, requests: float | None) -> dict[str, Any]:
            return {"timeStamp": minute(offset), **{key: requests if key == "average" else None for key in asked}}

        series = [
            {
                "metadatavalues": [{"name": {"value": "Deployment"}, "value": "blue"}],
                "data": [point(0, 3.0), point(1, None)],
            },
            {
                "metadatavalues": [{"name": {"value": "Deployment"}, "value": "green"}],
                "data": [point(2, 0.25)],
            },
        ]
        body = {
            "timespan": f"{minute(0)}/{minute(3)}",
            "interval": "PT1M",
            "value": [
                {"id": "m", "type": "t", "name": {"value": "RequestsPerMinute"}, "unit": "Count", "timeseries": series}
            ],
        }
        return [MetricsQueryResult._from_generated(body)]


def test_quiet_minutes_count_as_zero() -> None:
    series = [("blue", [(START.replace(second=0), 2.0), (START + timedelta(minutes=2), None)])]
    assert minute_counts(series, START, START + timedelta(minutes=3)) == {"blue": [2, 0, 0, 0]}


def test_requests_per_minute_come_per_deployment_from_the_regional_metrics_endpoint() -> None:
    client = FakeMetricsClient()
    made: list[str] = []

    def factory(region: str, credential: Any) -> FakeMetricsClient:
        made.append(region)
        return client

    metrics = AzureMonitorRequestMetrics(credential=object(), client_factory=factory)
    end = START + timedelta(minutes=3)
    counts = metrics.requests_per_minute(ENDPOINT_ID, "eastus", START, end)
    metrics.requests_per_minute(ENDPOINT_ID, "eastus", START, end)
    assert counts == {"blue": [3, 0, 0, 0], "green": [0, 0, 1, 0]}
    assert made == ["eastus"]
    query = client.queries[0]
    assert (query["resource_ids"], query["metric_namespace"], query["metric_names"]) == (
        [ENDPOINT_ID],
        NAMESPACE,
        ["RequestsPerMinute"],
    )
    assert (query["granularity"], query["filter"], query["timespan"], query["aggregations"]) == (
        timedelta(minutes=1),
        "deployment eq '*'",
        (START, end),
        ["Average"],
    )


def test_a_minute_whose_average_is_a_fraction_of_a_request_still_counts_as_busy() -> None:
    series = [("blue", [(START.replace(second=0), 0.25), (START + timedelta(minutes=1), 0.0)])]
    assert minute_counts(series, START, START + timedelta(minutes=1)) == {"blue": [1, 0]}


def test_the_regional_client_is_the_querymetrics_one() -> None:
    from shared.ml.azureml.metrics import _metrics_client

    client = _metrics_client("westeurope", credential=object())
    assert type(client).__module__.startswith("azure.monitor.querymetrics")


class FakeMlflowSession:
    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def request(self, method: str, url: str, **kwargs: Any) -> FakeResponse:
        self.calls.append((method, url, kwargs))
        if self.status != 200:
            return FakeResponse(self.status, "denied")
        if url.endswith("experiments/get-by-name"):
            return FakeResponse(200, {"experiment": {"experiment_id": "42"}})
        runs = [
            {"data": {"metrics": [{"key": "epoch", "value": 1}, {"key": "train_loss", "value": 1.3}]}},
            {"data": {"metrics": [{"key": "perplexity", "value": 4.2}]}},
            {"data": {}},
        ]
        return FakeResponse(200, {"runs": runs})


class FakeToken:
    token = "t"


class FakeCredential:
    def get_token(self, *scopes: str) -> FakeToken:
        assert scopes == ("https://ml.azure.com/.default",)
        return FakeToken()


def test_job_metrics_are_read_through_the_workspaces_mlflow_rest_api() -> None:
    session = FakeMlflowSession()
    tracking = MlflowRestTracking(lambda: TRACKING_URI, FakeCredential(), session)
    metrics = tracking.job_metrics("autopilot-chat-1", "chat_completion_Phi-3-mini-4k-instruct")
    assert metrics == {"epoch": 1.0, "evaluation/perplexity": 4.2, "train_loss": 1.3}
    (_, by_name, named), (method, search, body) = session.calls
    assert by_name == rest_base(TRACKING_URI) + "/experiments/get-by-name"
    assert by_name.startswith("https://eastus.api.azureml.ms/mlflow/v1.0/subscriptions/s/")
    assert named["params"] == {"experiment_name": "chat_completion_Phi-3-mini-4k-instruct"}
    assert (method, search.rsplit("/", 2)[-2:]) == ("POST", ["runs", "search"])
    assert body["json"]["filter"] == "tags.mlflow.rootRunId = 'autopilot-chat-1'"
    assert body["json"]["experiment_ids"] == ["42"]
    assert body["headers"]["Authorization"] == "Bearer t"


@pytest.mark.parametrize(("status", "error"), [(403, AuthorizationError), (404, NotFoundError), (503, TransientError)])
def test_tracking_errors_are_translated(status: int, error: type[Exception]) -> None:
    tracking = MlflowRestTracking(lambda: TRACKING_URI, FakeCredential(), FakeMlflowSession(status))
    with pytest.raises(error):
        tracking.job_metrics("j", "e")


def test_metrics_that_cannot_be_read_do_not_hold_up_a_completed_job(world: AzureWorld) -> None:
    world.backend.submit_finetune_job(job_spec())
    world.workspace.jobs.finish("autopilot-chat-0123456789ab")

    def denied(job_name: str, experiment_name: str) -> dict[str, float]:
        raise AuthorizationError("reading the metrics: permission denied")

    world.tracking.job_metrics = denied  # type: ignore[method-assign]
    job = world.backend.get_job("autopilot-chat-0123456789ab")
    assert (job.status, job.metrics) == ("Completed", {})


def test_run_metrics_keep_training_and_prefix_evaluation() -> None:
    assert metrics_of_runs([{"data": {"metrics": [{"key": "accuracy", "value": 0.5}]}}]) == {"evaluation/accuracy": 0.5}
