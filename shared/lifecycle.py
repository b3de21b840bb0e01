"""Lifecycle events out: the app tells subscribers when a run ends and when an endpoint goes or comes back.

Events are Event Grid schema events on a custom topic (setting AUTOPILOT_LIFECYCLE_TOPIC_ENDPOINT; off when
unset), of types `FinetuneAutopilot.<What>`, subject `/runs/<run id>` or `/endpoints/<name>`, and `data` with the
run id, dataset, model, endpoint and figures (similarity, losses). An event's id is derived from what it
announces, so a stage that runs twice publishes the same id twice and subscribers can drop the copy.

Publishing never fails a run: a failed publish is tried again a few times with a growing delay, then logged.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

from shared.ledger import Run, RunStatus

if TYPE_CHECKING:
    from azure.eventgrid import EventGridPublisherClient

    from shared.settings import Settings
    from shared.stages.context import StageContext

log = logging.getLogger("autopilot.lifecycle")

EVENT_TYPE_PREFIX = "FinetuneAutopilot."
DATA_VERSION = "1.0"
# A failed publish is tried this many times in all, waiting 1 s, then 2 s, ...: a few seconds at most, so a
# stage's function is not held long by a topic that is down (its events are then only in the log).
PUBLISH_ATTEMPTS = 3
PUBLISH_FIRST_DELAY_SECONDS = 1.0
# Azure's own client retries are off (retry_total=0): the tries above are the only ones, so they stay bounded.
SDK_RETRY_TOTAL = 0


class LifecycleEventType(str, Enum):
    RUN_SUCCEEDED = "RunSucceeded"
    RUN_REJECTED = "RunRejected"
    RUN_FAILED = "RunFailed"
    RUN_ROLLED_BACK = "RunRolledBack"
    RUN_SUPERSEDED = "RunSuperseded"
    RUN_CANCELED = "RunCanceled"
    ENDPOINT_DELETED_IDLE = "EndpointDeletedIdle"
    ENDPOINT_RESTORED = "EndpointRestored"

    @property
    def event_type(self) -> str:
        """The Event Grid `eventType`, e.g. `FinetuneAutopilot.RunSucceeded`."""
        return EVENT_TYPE_PREFIX + self.value


# The event that announces each end state of a run.
RUN_ENDED = {
    RunStatus.SUCCEEDED: LifecycleEventType.RUN_SUCCEEDED,
    RunStatus.REJECTED: LifecycleEventType.RUN_REJECTED,
    RunStatus.FAILED: LifecycleEventType.RUN_FAILED,
    RunStatus.ROLLED_BACK: LifecycleEventType.RUN_ROLLED_BACK,
    RunStatus.SUPERSEDED: LifecycleEventType.RUN_SUPERSEDED,
    RunStatus.CANCELED: LifecycleEventType.RUN_CANCELED,
}
ENDPOINT_EVENTS = (LifecycleEventType.ENDPOINT_DELETED_IDLE, LifecycleEventType.ENDPOINT_RESTORED)


@dataclass(frozen=True)
class LifecycleEvent:
    """One event to publish: what happened (`kind`), to what (`subject`), with `data`; `id` names the occurrence."""

    kind: LifecycleEventType
    subject: str
    data: Mapping[str, Any]
    id: str
    event_time: str = ""

    @property
    def event_type(self) -> str:
        return self.kind.event_type


class LifecyclePublisher(Protocol):
    def publish(self, event: LifecycleEvent) -> None:
        """Send the event to the topic; raises on failure (the caller decides whether to try again)."""
        ...


@dataclass
class NoLifecyclePublisher:
    """Lifecycle events off (AUTOPILOT_LIFECYCLE_TOPIC_ENDPOINT unset): nothing is sent."""

    def publish(self, event: LifecycleEvent) -> None:
        log.debug("lifecycle events are off; not sending %s for %s", event.event_type, event.subject)


@dataclass
class EventGridLifecyclePublisher:
    """Publishes to an Event Grid custom topic through a ready-made `EventGridPublisherClient`."""

    client: EventGridPublisherClient

    @classmethod
    def from_settings(cls, settings: Settings) -> EventGridLifecyclePublisher:
        """A client for the topic endpoint, authenticated with the key setting when set (the local stand-in),
        else with the app's identity (DefaultAzureCredential; the identity holds EventGrid Data Sender, the role a
        publishing client's principal needs: https://learn.microsoft.com/azure/event-grid/authenticate-with-active-directory)."""
        from azure.core.credentials import AzureKeyCredential
        from azure.eventgrid import EventGridPublisherClient
        from azure.identity import DefaultAzureCredential

        credential: Any = (
            AzureKeyCredential(settings.lifecycle_topic_key)
            if settings.lifecycle_topic_key
            else DefaultAzureCredential()
        )
        client = EventGridPublisherClient(settings.lifecycle_topic_endpoint, credential, retry_total=SDK_RETRY_TOTAL)
        return cls(client)

    def publish(self, event: LifecycleEvent) -> None:
        from azure.eventgrid import EventGridEvent

        # `topic` is left out: Event Grid stamps the custom topic's resource path on each event
        # (https://learn.microsoft.com/azure/event-grid/event-schema, "topic ... Event Grid provides this value").
        self.client.send(
            EventGridEvent(
                subject=event.subject,
                event_type=event.event_type,
                data=dict(event.data),
                data_version=DATA_VERSION,
                id=event.id,
            )
        )


def build_lifecycle_publisher(settings: Settings) -> LifecyclePublisher:
    """The Event Grid publisher (with its tries) when AUTOPILOT_LIFECYCLE_TOPIC_ENDPOINT is set, else the no-op."""
    if not settings.lifecycle_topic_endpoint:
        return NoLifecyclePublisher()
    return RetryingLifecyclePublisher(EventGridLifecyclePublisher.from_settings(settings))


def run_event(run: Run, kind: LifecycleEventType | None = None) -> LifecycleEvent | None:
    """The event announcing the run's end (its status), or `kind` about it; None for a run still in progress."""
    if kind is None:
        if run.status not in RUN_ENDED:
            return None
        kind = RUN_ENDED[run.status]
    data = run_data(run)
    if kind in ENDPOINT_EVENTS:
        subject = f"/endpoints/{run.endpoint_name}"
        moment = run.stage_times.get("restored", "") if kind is LifecycleEventType.ENDPOINT_RESTORED else ""
        moment = moment or run.endpoint_state
    else:
        subject = f"/runs/{run.run_id}"
        moment = run.finished_at
    return LifecycleEvent(kind, subject, data, event_id(kind, run.run_id, moment))


def run_data(run: Run) -> dict[str, Any]:
    """What subscribers get in `data`: the run, its model and endpoint, and its figures."""
    smoke = run.smoke or {}
    figures: dict[str, Any] = {key: smoke[key] for key in ("similarity", "live_similarity") if key in smoke}
    figures["losses"] = {name: value for name, value in run.metrics.items() if "loss" in name}
    return {
        "runId": run.run_id,
        "status": run.status.value,
        "dataset": run.dataset,
        "version": run.version,
        "baseModel": run.base_model,
        "model": {"name": run.model_name, "version": run.model_version},
        "endpoint": {"name": run.endpoint_name, "deployment": run.deployment_name, "state": run.endpoint_state},
        "figures": figures,
        "error": {"category": run.error_category, "message": run.error_message} if run.error_category else None,
        "finishedAt": run.finished_at,
    }


def event_id(kind: LifecycleEventType, run_id: str, moment: str) -> str:
    """The same id for the same occurrence (kind, run, moment), however often it is published."""
    return hashlib.sha256(f"{kind.value}|{run_id}|{moment}".encode()).hexdigest()[:32]


@dataclass
class RetryingLifecyclePublisher:
    """Another publisher, tried a few times with a growing delay; raises the last error (bounded: seconds)."""

    publisher: LifecyclePublisher
    attempts: int = PUBLISH_ATTEMPTS
    first_delay_seconds: float = PUBLISH_FIRST_DELAY_SECONDS
    sleep: Callable[[float], None] = field(default=time.sleep)

    def publish(self, event: LifecycleEvent) -> None:
        for attempt in range(self.attempts):
            try:
                self.publisher.publish(event)
                return
            except Exception as error:
                if attempt + 1 >= self.attempts:
                    raise
                delay = self.first_delay_seconds * 2**attempt
                log.warning(
                    "publishing %s for %s failed (try %d of %d), trying again in %.0f s: %s",
                    event.event_type,
                    event.subject,
                    attempt + 1,
                    self.attempts,
                    delay,
                    error,
                )
                self.sleep(delay)


def announce(ctx: StageContext, run: Run, kind: LifecycleEventType | None = None) -> None:
    """Publish the run's end (from its status), or `kind` about it; never raises."""
    event = None
    try:
        event = run_event(run, kind)
        if event is not None:
            ctx.lifecycle.publish(event)
    except Exception as error:
        what = event.event_type if event else "its lifecycle event"
        log.error("could not publish %s for run %s (the run is not affected): %s", what, run.run_id, error)


def announce_endpoint(ctx: StageContext, endpoint_name: str, kind: LifecycleEventType, moment: str) -> None:
    """Publish `kind` about the endpoint, with the data of the run that last went live on it; never raises."""
    live = [run for run in ctx.ledger.runs_of_endpoint(endpoint_name) if run.status is RunStatus.SUCCEEDED]
    if live:
        announce(ctx, max(live, key=lambda run: run.finished_at), kind)
        return
    data = {"runId": "", "endpoint": {"name": endpoint_name, "deployment": "", "state": ""}}
    event = LifecycleEvent(kind, f"/endpoints/{endpoint_name}", data, event_id(kind, endpoint_name, moment))
    try:
        ctx.lifecycle.publish(event)
    except Exception as error:
        log.error("could not publish %s for endpoint %s: %s", event.event_type, endpoint_name, error)
