"""A run as the dashboard reads it: each stage's state and time, its other moments, its rollout's traffic steps."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from shared.dashboard.charts import TrafficStep
from shared.dashboard.formatting import moment
from shared.ledger import STAGE_ORDER, Run, RunStage, RunStatus
from shared.stages.cleanup import DELETED_IDLE

STAGE_LABELS = {
    RunStage.RECEIVED: "received",
    RunStage.VALIDATING: "validate",
    RunStage.SUBMITTING: "submit",
    RunStage.TRAINING: "train",
    RunStage.REGISTERING: "register",
    RunStage.DEPLOYING: "deploy",
    RunStage.SMOKE_TESTING: "smoke test",
    RunStage.PROMOTING: "promote",
    RunStage.LIVE: "live",
}
# What each ending looks like: failures in red; ends by decision (a worse model, a cancel, newer data) apart.
STATUS_KINDS = {
    RunStatus.IN_PROGRESS: "running",
    RunStatus.SUCCEEDED: "ok",
    RunStatus.FAILED: "failed",
    RunStatus.REJECTED: "failed",
    RunStatus.ROLLED_BACK: "stopped",
    RunStatus.CANCELED: "stopped",
    RunStatus.SUPERSEDED: "stopped",
}


@dataclass(frozen=True)
class StageCell:
    """One stage of a run: `state` is done, running, waiting (its message is on the way), failed, stopped or todo."""

    stage: RunStage
    state: str
    started: str
    seconds: float | None


def status_kind(run: Run) -> str:
    return STATUS_KINDS.get(run.status, "stopped")


def stage_cells(run: Run, now: datetime) -> list[StageCell]:
    """Every stage in order, with how long the run spent in each it reached."""
    current = STAGE_ORDER.index(run.stage)
    starts = [run.stage_times.get(stage.value, "") for stage in STAGE_ORDER]
    if not starts[0]:
        starts[0] = run.created_at
    end_of_run = moment(run.finished_at) if run.finished else now
    cells = []
    for index, stage in enumerate(STAGE_ORDER):
        started = starts[index] if index <= current else ""
        cells.append(
            StageCell(stage, _stage_state(run, index, current), started, _seconds(index, starts, current, end_of_run))
        )
    return cells


def _stage_state(run: Run, index: int, current: int) -> str:
    if index < current:
        return "done"
    if index > current:
        waiting = index == current + 1 and run.stage_done and not run.finished
        return "waiting" if waiting else "todo"
    if run.status is RunStatus.SUCCEEDED or (run.stage_done and not run.finished):
        return "done"
    if not run.finished:
        return "running"
    return "failed" if status_kind(run) == "failed" else "stopped"


def _seconds(index: int, starts: list[str], current: int, end_of_run: datetime | None) -> float | None:
    if index > current or STAGE_ORDER[index] is RunStage.LIVE:
        return None
    start = moment(starts[index])
    following = next((moment(text) for text in starts[index + 1 : current + 1] if text), None)
    end = following or end_of_run
    if start is None or end is None:
        return None
    return (end - start).total_seconds()


def run_seconds(run: Run, now: datetime) -> float | None:
    """From the run's arrival to its end (or to now, while it is under way)."""
    start, end = moment(run.created_at), moment(run.finished_at) if run.finished else now
    return None if start is None or end is None else (end - start).total_seconds()


def other_moments(run: Run) -> list[tuple[str, str]]:
    """What happened besides the stages (`restore_requested`, `restored`, `reconciled_<stage>`), in time order."""
    stages = {stage.value for stage in STAGE_ORDER}
    return sorted(((name, at) for name, at in run.stage_times.items() if name not in stages), key=lambda item: item[1])


def traffic_steps(run: Run) -> list[TrafficStep]:
    """The share of traffic the run's deployment (and the one it replaces) had at each step of its rollout.

    The app creates the new deployment with no traffic, smoke-tests it by naming it in each request, then
    gives it all traffic at once and removes the one it replaced; a deployment that fails the smoke test is
    removed without ever having had traffic.
    """
    if not run.deployment_name:
        return []
    times = run.stage_times
    old = 100 if run.previous_deployment else None
    steps = []
    if RunStage.DEPLOYING.value in times:
        steps.append(TrafficStep("deployed", times[RunStage.DEPLOYING.value], 0, old))
    if RunStage.SMOKE_TESTING.value in times:
        steps.append(TrafficStep("smoke test", times[RunStage.SMOKE_TESTING.value], 0, old))
    if RunStage.LIVE.value in times:
        steps.append(TrafficStep("promoted", times[RunStage.LIVE.value], 100, 0 if old is not None else None))
    elif run.finished and steps:
        steps.append(TrafficStep(run.status.value.replace("_", " "), run.finished_at, 0, old))
    if run.endpoint_state.startswith(DELETED_IDLE):
        deleted_at = run.endpoint_state.split(" ", 1)[-1]
        steps.append(TrafficStep("deleted idle", deleted_at, 0, 0 if old is not None else None))
    if "restored" in times:
        steps.append(TrafficStep("restored", times["restored"], 100, 0 if old is not None else None))
    return sorted(steps, key=lambda step: step.at)
