"""The reconcile timer: runs that sat in a stage too long are looked at again, and moved on or ended.

Only Event Grid moves a run out of `training`, and only queue messages move it through the other stages: a job
event that never arrives (dead-lettered after a day of failed deliveries, a subscription deleted for a while),
a deployment check chain that stopped, or a message that vanished leaves a run waiting for ever. The timer
looks at every unfinished run:

- in `training`, with no event (nor a job check under way) for AUTOPILOT_TRAINING_CHECK_MINUTES, the job is
  read: finished, the run takes the path of a delayed job check (`training.check_finetune_job`), so it goes on
  to registering or ends with the job's reason; still running, nothing is done.
- in any other stage, with no sign of life (a ledger write, a check due) for AUTOPILOT_STALLED_STAGE_MINUTES and
  no delivery holding the stage, the message that moves the run on from where it is goes out again: the
  stage's own while it runs (it resumes), the next stage's once it is done. After `RESENDS_BEFORE_GIVING_UP`
  re-sends in one stage, the run ends `failed`, category `stalled`.

What it did is on the run: `stage_times["reconciled_<stage>"]` (when) and `retries["reconciled_<stage>"]`
(how often). Each action is claimed by a compare-and-swap write of those, so two firings of the timer act once;
every stage claims its run with compare-and-swap too, so a late original message or event changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import Enum

from shared.errors import LedgerConflictError, NotFoundError, PermanentError
from shared.ledger import STAGE_ORDER, Run, RunStage, iso
from shared.messages import (
    CheckFinetuneJob,
    DeployModel,
    PromoteDeployment,
    QueueMessage,
    RegisterModel,
    SmokeTestDeployment,
    SubmitFinetuneJob,
    ValidateDataset,
)
from shared.settings import STALLED_STAGE_MINUTES, TRAINING_CHECK_MINUTES
from shared.stages import training
from shared.stages.context import StageContext, fail_run, log
from shared.timestamps import parse_iso

RESENDS_BEFORE_GIVING_UP = 3
STALLED_CATEGORY = "stalled"

# The message that claims each stage (see `shared.ledger.claim_stage`); `training` is claimed by job events.
_CLAIMING_MESSAGES: dict[RunStage, Callable[[Run], QueueMessage]] = {
    RunStage.VALIDATING: lambda run: ValidateDataset(run.run_id),
    RunStage.SUBMITTING: lambda run: SubmitFinetuneJob(run.run_id),
    RunStage.REGISTERING: lambda run: RegisterModel(run.run_id, run.job_name),
    RunStage.DEPLOYING: lambda run: DeployModel(run.run_id),
    RunStage.SMOKE_TESTING: lambda run: SmokeTestDeployment(run.run_id),
    RunStage.PROMOTING: lambda run: PromoteDeployment(run.run_id),
}


class Reconciled(str, Enum):
    """What the timer did with a run it found stalled."""

    RESENT = "resent"  # the message that moves the run on went out again
    JOB_RUNNING = "job_running"  # the training job still runs: nothing to do
    JOB_ENDED = "job_ended"  # the training job ended: the run went on, or ended with the job's reason
    ENDED = "ended"  # the run cannot go on: ended `stalled`


@dataclass(frozen=True)
class Reconciliation:
    """One run the timer acted on: its stage, what was done, and a word on it (the message sent, the job status)."""

    run_id: str
    stage: RunStage
    outcome: Reconciled
    detail: str


def reconcile_runs(ctx: StageContext) -> list[Reconciliation]:
    """Look again at every unfinished run that sat in its stage past that stage's limit; what was done, per run.

    Runs within their limits are left alone; one run's trouble (a transient error, a conflict) leaves it
    to the next firing and does not stop the others.
    """
    done = []
    for run in ctx.ledger.unfinished_runs():
        try:
            outcome = _reconcile(ctx, run)
        except Exception as exc:  # the timer is not retried: the next firing tries again
            log.warning(
                "reconcile: run %s in %s: %s; trying again at the next firing", run.run_id, run.stage.value, exc
            )
            continue
        if outcome is not None:
            done.append(outcome)
    return done


def reconcile_key(stage: RunStage) -> str:
    """The `stage_times` and `retries` entry that says when and how often the timer acted on `stage`."""
    return f"reconciled_{stage.value}"


def _reconcile(ctx: StageContext, run: Run) -> Reconciliation | None:
    now = ctx.clock()
    if run.claim_owner and run.claim_expires and parse_iso(run.claim_expires) > now:
        return None  # a delivery works on the stage now
    training_job = run.stage is RunStage.TRAINING and not run.stage_done
    limit = ctx.settings.training_check_minutes if training_job else ctx.settings.stalled_stage_minutes
    quiet = now - _last_sign_of_life(run)
    if quiet <= timedelta(minutes=limit):
        return None
    if training_job:
        return _check_job(ctx, run, quiet)
    return _resend(ctx, run, quiet)


def _last_sign_of_life(run: Run) -> datetime:
    """The latest moment the run showed it is being worked on: a write, a stage start, a check that is due."""
    moments = (
        run.created_at,
        run.updated_at,
        run.stage_times.get(run.stage.value, ""),
        run.stage_times.get(reconcile_key(run.stage), ""),
        run.deploy_check_due,
        run.job_check_due,
    )
    return max(parse_iso(moment) for moment in moments if moment)


def _check_job(ctx: StageContext, run: Run, quiet: timedelta) -> Reconciliation | None:
    """Read the job of a run that heard nothing of it for a while; an ended job goes the way of a job check."""
    try:
        job = ctx.backend.get_job(run.job_name)
    except NotFoundError as error:
        if not _claim(ctx, run):
            return None
        why = f"its job {run.job_name} cannot be found in the backend: {error}"
        reason = _stalled(run, quiet, why, TRAINING_CHECK_MINUTES)
        fail_run(ctx, run.run_id, PermanentError(reason, category=STALLED_CATEGORY))
        return Reconciliation(run.run_id, run.stage, Reconciled.ENDED, reason)
    if not job.finished:
        return Reconciliation(run.run_id, run.stage, Reconciled.JOB_RUNNING, f"job {job.name} is {job.status}")
    if not _claim(ctx, run):
        return None
    log.warning(
        "reconcile: run %s heard nothing of job %s for %s, which ended %s; handing it on as a job check would",
        run.run_id,
        job.name,
        _minutes(quiet),
        job.status,
    )
    registration = training.check_finetune_job(CheckFinetuneJob(run.run_id, run.job_name), ctx)
    if registration is not None:
        ctx.sender.send(registration)
    return Reconciliation(run.run_id, run.stage, Reconciled.JOB_ENDED, f"job {job.name} ended {job.status}")


def _resend(ctx: StageContext, run: Run, quiet: timedelta) -> Reconciliation | None:
    """Send again the message that moves the run on; after a few re-sends in one stage, end the run."""
    waiting_for = _stage_waited_for(run)
    if waiting_for not in _CLAIMING_MESSAGES:
        log.error("reconcile: run %s is in %s: no message moves it on", run.run_id, _where(run))
        return None
    message = _CLAIMING_MESSAGES[waiting_for](run)
    resends = run.retries.get(reconcile_key(run.stage), 0)
    if not _claim(ctx, run):
        return None
    if resends >= RESENDS_BEFORE_GIVING_UP:
        why = f"{type(message).__name__} was sent again {resends} times and nothing came of it"
        reason = _stalled(run, quiet, why, STALLED_STAGE_MINUTES)
        fail_run(ctx, run.run_id, PermanentError(reason, category=STALLED_CATEGORY))
        return Reconciliation(run.run_id, run.stage, Reconciled.ENDED, reason)
    ctx.sender.send(message)
    log.warning(
        "reconcile: run %s showed no sign of life in %s for %s; sent %s again (%d)",
        run.run_id,
        _where(run),
        _minutes(quiet),
        type(message).__name__,
        resends + 1,
    )
    return Reconciliation(run.run_id, run.stage, Reconciled.RESENT, type(message).__name__)


def _stage_waited_for(run: Run) -> RunStage | None:
    """The stage the run waits to enter or to finish: the next one once its stage is done (`received` always is)."""
    if run.stage_done or run.stage is RunStage.RECEIVED:
        following = STAGE_ORDER[STAGE_ORDER.index(run.stage) + 1 :]
        return following[0] if following else None
    return run.stage


def _claim(ctx: StageContext, run: Run) -> bool:
    """Record on the run that the timer acts on it now, conditional on the run being as it was read.

    False when the run changed meanwhile (the stage moved, or another firing of the timer got there first).
    """
    key, moment = reconcile_key(run.stage), iso(ctx.clock())
    claimed = replace(
        run,
        stage_times={**run.stage_times, key: moment},
        retries={**run.retries, key: run.retries.get(key, 0) + 1},
        updated_at=moment,
    )
    try:
        ctx.ledger.replace(claimed)
    except LedgerConflictError:
        log.info("reconcile: run %s changed while it was looked at; left alone", run.run_id)
        return False
    return True


def _stalled(run: Run, quiet: timedelta, why: str, limit_setting: str) -> str:
    return (
        f"run {run.run_id} sat in {_where(run)} for {_minutes(quiet)} without moving on; {why} "
        f"(found by the reconcile timer; limit: setting {limit_setting})"
    )


def _where(run: Run) -> str:
    return f"{run.stage.value}{' (done)' if run.stage_done else ''}"


def _minutes(quiet: timedelta) -> str:
    return f"{quiet.total_seconds() / 60:.0f} min"
