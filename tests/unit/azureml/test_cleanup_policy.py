"""The idle cleanup's policy on `AzureMLBackend` over the fake workspace and Azure Monitor's request metrics."""

from __future__ import annotations

from typing import Any

from shared.cleanup_log import CleanupReason
from shared.ml.azureml.catalog import BaseModel
from shared.pricing import hourly_cost
from shared.stages.cleanup import KEEP_TAG, run_cleanup_pass
from shared.stages.context import StageContext
from tests.fakes import FakeCleanupLog
from tests.unit.azureml.conftest import AzureWorld, azure_world
from tests.unit.azureml.test_chain import chain, start

CHAT = {"input_data": {"input_string": [{"role": "user", "content": "hi"}]}}


def idle_world(
    component: Any, base_model: BaseModel, datasets: int, **settings: Any
) -> tuple[AzureWorld, StageContext]:
    """`datasets` runs gone live on their own endpoints, then two hours without a request."""
    world = azure_world(component, base_model)
    ctx = chain(world, **{"idle_endpoint_minutes": 60, **settings})
    for index in range(datasets):
        start(ctx, world, f"set{index}/v1")
    world.clock.advance(2 * 3600)
    return world, ctx


def decisions(ctx: StageContext) -> dict[str, str]:
    assert isinstance(ctx.cleanup, FakeCleanupLog)
    return {decision.endpoint: decision.reason for decision in ctx.cleanup.list_decisions()}


def test_a_dry_run_deletes_nothing_and_prices_each_endpoint(component: Any, base_model: BaseModel) -> None:
    world, ctx = idle_world(component, base_model, 2)
    report = run_cleanup_pass(ctx, dry_run=True)
    assert report.deleted == [] and len(world.workspace.online_endpoints.endpoints) == 2
    assert set(decisions(ctx).values()) == {CleanupReason.DRY_RUN.value}
    assert all(d.requests == 0 for d in report.decisions)
    price = hourly_cost(ctx.settings.azureml_inference_instance_type, ctx.settings.azureml_inference_instance_count)
    assert all(d.cost_per_hour == price for d in report.decisions)


def test_a_protected_endpoint_is_kept_and_the_cap_holds(component: Any, base_model: BaseModel) -> None:
    world, ctx = idle_world(component, base_model, 3, cleanup_max_deletions=1)
    names = sorted(world.workspace.online_endpoints.endpoints)
    world.workspace.online_endpoints.endpoints[names[0]].tags[KEEP_TAG] = "true"
    report = run_cleanup_pass(ctx)
    assert len(report.deleted) == 1
    assert sorted(decisions(ctx).values()) == sorted(
        [CleanupReason.PROTECTED.value, CleanupReason.DELETED.value, CleanupReason.CAP_REACHED.value]
    )
    assert names[0] in world.workspace.online_endpoints.endpoints


def test_smoke_requests_in_the_window_do_not_count(component: Any, base_model: BaseModel) -> None:
    # GIVEN an endpoint whose second model went live (smoke-tested with pinned requests) a minute ago
    world, ctx = idle_world(component, base_model, 1, idle_endpoint_minutes=30)
    start(ctx, world, "set0/v2", manifest={"description": "second"})
    second = max(ctx.ledger.list_runs(), key=lambda run: run.created_at)
    world.clock.advance(60)
    # WHEN a dry run looks THEN Azure Monitor's requests are all the smoke test's, and the endpoint is idle
    decision = run_cleanup_pass(ctx, dry_run=True).decisions[0]
    assert decision.reason == CleanupReason.DRY_RUN.value
    assert decision.requests == 0 and decision.smoke_requests >= second.smoke["requests"] > 0
    # AND a client's request makes it busy
    world.backend.score(second.endpoint_name, CHAT)
    decision = run_cleanup_pass(ctx).decisions[0]
    assert (decision.reason, decision.requests) == (CleanupReason.BUSY.value, 1)
