"""Inputs set aside: events and queue messages that can never succeed, kept with the reason, and the poison queues.

An Event Grid event the app cannot use (a type its function does not handle, no subject or data, a name no store
of the run can hold ...) is recorded here and answered with success, so that Event Grid neither retries it for a
day nor redelivers the good events of its batch. A malformed queue message is recorded the same way before the
host moves it to `<queue>-poison`. A transient failure (storage down) is raised as before, so that Event Grid and
the queue try again. What is recorded holds no secret (values under secret-looking names and `sig=`,
`AccountKey=`-like text are masked) and is capped to fit a Table Storage row.

`list_set_aside` shows both kinds, and the messages of the poison queues, newest first; `replay_poison_message`
puts a poison message back on its queue, where the ledger's claims keep its work exactly-once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

from shared.errors import MalformedMessageError, TransientError
from shared.events import table_key_problem
from shared.messages import ALL_QUEUES
from shared.queueing import decode_queue_body
from shared.storage_connection import LazyTable, StorageConnection, as_storage_connection
from shared.timestamps import iso

if TYPE_CHECKING:
    from shared.ledger import RunLedger
    from shared.stages.context import StageContext

log = logging.getLogger("autopilot.rejected")

PARTITION = "rejected"
# A string property holds up to 64 KiB (32,768 UTF-16 code units) and a whole entity 1 MiB
# (https://learn.microsoft.com/rest/api/storageservices/understanding-the-table-service-data-model#property-types):
# an event is kept to 8,000 characters, the other fields to 2,000, far inside both.
MAX_BODY_CHARACTERS = 8000
MAX_TEXT_CHARACTERS = 2000
# The id of a record is a hash of what came (32 hex digits): the same for every delivery of one input, and a
# valid Table key whatever the input holds.
_ID_PATTERN = re.compile(r"[0-9a-f]{32}")
POISON_SUFFIX = "-poison"
# Peek Messages returns at most 32 messages (https://learn.microsoft.com/rest/api/storageservices/peek-messages).
PEEK_LIMIT = 32
# While `replay` looks for a message, the ones it received stay invisible this long at most (it makes them
# visible again as soon as it is done) and it looks at this many at most.
REPLAY_LEASE_SECONDS = 30
REPLAY_SCAN_LIMIT = 5000

# Names whose values are secrets wherever they appear in an event or message (case-insensitive).
_SECRET_NAME = re.compile(
    r"key|secret|password|passwd|pwd|token|signature|credential|authorization|connectionstring|^sig$|^sas$|^code$",
    re.IGNORECASE,
)
_SECRET_TEXT = (
    # name=value pairs of connection strings, SAS tokens and function keys in URLs.
    (
        re.compile(
            r"\b((?:shared)?access(?:key|signature|token)|accountkey|sig|signature|password|pwd|secret|"
            r"client_secret|token|code|api[-_]?key)=([^&;\s\"',]+)",
            re.IGNORECASE,
        ),
        r"\1=***",
    ),
    (re.compile(r"\bbearer\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE), "Bearer ***"),
    # A bare storage account key: long base64 with its padding. Tried only where a run of base64 characters
    # starts, so that a long run without padding costs linear time, not quadratic.
    (re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{40,}={1,2}"), "***"),
)
# Shown escaped: control characters, and lone surrogates (no request can carry them).
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


class RejectedKind(str, Enum):
    EVENT = "event"
    MESSAGE = "message"


@dataclass(frozen=True)
class RejectedInput:
    """An event or queue message set aside, as recorded; `rejected_id` is the same for every delivery of it."""

    rejected_id: str
    kind: str
    # The function the event was delivered to, or the queue the message came on.
    source: str
    # The event's or the message's id.
    input_id: str
    # The event type, or the message's `type` ("" when unreadable).
    input_type: str
    subject: str
    reason: str
    received_at: str
    # The event or message as JSON (or text), secrets masked, capped.
    body: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_entity(self) -> dict[str, Any]:
        values = self.to_dict()
        return {"PartitionKey": PARTITION, "RowKey": values.pop("rejected_id"), **values}

    @classmethod
    def from_entity(cls, entity: Mapping[str, Any]) -> RejectedInput:
        names = [spec.name for spec in fields(cls) if spec.name != "rejected_id"]
        return cls(rejected_id=str(entity["RowKey"]), **{name: str(entity.get(name, "")) for name in names})


class DeliveredEvent(Protocol):
    """What the app reads of an Event Grid event (as `azure.functions.EventGridEvent` has it)."""

    @property
    def id(self) -> str: ...

    @property
    def event_type(self) -> str: ...

    @property
    def subject(self) -> str: ...

    @property
    def topic(self) -> str: ...

    @property
    def event_time(self) -> datetime | None: ...

    def get_json(self) -> Any: ...


def printable(text: str) -> str:
    """`text` with control characters and lone surrogates written as escapes (`\\t`, `\\x85`, `\\ud800`)."""
    return _UNPRINTABLE.sub(lambda match: match.group().encode("unicode_escape").decode("ascii"), text)


def masked(text: str) -> str:
    """`text` with secret-looking values (`sig=`, `AccountKey=`, bearer tokens, account keys) replaced by ***."""
    for pattern, replacement in _SECRET_TEXT:
        text = pattern.sub(replacement, text)
    return text


def _masked_values(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            str(key): "***" if _SECRET_NAME.search(str(key)) and value[key] not in (None, "") else _masked_values(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_masked_values(item) for item in value]
    return value


def capped(text: str, limit: int) -> str:
    """`text`, or its first `limit` characters and a note of how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]} ... [cut: {len(text):,} characters in all]"


def safe_text(text: str, limit: int = MAX_TEXT_CHARACTERS) -> str:
    """`text` as it may be recorded and shown: secrets masked, control characters escaped, capped."""
    return capped(printable(masked(text)), limit)


def safe_document(document: Any) -> str:
    """An event or message as recorded: JSON (or its text), secrets masked, escaped, capped."""
    try:
        text = (
            document if isinstance(document, str) else json.dumps(_masked_values(document), sort_keys=True, default=str)
        )
    except RecursionError:
        # Nested deeper than Python recurses: what it was is told; its content is not.
        text = f"({type(document).__name__} nested too deeply to show)"
    return safe_text(text, MAX_BODY_CHARACTERS)


def _record_of(
    kind: RejectedKind, source: str, input_id: str, input_type: str, subject: str, reason: str, now: datetime, body: str
) -> RejectedInput:
    source, input_id = safe_text(source, 200), safe_text(input_id, 200)
    identity = "\n".join((kind.value, source, input_id, body))
    return RejectedInput(
        rejected_id=hashlib.sha256(identity.encode("utf-8")).hexdigest()[:32],
        kind=kind.value,
        source=source,
        input_id=input_id,
        input_type=safe_text(input_type, 200),
        subject=safe_text(subject),
        reason=safe_text(reason),
        received_at=iso(now),
        body=body,
    )


def rejected_event(function: str, event: DeliveredEvent, reason: str, now: datetime) -> RejectedInput:
    """The record of an event `function` set aside for `reason`."""
    document = {
        "id": event.id,
        "eventType": event.event_type,
        "subject": event.subject,
        "topic": event.topic,
        "eventTime": iso(event.event_time) if event.event_time else "",
        "data": event.get_json(),
    }
    return _record_of(
        RejectedKind.EVENT, function, event.id, event.event_type, event.subject, reason, now, safe_document(document)
    )


def rejected_message(queue: str, message_id: str, body: bytes | str, reason: str, now: datetime) -> RejectedInput:
    """The record of a message of `queue` that could not be parsed (`reason`), before it goes to the poison queue."""
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    try:
        document: Any = json.loads(text)
    except (ValueError, RecursionError):
        document = text
    input_type = str(document.get("type", "")) if isinstance(document, dict) else ""
    return _record_of(RejectedKind.MESSAGE, queue, message_id, input_type, "", reason, now, safe_document(document))


class RejectedInputs(Protocol):
    """Where inputs set aside are kept."""

    def record(self, item: RejectedInput) -> bool:
        """Keep `item`; False when it was kept before (another delivery of the same input)."""
        ...

    def list_rejected(self, limit: int = 100) -> list[RejectedInput]:
        """Newest first."""
        ...

    def get(self, rejected_id: str) -> RejectedInput | None: ...


class TableRejectedInputs:
    """`RejectedInputs` on Azure Table Storage: one row per input, keyed by its `rejected_id`."""

    def __init__(self, connection: StorageConnection | str, table_name: str) -> None:
        """`connection`: a `StorageConnection`, or a connection string; the table is made on first use."""
        self._client = LazyTable(connection, table_name)

    def record(self, item: RejectedInput) -> bool:
        from azure.core.exceptions import AzureError, ResourceExistsError

        try:
            self._client().create_entity(item.to_entity())
        except ResourceExistsError:
            return False
        except AzureError as exc:
            raise TransientError(f"could not record rejected input {item.rejected_id}: {exc}") from exc
        return True

    def list_rejected(self, limit: int = 100) -> list[RejectedInput]:
        from azure.core.exceptions import AzureError

        try:
            entities = list(
                self._client().query_entities("PartitionKey eq @partition", parameters={"partition": PARTITION})
            )
        except AzureError as exc:
            raise TransientError(f"could not list rejected inputs: {exc}") from exc
        items = [RejectedInput.from_entity(entity) for entity in entities]
        items.sort(key=lambda item: item.received_at, reverse=True)
        return items[:limit]

    def get(self, rejected_id: str) -> RejectedInput | None:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        # Anything else is no record's id, and may be no valid key either.
        if not _ID_PATTERN.fullmatch(rejected_id):
            return None
        try:
            return RejectedInput.from_entity(self._client().get_entity(PARTITION, rejected_id))
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise TransientError(f"could not read rejected input {rejected_id}: {exc}") from exc


class LoggedRejectedInputs:
    """`RejectedInputs` that keeps nothing but a log line: the default of a context wired without a store."""

    def record(self, item: RejectedInput) -> bool:
        log.warning("set aside (not stored) %s %s from %s: %s", item.kind, item.input_id, item.source, item.reason)
        return True

    def list_rejected(self, limit: int = 100) -> list[RejectedInput]:
        return []

    def get(self, rejected_id: str) -> RejectedInput | None:
        return None


@contextmanager
def set_aside_if_malformed(ctx: StageContext, function: str, event: DeliveredEvent) -> Iterator[None]:
    """Inside, a `MalformedMessageError` (an event that can never succeed) is recorded and not raised on.

    The trigger then returns normally, so Event Grid counts the delivery done. Anything else, the store's own
    transient errors included, is raised: Event Grid delivers the event again.
    """
    try:
        yield
    except MalformedMessageError as error:
        item = rejected_event(function, event, str(error), ctx.clock())
        if ctx.rejected.record(item):
            log.warning("%s set event %s aside as %s: %s", function, item.input_id, item.rejected_id, item.reason)
        else:
            log.info("%s: event %s was set aside before, as %s", function, item.input_id, item.rejected_id)


@dataclass(frozen=True)
class PoisonMessage:
    """A message the queue gave up on, as it lies in `<queue>-poison`: the raw body the host copied there."""

    message_id: str
    # The queue it came from (its poison queue is `<queue>-poison`).
    queue: str
    raw: str
    inserted_at: str
    dequeue_count: int = 0

    @property
    def text(self) -> str | None:
        """The body as the queue trigger reads it (base64-decoded UTF-8); None when it is not that."""
        try:
            return decode_queue_body(self.raw)
        except MalformedMessageError:
            return None


class PoisonQueues(Protocol):
    """The poison queues: read without taking anything, and a message put back on its queue."""

    def peek(self, queue: str) -> list[PoisonMessage]:
        """The first messages (at most `PEEK_LIMIT`) of `<queue>-poison`, oldest first, left where they are."""
        ...

    def replay(self, queue: str, message_id: str) -> PoisonMessage | None:
        """Send message `message_id` of `<queue>-poison` back to `queue`, then delete it from the poison queue.

        None when it is not there. It is deleted only once the send succeeded: a failure in between leaves it
        in both, and the ledger's claims make the second delivery change nothing.
        """
        ...


class StoragePoisonQueues:
    """`PoisonQueues` over Azure Storage queues; bodies are moved as they are (base64, as the host wrote them)."""

    def __init__(self, connection: StorageConnection | str) -> None:
        """`connection`: a `StorageConnection`, or a connection string."""
        self._connection = as_storage_connection(connection)

    def peek(self, queue: str) -> list[PoisonMessage]:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        try:
            messages = self._connection.queue_client(queue + POISON_SUFFIX).peek_messages(max_messages=PEEK_LIMIT)
        except ResourceNotFoundError:
            return []
        except AzureError as exc:
            raise TransientError(f"could not read queue {queue}{POISON_SUFFIX}: {exc}") from exc
        return [_poison_message(queue, message) for message in messages]

    def replay(self, queue: str, message_id: str) -> PoisonMessage | None:
        from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError

        poison = self._connection.queue_client(queue + POISON_SUFFIX)
        held: list[Any] = []
        try:
            found = None
            try:
                pages = poison.receive_messages(
                    messages_per_page=PEEK_LIMIT,
                    visibility_timeout=REPLAY_LEASE_SECONDS,
                    max_messages=REPLAY_SCAN_LIMIT,
                ).by_page()
                # Received messages stay invisible until released: the scan moves on without seeing one twice.
                for page in pages:
                    for message in page:
                        if found is None and message.id == message_id:
                            found = message
                        else:
                            held.append(message)
                    if found is not None:
                        break
            except ResourceNotFoundError:
                return None
            if found is None:
                return None
            target = self._connection.queue_client(queue)
            try:
                with contextlib.suppress(ResourceExistsError):
                    target.create_queue()
                target.send_message(found.content)
            except Exception:
                held.append(found)
                raise
            poison.delete_message(found)
            return _poison_message(queue, found)
        except AzureError as exc:
            raise TransientError(f"could not replay message {message_id} of {queue}{POISON_SUFFIX}: {exc}") from exc
        finally:
            for message in held:
                try:
                    poison.update_message(message, visibility_timeout=0)
                except AzureError:
                    log.warning(
                        "message %s of %s%s stays hidden for up to %d s",
                        message.id,
                        queue,
                        POISON_SUFFIX,
                        REPLAY_LEASE_SECONDS,
                    )


def _poison_message(queue: str, message: Any) -> PoisonMessage:
    inserted = message.inserted_on
    return PoisonMessage(
        message_id=str(message.id),
        queue=queue,
        raw=str(message.content or ""),
        inserted_at=iso(inserted) if inserted else "",
        dequeue_count=int(message.dequeue_count or 0),
    )


@dataclass(frozen=True)
class SetAside:
    """One line of the set-aside list: a rejected event or message, or a message in a poison queue."""

    # "event" or "message" (recorded as rejected), or "poison".
    kind: str
    # The record's id, or the poison message's id (what `autopilot replay` takes).
    item_id: str
    at: str
    # The function or queue it came to; for a poison message, its poison queue.
    source: str
    input_type: str
    reason: str
    body: str
    subject: str = ""
    input_id: str = ""
    run_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def list_set_aside(
    rejected: RejectedInputs,
    poison: PoisonQueues,
    limit: int = 100,
    *,
    ledger: RunLedger | None = None,
    queues: Iterable[str] = ALL_QUEUES,
) -> list[SetAside]:
    """Rejected events and messages and the poison queues' messages, newest first, each with why.

    A poison message's reason is its rejection record's when it was malformed, else its run's error (from
    `ledger`), else that it failed on every try.
    """
    records = rejected.list_rejected(limit)
    reasons = {(item.source, item.body): item.reason for item in records if item.kind == RejectedKind.MESSAGE.value}
    items = [
        SetAside(
            kind=item.kind,
            item_id=item.rejected_id,
            at=item.received_at,
            source=item.source,
            input_type=item.input_type,
            reason=item.reason,
            body=item.body,
            subject=item.subject,
            input_id=item.input_id,
        )
        for item in records
    ]
    for queue in queues:
        items.extend(_poison_line(message, reasons, ledger) for message in poison.peek(queue))
    items.sort(key=lambda item: item.at, reverse=True)
    return items[:limit]


def _poison_line(message: PoisonMessage, reasons: Mapping[tuple[str, str], str], ledger: RunLedger | None) -> SetAside:
    text = message.text
    document: Any = None
    if text is not None:
        try:
            document = json.loads(text)
        except (ValueError, RecursionError):
            document = text
    fields_of = document if isinstance(document, dict) else {}
    run_id = str(fields_of.get("run_id", ""))
    body = safe_document(document) if text is not None else safe_text(message.raw, MAX_BODY_CHARACTERS)
    if text is None:
        reason = "its body is not base64-encoded UTF-8, as the queue trigger expects: no function could read it"
    elif (message.queue, body) in reasons:
        reason = f"malformed: {reasons[(message.queue, body)]}"
    else:
        reason = f"failed on every try (the host's maxDequeueCount){_run_error(run_id, ledger)}"
    return SetAside(
        kind="poison",
        item_id=message.message_id,
        at=message.inserted_at,
        source=message.queue + POISON_SUFFIX,
        input_type=safe_text(str(fields_of.get("type", "")), 200),
        reason=reason,
        body=body,
        input_id=message.message_id,
        run_id=safe_text(run_id, 200),
    )


def _run_error(run_id: str, ledger: RunLedger | None) -> str:
    # A run id no Table key can be is no run: asking the ledger for it would only fail.
    if ledger is None or not run_id or table_key_problem(run_id):
        return ""
    run = ledger.get(run_id)
    if run is None:
        return f"; run {run_id} is not in the ledger"
    if run.error_message:
        return f"; run {run_id} {run.status.value}: {safe_text(run.error_message, 500)}"
    return f"; run {run_id} is {run.status.value} in {run.stage.value}"


def replay_poison_message(
    poison: PoisonQueues, message_id: str, queues: Iterable[str] = ALL_QUEUES
) -> PoisonMessage | None:
    """Put the poison message `message_id` back on the queue it came from; None when no poison queue has it.

    The queues where a peek sees it are tried first; the others are searched too, since a peek sees only the
    first `PEEK_LIMIT` messages of each.
    """
    names = list(queues)
    seen = [queue for queue in names if any(message.message_id == message_id for message in poison.peek(queue))]
    for queue in [*seen, *(name for name in names if name not in seen)]:
        replayed = poison.replay(queue, message_id)
        if replayed is not None:
            log.info("message %s put back on %s from %s%s", message_id, queue, queue, POISON_SUFFIX)
            return replayed
    return None
