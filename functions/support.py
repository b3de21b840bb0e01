"""What every trigger does the same way: parse its input, hand on its output, record a last failed try."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TypeVar

import azure.functions as func

from shared.errors import MalformedMessageError, PermanentError, TransientError
from shared.messages import QueueMessage

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


@contextmanager
def recorded_on_last_try(
    run_id: str, dequeue_count: int | None, give_up: Callable[[str, PermanentError], None] | None = None
) -> Iterator[None]:
    """Let errors through for the queue to retry; on the last try, record the failure on the run first.

    `give_up(run_id, error)` records it; by default the run ends failed.
    """
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
