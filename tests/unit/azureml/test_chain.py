"""The stage chain on `AzureMLBackend` over a stateful fake workspace: GIVEN a dataset folder, WHEN its events and
queue messages flow through the real stage services, THEN one job, one model version and one deployment exist,
the run records what Azure ML reported, and failures end the run with their category.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from shared.events import MLJobEvent, ml_job_event_payload
from shared.ledger import Run, RunStage, RunStatus
from shared.messages import DeployModel, QueueMessage
from shared.ml.azureml.catalog import BaseModel
from shared.ml.azureml.endpoints import DEPLOYMENT_HEADER
from shared.ml.port import MANAGED_BY_TAG, MANAGED_BY_VALUE, RUN_TAG
from shared.stages import intake, training
from shared.stages.cleanup import clean_up_idle_endpoints
from shared.stages.context import StageContext
from shared.stages.restore import request_restore
from tests.fakes import FakeMessageSender, fake_context
from tests.unit.azureml.conftest import AzureWorld, azure_world
from tests.unit.test_restore import deliver as deliver_restore
from tests.unit.test_stages import dispatch, upload_folder

JobOutcome = Callable[[str], tuple[str, str]]


def chain(world: AzureWorld, **settings: Any) -> StageContext:
    ctx = fake_context()
    ctx.settings = replace(ctx.settings, ml_backend="azureml", **settings)
    ctx.backend = world.backend
    ctx.clock = world.clock
    return ctx


def drain(
    ctx: StageContext, world: AzureWorld, *, twice: bool = False, outcome: JobOutcome = lambda job: ("Completed", "")
) -> list[tuple[QueueMessage, float]]:
    """Deliver messages (each twice when asked) until none are left; running jobs end with `outcome`."""
    sender = ctx.sender
    assert isinstance(sender, FakeMessageSender)
    delivered: list[tuple[QueueMessage, float]] = []
    pending: list[QueueMessage] = []
    for _ in range(300):
        if not pending:
            delivered += sender.sent
            pending = [message for message, _ in sender.sent]
            sender.sent.clear()
            world.clock.advance(31)
            for job_name in world.workspace.jobs.running():
                world.workspace.jobs.finish(job_name, *outcome(job_name))
                pending += job_events(ctx, world, job_name, twice)
            if not pending:
                return delivered
        message = pending.pop(0)
        for _ in range(2 if twice else 1):
            produced = dispatch(ctx, message)
            if produced is not None:
                pending.append(produced)
    raise AssertionError("the chain did not settle")


def job_events(ctx: StageContext, world: AzureWorld, job_name: str, twice: bool) -> list[QueueMessage]:
    """Azure ML's events for the job, through the ml_job_events stage (runTags are the job's tags)."""
    job = world.workspace.jobs.get(job_name)
    raw_events = ml_job_event_payload(
        job_name=job_name,
        experiment_name=job.experiment_name,
        status=job.status,
        tags=job.tags,
        topic="/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws",
        event_time=world.clock().isoformat(),
        event_id=job_name,
    )
    produced = []
    for raw in raw_events * (2 if twice else 1):
        event = MLJobEvent.parse(raw["id"], raw["eventType"], raw["subject"], raw["data"])
        message = training.handle_ml_job_event(event, ctx)
        if message is not None:
            produced.append(message)
    return produced


def start(
    ctx: StageContext, world: AzureWorld, folder: str = "chat/v1", manifest: dict[str, Any] | None = None, **kw: Any
) -> list[tuple[QueueMessage, float]]:
    events = upload_folder(ctx, folder, manifest)
    for event in events * (2 if kw.get("twice") else 1):
        intake.note_blob_created(event, ctx)
    return drain(ctx, world, **kw)


def only_run(ctx: StageContext) -> Run:
    runs = ctx.ledger.list_runs()
    assert len(runs) == 1, [run.run_id for run in runs]
    return runs[0]


@pytest.fixture
def ctx_world(component: Any, base_model: BaseModel) -> tuple[StageContext, AzureWorld]:
    world = azure_world(component, base_model)
    return chain(world), world


def test_a_dataset_folder_becomes_a_live_deployment_on_azure_ml(ctx_world: tuple[StageContext, AzureWorld]) -> None:
    ctx, world = ctx_world
    delivered = start(ctx, world)
    run = only_run(ctx)
    assert (run.stage, run.status) == (RunStage.LIVE, RunStatus.SUCCEEDED)
    assert run.base_model_info == {
        "name": "Phi-4",
        "version": "8",
        "id": "azureml://registries/azureml/models/Phi-4/versions/8",
    }
    assert run.metrics == {"epoch": 1.0, "eval_loss": 1.42, "train_loss": 1.31}
    job = world.workspace.jobs.rest[run.job_name]["properties"]
    assert job["tags"][RUN_TAG] == run.run_id and job["experimentName"] == "chat_completion_Phi-4"
    (node,) = job["jobs"].values()
    assert node["inputs"]["train_file_path"]["uri"] == "https://fake.blob/training-data/chat/v1/validated/train.jsonl"
    endpoint = world.workspace.online_endpoints.endpoints[run.endpoint_name]
    assert endpoint.tags[MANAGED_BY_TAG] == MANAGED_BY_VALUE and endpoint.traffic == {run.deployment_name: 100}
    assert run.smoke["passed"] and all(
        r["headers"][DEPLOYMENT_HEADER] == run.deployment_name for r in world.http.requests
    )
    # the deploy stage checked back with delayed messages instead of waiting in a function
    checks = [delay for message, delay in delivered if isinstance(message, DeployModel) and delay > 0]
    assert checks and max(checks) <= ctx.settings.deployment_poll_seconds
    record = world.workspace.online_endpoints.deployments[run.endpoint_name][run.deployment_name]
    assert record.poller.waited == []


def test_every_event_and_message_twice_gives_one_job_one_model_version_one_deployment(
    ctx_world: tuple[StageContext, AzureWorld],
) -> None:
    ctx, world = ctx_world
    # Every duplicate of a delayed check message starts its own checks: keep the waits short.
    world.workspace.online_endpoints.ready_seconds = world.workspace.online_deployments.ready_seconds = 0
    start(ctx, world, twice=True)
    run = only_run(ctx)
    assert run.status is RunStatus.SUCCEEDED
    assert list(world.workspace.jobs.submitted) == [run.job_name]
    assert list(world.workspace.models.models) == [(run.model_name, run.model_version)]
    assert list(world.workspace.online_endpoints.deployments[run.endpoint_name]) == [run.deployment_name]


def test_a_new_dataset_version_replaces_the_live_deployment(ctx_world: tuple[StageContext, AzureWorld]) -> None:
    ctx, world = ctx_world
    start(ctx, world, "chat/v1")
    world.clock.advance(60)
    start(ctx, world, "chat/v2", manifest={"description": "second"})
    second, first = ctx.ledger.list_runs()
    assert second.status is RunStatus.SUCCEEDED and second.previous_deployment == first.deployment_name
    assert list(world.workspace.online_endpoints.deployments[second.endpoint_name]) == [second.deployment_name]
    assert first.endpoint_state == f"replaced by {second.run_id}"


def test_a_manifest_parameter_the_pipeline_does_not_know_fails_the_run_before_submitting(
    ctx_world: tuple[StageContext, AzureWorld],
) -> None:
    ctx, world = ctx_world
    start(ctx, world, manifest={"parameters": {"simulate_failure": "training"}})
    run = only_run(ctx)
    assert (run.status, run.error_category, run.error_stage) == (RunStatus.FAILED, "parameters", "submitting")
    assert "num_train_epochs" in run.error_message
    assert world.workspace.jobs.submitted == {}


def test_a_failed_training_job_ends_the_run_with_azure_mls_reason(ctx_world: tuple[StageContext, AzureWorld]) -> None:
    ctx, world = ctx_world
    start(ctx, world, outcome=lambda job: ("Failed", "UserError: fewer than 10 training rows after preprocessing"))
    run = only_run(ctx)
    assert (run.status, run.error_category, run.error_stage) == (RunStatus.FAILED, "training", "training")
    assert "fewer than 10 training rows" in run.error_message and "ml.azure.com" in run.error_message


def test_a_failed_deployment_ends_the_run_with_its_logs(ctx_world: tuple[StageContext, AzureWorld]) -> None:
    ctx, world = ctx_world
    world.workspace.online_deployments.fail_next = True
    start(ctx, world)
    run = only_run(ctx)
    assert (run.status, run.error_category, run.error_stage) == (RunStatus.FAILED, "deployment", "deploying")
    assert "CUDA out of memory" in run.error_message


def test_a_deployment_not_ready_in_time_fails_the_run(component: Any, base_model: BaseModel) -> None:
    world = azure_world(component, base_model)
    ctx = chain(world, deployment_timeout_minutes=3)
    world.workspace.online_deployments.ready_seconds = 3600
    start(ctx, world)
    run = only_run(ctx)
    assert (run.status, run.error_category) == (RunStatus.FAILED, "deployment")
    assert "AUTOPILOT_DEPLOYMENT_TIMEOUT_MINUTES" in run.error_message
    # what it made is removed: nothing bills for a run that ended (see tests/unit/azureml/test_azure_behaviour.py)
    assert world.workspace.online_endpoints.endpoints == {} and len(run.removed) == 2


def test_idle_managed_endpoints_are_deleted_and_busy_ones_kept(component: Any, base_model: BaseModel) -> None:
    world = azure_world(component, base_model)
    ctx = chain(world, idle_endpoint_minutes=60)
    start(ctx, world, "chat/v1")
    start(ctx, world, "other/v1")
    busy, idle = sorted(ctx.ledger.list_runs(), key=lambda run: run.dataset)
    world.clock.advance(2 * 3600)
    world.backend.score(busy.endpoint_name, {"input_data": {"input_string": [{"role": "user", "content": "hi"}]}})
    assert clean_up_idle_endpoints(ctx) == [idle.endpoint_name]
    assert set(world.workspace.online_endpoints.endpoints) == {busy.endpoint_name}


def test_an_endpoint_deleted_as_idle_comes_back_on_demand_with_the_same_model(
    component: Any, base_model: BaseModel
) -> None:
    world = azure_world(component, base_model)
    ctx = chain(world, idle_endpoint_minutes=60)
    start(ctx, world)
    run = only_run(ctx)
    world.clock.advance(2 * 3600)
    assert clean_up_idle_endpoints(ctx) == [run.endpoint_name]

    _, command = request_restore(ctx.ledger, run.endpoint_name)
    assert command is not None
    deliver_restore(ctx, command)

    endpoint = world.workspace.online_endpoints.endpoints[run.endpoint_name]
    assert endpoint.tags[MANAGED_BY_TAG] == MANAGED_BY_VALUE and endpoint.traffic == {run.deployment_name: 100}
    deployment = world.workspace.online_deployments.get(run.deployment_name, run.endpoint_name)
    assert deployment.model == f"azureml:{run.model_name}:{run.model_version}"
    assert only_run(ctx).endpoint_state == "live"
