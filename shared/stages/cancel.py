"""Stopping a run that is under way, on request: before GPU hours or an endpoint are spent on it."""

from __future__ import annotations

from collections.abc import Callable

from shared.errors import BackendError, CannotCancelError
from shared.ledger import Run, RunLedger, RunStage, RunStatus, end_run, update_run
from shared.lifecycle import announce
from shared.messages import CancelRun
from shared.stages.context import StageContext, log

# From promotion on, the run's deployment takes traffic: it is not stopped half-way.
_TOO_LATE = (RunStage.PROMOTING, RunStage.LIVE)
_DEPLOYMENT_STAGES = (RunStage.DEPLOYING, RunStage.SMOKE_TESTING)


def request_cancel(ledger: RunLedger, run_id: str, reason: str) -> CancelRun:
    """The command that cancels `run_id`; `CannotCancelError` saying why when it cannot be."""
    run = ledger.get(run_id)
    _check_cancellable(run, run_id)
    return CancelRun(run_id, reason.strip() or "canceled on request")


def _check_cancellable(run: Run | None, run_id: str) -> None:
    if run is None:
        raise CannotCancelError(f"no run {run_id}")
    if run.finished:
        raise CannotCancelError(f"run {run_id} has already ended ({run.status.value})")
    if run.stage in _TOO_LATE:
        raise CannotCancelError(f"run {run_id} is {run.stage.value}: its deployment is being given traffic")


def cancel_run(message: CancelRun, ctx: StageContext) -> None:
    """End the run as canceled (so no stage goes on with it), then cancel its job and remove its new deployment.

    A run that has ended or is being promoted is left alone (logged); cancelling twice changes nothing.
    """
    try:
        _check_cancellable(ctx.ledger.get(message.run_id), message.run_id)
    except CannotCancelError as exc:
        log.info("cancel: %s; nothing to do", exc)
        return

    def end(current: Run) -> None:
        if not current.finished and current.stage not in _TOO_LATE:
            # Said as done up front (a failure to do it is said instead, below): whoever sees the run
            # canceled sees the whole of it.
            planned = "; ".join(f"{what} {done}" for what, done, _ in _stopping(current, ctx))
            end_run(current, RunStatus.CANCELED, category="canceled", message=_with(message.reason, planned))

    run = update_run(ctx.ledger, message.run_id, end)
    if run.status is not RunStatus.CANCELED:
        log.info("cancel: run %s moved on to %s meanwhile; left alone", run.run_id, run.stage.value)
        return
    outcomes = [_attempt(action, what, done) for what, done, action in _stopping(run, ctx)]
    said = _with(message.reason, "; ".join(outcomes))
    if said != run.error_message:
        update_run(ctx.ledger, run.run_id, lambda current: setattr(current, "error_message", said))
    log.warning("run %s canceled in %s: %s", run.run_id, run.stage.value, said)
    announce(ctx, ctx.ledger.get(run.run_id) or run)


def _stopping(run: Run, ctx: StageContext) -> list[tuple[str, str, Callable[[], None]]]:
    """(what, what becomes of it, how) for each thing of the run's that must stop."""
    steps: list[tuple[str, str, Callable[[], None]]] = []
    if run.job_name and run.stage is RunStage.TRAINING:
        steps.append((f"job {run.job_name}", "canceled", lambda: ctx.backend.cancel_job(run.job_name)))
    if run.deployment_name and run.stage in _DEPLOYMENT_STAGES:
        steps.append(
            (
                f"deployment {run.endpoint_name}/{run.deployment_name}",
                "removed",
                # With the endpoint when the run made it and nothing else is on it; a transient failure
                # leaves the removal pending for the cleanup timer (the run's endpoint_state says so).
                lambda: _release(ctx, run.run_id),
            )
        )
    return steps


def _release(ctx: StageContext, run_id: str) -> None:
    from shared.stages.release import release_run_resources

    release_run_resources(ctx, run_id)


def _with(reason: str, done: str) -> str:
    return f"{reason} ({done})" if done else reason


def _attempt(action: Callable[[], None], what: str, done: str) -> str:
    """Do `action`; what became of `what`, for the run's message (a backend's refusal is said, not raised)."""
    try:
        action()
    except BackendError as exc:
        return f"{what} could not be {done}: {exc}"
    return f"{what} {done}"
