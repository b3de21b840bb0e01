"""The reconcile timer, on fakes: GIVEN a run whose job event or queue message was lost WHEN the timer fires after
the stage's limit THEN the backend's truth moves the run on or ends it with a reason; runs within their limits, runs
a delivery is working on, late originals and duplicate firings change nothing.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from shared.errors import ConfigurationError
from shared.ledger import Run, RunStage, RunStatus, TableRunLedger
from shared.messages import DeployModel, QueueMessage, RegisterModel, SmokeTestDeployment
from shared.ml.simulated import SimulatedMLBackend
from shared.settings import Settings
from shared.stages import intake, rollout
from shared.stages.context import StageContext
from shared.stages.reconcile import RESENDS_BEFORE_GIVING_UP, Reconciled, reconcile_key, reconcile_runs
from shared.timestamps import iso, utc_now
from tests.fakes import FakeClock, FakeMessageSender, FakeRunLedger, fake_context
from tests.unit.test_cancel import job_events
from tests.unit.test_stages import dispatch, only_run, upload_folder

MINUTE = 60.0
Lose = Callable[[QueueMessage], bool]


def started(**settings: Any) -> StageContext:
    """A context on fakes whose clock starts now: `update_run` stamps `updated_at` with the real clock."""
    ctx = fake_context(**settings)
    assert isinstance(ctx.clock, FakeClock)
    ctx.clock.now = utc_now()
    for event in upload_folder(ctx):
        intake.note_blob_created(event, ctx)
    return ctx


def flow(
    ctx: StageContext, *, lose: Lose = lambda message: False, job: str | None = "Completed", events: bool = True
) -> None:
    """Deliver what was sent and what that produces until nothing is left; running jobs end with status `job` (None:
    they keep running), with their events unless `events` is False; messages `lose` picks vanish."""
    sender, backend, clock = ctx.sender, ctx.backend, ctx.clock
    assert isinstance(sender, FakeMessageSender) and isinstance(backend, SimulatedMLBackend)
    assert isinstance(clock, FakeClock)
    pending: list[QueueMessage] = []
    for _ in range(200):
        if not pending:
            pending = [message for message, _ in sender.sent]
            sender.sent.clear()
            clock.advance(31)
            for name in [j["name"] for j in backend.state["jobs"].values() if j["status"] == "Running"]:
                if job is not None:
                    backend.finish_job(name, job)
                    pending += job_events(ctx, name) if events else []
            if not pending:
                return
        message = pending.pop(0)
        if lose(message):
            continue
        produced = dispatch(ctx, message)
        if produced is not None:
            pending.append(produced)
    raise AssertionError("the chain did not settle")


def losing(kind: type[QueueMessage], keep: int = 0) -> Lose:
    """Loses every message of type `kind` but the first `keep`."""
    seen = [0]

    def lost(message: QueueMessage) -> bool:
        if isinstance(message, kind):
            seen[0] += 1
            return seen[0] > keep
        return False

    return lost


def wait_minutes(ctx: StageContext, minutes: float) -> None:
    assert isinstance(ctx.clock, FakeClock)
    ctx.clock.advance(minutes * MINUTE)


def sent(ctx: StageContext) -> list[QueueMessage]:
    assert isinstance(ctx.sender, FakeMessageSender)
    return [message for message, _ in ctx.sender.sent]


def deployments(ctx: StageContext, run: Run) -> list[str]:
    endpoint = ctx.backend.get_endpoint(run.endpoint_name)
    return sorted(endpoint.deployments) if endpoint else []


def test_a_run_whose_job_event_was_lost_goes_live_through_the_reconcile() -> None:
    ctx = started()
    flow(ctx, events=False)
    run = only_run(ctx)
    assert (run.stage, run.stage_done, ctx.backend.get_job(run.job_name).status) == (
        RunStage.TRAINING,
        False,
        "Completed",
    )

    wait_minutes(ctx, ctx.settings.training_check_minutes + 1)
    (done,) = reconcile_runs(ctx)

    assert (done.run_id, done.stage, done.outcome) == (run.run_id, RunStage.TRAINING, Reconciled.JOB_ENDED)
    assert sent(ctx) == [RegisterModel(run.run_id, run.job_name)]
    flow(ctx)
    live = only_run(ctx)
    assert (live.status, live.stage) == (RunStatus.SUCCEEDED, RunStage.LIVE)
    assert live.metrics and reconcile_key(RunStage.TRAINING) in live.stage_times
    assert live.retries[reconcile_key(RunStage.TRAINING)] == 1


def test_late_job_events_after_the_reconcile_change_nothing() -> None:
    ctx = started()
    flow(ctx, events=False)
    run = only_run(ctx)
    wait_minutes(ctx, ctx.settings.training_check_minutes + 1)
    reconcile_runs(ctx)

    # the original events come while the reconcile's RegisterModel waits, and again once the run is live
    late = job_events(ctx, run.job_name)
    assert late and late == [RegisterModel(run.run_id, run.job_name)] * len(late)
    assert isinstance(ctx.sender, FakeMessageSender)
    ctx.sender.sent += [(message, 0.0) for message in late]
    flow(ctx)
    live = copy.deepcopy(only_run(ctx))
    assert job_events(ctx, run.job_name) == []

    assert only_run(ctx) == live and live.status is RunStatus.SUCCEEDED
    assert isinstance(ctx.backend, SimulatedMLBackend)
    assert {name: list(versions) for name, versions in ctx.backend.state["models"].items()} == {
        live.model_name: [live.model_version]
    }
    assert deployments(ctx, live) == [live.deployment_name]


def test_a_stopped_deployment_check_chain_is_resumed() -> None:
    ctx = started()
    # the first DeployModel starts the deployment; the others (a duplicate RegisterModel's, the delayed checks) vanish
    flow(ctx, lose=losing(DeployModel, keep=1))
    run = only_run(ctx)
    assert (run.stage, run.stage_done) == (RunStage.DEPLOYING, False) and run.deploy_check_due

    wait_minutes(ctx, ctx.settings.stalled_stage_minutes + 1)
    (done,) = reconcile_runs(ctx)

    assert (done.outcome, done.detail) == (Reconciled.RESENT, "DeployModel")
    assert sent(ctx) == [DeployModel(run.run_id)]
    flow(ctx)
    live = only_run(ctx)
    assert live.status is RunStatus.SUCCEEDED and deployments(ctx, live) == [live.deployment_name]


def test_a_vanished_smoke_test_message_is_sent_again() -> None:
    ctx = started()
    flow(ctx, lose=losing(SmokeTestDeployment))
    run = only_run(ctx)
    assert (run.stage, run.stage_done) == (RunStage.DEPLOYING, True)

    wait_minutes(ctx, ctx.settings.stalled_stage_minutes + 1)
    (done,) = reconcile_runs(ctx)

    assert (done.stage, done.outcome) == (RunStage.DEPLOYING, Reconciled.RESENT)
    assert sent(ctx) == [SmokeTestDeployment(run.run_id)]
    flow(ctx)
    live = only_run(ctx)
    assert live.status is RunStatus.SUCCEEDED and live.smoke["passed"]
    assert live.retries[reconcile_key(RunStage.DEPLOYING)] == 1


def test_a_run_whose_job_failed_without_an_event_ends_failed_with_the_jobs_reason() -> None:
    ctx = started()
    flow(ctx, job="Failed", events=False)
    run = only_run(ctx)
    assert run.stage is RunStage.TRAINING and run.status is RunStatus.IN_PROGRESS

    wait_minutes(ctx, ctx.settings.training_check_minutes + 1)
    (done,) = reconcile_runs(ctx)

    assert done.outcome is Reconciled.JOB_ENDED and sent(ctx) == []
    ended = only_run(ctx)
    assert (ended.status, ended.error_category, ended.error_stage) == (RunStatus.FAILED, "training", "training")
    assert f"job {run.job_name} ended Failed: simulated training failure" in ended.error_message


def test_a_run_whose_job_is_gone_ends_stalled_saying_so() -> None:
    ctx = started()
    flow(ctx, job=None)
    run = only_run(ctx)
    assert isinstance(ctx.backend, SimulatedMLBackend)
    del ctx.backend.state["jobs"][run.job_name]

    wait_minutes(ctx, ctx.settings.training_check_minutes + 1)
    (done,) = reconcile_runs(ctx)

    ended = only_run(ctx)
    assert done.outcome is Reconciled.ENDED and (ended.status, ended.error_category) == (RunStatus.FAILED, "stalled")
    assert f"its job {run.job_name} cannot be found" in ended.error_message
    assert "AUTOPILOT_TRAINING_CHECK_MINUTES" in ended.error_message


def test_runs_within_their_limits_are_left_alone() -> None:
    ctx = started()
    flow(ctx, job=None)  # the job runs on, and says nothing
    training = copy.deepcopy(only_run(ctx))
    ctx_second = started()
    flow(ctx_second, lose=losing(SmokeTestDeployment))
    waiting = copy.deepcopy(only_run(ctx_second))

    # the flows' last rounds took about a minute of the clock already
    wait_minutes(ctx, ctx.settings.training_check_minutes - 2)
    wait_minutes(ctx_second, ctx.settings.stalled_stage_minutes - 2)

    assert reconcile_runs(ctx) == [] and reconcile_runs(ctx_second) == []
    assert sent(ctx) == sent(ctx_second) == []
    assert only_run(ctx) == training and only_run(ctx_second) == waiting


def test_a_deployment_whose_checks_go_on_is_left_alone_however_long_it_takes() -> None:
    ctx = started()
    flow(ctx, lose=losing(DeployModel, keep=1))
    wait_minutes(ctx, ctx.settings.stalled_stage_minutes + 1)
    run = only_run(ctx)
    # the deploy stage's chain of checks claims its next check (it writes nothing else while it waits)
    assert rollout.schedule_check(ctx, run.run_id, ctx.clock() + timedelta(seconds=30))

    assert reconcile_runs(ctx) == [] and sent(ctx) == []


def test_a_job_still_running_past_the_limit_is_read_and_nothing_is_written() -> None:
    ctx = started()
    flow(ctx, job=None)
    run = copy.deepcopy(only_run(ctx))

    wait_minutes(ctx, ctx.settings.training_check_minutes + 1)
    (done,) = reconcile_runs(ctx)

    assert (done.outcome, done.detail) == (Reconciled.JOB_RUNNING, f"job {run.job_name} is Running")
    assert sent(ctx) == [] and only_run(ctx) == run


def test_a_stage_a_delivery_holds_is_left_alone_past_the_limit() -> None:
    ctx = started()
    flow(ctx, lose=losing(DeployModel, keep=1))
    wait_minutes(ctx, ctx.settings.stalled_stage_minutes + 1)
    assert isinstance(ctx.ledger, FakeRunLedger)
    run = only_run(ctx)
    held = replace(run, claim_owner="another-delivery", claim_expires=iso(ctx.clock() + timedelta(minutes=5)))
    ctx.ledger.replace(held)

    assert reconcile_runs(ctx) == [] and sent(ctx) == []


def test_the_timer_firing_twice_sends_once() -> None:
    ctx = started()
    flow(ctx, lose=losing(SmokeTestDeployment))
    wait_minutes(ctx, ctx.settings.stalled_stage_minutes + 1)
    listed_before = ctx.ledger.unfinished_runs()

    first = reconcile_runs(ctx)
    again = reconcile_runs(ctx)
    # a firing that overlapped the first one read the runs before the first one wrote
    overlapping = reconcile_runs(replace(ctx, ledger=FakeListedBefore(ctx.ledger, listed_before)))

    assert [done.outcome for done in first] == [Reconciled.RESENT] and again == [] and overlapping == []
    run = only_run(ctx)
    assert sent(ctx) == [SmokeTestDeployment(run.run_id)] and run.retries[reconcile_key(RunStage.DEPLOYING)] == 1


def test_a_message_that_keeps_vanishing_ends_the_run_stalled_and_removes_its_deployment() -> None:
    ctx = started()
    vanish = losing(SmokeTestDeployment)
    flow(ctx, lose=vanish)
    for _ in range(RESENDS_BEFORE_GIVING_UP):
        wait_minutes(ctx, ctx.settings.stalled_stage_minutes + 1)
        assert [done.outcome for done in reconcile_runs(ctx)] == [Reconciled.RESENT]
        flow(ctx, lose=vanish)

    wait_minutes(ctx, ctx.settings.stalled_stage_minutes + 1)
    (done,) = reconcile_runs(ctx)

    ended = only_run(ctx)
    assert done.outcome is Reconciled.ENDED and sent(ctx) == []
    assert (ended.status, ended.error_category, ended.error_stage) == (RunStatus.FAILED, "stalled", "deploying")
    assert f"SmokeTestDeployment was sent again {RESENDS_BEFORE_GIVING_UP} times" in ended.error_message
    assert "AUTOPILOT_STALLED_STAGE_MINUTES" in ended.error_message
    assert deployments(ctx, ended) == [] and ended.removed
    assert reconcile_runs(ctx) == []


def test_the_ledgers_list_unfinished_runs_however_old() -> None:
    ledger = FakeRunLedger()
    for index, status in enumerate((RunStatus.IN_PROGRESS, RunStatus.SUCCEEDED, RunStatus.IN_PROGRESS)):
        ledger.create(Run(f"r{index}", "d", "v1", f"r{index}", "simulated", f"2026-01-0{index + 1}", status=status))
    assert [run.run_id for run in ledger.unfinished_runs()] == ["r2", "r0"]

    table = FakeTableClient()
    table_ledger = TableRunLedger.__new__(TableRunLedger)
    table_ledger._table = table  # type: ignore[attr-defined]
    assert table_ledger.unfinished_runs() == []
    assert table.queries == [
        ("PartitionKey eq @partition and status eq @status", {"partition": "runs", "status": "in_progress"})
    ]


@pytest.mark.parametrize("name", ["AUTOPILOT_STALLED_STAGE_MINUTES", "AUTOPILOT_TRAINING_CHECK_MINUTES"])
def test_the_reconcile_limits_must_be_positive(name: str) -> None:
    defaults = Settings.from_env({"AzureWebJobsStorage": "x"})
    assert (defaults.stalled_stage_minutes, defaults.training_check_minutes) == (15.0, 30.0)
    with pytest.raises(ConfigurationError, match=name):
        Settings.from_env({"AzureWebJobsStorage": "x", name: "0"})


class FakeListedBefore:
    """The ledger as a timer firing that overlapped another sees it: runs listed before the other one wrote."""

    def __init__(self, ledger: Any, listed: list[Run]) -> None:
        self._ledger = ledger
        self._listed = listed

    def unfinished_runs(self) -> list[Run]:
        return [replace(run, stage_times=dict(run.stage_times), retries=dict(run.retries)) for run in self._listed]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ledger, name)


class FakeTableClient:
    """A Table client that records the filters it is asked for and finds nothing."""

    def __init__(self) -> None:
        self.queries: list[tuple[str, dict[str, str]]] = []

    def query_entities(self, query_filter: str, parameters: dict[str, str]) -> list[Any]:
        self.queries.append((query_filter, parameters))
        return []
