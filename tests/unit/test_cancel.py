"""Cancelling a run on request, on fakes: GIVEN a run under way WHEN someone cancels it THEN it stops there."""

from __future__ import annotations

import pytest

from shared.errors import CannotCancelError
from shared.events import MLJobEvent, ml_job_event_payload
from shared.ledger import Run, RunStage, RunStatus
from shared.messages import CancelRun, QueueMessage
from shared.ml.simulated import SimulatedMLBackend
from shared.stages import intake, training
from shared.stages.cancel import cancel_run, request_cancel
from shared.stages.context import StageContext
from tests.fakes import FakeMessageSender, fake_context
from tests.unit.test_stages import dispatch, only_run, start, upload_folder


def run_until(ctx: StageContext, stage: RunStage, folder: str = "chat/v1") -> Run:
    """Upload `folder` and deliver the chain's messages, finishing jobs as they start, until its run
    reaches `stage`."""
    sender = ctx.sender
    assert isinstance(sender, FakeMessageSender) and isinstance(ctx.backend, SimulatedMLBackend)
    for event in upload_folder(ctx, folder, {"description": folder}):
        intake.note_blob_created(event, ctx)
    pending: list[QueueMessage] = []
    version = folder.split("/")[1]
    for _ in range(100):
        run = next((run for run in ctx.ledger.list_runs() if run.version == version), None)
        if run is not None and run.stage is stage:
            return run
        if not pending:
            pending = [message for message, _ in sender.sent]
            sender.sent.clear()
            ctx.clock.advance(31)  # type: ignore[attr-defined]
            for job in list(ctx.backend.state["jobs"].values()):
                if job["status"] == "Running" and stage is not RunStage.TRAINING:
                    ctx.backend.finish_job(job["name"], "Completed")
                    pending += job_events(ctx, job["name"])
        produced = dispatch(ctx, pending.pop(0))
        if produced is not None:
            pending.append(produced)
    raise AssertionError(f"the run never reached {stage.value}")


def only_run_of(ctx: StageContext, version: str) -> Run:
    (run,) = [run for run in ctx.ledger.list_runs() if run.version == version]
    return run


def job_events(ctx: StageContext, job_name: str) -> list[QueueMessage]:
    job = ctx.backend.get_job(job_name)
    produced = []
    for raw in ml_job_event_payload(
        job_name=job_name,
        experiment_name="e",
        status=job.status,
        tags=job.tags,
        topic="t",
        event_time="now",
        event_id=job_name,
    ):
        message = training.handle_ml_job_event(
            MLJobEvent.parse(raw["id"], raw["eventType"], raw["subject"], raw["data"]), ctx
        )
        if message is not None:
            produced.append(message)
    return produced


def test_a_run_cancelled_while_training_cancels_its_job_and_goes_no_further() -> None:
    ctx = fake_context()
    run = run_until(ctx, RunStage.TRAINING)

    cancel_run(request_cancel(ctx.ledger, run.run_id, "wrong data uploaded"), ctx)

    ended = only_run(ctx)
    assert (ended.status, ended.error_category, ended.error_stage) == (RunStatus.CANCELED, "canceled", "training")
    assert ended.error_message == f"wrong data uploaded (job {run.job_name} canceled)"
    assert ctx.backend.get_job(run.job_name).status == "Canceled"
    # the job's own events then change nothing: no model is registered
    assert job_events(ctx, run.job_name) == [] and only_run(ctx) == ended


def test_a_run_cancelled_while_deploying_removes_its_deployment_and_the_live_one_keeps_its_traffic() -> None:
    ctx = fake_context()
    start(ctx, upload_folder(ctx, "chat/v1"))
    live = only_run(ctx)
    ctx.clock.advance(60)  # type: ignore[attr-defined]
    deploying = run_until(ctx, RunStage.DEPLOYING, "chat/v2")
    assert deploying.deployment_name and deploying.deployment_name != live.deployment_name

    cancel_run(CancelRun(deploying.run_id, "not now"), ctx)

    endpoint = ctx.backend.get_endpoint(live.endpoint_name)
    assert endpoint is not None and endpoint.traffic == {live.deployment_name: 100}
    assert deploying.deployment_name not in endpoint.deployments
    ended = ctx.ledger.get(deploying.run_id)
    assert ended is not None and ended.status is RunStatus.CANCELED
    assert ended.error_message == f"not now (deployment {live.endpoint_name}/{deploying.deployment_name} removed)"
    assert only_run_of(ctx, "v1").endpoint_state == "live"


def test_an_ended_run_cannot_be_cancelled_and_a_late_cancel_message_changes_nothing() -> None:
    ctx = fake_context()
    start(ctx, upload_folder(ctx))
    run = only_run(ctx)
    with pytest.raises(CannotCancelError, match="has already ended \\(succeeded\\)"):
        request_cancel(ctx.ledger, run.run_id, "too late")
    with pytest.raises(CannotCancelError, match="no run nope"):
        request_cancel(ctx.ledger, "nope", "")

    cancel_run(CancelRun(run.run_id, "too late"), ctx)
    cancel_run(CancelRun("nope", "no such run"), ctx)

    assert only_run(ctx) == run and run.status is RunStatus.SUCCEEDED
