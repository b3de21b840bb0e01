"""What every trigger does the same way: parse its input, run it as a traced stage, hand on its output, record a
last failed try."""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import cache
from pathlib import Path
from typing import TypeVar

import azure.functions as func

from shared.errors import MalformedMessageError, PermanentError, TransientError
from shared.ledger import Run, RunLedger
from shared.messages import QueueMessage
from shared.telemetry import StageSpan, note_handed_on, stage_outcome, stage_span

M = TypeVar("M", bound=QueueMessage)
log = logging.getLogger("autopilot.functions")
HOST_JSON = Path(__file__).resolve().parent.parent / "host.json"


@cache
def max_dequeue_count() -> int:
    """host.json's `extensions.queues.maxDequeueCount` (the host's default is 5)."""
    try:
        return int(json.loads(HOST_JSON.read_text())["extensions"]["queues"]["maxDequeueCount"])
    except (OSError, KeyError, ValueError, TypeError):
        return 5


def parse_message(message: func.QueueMessage, message_type: type[M]) -> M:
    """The typed message, or `MalformedMessageError` (raised on, so the host moves it to the poison queue).

    A malformed message is first recorded in the rejected-inputs table with why (once, whatever the tries).
    """
    try:
        return message_type.from_json(message.get_body())
    except MalformedMessageError as error:
        log.error(
            "malformed message %s on %s (try %s): %r",
            message.id,
            message_type.queue,
            message.dequeue_count,
            message.get_body()[:200],
        )
        from shared.bootstrap import stage_context
        from shared.rejected import rejected_message

        try:
            ctx = stage_context()
            item = rejected_message(message_type.queue, message.id or "", message.get_body(), str(error), ctx.clock())
            ctx.rejected.record(item)
        except Exception:
            # It goes to the poison queue all the same, where `autopilot rejected` lists it.
            log.exception("could not record malformed message %s of %s", message.id, message_type.queue)
        raise


def hand_on(out: func.Out[str], message: QueueMessage | None) -> None:
    if message is not None:
        out.set(message.to_json())
    note_handed_on(message)


@contextmanager
def traced_stage(stage: str, run_id: str = "", dataset: str = "") -> Iterator[StageSpan]:
    """Run a trigger's work as one stage run: a span named `stage` and its duration (`shared.telemetry`).

    With a run id and telemetry on, the outcome comes from the run before and after the work: a run the stage
    ended gives its status (`rejected`, `rolled_back`, ...), a message put back after a transient error
    `retried`, a delivery that changed nothing `skipped` (see `stage_outcome`). With telemetry off the ledger
    is not read for it.
    """
    with stage_span(stage, run_id, dataset) as span:
        if not (span.recording and run_id):
            yield span
            return
        from shared.bootstrap import stage_context

        ledger = stage_context().ledger
        before = _read_run(ledger, run_id)
        span.identify(dataset=before.dataset if before else "")
        try:
            yield span
        except Exception as error:
            span.outcome = stage_outcome(before, _read_run(ledger, run_id), span.handed_on, error)
            raise
        span.outcome = stage_outcome(before, _read_run(ledger, run_id), span.handed_on)


def _read_run(ledger: RunLedger, run_id: str) -> Run | None:
    try:
        # A copy of its own: what the stage changes must not change the "before" it is compared with.
        return copy.deepcopy(ledger.get(run_id))
    except Exception:
        # Telemetry never changes what a stage does: a run it cannot read only makes the outcome coarser.
        log.warning("could not read run %s for the outcome of its stage", run_id, exc_info=True)
        return None


@contextmanager
def recorded_on_last_try(
    run_id: str,
    dequeue_count: int | None,
    give_up: Callable[[str, PermanentError], None] | None = None,
    *,
    stage: str = "",
) -> Iterator[None]:
    """Let errors through for the queue to retry; on the last try, record the failure on the run first.

    `give_up(run_id, error)` records it; by default the run ends failed. With `stage`, all of it runs as that
    stage (`traced_stage`), so a run failed on the last try shows in the stage's outcome.
    """
    traced: AbstractContextManager[object] = traced_stage(stage, run_id) if stage else nullcontext()
    with traced:
        try:
            yield
        except Exception as exc:
            if (dequeue_count or 1) >= max_dequeue_count():
                kind = "transient error" if isinstance(exc, TransientError) else type(exc).__name__
                error = PermanentError(
                    f"gave up after {dequeue_count} tries; last {kind}: {exc}. The message is in the poison queue.",
                    category="retries_exhausted",
                )
                try:
                    (give_up or _fail_run)(run_id, error)
                except Exception:
                    log.exception("could not record the failure of run %s", run_id)
            raise


def _fail_run(run_id: str, error: PermanentError) -> None:
    from shared.bootstrap import stage_context
    from shared.stages.context import fail_run

    fail_run(stage_context(), run_id, error)
