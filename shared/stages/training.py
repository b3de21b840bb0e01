"""Submitting the fine-tuning job and reacting to its events (and to delayed checks of its status)."""

from __future__ import annotations

from datetime import timedelta

from shared.errors import LedgerConflictError, PermanentError, TrainingFailedError, TransientError
from shared.events import MLJobEvent
from shared.ledger import ClaimAction, Run, RunStage, claim_stage, iso, update_claimed, update_run
from shared.messages import CheckFinetuneJob, RegisterModel, SubmitFinetuneJob
from shared.ml.port import RUN_TAG, TERMINAL_JOB_STATUSES, FinetuneJobSpec, JobInfo
from shared.stages.context import StageContext, fail_run, log, permanent_errors_end_run, run_stage
from shared.stages.rollout import CHECK_SLACK
from shared.timestamps import parse_iso

JOB_CHECK_FIRST_DELAY_SECONDS = 30.0
JOB_CHECK_MAX_DELAY_SECONDS = 600.0
LEDGER_ATTEMPTS = 5


def job_name_for(run_id: str) -> str:
    """Deterministic, so a retried submission finds the job it already made."""
    return f"autopilot-{run_id}"


def submit_finetune_job(message: SubmitFinetuneJob, ctx: StageContext) -> None:
    """Submit the run's fine-tuning job on the validated files; the run then waits in `training`."""
    run_stage(ctx, message.run_id, RunStage.SUBMITTING, lambda run: _submit(run, ctx), retry=message)


def _submit(run: Run, ctx: StageContext) -> None:
    base_model = str(run.manifest.get("base_model") or ctx.settings.base_model)
    spec = FinetuneJobSpec(
        job_name=job_name_for(run.run_id),
        run_id=run.run_id,
        dataset=run.dataset,
        base_model=base_model,
        base_model_version=run.manifest.get("base_model_version") or None,
        train_file=run.clean_train_file,
        test_file=run.clean_test_file or None,
        validation_file=run.clean_validation_file or None,
        parameters=dict(run.manifest.get("parameters", {})),
        tags={RUN_TAG: run.run_id, "dataset": run.dataset, "dataset_version": run.version},
    )
    if not spec.train_file:
        raise PermanentError(f"run {run.run_id} has no validated train file to submit", category="validation")
    job = ctx.backend.submit_finetune_job(spec)
    moment = iso(ctx.clock())

    def record(current: Run) -> None:
        if current.stage is not RunStage.SUBMITTING:
            return
        current.base_model = base_model
        current.base_model_info = dict(job.details.get("base_model", {}))
        current.job_name = job.name
        current.job_status = job.status
        current.stage, current.stage_done = RunStage.TRAINING, False
        current.stage_times[RunStage.TRAINING.value] = moment
        # Training is nobody's to hold: the job's events and checks move the run on.
        current.claim_owner, current.claim_expires = "", ""

    update_claimed(ctx.ledger, run, record)
    log.info("run %s: submitted job %s (%s) on %s", run.run_id, job.name, job.status, ctx.backend.name)


def handle_ml_job_event(event: MLJobEvent, ctx: StageContext) -> RegisterModel | None:
    """React to a job event of a job this app submitted; the job's own status decides, not the event's.

    Events come at least once and in any order, so the backend is asked for the job's status. When the
    event says the job ended but the backend still reads it in progress, a delayed `CheckFinetuneJob`
    reads it again later, so that the run does not wait in `training` for an event that already came.
    """
    run_id = event.tags.get(RUN_TAG)
    if not run_id:
        log.info(
            "ignoring %s of job %s: not submitted by this app (no %s tag)", event.event_type, event.job_name, RUN_TAG
        )
        return None
    # RunCompleted parses as status Completed; RunStatusChanged carries the job's status in runStatus
    # (https://learn.microsoft.com/azure/event-grid/event-schema-machine-learning).
    reported_end = event.status in TERMINAL_JOB_STATUSES
    return _follow_job(ctx, run_id, event.job_name, f"{event.event_type} event", reported_end, checks_done=0)


def check_finetune_job(message: CheckFinetuneJob, ctx: StageContext) -> RegisterModel | None:
    """Read the job's status again and do what its event would have done; still in progress: check later.

    Duplicate checks (and duplicate events) share one chain of delayed checks; a check for a run that
    has left `training` or ended does nothing. A check that cannot read the job for a transient reason
    leaves it to the next check of the chain.
    """
    return _follow_job(ctx, message.run_id, message.job_name, "job check", True, checks_done=message.attempt)


def _follow_job(
    ctx: StageContext, run_id: str, job_name: str, source: str, reported_end: bool, *, checks_done: int
) -> RegisterModel | None:
    """The job's status decides: hand on to registering, end the run, or (when told it ended) check again later.

    `checks_done` is 0 for an event, else the attempt of the check being handled.
    """
    claim = claim_stage(ctx.ledger, run_id, RunStage.TRAINING, ctx.clock())
    if claim.run is None or claim.action is ClaimAction.SKIP:
        log.info("%s: %s", source, claim.reason)
        return None
    if claim.run.job_name != job_name:
        log.info("ignoring %s of job %s: run %s belongs to job %s", source, job_name, run_id, claim.run.job_name)
        return None
    if claim.action is ClaimAction.RESEND_NEXT:
        return RegisterModel(run_id, job_name)
    with permanent_errors_end_run(ctx, run_id):
        try:
            job = ctx.backend.get_job(job_name)
        except TransientError as error:
            if checks_done == 0:
                raise  # Event Grid delivers the event again
            # The queue's few quick tries would end the run over a passing throttle; the chain waits longer.
            log.warning("run %s: check %d could not read job %s: %s", run_id, checks_done, job_name, error)
            _check_job_later(ctx, run_id, job_name, "", checks_done + 1)
            return None
        if reported_end and not job.finished:
            _check_job_later(ctx, run_id, job_name, job.status, checks_done + 1)
            return None
        return _record_job_outcome(claim.run, job, ctx)
    return None


def job_check_delay(attempt: int) -> float:
    """Seconds before check number `attempt` (1, 2, ...) of a job: 30 s, doubling, at most 10 minutes."""
    return min(JOB_CHECK_MAX_DELAY_SECONDS, JOB_CHECK_FIRST_DELAY_SECONDS * 2 ** (attempt - 1))


def _check_job_later(ctx: StageContext, run_id: str, job_name: str, status: str, attempt: int) -> None:
    """Claim the next check (compare-and-swap on `job_check_due`), recording `status` unless "", then send it.

    Of duplicate events and checks, only the one that moves `job_check_due` past now sends a check;
    the others find a check already due later and stop, so one chain of checks remains. A conflict
    with an unrelated write reads the run again; one that never settles is raised for a retry.
    """
    delay = job_check_delay(attempt)
    for _ in range(LEDGER_ATTEMPTS):
        now = ctx.clock()
        run = ctx.ledger.get(run_id)
        if run is None or run.finished or run.stage is not RunStage.TRAINING or run.stage_done:
            return
        if run.job_check_due and now < parse_iso(run.job_check_due) - CHECK_SLACK:
            log.info("run %s: a check of job %s is due at %s already", run_id, job_name, run.job_check_due)
            return
        previous_due, due = run.job_check_due, iso(now + timedelta(seconds=delay))
        run.job_status, run.job_check_due, run.updated_at = status or run.job_status, due, iso(now)
        try:
            ctx.ledger.replace(run)
        except LedgerConflictError:
            continue
        try:
            # A queue message can stay invisible for up to 7 days, far beyond the longest delay here
            # (Put Message, visibilitytimeout: https://learn.microsoft.com/rest/api/storageservices/put-message).
            ctx.sender.send(CheckFinetuneJob(run_id, job_name, attempt), delay_seconds=delay)
        except Exception:
            # Give the claim back, or the retry of this delivery would find a check due that was never sent.
            _release_job_check(ctx, run_id, due, previous_due)
            raise
        log.info("run %s: job %s reads %s; check %d in %.0f s", run_id, job_name, status or "nothing", attempt, delay)
        return
    raise LedgerConflictError(f"run {run_id} kept changing while the next check of job {job_name} was scheduled")


def _release_job_check(ctx: StageContext, run_id: str, claimed_due: str, previous_due: str) -> None:
    def release(current: Run) -> None:
        if current.job_check_due == claimed_due:
            current.job_check_due = previous_due

    try:
        update_run(ctx.ledger, run_id, release)
    except Exception:
        log.exception("run %s: could not give back the job check claimed for %s", run_id, claimed_due)


def _record_job_outcome(run: Run, job: JobInfo, ctx: StageContext) -> RegisterModel | None:
    if not job.finished:
        update_run(ctx.ledger, run.run_id, lambda current: setattr(current, "job_status", job.status))
        log.info("run %s: job %s is %s", run.run_id, job.name, job.status)
        return None
    if job.status != "Completed":
        update_run(ctx.ledger, run.run_id, lambda current: setattr(current, "job_status", job.status))
        reason = job.failure_reason or "no reason given by the backend"
        fail_run(ctx, run.run_id, TrainingFailedError(f"fine-tuning job {job.name} ended {job.status}: {reason}"))
        return None

    def record(current: Run) -> None:
        if current.stage is not RunStage.TRAINING:
            return
        current.job_status = job.status
        current.metrics = dict(job.metrics)
        current.stage_done = True

    update_run(ctx.ledger, run.run_id, record)
    log.info("run %s: job %s completed %s", run.run_id, job.name, job.metrics)
    return RegisterModel(run.run_id, job.name)
