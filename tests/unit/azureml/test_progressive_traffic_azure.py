"""Progressive traffic on `AzureMLBackend` over the stateful fakes: the bake steps set the endpoint's traffic
(or mirror traffic), the gate reads Azure Monitor's RequestsPerMinute split by deployment and statusCodeClass
and RequestLatency_P95 by deployment (`FakeRequestMetrics`), and a breach rolls the new deployment back."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from shared.ledger import Run, RunStage, RunStatus
from shared.messages import PromoteDeployment
from shared.ml.azureml.catalog import BaseModel
from shared.ml.azureml.metrics import LATENCY_METRIC, METRIC
from shared.stages.context import StageContext
from tests.unit.azureml.conftest import AzureWorld, azure_world
from tests.unit.azureml.fakes import FakeRequestMetrics, http_error
from tests.unit.azureml.test_chain import chain, start
from tests.unit.azureml.test_idle_cleanup_azure import monitor_of
from tests.unit.test_stages import dispatch

BAKE_MINUTES = 10


def in_the_first_step(
    component: Any, base_model: BaseModel, **settings: Any
) -> tuple[StageContext, AzureWorld, Run, Run]:
    """v1 live at 100 %, then v2 through its smoke test into the first bake step."""
    world = azure_world(component, base_model)
    ctx = chain(world)
    start(ctx, world, "chat/v1")
    world.clock.advance(60)
    ctx.settings = type(ctx.settings)(
        **{**ctx.settings.__dict__, "traffic_steps": (10, 100), "bake_minutes": BAKE_MINUTES, **settings}
    )
    start(ctx, world, "chat/v2", manifest={"description": "second"})
    new, live = ctx.ledger.list_runs()
    return ctx, world, new, live


def live_traffic(
    monitor: FakeRequestMetrics, world: AzureWorld, run: Run, deployment: str, count: int, **served: Any
) -> None:
    """`count` requests other clients sent to `deployment` over the bake, spread over its minutes."""
    for i in range(count):
        at = world.clock() + timedelta(seconds=(i * BAKE_MINUTES * 60) // count)
        monitor.serve(run.endpoint_name, deployment, at, **served)


def after_the_bake(ctx: StageContext, world: AzureWorld, run_id: str) -> Run:
    world.clock.advance(BAKE_MINUTES * 60)
    dispatch(ctx, PromoteDeployment(run_id))
    run = ctx.ledger.get(run_id)
    assert run is not None
    return run


def test_a_model_answering_5xx_is_rolled_back_in_the_canary_step(component: Any, base_model: BaseModel) -> None:
    ctx, world, new, live = in_the_first_step(component, base_model)
    endpoints = world.workspace.online_endpoints
    assert endpoints.endpoints[new.endpoint_name].traffic == {live.deployment_name: 90, new.deployment_name: 10}
    monitor = monitor_of(world)
    live_traffic(monitor, world, new, live.deployment_name, 900)
    live_traffic(monitor, world, new, new.deployment_name, 80)
    live_traffic(monitor, world, new, new.deployment_name, 20, status=503)

    ended = after_the_bake(ctx, world, new.run_id)

    assert (ended.status, ended.error_category) == (RunStatus.ROLLED_BACK, "canary")
    step = ended.traffic_steps[0]
    # Azure Monitor cannot tell the smoke test's requests (the same minute, named deployment) from live ones.
    smoke = new.smoke["requests"]
    assert step["verdict"] == "breach" and step["new"]["requests"] == 100 + smoke and step["new"]["errors_5xx"] == 20
    assert step["live"] == {"requests": 900 + smoke, "errors_5xx": 0, "error_rate": 0.0, "p95_ms": 50.0}
    assert "(20 of 103 requests)" in ended.error_message
    assert endpoints.endpoints[new.endpoint_name].traffic == {live.deployment_name: 100}
    assert list(endpoints.deployments[new.endpoint_name]) == [live.deployment_name]
    asked = [(query["metric_names"], query["filter"]) for query in monitor.queries[-4:]]
    assert ([METRIC], f"deployment eq '{new.deployment_name}' and statusCodeClass eq '*'") in asked
    assert ([LATENCY_METRIC], f"deployment eq '{new.deployment_name}'") in asked


def test_a_slow_model_is_rolled_back_on_its_p95(component: Any, base_model: BaseModel) -> None:
    ctx, world, new, live = in_the_first_step(component, base_model)
    monitor = monitor_of(world)
    live_traffic(monitor, world, new, live.deployment_name, 900, latency_ms=100.0)
    live_traffic(monitor, world, new, new.deployment_name, 100, latency_ms=400.0)
    ended = after_the_bake(ctx, world, new.run_id)
    assert ended.status is RunStatus.ROLLED_BACK and "p95 latency 400 ms vs 100 ms" in ended.error_message


def test_a_good_model_reaches_all_traffic_through_the_steps(component: Any, base_model: BaseModel) -> None:
    ctx, world, new, live = in_the_first_step(component, base_model)
    monitor = monitor_of(world)
    live_traffic(monitor, world, new, live.deployment_name, 900)
    live_traffic(monitor, world, new, new.deployment_name, 100)

    done = after_the_bake(ctx, world, new.run_id)

    assert (done.stage, done.status) == (RunStage.LIVE, RunStatus.SUCCEEDED)
    assert [(step["percent"], step.get("verdict")) for step in done.traffic_steps] == [(10, "passed"), (100, None)]
    endpoints = world.workspace.online_endpoints
    assert endpoints.endpoints[new.endpoint_name].traffic == {new.deployment_name: 100}
    assert list(endpoints.deployments[new.endpoint_name]) == [new.deployment_name]


def test_mirror_mode_mirrors_live_traffic_and_judges_the_mirrors_errors(component: Any, base_model: BaseModel) -> None:
    ctx, world, new, live = in_the_first_step(component, base_model, mirror_percent=20)
    endpoint = world.workspace.online_endpoints.endpoints[new.endpoint_name]
    assert endpoint.traffic == {live.deployment_name: 100} and endpoint.mirror_traffic == {new.deployment_name: 20}
    monitor = monitor_of(world)
    live_traffic(monitor, world, new, live.deployment_name, 500)
    live_traffic(monitor, world, new, new.deployment_name, 90)
    live_traffic(monitor, world, new, new.deployment_name, 10, status=500)

    ended = after_the_bake(ctx, world, new.run_id)

    step = ended.traffic_steps[0]
    assert (step["mode"], step["verdict"], step["new"]["errors_5xx"]) == ("mirror", "breach", 10)
    assert ended.status is RunStatus.ROLLED_BACK
    endpoint = world.workspace.online_endpoints.endpoints[new.endpoint_name]
    assert endpoint.traffic == {live.deployment_name: 100} and not endpoint.mirror_traffic


def test_a_gate_that_cannot_read_the_figures_fails_the_run_and_gives_the_live_deployment_all_traffic_back(
    component: Any, base_model: BaseModel
) -> None:
    ctx, world, new, live = in_the_first_step(component, base_model)
    monitor_of(world).failures[new.endpoint_name] = http_error(403, "no Monitoring Reader role on the endpoint")

    ended = after_the_bake(ctx, world, new.run_id)

    assert ended.status is RunStatus.FAILED and ended.error_category == "authorization"
    endpoints = world.workspace.online_endpoints
    assert endpoints.endpoints[new.endpoint_name].traffic == {live.deployment_name: 100}
    assert list(endpoints.deployments[new.endpoint_name]) == [live.deployment_name]
