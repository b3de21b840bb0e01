"""Job events are never dropped, on `AzureMLBackend` over the fake workspace: GIVEN Azure ML's RunCompleted event
arriving while `jobs.get(name).status` still reads Running, THEN a delayed check reads the job again and the run
goes on to registering once Azure ML reads it Completed (or ends failed with Azure ML's reason).
"""

from __future__ import annotations

from typing import Any

from shared.events import RUN_COMPLETED, RUN_STATUS_CHANGED, MLJobEvent, ml_job_event_payload
from shared.ledger import Run, RunStage, RunStatus
from shared.messages import CheckFinetuneJob, DeployModel, QueueMessage, RegisterModel
from shared.ml.azureml.catalog import BaseModel
from shared.stages import intake, rollout, training
from shared.stages.context import StageContext
from tests.fakes import FakeMessageSender
from tests.unit.azureml.conftest import AzureWorld, azure_world
from tests.unit.azureml.test_chain import chain, only_run
from tests.unit.test_stages import dispatch, upload_folder


def run_in_training(ctx: StageContext, world: AzureWorld) -> Run:
    """Deliver the chain's messages until the run's job is submitted; the fake workspace leaves it Running."""
    sender = ctx.sender
    assert isinstance(sender, FakeMessageSender)
    for event in upload_folder(ctx):
        intake.note_blob_created(event, ctx)
    pending: list[QueueMessage] = []
    for _ in range(20):
        if not pending:
            pending = [message for message, _ in sender.sent]
            sender.sent.clear()
            world.clock.advance(31)
        if not pending:
            break
        produced = dispatch(ctx, pending.pop(0))
        if produced is not None:
            pending.append(produced)
    run = only_run(ctx)
    assert run.stage is RunStage.TRAINING and world.workspace.jobs.status[run.job_name] == "Running"
    return run


def azure_ml_event(world: AzureWorld, job_name: str, event_type: str, status: str) -> MLJobEvent:
    """The event Azure ML raises for the job (runTags are the job's tags), whatever `jobs.get` reads now."""
    job = world.workspace.jobs.get(job_name)
    payload = ml_job_event_payload(
        job_name=job_name,
        experiment_name=job.experiment_name,
        status=status,
        tags=job.tags,
        topic="/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws",
        event_time=world.clock().isoformat(),
        event_id=job_name,
    )
    raw = next(event for event in payload if event["eventType"] == event_type)
    return MLJobEvent.parse(raw["id"], raw["eventType"], raw["subject"], raw["data"])


def test_run_completed_before_jobs_get_reads_it_is_checked_again_and_registered(
    component: Any, base_model: BaseModel
) -> None:
    world = azure_world(component, base_model)
    ctx = chain(world)
    run = run_in_training(ctx, world)
    sender = ctx.sender
    assert isinstance(sender, FakeMessageSender)
    # WHEN RunCompleted (twice) arrives while jobs.get still reads Running
    for _ in range(2):
        assert (
            training.handle_ml_job_event(azure_ml_event(world, run.job_name, RUN_COMPLETED, "Completed"), ctx) is None
        )
    # THEN one delayed check is sent and the run waits in training
    assert sender.sent == [(CheckFinetuneJob(run.run_id, run.job_name, 1), 30.0)]
    check = sender.sent.pop()[0]
    assert isinstance(check, CheckFinetuneJob)
    # WHEN Azure ML reads the job Completed by the time the check comes
    world.workspace.jobs.finish(run.job_name, "Completed")
    world.clock.advance(30)
    register = training.check_finetune_job(check, ctx)
    # THEN the run goes on to registering the job's model, with the job's metrics
    assert register == RegisterModel(run.run_id, run.job_name)
    assert isinstance(rollout.register_model(register, ctx), DeployModel)
    after = ctx.ledger.get(run.run_id)
    assert after is not None and (after.stage, after.stage_done) == (RunStage.REGISTERING, True)
    assert after.metrics and list(world.workspace.models.models) == [(after.model_name, after.model_version)]


def test_a_failed_status_before_jobs_get_reads_it_ends_the_run_with_azure_mls_reason_at_the_check(
    component: Any, base_model: BaseModel
) -> None:
    world = azure_world(component, base_model)
    ctx = chain(world)
    run = run_in_training(ctx, world)
    sender = ctx.sender
    assert isinstance(sender, FakeMessageSender)
    training.handle_ml_job_event(azure_ml_event(world, run.job_name, RUN_STATUS_CHANGED, "Failed"), ctx)
    ((check, delay),) = sender.sent
    world.workspace.jobs.finish(run.job_name, "Failed", "UserError: fewer than 10 training rows after preprocessing")
    world.clock.advance(delay)
    assert training.check_finetune_job(check, ctx) is None  # type: ignore[arg-type]
    after = ctx.ledger.get(run.run_id)
    assert after is not None
    assert (after.status, after.error_category, after.error_stage) == (RunStatus.FAILED, "training", "training")
    assert "fewer than 10 training rows" in after.error_message
