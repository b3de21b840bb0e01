"""Fakes with state for unit tests: plain dicts behind the same ports the adapters implement."""

from __future__ import annotations

import copy
import hashlib
import io
import itertools
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import IO, BinaryIO

from shared.cleanup_log import CleanupDecision
from shared.errors import BlobChangedError, LedgerConflictError, TransientError
from shared.ledger import Run
from shared.messages import QueueMessage
from shared.ml.simulated import SimulatedMLBackend
from shared.rejected import PEEK_LIMIT, PoisonMessage, RejectedInput
from shared.settings import Settings
from shared.stages.context import StageContext
from shared.storage import BlobInfo


class FakeRunLedger:
    def __init__(self) -> None:
        self.rows: dict[str, Run] = {}
        self._etags = itertools.count(1)

    def create(self, run: Run) -> bool:
        if run.run_id in self.rows:
            return False
        self.rows[run.run_id] = replace(run, etag=f"e{next(self._etags)}")
        return True

    def get(self, run_id: str) -> Run | None:
        row = self.rows.get(run_id)
        # A copy as deep as the Table adapter's (every row is parsed anew), so callers never share state.
        return None if row is None else copy.deepcopy(row)

    def replace(self, run: Run) -> Run:
        if self.rows[run.run_id].etag != run.etag:
            raise LedgerConflictError(f"run {run.run_id} changed")
        stored = replace(run, etag=f"e{next(self._etags)}")
        self.rows[run.run_id] = stored
        return replace(stored)

    def list_runs(self, limit: int = 200) -> list[Run]:
        return sorted(self.rows.values(), key=lambda r: r.created_at, reverse=True)[:limit]

    def runs_of_endpoint(self, endpoint_name: str) -> list[Run]:
        return [replace(run) for run in self.list_runs(len(self.rows)) if run.endpoint_name == endpoint_name]

    def runs_in_endpoint_state(self, *prefixes: str) -> list[Run]:
        if not prefixes or not all(prefixes):
            raise ValueError("runs_in_endpoint_state needs at least one non-empty prefix")
        return [replace(run) for run in self.list_runs(len(self.rows)) if run.endpoint_state.startswith(prefixes)]

    def unfinished_runs(self) -> list[Run]:
        return [replace(run) for run in self.list_runs(len(self.rows)) if not run.finished]


class FakeBlobStore:
    def __init__(self) -> None:
        self.blobs: dict[tuple[str, str], bytes] = {}
        self._etags = itertools.count(1)
        self.etags: dict[tuple[str, str], str] = {}
        self.md5s: dict[tuple[str, str], str] = {}
        # Names of the blobs opened for reading, in order.
        self.reads: list[str] = []
        # Blobs uploaded without an MD5 get none, as blobs committed from blocks.
        self.service_md5 = False

    def url(self, container: str, name: str) -> str:
        return f"https://fake.blob/{container}/{name}"

    def list_blobs(self, container: str, prefix: str) -> list[BlobInfo]:
        return [
            BlobInfo(c, n, self.url(c, n), self.etags[(c, n)], len(data), self.md5s.get((c, n), ""))
            for (c, n), data in sorted(self.blobs.items())
            if c == container and n.startswith(prefix)
        ]

    def open_read(self, container: str, name: str, etag: str = "") -> BinaryIO:
        if etag and etag != self.etags[(container, name)]:
            raise BlobChangedError(f"blob {container}/{name} has been written since its version {etag}")
        self.reads.append(name)
        return io.BytesIO(self.blobs[(container, name)])

    def upload(
        self,
        container: str,
        name: str,
        data: bytes | IO[bytes],
        content_type: str = "",
        content_md5: str = "",
        progress: Callable[[int, int | None], None] | None = None,
    ) -> BlobInfo:
        """Like Put Blob: Content-MD5 is the one given, else (`service_md5`) the content's."""
        content = data if isinstance(data, bytes) else data.read()
        if progress is not None:
            progress(len(content), len(content))
        self.blobs[(container, name)] = content
        self.etags[(container, name)] = f'"0x{next(self._etags):X}"'
        md5 = content_md5 or (hashlib.md5(content).hexdigest() if self.service_md5 else "")
        self.md5s[(container, name)] = md5
        return BlobInfo(container, name, self.url(container, name), self.etags[(container, name)], len(content), md5)


class FakeFolderTracker:
    def __init__(self) -> None:
        self.last: dict[tuple[str, str], datetime] = {}

    def record_event(self, dataset: str, version: str, at: datetime) -> None:
        key = (dataset, version)
        if key not in self.last or self.last[key] < at:
            self.last[key] = at

    def last_event(self, dataset: str, version: str) -> datetime | None:
        return self.last.get((dataset, version))


class FakeMessageSender:
    def __init__(self) -> None:
        self.sent: list[tuple[QueueMessage, float]] = []

    def send(self, message: QueueMessage, *, delay_seconds: float = 0) -> None:
        self.sent.append((message, delay_seconds))


class FakeRejectedInputs:
    def __init__(self) -> None:
        self.rows: dict[str, RejectedInput] = {}
        # While set, every call fails as an unreachable table does.
        self.down = False

    def record(self, item: RejectedInput) -> bool:
        if self.down:
            raise TransientError("could not record a rejected input: the table is unreachable")
        if item.rejected_id in self.rows:
            return False
        self.rows[item.rejected_id] = item
        return True

    def list_rejected(self, limit: int = 100) -> list[RejectedInput]:
        if self.down:
            raise TransientError("could not list rejected inputs: the table is unreachable")
        return sorted(self.rows.values(), key=lambda item: item.received_at, reverse=True)[:limit]

    def get(self, rejected_id: str) -> RejectedInput | None:
        return self.rows.get(rejected_id)


class FakeCleanupLog:
    """Cleanup decisions by their row key."""

    def __init__(self) -> None:
        self.rows: dict[str, CleanupDecision] = {}

    def record(self, decision: CleanupDecision) -> None:
        self.rows[decision.row_key] = decision

    def list_decisions(self, limit: int = 200) -> list[CleanupDecision]:
        return sorted(self.rows.values(), key=lambda item: item.decided_at, reverse=True)[:limit]

    def deletions(self) -> list[CleanupDecision]:
        return [decision for decision in self.list_decisions(len(self.rows)) if decision.deleted]


class FakePoisonQueues:
    """Poison queues as lists of messages by the queue they came from; `sent` is what `replay` put back."""

    def __init__(self) -> None:
        self.messages: dict[str, list[PoisonMessage]] = {}
        self.sent: list[tuple[str, str]] = []
        # While set, putting a message back fails as an unreachable queue does.
        self.sends_fail = False
        self._ids = itertools.count(1)

    def add(self, queue: str, raw: str, inserted_at: str = "2026-11-20T09:00:00.000Z") -> PoisonMessage:
        message = PoisonMessage(f"poison-{next(self._ids)}", queue, raw, inserted_at, dequeue_count=5)
        self.messages.setdefault(queue, []).append(message)
        return message

    def peek(self, queue: str) -> list[PoisonMessage]:
        return self.messages.get(queue, [])[:PEEK_LIMIT]

    def replay(self, queue: str, message_id: str) -> PoisonMessage | None:
        waiting = self.messages.get(queue, [])
        found = next((message for message in waiting if message.message_id == message_id), None)
        if found is None:
            return None
        if self.sends_fail:
            raise TransientError(f"could not send to queue {queue}")
        self.sent.append((queue, found.raw))
        waiting.remove(found)
        return found


class FakeClock:
    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def fake_context(**settings_overrides: object) -> StageContext:
    """A StageContext on fakes and a simulated backend whose jobs finish only when told."""
    clock = FakeClock()
    settings = replace(
        Settings(storage_connection="fake", quiet_period_seconds=30, deployment_poll_seconds=5), **settings_overrides
    )  # type: ignore[arg-type]
    return StageContext(
        settings=settings,
        ledger=FakeRunLedger(),
        blobs=FakeBlobStore(),
        folders=FakeFolderTracker(),
        sender=FakeMessageSender(),
        backend=SimulatedMLBackend(job_seconds=None, deploy_seconds=2, clock=clock),
        clock=clock,
        rejected=FakeRejectedInputs(),
        cleanup=FakeCleanupLog(),
    )
