"""Delivering events to one webhook subscription the way Event Grid does.

Before the first delivery the endpoint gets the validation handshake once: a
`Microsoft.EventGrid.SubscriptionValidationEvent` with header `aeg-event-type: SubscriptionValidation`,
answered by 200 and `{"validationResponse": <code>}` (or by a GET of the event's validationUrl).
Until then events stay queued and the handshake is tried again every `validation_retry_s`:
the function runner usually starts after the stand-in.

Each event is then POSTed alone, as a JSON array of one, with `aeg-event-type: Notification`,
`aeg-subscription-name` (upper case) and `aeg-delivery-count` (0 on the first try). Any 2xx is
success. A connection error, no answer within the timeout (30 s) or another status is retried on
Azure's schedule (10 s, 30 s, 1 min, 5 min, 10 min, 30 min, 1 h, 3 h, 6 h, then 12 h) multiplied by
the retry scale, until the subscription's maxDeliveryAttempts. As in Azure, 400, 401, 403 and 413 are
not retried. An event that is given up on is written to `<deadletter_dir>/<event id>.json` with the
reason and the last error. Events are delivered by a few worker threads per subscription, so one
event waiting for its retry never holds up the others.

With a `pending_dir`, every event waiting for delivery is also a file there
(`<event id>.json`, with its attempts so far), removed once it is delivered or dead-lettered: events
not delivered when the stand-in stops, or dies, are delivered after it starts again (Event Grid keeps
them for up to 24 h). An event whose delivery was under way at the stop may then arrive twice, which
Event Grid's at-least-once delivery allows too.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import os
import queue
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.client import HTTPException
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from autopilot.local.eventgrid_events import Event, event_time, subscription_validation_event
from autopilot.local.eventgrid_subscriptions import SubscriptionSpec

logger = logging.getLogger(__name__)

AZURE_RETRY_SCHEDULE_S = (10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 10800.0, 21600.0, 43200.0)
DEFAULT_RETRY_SCALE = 0.1
DELIVERY_TIMEOUT_S = 30.0
DEFAULT_VALIDATION_RETRY_S = 1.0
DEFAULT_WORKERS = 4
NON_RETRIABLE_STATUSES = frozenset({400, 401, 403, 413})
MAX_DELIVERY_ATTEMPTS_EXCEEDED = "MaxDeliveryAttemptsExceeded"
NON_RETRIABLE_STATUS = "NonRetriableStatusCode"

_UNSAFE_FILE_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]")
# Event Grid talks to the endpoint directly; an HTTP(S)_PROXY in the environment must not reroute 127.0.0.1.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def scaled_retry_schedule(scale: float) -> tuple[float, ...]:
    """Azure's retry waits multiplied by `scale`; the last one repeats."""
    if scale <= 0:
        raise ValueError(f"the retry scale must be positive, not {scale}.")
    return tuple(wait * scale for wait in AZURE_RETRY_SCHEDULE_S)


@dataclass(frozen=True)
class DeliveryPolicy:
    """How patiently a subscription's events are delivered."""

    retry_schedule_s: Sequence[float] = field(default_factory=lambda: scaled_retry_schedule(DEFAULT_RETRY_SCALE))
    timeout_s: float = DELIVERY_TIMEOUT_S
    validation_retry_s: float = DEFAULT_VALIDATION_RETRY_S
    workers: int = DEFAULT_WORKERS

    def retry_wait(self, failed_attempts: int) -> float:
        schedule = self.retry_schedule_s
        return schedule[min(failed_attempts, len(schedule)) - 1]


@dataclass(frozen=True)
class WebhookAnswer:
    status: int
    body: bytes


def post_events(url: str, events: list[Event], headers: Mapping[str, str], timeout: float) -> WebhookAnswer:
    """POST `events` as JSON; any HTTP status is an answer, connection failures raise `OSError`."""
    request = urllib.request.Request(
        url,
        data=json.dumps(events).encode("utf-8"),
        method="POST",
        headers={"Content-Type": "application/json", **headers},
    )
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return WebhookAnswer(response.status, response.read())
    except urllib.error.HTTPError as answer:
        with answer:
            return WebhookAnswer(answer.code, answer.read())


@dataclass
class PendingDelivery:
    event: Event
    published_at: str = field(default_factory=event_time)
    attempts: int = 0
    last_status: int | None = None
    last_error: str = ""
    last_attempt_at: str = ""


class SubscriptionDelivery:
    """Queues, hands over, retries and dead-letters the events of one webhook subscription."""

    def __init__(
        self,
        subscription: SubscriptionSpec,
        topic: str,
        validation_endpoint: str,
        deadletter_dir: Path,
        policy: DeliveryPolicy,
        pending_dir: Path | None = None,
    ) -> None:
        self.subscription = subscription
        self._pending_dir = pending_dir
        self._topic = topic
        self._validation_code = str(uuid.uuid4())
        self._validation_url = (
            f"{validation_endpoint}?{urlencode({'subscription': subscription.name, 'code': self._validation_code})}"
        )
        self._deadletter_dir = deadletter_dir
        self._policy = policy
        self._changed = threading.Condition()
        self._scheduled: list[tuple[float, int, PendingDelivery]] = []
        self._order = itertools.count()
        self._ready: queue.Queue[PendingDelivery | None] = queue.Queue()
        self._stopping = threading.Event()
        self._validated = False
        self._last_validation_failure = ""
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start delivering, first the events left pending by an earlier run, oldest first."""
        waiting = self._pending_from_before()
        if waiting:
            logger.info("subscription %s: %d event(s) pending from before", self.subscription.name, len(waiting))
        for delivery in waiting:
            self._schedule_at(time.monotonic(), delivery)
        name = self.subscription.name
        self._threads = [threading.Thread(target=self._schedule, name=f"eventgrid-{name}", daemon=True)]
        self._threads += [
            threading.Thread(target=self._work, name=f"eventgrid-{name}-{number}", daemon=True)
            for number in range(self._policy.workers)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 3.0) -> None:
        """Stop handing events over; undelivered ones stay pending (or, without a pending dir, are lost)."""
        with self._changed:
            self._stopping.set()
            dropped = len(self._scheduled) + self._ready.qsize()
            self._changed.notify_all()
        for _ in range(self._policy.workers):
            self._ready.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if dropped and self._pending_dir is not None:
            logger.info(
                "subscription %s stopped with %d undelivered event(s), kept in %s for the next start",
                self.subscription.name,
                dropped,
                self._pending_dir,
            )
        elif dropped:
            logger.warning(
                "subscription %s stopped with %d undelivered event(s); they are lost", self.subscription.name, dropped
            )

    def submit(self, event: Event) -> None:
        """Queue `event` for delivery now (after the handshake, if that has not happened yet)."""
        delivery = PendingDelivery(event)
        self._keep_pending(delivery)
        self._schedule_at(time.monotonic(), delivery)

    def _pending_path(self, event: Event) -> Path | None:
        if self._pending_dir is None:
            return None
        return self._pending_dir / f"{_file_name(event)}.json"

    def _keep_pending(self, delivery: PendingDelivery) -> None:
        path = self._pending_path(delivery.event)
        if path is not None:
            _write_atomically(path, {"event": delivery.event, **_attempt_record(delivery)})

    def _forget_pending(self, delivery: PendingDelivery) -> None:
        path = self._pending_path(delivery.event)
        if path is not None:
            path.unlink(missing_ok=True)

    def _pending_from_before(self) -> list[PendingDelivery]:
        if self._pending_dir is None or not self._pending_dir.is_dir():
            return []
        waiting = []
        for path in self._pending_dir.glob("*.json"):
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
                event = record["event"]
                delivery = PendingDelivery(
                    event,
                    published_at=str(record.get("publishTime") or event_time()),
                    attempts=int(record.get("deliveryAttempts", 0)),
                    last_status=record.get("lastHttpStatusCode") or None,
                    last_error=str(record.get("lastError", "")),
                    last_attempt_at=str(record.get("lastDeliveryAttemptTime", "")),
                )
            except (OSError, ValueError, KeyError, TypeError) as exc:
                logger.error("pending event file %s cannot be read (%s); left in place", path, exc)
                continue
            waiting.append(delivery)
        return sorted(waiting, key=lambda delivery: delivery.published_at)

    def confirm_validation(self, code: str) -> bool:
        """Validate by the handshake's validationUrl, as Event Grid allows; False for a wrong code."""
        if code != self._validation_code:
            return False
        with self._changed:
            self._validated = True
            self._changed.notify_all()
        logger.info("subscription %s validated through its validationUrl", self.subscription.name)
        return True

    def _schedule_at(self, due: float, delivery: PendingDelivery) -> None:
        with self._changed:
            heapq.heappush(self._scheduled, (due, next(self._order), delivery))
            self._changed.notify_all()

    def _schedule(self) -> None:
        while self._wait_for_events():
            if self._validated or self._validate():
                self._release_due()
                continue
            with self._changed:
                self._changed.wait_for(
                    lambda: self._stopping.is_set() or self._validated, timeout=self._policy.validation_retry_s
                )

    def _wait_for_events(self) -> bool:
        with self._changed:
            self._changed.wait_for(lambda: self._stopping.is_set() or bool(self._scheduled))
            return not self._stopping.is_set()

    def _release_due(self) -> None:
        with self._changed:
            now = time.monotonic()
            while self._scheduled and self._scheduled[0][0] <= now:
                self._ready.put(heapq.heappop(self._scheduled)[2])
            if self._scheduled and not self._stopping.is_set():
                self._changed.wait(timeout=self._scheduled[0][0] - now)

    def _validate(self) -> bool:
        event = subscription_validation_event(self._topic, self._validation_code, self._validation_url)
        try:
            answer = post_events(
                self.subscription.endpoint_url,
                [event],
                self._headers("SubscriptionValidation", 0, event),
                self._policy.timeout_s,
            )
            failure = self._handshake_failure(answer)
        except (OSError, HTTPException) as exc:
            failure = f"endpoint not reachable ({_describe(exc)})"
        if not failure:
            with self._changed:
                self._validated = True
            logger.info("subscription %s validated: the endpoint answered the handshake", self.subscription.name)
            return True
        if failure != self._last_validation_failure:
            logger.warning(
                "subscription %s not validated yet: %s; events stay queued, handshake retried every %.1f s",
                self.subscription.name,
                failure,
                self._policy.validation_retry_s,
            )
        self._last_validation_failure = failure
        return False

    def _handshake_failure(self, answer: WebhookAnswer) -> str:
        if answer.status != 200:
            return f"handshake answered HTTP {answer.status}"
        try:
            body = json.loads(answer.body)
        except ValueError:
            body = None
        if not isinstance(body, dict) or body.get("validationResponse") != self._validation_code:
            return 'handshake answer lacks {"validationResponse": <validationCode>}'
        return ""

    def _work(self) -> None:
        while (delivery := self._ready.get()) is not None:
            if self._stopping.is_set():
                return
            self._attempt(delivery)

    def _attempt(self, delivery: PendingDelivery) -> None:
        event, count = delivery.event, delivery.attempts
        status: int | None = None
        try:
            answer = post_events(
                self.subscription.endpoint_url,
                [event],
                self._headers("Notification", count, event),
                self._policy.timeout_s,
            )
            status = answer.status
            error = "" if 200 <= status < 300 else f"HTTP {status}"
        except (OSError, HTTPException) as exc:
            error = _describe(exc)
        delivery.attempts += 1
        delivery.last_attempt_at = event_time()
        name = self.subscription.name
        if not error:
            self._forget_pending(delivery)
            logger.info(
                "delivered %s subject=%s subscription=%s attempt=%d (HTTP %d)",
                event["eventType"],
                event["subject"],
                name,
                count,
                status,
            )
            return
        delivery.last_status, delivery.last_error = status, error
        if status in NON_RETRIABLE_STATUSES:
            self._dead_letter(delivery, NON_RETRIABLE_STATUS)
        elif delivery.attempts >= self.subscription.max_delivery_attempts:
            self._dead_letter(delivery, MAX_DELIVERY_ATTEMPTS_EXCEEDED)
        else:
            wait = self._policy.retry_wait(delivery.attempts)
            logger.warning(
                "retrying %s subject=%s subscription=%s: attempt=%d failed (%s); next attempt in %.1f s",
                event["eventType"],
                event["subject"],
                name,
                count,
                error,
                wait,
            )
            self._keep_pending(delivery)
            self._schedule_at(time.monotonic() + wait, delivery)

    def _dead_letter(self, delivery: PendingDelivery, reason: str) -> None:
        event = delivery.event
        record: dict[str, Any] = {**event, "deadLetterReason": reason, **_attempt_record(delivery)}
        path = self._deadletter_dir / f"{_file_name(event)}.json"
        _write_atomically(path, record)
        self._forget_pending(delivery)
        logger.error(
            "dead-lettered %s subject=%s subscription=%s after %d attempt(s) (%s, last error %s) into %s",
            event["eventType"],
            event["subject"],
            self.subscription.name,
            delivery.attempts,
            reason,
            delivery.last_error,
            path,
        )

    def _headers(self, aeg_event_type: str, delivery_count: int, event: Event) -> dict[str, str]:
        return {
            "aeg-event-type": aeg_event_type,
            "aeg-subscription-name": self.subscription.name.upper(),
            "aeg-delivery-count": str(delivery_count),
            "aeg-metadata-version": str(event.get("metadataVersion", "1")),
            "aeg-data-version": str(event.get("dataVersion", "")),
        }


def _attempt_record(delivery: PendingDelivery) -> dict[str, Any]:
    """What Event Grid records of a delivery's attempts, in its dead-letter field names."""
    return {
        "deliveryAttempts": delivery.attempts,
        "lastHttpStatusCode": delivery.last_status or 0,
        "lastError": delivery.last_error,
        "publishTime": delivery.published_at,
        "lastDeliveryAttemptTime": delivery.last_attempt_at,
    }


def _file_name(event: Event) -> str:
    return _UNSAFE_FILE_CHARACTERS.sub("_", str(event["id"]))[:200] or "event"


def _write_atomically(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    partial.write_text(json.dumps(record, indent=1), encoding="utf-8")
    os.replace(partial, path)


def _describe(exc: BaseException) -> str:
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    return f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__
