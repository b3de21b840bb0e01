"""The stage chain on `AzureMLBackend` over a fake workspace that behaves as Microsoft's documentation says Azure
does (see the docstring of `tests/unit/azureml/fakes.py` for the pages): GIVEN 409s while an endpoint is
`Updating`, 429 with Retry-After, failed deployment operations, keys that change and endpoint names unique per
region, WHEN runs go through, THEN they wait instead of failing, say what really went wrong, and leave nothing
billing that no run serves with.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from shared.errors import PermanentError
from shared.ledger import RunStage, RunStatus
from shared.messages import DeployModel
from shared.ml.azureml.catalog import BaseModel
from shared.ml.azureml.endpoints import ENDPOINT_NAME, check_endpoint_name
from shared.ml.port import MANAGED_BY_TAG, MANAGED_BY_VALUE
from shared.stages.context import fail_run, retry_delay
from shared.stages.release import REMOVAL_PENDING, retry_pending_removals
from shared.stages.rollout import MAX_MODEL_VERSION, endpoint_name_for, model_version_for
from tests.unit.azureml.conftest import AzureWorld, azure_world
from tests.unit.azureml.fakes import FakeMLClient, FakeRegion, http_error
from tests.unit.azureml.test_chain import chain, only_run, start


@pytest.fixture
def world(component: Any, base_model: BaseModel) -> AzureWorld:
    return azure_world(component, base_model)


def endpoints(world: AzureWorld) -> dict[str, list[str]]:
    """What bills: every endpoint of the workspace with its deployments."""
    fake = world.workspace.online_endpoints
    return {name: sorted(fake.deployments.get(name, {})) for name in fake.endpoints}


def test_409s_on_30_percent_of_traffic_changes_and_deletes_and_regenerated_keys_still_go_live(
    world: AzureWorld,
) -> None:
    ctx = chain(world)
    world.workspace.faults.conflict_rate = 0.3
    world.workspace.online_endpoints.update_seconds = 20  # `Updating` after each traffic change
    start(ctx, world, "chat/v1")
    first = only_run(ctx)
    world.workspace.online_endpoints.regenerate_keys(first.endpoint_name)
    world.clock.advance(60)
    start(ctx, world, "chat/v2", manifest={"description": "second"})
    second, first = ctx.ledger.list_runs()
    assert (first.status, second.status) == (RunStatus.SUCCEEDED, RunStatus.SUCCEEDED), second.error_message
    assert second.smoke["passed"] and second.stage is RunStage.LIVE
    assert world.workspace.faults.conflicts_raised > 0
    assert endpoints(world) == {second.endpoint_name: [second.deployment_name]}
    assert world.workspace.online_endpoints.endpoints[second.endpoint_name].traffic == {second.deployment_name: 100}


def test_a_quota_failure_ends_the_run_with_category_quota_and_nothing_left_billing(world: AzureWorld) -> None:
    ctx = chain(world)
    world.workspace.online_deployments.fail_codes = ["OutOfQuota"]
    start(ctx, world)
    run = only_run(ctx)
    assert (run.status, run.error_category, run.error_stage) == (RunStatus.FAILED, "quota", "deploying")
    assert "OutOfQuota" in run.error_message and "Standard_NC24ads_A100_v4" in run.error_message
    assert "eastus" in run.error_message and "AUTOPILOT_AZUREML_INFERENCE_INSTANCE_TYPE" in run.error_message
    assert endpoints(world) == {}
    assert run.removed == [f"deployment {run.endpoint_name}/{run.deployment_name}", f"endpoint {run.endpoint_name}"]
    # the reason came from the deployment operation, not from the (empty) container logs
    assert world.workspace.operations.reads


def test_an_image_build_failure_says_its_code_and_removes_the_deployment(world: AzureWorld) -> None:
    ctx = chain(world)
    world.workspace.online_deployments.fail_codes = ["ImageBuildFailure"]
    start(ctx, world)
    run = only_run(ctx)
    assert (run.status, run.error_category) == (RunStatus.FAILED, "deployment")
    assert "ImageBuildFailure: The image build failed" in run.error_message
    assert endpoints(world) == {}


def test_an_operation_canceled_by_a_higher_priority_one_is_started_again(world: AzureWorld) -> None:
    ctx = chain(world)
    world.workspace.online_deployments.fail_codes = ["OperationCanceled"]
    start(ctx, world)
    run = only_run(ctx)
    assert run.status is RunStatus.SUCCEEDED, run.error_message
    assert world.workspace.online_deployments.creations == 2


def test_throttling_puts_the_message_back_after_retry_after(world: AzureWorld) -> None:
    ctx = chain(world)
    world.workspace.faults.throttle["online_deployments.begin_create_or_update"] = 2
    world.workspace.faults.retry_after = "45"
    delivered = start(ctx, world)
    run = only_run(ctx)
    assert run.status is RunStatus.SUCCEEDED, run.error_message
    retried = [delay for message, delay in delivered if isinstance(message, DeployModel) and delay >= 45]
    assert len(retried) == 2 and run.retries == {"deploying": 2}


def test_transient_errors_past_the_retry_time_end_the_run_with_the_last_error(world: AzureWorld) -> None:
    ctx = chain(world, transient_retry_minutes=0, deployment_timeout_minutes=0)
    world.workspace.faults.throttle["online_deployments.begin_create_or_update"] = 5
    start(ctx, world)
    run = only_run(ctx)
    assert (run.status, run.error_category, run.error_stage) == (RunStatus.FAILED, "transient_errors", "deploying")
    assert "throttled" in run.error_message
    assert endpoints(world) == {}


def test_retry_delays_grow_with_jitter_and_honour_retry_after() -> None:
    assert retry_delay(0, None, rng=lambda: 0.5) == 5.0
    assert retry_delay(3, None, rng=lambda: 0.5) == 40.0
    assert retry_delay(20, None, rng=lambda: 0.5) == 300.0
    assert 4.0 <= retry_delay(0, None, rng=lambda: 0.0) < retry_delay(0, None, rng=lambda: 1.0) <= 6.0
    assert retry_delay(0, 90.0, rng=lambda: 0.5) == 90.0


def test_a_failed_smoke_test_removes_the_deployment_and_the_endpoint_the_run_made(world: AzureWorld) -> None:
    ctx = chain(world)
    world.http.answer = {"output": ""}
    start(ctx, world)
    run = only_run(ctx)
    assert (run.status, run.error_category) == (RunStatus.ROLLED_BACK, "smoke_test")
    assert endpoints(world) == {}
    assert f"endpoint {run.endpoint_name}" in run.removed


def test_a_rolled_back_second_version_keeps_the_live_deployment_and_its_endpoint(world: AzureWorld) -> None:
    ctx = chain(world)
    start(ctx, world, "chat/v1")
    world.http.answer = {"output": ""}
    world.clock.advance(60)
    start(ctx, world, "chat/v2", manifest={"description": "second"})
    second, first = ctx.ledger.list_runs()
    assert second.status is RunStatus.ROLLED_BACK
    assert endpoints(world) == {first.endpoint_name: [first.deployment_name]}
    assert world.workspace.online_endpoints.endpoints[first.endpoint_name].traffic == {first.deployment_name: 100}
    assert second.removed == [f"deployment {second.endpoint_name}/{second.deployment_name}"]


def test_a_last_failed_try_removes_the_deployment_too(world: AzureWorld) -> None:
    ctx = chain(world, deployment_timeout_minutes=10_000)
    world.workspace.online_deployments.ready_seconds = 10**6
    with pytest.raises(AssertionError, match="did not settle"):
        start(ctx, world)  # the deployment never gets ready: its checks keep coming
    run = only_run(ctx)
    assert run.stage is RunStage.DEPLOYING and not run.finished and endpoints(world)

    # what functions.support.recorded_on_last_try does on the queue's last try
    ended = fail_run(ctx, run.run_id, PermanentError("gave up after 5 tries", category="retries_exhausted"))
    assert ended.status is RunStatus.FAILED and endpoints(world) == {}
    assert len(ended.removed) == 2


def test_a_removal_that_meets_a_conflict_is_pending_and_done_by_the_next_sweep(world: AzureWorld) -> None:
    ctx = chain(world)
    world.workspace.online_deployments.fail_codes = ["ImageBuildFailure"]
    world.workspace.faults.throttle["online_deployments.begin_delete"] = 1
    start(ctx, world)
    run = only_run(ctx)
    assert run.endpoint_state.startswith(REMOVAL_PENDING) and endpoints(world)
    assert retry_pending_removals(ctx) == [run.run_id]
    assert endpoints(world) == {} and only_run(ctx).endpoint_state.startswith("removed")


def test_default_endpoint_names_are_stable_per_dataset_and_differ_between_workspaces(
    component: Any, base_model: BaseModel
) -> None:
    region = FakeRegion()
    names = []
    for workspace in ("ws", "other-ws"):
        world = azure_world(component, base_model)
        world.workspace.__init__(world.clock, region, workspace)  # type: ignore[misc]
        ctx = chain(world)
        start(ctx, world)
        run = only_run(ctx)
        assert run.status is RunStatus.SUCCEEDED, run.error_message
        names.append(run.endpoint_name)
    assert names[0] != names[1] and all(name.startswith("ftap-chat-") for name in names)
    assert set(region.holders) == set(names)


def test_names_fit_azures_rule_even_for_long_datasets() -> None:
    run = replace(only_run_stub(), dataset="a" * 80)
    name = endpoint_name_for(run, "sub/rg/ws")
    check_endpoint_name(name)
    assert ENDPOINT_NAME.match(name) and len(name) <= 32
    assert endpoint_name_for(run, "sub/rg/ws") == name != endpoint_name_for(run, "sub/rg/other")


def test_an_endpoint_name_taken_by_another_workspace_in_the_region_fails_saying_what_to_change(
    component: Any, base_model: BaseModel
) -> None:
    world = azure_world(component, base_model)
    neighbour = FakeMLClient(world.clock, world.workspace.region, "neighbour")
    neighbour.online_endpoints.begin_create_or_update(_endpoint("team-chat", tags={}))
    ctx = chain(world)
    start(ctx, world, manifest={"endpoint_name": "team-chat"})
    run = only_run(ctx)
    assert (run.status, run.error_category) == (RunStatus.FAILED, "conflict")
    assert "unique per Azure region" in run.error_message and "endpoint_name" in run.error_message
    assert "does not exist" not in run.error_message


def test_a_manifest_cannot_take_over_an_endpoint_this_app_did_not_make(world: AzureWorld) -> None:
    world.workspace.online_endpoints.begin_create_or_update(_endpoint("prod-chat", tags={"team": "search"}))
    ctx = chain(world)
    start(ctx, world, manifest={"endpoint_name": "prod-chat"})
    run = only_run(ctx)
    assert (run.status, run.error_category) == (RunStatus.FAILED, "parameters")
    assert "not made by Finetune Autopilot" in run.error_message
    assert endpoints(world) == {"prod-chat": []}


def test_promotion_deletes_only_deployments_this_app_made(world: AzureWorld) -> None:
    from azure.ai.ml.entities import ManagedOnlineDeployment

    ctx = chain(world)
    start(ctx, world, "chat/v1")
    first = only_run(ctx)
    foreign = ManagedOnlineDeployment(
        name="hand-made", endpoint_name=first.endpoint_name, model=f"azureml:{first.model_name}:{first.model_version}"
    )
    world.workspace.online_deployments.begin_create_or_update(foreign)
    world.clock.advance(120)
    start(ctx, world, "chat/v2", manifest={"description": "second"})
    second, _ = ctx.ledger.list_runs()
    assert second.status is RunStatus.SUCCEEDED
    assert endpoints(world) == {second.endpoint_name: sorted(["hand-made", second.deployment_name])}


def test_traffic_changes_keep_the_endpoints_other_properties(world: AzureWorld) -> None:
    ctx = chain(world)
    start(ctx, world, "chat/v1")
    run = only_run(ctx)
    stored = world.workspace.online_endpoints.endpoints[run.endpoint_name]
    stored.public_network_access = "disabled"
    stored.description = "set by hand"
    world.backend.set_traffic(run.endpoint_name, {run.deployment_name: 100})
    sent = world.workspace.online_endpoints.puts[-1]
    assert sent.public_network_access == "disabled" and sent.description == "set by hand"
    assert sent.tags[MANAGED_BY_TAG] == MANAGED_BY_VALUE


def test_a_401_from_a_stale_key_reads_the_keys_again_once(world: AzureWorld) -> None:
    ctx = chain(world)
    start(ctx, world)
    run = only_run(ctx)
    request = {"input_data": {"input_string": [{"role": "user", "content": "hi"}]}}
    world.backend.score(run.endpoint_name, request)
    world.workspace.online_endpoints.regenerate_keys(run.endpoint_name)
    assert world.backend.score(run.endpoint_name, request) == world.http.answer


def test_model_versions_are_unix_seconds_within_a_32_bit_integer() -> None:
    run = only_run_stub()
    version = int(model_version_for(run))
    assert 0 < version <= MAX_MODEL_VERSION and version == 1763629200
    assert model_version_for(run, 1) == str(version + 1)


def test_a_version_held_by_another_run_of_the_same_second_takes_the_next(world: AzureWorld) -> None:
    from shared.stages.rollout import _register

    ctx = chain(world)
    start(ctx, world)
    first = only_run(ctx)
    # a second run of the dataset created in the same second: its first version is the first run's
    second = replace(
        first,
        run_id="chat-ffffffffffff",
        model_name="",
        model_version="",
        stage=RunStage.REGISTERING,
        stage_done=False,
        status=RunStatus.IN_PROGRESS,
        claim_owner="this-delivery",
        etag="",
    )
    assert ctx.ledger.create(second)
    _register(second, ctx)
    registered = ctx.ledger.get(second.run_id)
    assert registered is not None and registered.model_version == str(int(first.model_version) + 1)


def test_a_conflict_error_from_the_fake_is_the_sdks_type() -> None:
    from azure.core.exceptions import ResourceExistsError

    assert isinstance(http_error(409, "Conflict"), ResourceExistsError)


def only_run_stub() -> Any:
    from shared.ledger import Run

    return Run("chat-0123456789ab", "chat", "v1", "h", "azureml", "2025-11-20T09:00:00+00:00")


def _endpoint(name: str, tags: dict[str, str]) -> Any:
    from azure.ai.ml.entities import ManagedOnlineEndpoint

    return ManagedOnlineEndpoint(name=name, auth_mode="key", tags=tags)


def test_cancelling_a_run_while_it_deploys_removes_its_deployment_and_the_endpoint_it_made(world: AzureWorld) -> None:
    from shared.messages import CancelRun
    from shared.stages.cancel import cancel_run

    ctx = chain(world, deployment_timeout_minutes=10_000)
    world.workspace.online_deployments.ready_seconds = 10**6
    with pytest.raises(AssertionError, match="did not settle"):
        start(ctx, world)
    run = only_run(ctx)
    cancel_run(CancelRun(run.run_id, "wrong data"), ctx)
    canceled = only_run(ctx)
    assert canceled.status is RunStatus.CANCELED and endpoints(world) == {}
    assert canceled.removed == [
        f"deployment {run.endpoint_name}/{run.deployment_name}",
        f"endpoint {run.endpoint_name}",
    ]
