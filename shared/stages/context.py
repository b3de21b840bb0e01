"""What every stage works with, wired once per process by `shared.bootstrap`."""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TypeVar

from shared.cleanup_log import CleanupLog, LoggedCleanupLog
from shared.errors import ClaimLostError, DatasetRejectedError, PermanentError, TransientError
from shared.ledger import (
    ClaimAction,
    Run,
    RunLedger,
    RunStage,
    RunStatus,
    claim_stage,
    end_run,
    holds,
    release_claim,
    update_run,
)
from shared.lifecycle import LifecyclePublisher, NoLifecyclePublisher, announce
from shared.messages import QueueMessage
from shared.ml.port import MLBackend
from shared.queueing import MessageSender
from shared.rejected import LoggedRejectedInputs, RejectedInputs
from shared.settings import Settings
from shared.storage import BlobStore, FolderTracker
from shared.timestamps import parse_iso

log = logging.getLogger("autopilot.stages")
M = TypeVar("M", bound=QueueMessage)
# Delays before a stage tries again after a transient error: 5 s doubling up to 5 min, +-20 % jitter so
# that runs throttled together do not come back together; never less than the service's Retry-After.
RETRY_FIRST_SECONDS = 5.0
RETRY_MAX_SECONDS = 300.0
RETRY_JITTER = 0.2


@dataclass
class StageContext:
    settings: Settings
    ledger: RunLedger
    blobs: BlobStore
    folders: FolderTracker
    sender: MessageSender
    backend: MLBackend
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(timezone.utc))
    # Events and messages set aside as never able to succeed (see shared/rejected.py).
    rejected: RejectedInputs = field(default_factory=LoggedRejectedInputs)
    # The idle cleanup's decisions (see shared/cleanup_log.py).
    cleanup: CleanupLog = field(default_factory=LoggedCleanupLog)
    # Where runs' ends and endpoints' comings and goings are announced (see shared/lifecycle.py).
    lifecycle: LifecyclePublisher = field(default_factory=NoLifecyclePublisher)


def fail_run(ctx: StageContext, run_id: str, error: PermanentError, status: RunStatus | None = None) -> Run:
    """Record a permanent failure on the run and end it (`rejected` for a rejected dataset, else `failed`).

    A deployment the run made without giving it traffic is removed (see `shared.stages.release`).
    """
    from shared.stages.release import release_run_resources

    if status is None:
        status = RunStatus.REJECTED if isinstance(error, DatasetRejectedError) else RunStatus.FAILED
    log.error("run %s %s: %s: %s", run_id, status.value, error.category, error)

    def change(run: Run) -> None:
        if not run.finished:
            end_run(run, status, category=error.category, message=str(error))

    current = ctx.ledger.get(run_id)
    ending_now = current is not None and not current.finished
    if ending_now:
        release_run_resources(ctx, run_id, ending=True)
    ended = update_run(ctx.ledger, run_id, change)
    if ended.status is status:
        announce(ctx, ended)
    if not ending_now and release_run_resources(ctx, run_id):
        return ctx.ledger.get(run_id) or ended
    return ended


@contextmanager
def permanent_errors_end_run(ctx: StageContext, run_id: str) -> Iterator[None]:
    """Inside, a `PermanentError` ends the run with its category and is not raised on (the message is done)."""
    try:
        yield
    except PermanentError as error:
        fail_run(ctx, run_id, error)


def run_stage(
    ctx: StageContext,
    run_id: str,
    stage: RunStage,
    work: Callable[[Run], M | None],
    next_message: Callable[[str], M] | None = None,
    retry: QueueMessage | None = None,
) -> M | None:
    """Claim `stage` of the run and do its `work`; a duplicate does nothing, a finished stage hands on again.

    A `PermanentError` from `work` ends the run. A `TransientError` puts `retry` (the message being
    handled) back on its queue with a growing delay (`retry_later`); without `retry`, or once the stage's
    retry time is over, it is raised for the queue to retry.
    """
    lease = timedelta(seconds=ctx.settings.claim_lease_seconds)
    claim = claim_stage(ctx.ledger, run_id, stage, ctx.clock(), owner=uuid.uuid4().hex, lease=lease)
    if claim.action is ClaimAction.RESEND_NEXT and next_message is not None:
        return next_message(run_id)
    if claim.action is not ClaimAction.PROCEED or claim.run is None:
        log.info("%s: %s", stage.value, claim.reason or f"run {run_id} is past it")
        return None
    claimed = claim.run
    clean = False
    try:
        result = work(claimed)
        clean = True
        return result
    except ClaimLostError as lost:
        log.warning("%s: %s", stage.value, lost)
    except TransientError as error:
        if not _still_held(ctx, claimed):
            log.warning(
                "%s of run %s: %s, but this delivery no longer holds the stage: dropped", stage.value, run_id, error
            )
        elif retry is None:
            raise
        elif not retry_later(ctx, claimed, retry, error):
            minutes = retry_minutes(ctx.settings, stage.value)
            fail_run(
                ctx,
                run_id,
                PermanentError(
                    f"{stage.value} kept meeting transient errors for {minutes:g} min (its retry time); last: {error}",
                    category="transient_errors",
                ),
            )
    except PermanentError as error:
        if _still_held(ctx, claimed):
            fail_run(ctx, run_id, error)
        else:
            log.warning(
                "%s of run %s: %s, but this delivery no longer holds the stage: dropped", stage.value, run_id, error
            )
    finally:
        release_claim(ctx.ledger, claimed, clean=clean)
    return None


def _still_held(ctx: StageContext, claimed: Run) -> bool:
    current = ctx.ledger.get(claimed.run_id)
    return current is not None and holds(current, claimed)


def retry_minutes(settings: Settings, step: str) -> float:
    """How long a step may keep retrying transient errors: AUTOPILOT_TRANSIENT_RETRY_MINUTES, and for
    deploying (whose checks run on the same clock) at least AUTOPILOT_DEPLOYMENT_TIMEOUT_MINUTES; for
    promoting, plus its bake periods."""
    if step == RunStage.DEPLOYING.value:
        return max(settings.transient_retry_minutes, settings.deployment_timeout_minutes)
    if step == RunStage.PROMOTING.value:
        # The bake periods of progressive traffic run on the promotion's clock too.
        bakes = max(0, len(settings.traffic_steps) - 1)
        return settings.transient_retry_minutes + bakes * settings.bake_minutes
    return settings.transient_retry_minutes


def retry_delay(attempt: int, retry_after: float | None, rng: Callable[[], float] = random.random) -> float:
    """Seconds to wait before try `attempt + 1`: exponential with jitter, capped, at least `retry_after`."""
    backoff = min(RETRY_MAX_SECONDS, RETRY_FIRST_SECONDS * 2**attempt)
    jittered = backoff * (1 - RETRY_JITTER + 2 * RETRY_JITTER * rng())
    return round(max(jittered, retry_after or 0.0), 1)


def retry_later(ctx: StageContext, claimed: Run, message: QueueMessage, error: TransientError) -> bool:
    """Put `message` back, delayed, after a transient error in the claimed stage; False once time is up.

    The time allowed (`retry_minutes`) runs from the moment the stage started (its `stage_times` entry);
    after that `run_stage` ends the run with the last error.
    """
    run_id, step = claimed.run_id, claimed.stage.value
    return retry_step_later(ctx, run_id, step, message, error)


def retry_step_later(ctx: StageContext, run_id: str, step: str, message: QueueMessage, error: TransientError) -> bool:
    """`retry_later` for a step that is not a claimed stage (e.g. bringing an endpoint back); `step` names
    its `stage_times` entry."""
    run = ctx.ledger.get(run_id)
    if run is None or run.finished:
        log.info("run %s ended while %s met %s; not trying again", run_id, step, error)
        return True
    now = ctx.clock()
    started = run.stage_times.get(step)
    minutes = retry_minutes(ctx.settings, step)
    if started and now - parse_iso(started) > timedelta(minutes=minutes):
        log.error("run %s: %s still meets transient errors after %g min; giving up", run_id, step, minutes)
        return False
    # Consecutive failures, not all of the stage's: a deployment check that goes through starts the delays afresh.
    attempt = run.retry_streak
    delay = retry_delay(attempt, error.retry_after)

    def count(current: Run) -> None:
        current.retries[step] = current.retries.get(step, 0) + 1
        current.retry_streak += 1

    update_run(ctx.ledger, run_id, count)
    ctx.sender.send(message, delay_seconds=delay)
    log.warning(
        "run %s: %s met a transient error (try %d), trying again in %.0f s: %s", run_id, step, attempt + 1, delay, error
    )
    return True


def mark_live_runs(ctx: StageContext, endpoint_name: str, state: str, *, except_run_id: str = "") -> None:
    """Runs whose deployment is live on `endpoint_name` (but `except_run_id`) now say `state` instead."""
    for run in ctx.ledger.runs_of_endpoint(endpoint_name):
        if run.run_id != except_run_id and run.endpoint_state == "live":
            update_run(ctx.ledger, run.run_id, lambda current: setattr(current, "endpoint_state", state))
