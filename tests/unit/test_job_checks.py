"""Job events are never dropped, on fakes: GIVEN a run in `training` WHEN the job's event says it ended before the
backend reads it so THEN a delayed check reads the job again, until it goes on, fails the run, or the run moved on.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from shared.errors import TransientError
from shared.events import RUN_COMPLETED, RUN_STATUS_CHANGED, MLJobEvent, ml_job_event_payload
from shared.ledger import Run, RunStage, RunStatus
from shared.messages import CancelRun, CheckFinetuneJob, DeployModel, QueueMessage, RegisterModel
from shared.ml.port import JobInfo
from shared.ml.simulated import SimulatedMLBackend
from shared.stages import rollout, training
from shared.stages.cancel import cancel_run
from shared.stages.context import StageContext
from shared.timestamps import parse_iso
from tests.fakes import FakeClock, FakeMessageSender, fake_context
from tests.unit.test_cancel import run_until


class FakeThrottledBackend(SimulatedMLBackend):
    """The simulated backend, whose next `throttled` job reads fail as a throttled Azure ML call would."""

    def __init__(self, state: dict[str, Any], clock: FakeClock, throttled: int) -> None:
        super().__init__(job_seconds=None, clock=clock)
        self.state = state
        self.throttled = throttled

    def get_job(self, job_name: str) -> JobInfo:
        if self.throttled > 0:
            self.throttled -= 1
            raise TransientError(f"reading job {job_name}: 429 Too Many Requests", retry_after=20)
        return super().get_job(job_name)


class FakeBrokenSender(FakeMessageSender):
    """A queue that refuses the next `failures` messages, as Storage does when it is unreachable."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def send(self, message: QueueMessage, *, delay_seconds: float = 0) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("queue storage unreachable")
        super().send(message, delay_seconds=delay_seconds)


def training_run() -> tuple[StageContext, Run, SimulatedMLBackend, FakeMessageSender, FakeClock]:
    """A run waiting in `training` whose simulated job still reads Running."""
    ctx = fake_context()
    run = run_until(ctx, RunStage.TRAINING)
    assert isinstance(ctx.backend, SimulatedMLBackend) and isinstance(ctx.sender, FakeMessageSender)
    assert isinstance(ctx.clock, FakeClock)
    ctx.sender.sent.clear()
    assert ctx.backend.get_job(run.job_name).status == "Running"
    return ctx, run, ctx.backend, ctx.sender, ctx.clock


def event_saying(ctx: StageContext, run: Run, status: str, event_type: str = RUN_STATUS_CHANGED) -> MLJobEvent:
    """Azure ML's event of the run's job reaching `status`, whatever the backend reads now."""
    tags = ctx.backend.get_job(run.job_name).tags
    payload = ml_job_event_payload(
        job_name=run.job_name, experiment_name="e", status=status, tags=tags, topic="t", event_time="now", event_id="x"
    )
    raw = next(event for event in payload if event["eventType"] == event_type)
    return MLJobEvent.parse(raw["id"], raw["eventType"], raw["subject"], raw["data"])


def stored(ctx: StageContext, run: Run) -> Run:
    current = ctx.ledger.get(run.run_id)
    assert current is not None
    return current


@pytest.mark.parametrize(
    ("status", "event_type"),
    [("Completed", RUN_COMPLETED), ("Completed", RUN_STATUS_CHANGED), ("Failed", RUN_STATUS_CHANGED)],
)
def test_an_end_event_read_while_the_job_still_runs_schedules_a_delayed_check(status: str, event_type: str) -> None:
    # GIVEN a run in training whose job the backend still reads Running
    ctx, run, _, sender, clock = training_run()
    # WHEN the job's event says it ended
    assert training.handle_ml_job_event(event_saying(ctx, run, status, event_type), ctx) is None
    # THEN a check of the job is sent, 30 s later, and the run stays in training
    assert sender.sent == [(CheckFinetuneJob(run.run_id, run.job_name, 1), 30.0)]
    after = stored(ctx, run)
    assert (after.stage, after.status, after.job_status) == (RunStage.TRAINING, RunStatus.IN_PROGRESS, "Running")
    assert parse_iso(after.job_check_due) == clock() + timedelta(seconds=30)


def test_an_event_of_a_job_still_running_schedules_no_check() -> None:
    ctx, run, _, sender, _ = training_run()
    assert training.handle_ml_job_event(event_saying(ctx, run, "Running"), ctx) is None
    assert sender.sent == [] and stored(ctx, run).job_check_due == ""


def test_the_check_finds_the_job_completed_and_the_run_goes_on_to_registering() -> None:
    ctx, run, backend, sender, clock = training_run()
    training.handle_ml_job_event(event_saying(ctx, run, "Completed", RUN_COMPLETED), ctx)
    ((check, delay),) = sender.sent
    assert isinstance(check, CheckFinetuneJob)
    # WHEN the backend reads the job Completed by the time the check comes
    backend.finish_job(run.job_name, "Completed")
    clock.advance(delay)
    register = training.check_finetune_job(check, ctx)
    # THEN the check hands on to registering, as the event would have
    assert register == RegisterModel(run.run_id, run.job_name)
    assert isinstance(rollout.register_model(register, ctx), DeployModel)
    after = stored(ctx, run)
    assert (after.stage, after.stage_done, after.job_status) == (RunStage.REGISTERING, True, "Completed")
    assert after.metrics and after.model_version


def test_the_check_finds_the_job_failed_and_the_run_ends_failed_in_training() -> None:
    ctx, run, backend, sender, clock = training_run()
    training.handle_ml_job_event(event_saying(ctx, run, "Failed"), ctx)
    ((check, delay),) = sender.sent
    backend.finish_job(run.job_name, "Failed")
    clock.advance(delay)
    assert training.check_finetune_job(check, ctx) is None  # type: ignore[arg-type]
    after = stored(ctx, run)
    assert (after.status, after.error_category, after.error_stage) == (RunStatus.FAILED, "training", "training")
    assert "simulated training failure" in after.error_message and after.job_status == "Failed"


def test_a_job_still_running_is_checked_again_ever_later_up_to_ten_minutes() -> None:
    ctx, run, _, sender, clock = training_run()
    training.handle_ml_job_event(event_saying(ctx, run, "Completed", RUN_COMPLETED), ctx)
    delays = []
    for _ in range(7):
        ((check, delay),) = sender.sent
        sender.sent.clear()
        delays.append(delay)
        clock.advance(delay)
        assert training.check_finetune_job(check, ctx) is None  # type: ignore[arg-type]
    assert delays == [30, 60, 120, 240, 480, 600, 600]
    assert [message.attempt for message, _ in sender.sent] == [8]  # type: ignore[attr-defined]


def test_duplicate_events_and_checks_keep_one_chain_of_checks() -> None:
    ctx, run, _, sender, clock = training_run()
    # WHEN every event comes three times (RunStatusChanged and RunCompleted, as Azure ML sends both)
    for _ in range(3):
        for event_type in (RUN_STATUS_CHANGED, RUN_COMPLETED):
            assert training.handle_ml_job_event(event_saying(ctx, run, "Completed", event_type), ctx) is None
    # THEN one check is scheduled
    ((first, delay),) = sender.sent
    sender.sent.clear()
    # WHEN that check is delivered twice when due, and an event comes again in between
    clock.advance(delay)
    training.check_finetune_job(first, ctx)  # type: ignore[arg-type]
    training.check_finetune_job(first, ctx)  # type: ignore[arg-type]
    training.handle_ml_job_event(event_saying(ctx, run, "Completed", RUN_COMPLETED), ctx)
    # THEN one next check is scheduled, twice as late
    assert sender.sent == [(CheckFinetuneJob(run.run_id, run.job_name, 2), 60.0)]


def test_a_check_for_a_run_that_ended_or_left_training_does_nothing() -> None:
    ctx, run, backend, sender, clock = training_run()
    training.handle_ml_job_event(event_saying(ctx, run, "Completed", RUN_COMPLETED), ctx)
    ((check, delay),) = sender.sent
    sender.sent.clear()
    # GIVEN the run was canceled in the meantime (which cancels its job)
    cancel_run(CancelRun(run.run_id, "no longer needed"), ctx)
    before = stored(ctx, run)
    clock.advance(delay)
    # WHEN the check comes THEN nothing changes and nothing is sent
    assert training.check_finetune_job(check, ctx) is None  # type: ignore[arg-type]
    assert stored(ctx, run) == before and before.status is RunStatus.CANCELED
    assert sender.sent == []
    # and a check for a run already past training hands nothing on either
    other_ctx = fake_context()
    registering = run_until(other_ctx, RunStage.REGISTERING)
    other_ctx.sender.sent.clear()  # type: ignore[attr-defined]
    assert training.check_finetune_job(CheckFinetuneJob(registering.run_id, registering.job_name, 3), other_ctx) is None
    assert other_ctx.sender.sent == []  # type: ignore[attr-defined]
    assert backend.get_job(run.job_name).status == "Canceled"


def test_a_check_that_could_not_be_sent_is_scheduled_again_by_the_retried_event() -> None:
    ctx, run, _, _, _ = training_run()
    sender = FakeBrokenSender(failures=1)
    ctx.sender = sender
    event = event_saying(ctx, run, "Completed", RUN_COMPLETED)
    # WHEN the queue refuses the check THEN the event fails (Event Grid delivers it again)
    with pytest.raises(ConnectionError):
        training.handle_ml_job_event(event, ctx)
    # and its retry schedules the check the first delivery could not send
    assert training.handle_ml_job_event(event, ctx) is None
    assert sender.sent == [(CheckFinetuneJob(run.run_id, run.job_name, 1), 30.0)]


def test_a_check_message_survives_its_queue_encoding() -> None:
    message = CheckFinetuneJob("chat-0123456789ab", "autopilot-chat-0123456789ab", 3)
    assert CheckFinetuneJob.from_json(message.to_json()) == message
    assert CheckFinetuneJob("r", "j").attempt == 1


def test_a_check_that_cannot_read_the_job_leaves_it_to_the_next_check_and_an_event_is_retried() -> None:
    ctx, run, backend, sender, clock = training_run()
    event = event_saying(ctx, run, "Completed", RUN_COMPLETED)
    throttled = FakeThrottledBackend(backend.state, clock, throttled=1)
    ctx.backend = throttled
    # GIVEN Azure ML throttles job reads: an event is raised on, for Event Grid to deliver again
    with pytest.raises(TransientError):
        training.handle_ml_job_event(event, ctx)
    assert sender.sent == []
    training.handle_ml_job_event(event, ctx)
    ((first, delay),) = sender.sent
    sender.sent.clear()
    # WHEN the check cannot read the job THEN the run stays in training and the next check is due later
    throttled.throttled = 1
    clock.advance(delay)
    assert training.check_finetune_job(first, ctx) is None  # type: ignore[arg-type]
    assert sender.sent == [(CheckFinetuneJob(run.run_id, run.job_name, 2), 60.0)]
    assert stored(ctx, run).status is RunStatus.IN_PROGRESS
    # and that check, finding the job completed, hands on to registering
    ((second, delay),) = sender.sent
    throttled.finish_job(run.job_name, "Completed")
    clock.advance(delay)
    assert training.check_finetune_job(second, ctx) == RegisterModel(run.run_id, run.job_name)  # type: ignore[arg-type]
