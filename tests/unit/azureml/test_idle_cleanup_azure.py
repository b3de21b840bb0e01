"""The idle cleanup on `AzureMLBackend` over a fake Azure Monitor: GIVEN two live endpoints past the idle window,
WHEN the cleanup runs, THEN only an endpoint with no request in the window is deleted; one whose requests cannot
be read, or whose deletion fails, is kept and logged while the other is still dealt with.

Relies on azure-facts.md, "Added 2026-12-01" (RequestsPerMinute is documented with the Average aggregation; under
Total its values may be empty; a quiet minute may be None), which `FakeRequestMetrics` reproduces.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from azure.core.exceptions import ResourceNotFoundError

from shared.ledger import Run
from shared.ml.azureml.catalog import BaseModel
from shared.ml.azureml.metrics import AzureMonitorRequestMetrics
from shared.ml.scoring import chat_request
from shared.stages.cleanup import clean_up_idle_endpoints
from shared.stages.context import StageContext
from tests.unit.azureml.conftest import AzureWorld, azure_world
from tests.unit.azureml.fakes import REGION, FakeRequestMetrics, http_error
from tests.unit.azureml.test_chain import chain, start


def monitor_of(world: AzureWorld) -> FakeRequestMetrics:
    """The fake Azure Monitor that conftest wires under the backend's real metrics reader."""
    reader = world.backend._metrics
    assert isinstance(reader, AzureMonitorRequestMetrics)
    monitor = reader._client(REGION)
    assert isinstance(monitor, FakeRequestMetrics)
    return monitor


def two_live_endpoints(component: Any, base_model: BaseModel) -> tuple[AzureWorld, StageContext, Run, Run]:
    """Two datasets live on their own endpoints, two hours on (the idle window is one hour); runs by endpoint name."""
    world = azure_world(component, base_model)
    ctx = chain(world, idle_endpoint_minutes=60)
    start(ctx, world, "chat/v1")
    start(ctx, world, "other/v1")
    first, second = sorted(ctx.ledger.list_runs(), key=lambda run: run.endpoint_name)
    world.clock.advance(2 * 3600)
    return world, ctx, first, second


def endpoint_state(ctx: StageContext, run: Run) -> str:
    current = ctx.ledger.get(run.run_id)
    assert current is not None
    return current.endpoint_state


def test_an_endpoint_called_in_the_window_is_kept_because_its_requests_are_read_as_averages(
    component: Any, base_model: BaseModel
) -> None:
    world, ctx, busy, idle = two_live_endpoints(component, base_model)
    world.backend.score(busy.endpoint_name, chat_request([{"role": "user", "content": "still there?"}]))

    assert clean_up_idle_endpoints(ctx) == [idle.endpoint_name]

    assert set(world.workspace.online_endpoints.endpoints) == {busy.endpoint_name}
    assert endpoint_state(ctx, busy) == "live" and endpoint_state(ctx, idle).startswith("deleted_idle")
    assert {tuple(query["aggregations"]) for query in monitor_of(world).queries} == {("Average",)}


@pytest.mark.parametrize(
    "error",
    [
        http_error(403, "AuthorizationFailed: the client has no Microsoft.Insights/metrics/read permission"),
        http_error(429, "TooManyRequests: metrics queries throttled"),
        http_error(503, "ServiceUnavailable"),
        ResourceNotFoundError("ResourceNotFound: the resource was not found in Azure Monitor"),
    ],
    ids=["permission", "throttled", "5xx", "not-found"],
)
def test_an_endpoint_whose_requests_cannot_be_read_is_kept_and_the_pass_goes_on(
    component: Any, base_model: BaseModel, error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN both endpoints idle, and Azure Monitor failing for the one the pass meets first
    world, ctx, unreadable, idle = two_live_endpoints(component, base_model)
    monitor_of(world).failures[unreadable.endpoint_name] = error

    with caplog.at_level(logging.WARNING):
        deleted = clean_up_idle_endpoints(ctx)

    # THEN it is kept, with the reason logged, and the other idle endpoint is still deleted
    assert deleted == [idle.endpoint_name]
    assert set(world.workspace.online_endpoints.endpoints) == {unreadable.endpoint_name}
    assert endpoint_state(ctx, unreadable) == "live"
    (kept,) = [record.getMessage() for record in caplog.records if unreadable.endpoint_name in record.getMessage()]
    assert kept.startswith(f"keeping endpoint {unreadable.endpoint_name}") and str(error).split(":")[0] in kept


def test_an_endpoint_that_cannot_be_deleted_does_not_stop_the_pass(
    component: Any, base_model: BaseModel, caplog: pytest.LogCaptureFixture
) -> None:
    world, ctx, stuck, idle = two_live_endpoints(component, base_model)
    endpoints = world.workspace.online_endpoints
    delete = endpoints.begin_delete

    def failing_for_stuck(name: str) -> Any:
        if name == stuck.endpoint_name:
            raise http_error(500, "InternalServerError")
        return delete(name)

    endpoints.begin_delete = failing_for_stuck  # type: ignore[method-assign]

    with caplog.at_level(logging.ERROR):
        assert clean_up_idle_endpoints(ctx) == [idle.endpoint_name]

    assert set(endpoints.endpoints) == {stuck.endpoint_name}
    assert endpoint_state(ctx, stuck) == "live" and endpoint_state(ctx, idle).startswith("deleted_idle")
    assert any(f"could not delete idle endpoint {stuck.endpoint_name}" in r.getMessage() for r in caplog.records)
