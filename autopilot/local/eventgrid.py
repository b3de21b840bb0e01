"""A local stand-in for Event Grid: Azurite emits no events, so this process makes them.

    python -m autopilot.local.eventgrid --subscriptions eventgrid.subscriptions.json \\
        [--port 7072] [--state-dir .autopilot/eventgrid] [--poll-ms 500] [--retry-scale 0.1] \\
        [--validation-retry-s 1.0] [--log-level INFO]

Reads the subscriptions file (format in `autopilot.local.eventgrid_subscriptions`). Storage topics
poll their containers through the connection string in `AzureWebJobsStorage` and report new or
overwritten block blobs as `Microsoft.Storage.BlobCreated` (`eventgrid_storage`); relay topics take
events POSTed to `http://127.0.0.1:<port>/api/events` (`eventgrid_http`). Every event that passes a
subscription's filter is delivered to its webhook with Event Grid's handshake, headers, retries and
dead-lettering (`eventgrid_delivery`). State (reported blobs, pending deliveries, dead letters) lives in the state dir,
by default `$AUTOPILOT_STATE_DIR/eventgrid`. The file's placeholders read `AUTOPILOT_FUNCTIONS_URL`
and whatever `{env:NAME}` names. Logs go to stderr, one line per event published, delivered,
retried or dead-lettered.

SIGTERM or SIGINT stops it within a few seconds; deliveries still pending stay in `pending/<subscription>/`
and are made after the next start.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from autopilot.local.eventgrid_delivery import (
    DEFAULT_RETRY_SCALE,
    DEFAULT_VALIDATION_RETRY_S,
    DeliveryPolicy,
    SubscriptionDelivery,
    scaled_retry_schedule,
)
from autopilot.local.eventgrid_errors import RelayTopicMissingError, SubscriptionsFileError
from autopilot.local.eventgrid_events import Event, complete_published_event
from autopilot.local.eventgrid_http import EVENTS_PATH, VALIDATE_PATH, RelayServer
from autopilot.local.eventgrid_subscriptions import SubscriptionsFile, TopicSpec, load_subscriptions
from shared.settings import STATE_DIR, STORAGE_CONNECTION

if TYPE_CHECKING:
    from autopilot.local.eventgrid_storage import BlobWatcher

logger = logging.getLogger(__name__)

DEFAULT_PORT = 7072
DEFAULT_POLL_MS = 500
EXIT_OK = 0
EXIT_USAGE = 2


class EventGridStandIn:
    """Polls storage topics, accepts relayed events and delivers both to the subscriptions' webhooks.

    Use `start()` and `stop()`, or `with EventGridStandIn(...) as stand_in:`. Blobs already in the
    watched containers when `start()` returns count as reported, unless the state dir says otherwise.
    With `port=0` a free port is picked; `port` tells which once started.
    """

    def __init__(
        self,
        subscriptions: SubscriptionsFile,
        *,
        state_dir: Path,
        storage_connection: str | None = None,
        port: int = DEFAULT_PORT,
        poll_interval_s: float = DEFAULT_POLL_MS / 1000,
        policy: DeliveryPolicy | None = None,
    ) -> None:
        if subscriptions.topics_of_kind("storage") and not storage_connection:
            raise SubscriptionsFileError(
                f"The subscriptions file has storage topics but no storage connection string was given: "
                f"set {STORAGE_CONNECTION}."
            )
        self._subscriptions = subscriptions
        self._state_dir = state_dir
        self._storage_connection = storage_connection
        self._requested_port = port
        self._poll_interval_s = poll_interval_s
        self._policy = policy or DeliveryPolicy()
        self._deliveries: dict[str, SubscriptionDelivery] = {}
        self._server: RelayServer | None = None
        self._stopping = threading.Event()
        self._serving = threading.Thread()
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the stand-in has not been started.")
        return self._server.port

    @property
    def publish_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{EVENTS_PATH}"

    def start(self) -> None:
        """Listen, start delivering, and baseline the storage topics' containers; cleans up if any step fails."""
        self._server = RelayServer(self._requested_port, self)
        try:
            self._start_serving(self._server)
        except BaseException:
            self.stop()
            raise
        logger.info(
            "Event Grid stand-in running: %d topic(s), %d subscription(s), publish URL %s",
            len(self._subscriptions.topics),
            len(self._deliveries),
            self.publish_url,
        )

    def _start_serving(self, server: RelayServer) -> None:
        validation_endpoint = f"http://127.0.0.1:{server.port}{VALIDATE_PATH}"
        for subscription in self._subscriptions.subscriptions:
            delivery = SubscriptionDelivery(
                subscription,
                topic=self._subscriptions.topics[subscription.topic].topic,
                validation_endpoint=validation_endpoint,
                deadletter_dir=self._state_dir / "deadletter" / subscription.name,
                policy=self._policy,
                pending_dir=self._state_dir / "pending" / subscription.name,
            )
            delivery.start()
            self._deliveries[subscription.name] = delivery
        self._serving = threading.Thread(target=server.serve_forever, args=(0.1,), name="eventgrid-http", daemon=True)
        self._threads = [self._serving]
        storage_topics = self._subscriptions.topics_of_kind("storage")
        if storage_topics:
            from autopilot.local.eventgrid_storage import watch_storage_topics

            watchers = watch_storage_topics(
                storage_topics, str(self._storage_connection), self._state_dir, self.publish
            )
            # The first poll baselines containers before start() returns: blobs written after it are reported.
            self._poll_once(watchers)
            self._threads.append(
                threading.Thread(target=self._poll, args=(watchers,), name="eventgrid-poll", daemon=True)
            )
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop polling, serving and delivering; events not delivered yet stay pending for the next start."""
        self._stopping.set()
        if self._server is not None:
            if self._serving.is_alive():
                self._server.shutdown()
            self._server.server_close()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=5)
        for delivery in self._deliveries.values():
            delivery.stop()
        logger.info("Event Grid stand-in stopped")

    def __enter__(self) -> EventGridStandIn:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def publish(self, topic: TopicSpec, event: Event) -> None:
        """Hand `event` to each subscription on `topic` whose filter it passes."""
        matching = [
            self._deliveries[subscription.name]
            for subscription in self._subscriptions.subscriptions_on(topic.name)
            if subscription.filter.matches(event)
        ]
        logger.info(
            "published %s subject=%s topic=%s id=%s to %s",
            event["eventType"],
            event["subject"],
            topic.name,
            event["id"],
            ", ".join(delivery.subscription.name for delivery in matching) or "no subscription (filtered out)",
        )
        for delivery in matching:
            delivery.submit(event)

    def publish_relayed(self, events: list[Any]) -> int:
        """Check and complete every event, then route each to a relay topic; raises before routing any."""
        relay_topics = self._subscriptions.topics_of_kind("relay")
        if not relay_topics:
            raise RelayTopicMissingError(
                "the subscriptions file declares no topic of kind relay, so nothing takes published events."
            )
        routed = []
        for index, raw in enumerate(events):
            topic = _relay_topic_for(raw, relay_topics)
            routed.append((topic, complete_published_event(raw, index, topic.topic)))
        for topic, event in routed:
            self.publish(topic, event)
        return len(routed)

    def confirm_validation(self, subscription: str, code: str) -> bool:
        delivery = self._deliveries.get(subscription)
        return delivery is not None and delivery.confirm_validation(code)

    def _poll(self, watchers: Sequence[BlobWatcher]) -> None:
        while not self._stopping.wait(self._poll_interval_s):
            self._poll_once(watchers)

    def _poll_once(self, watchers: Sequence[BlobWatcher]) -> None:
        for watcher in watchers:
            try:
                watcher.poll()
            except Exception:
                logger.exception("polling a storage topic failed; polling goes on")


def _relay_topic_for(raw: Any, relay_topics: Sequence[TopicSpec]) -> TopicSpec:
    """The relay topic whose path the event names (case-insensitively), else the first one."""
    named = raw.get("topic") if isinstance(raw, dict) else None
    if isinstance(named, str):
        for topic in relay_topics:
            if topic.topic.lower() == named.lower():
                return topic
    return relay_topics[0]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m autopilot.local.eventgrid",
        description="Local Event Grid stand-in: blob events by polling Azurite, relayed events over HTTP, webhooks.",
    )
    parser.add_argument("--subscriptions", type=Path, required=True, help="the subscriptions file (JSON)")
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"port on 127.0.0.1 for the relay and health endpoints (default {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help=f"keeps reported blobs and dead letters (default: ${STATE_DIR}/eventgrid or .autopilot/eventgrid)",
    )
    parser.add_argument(
        "--poll-ms", type=int, default=DEFAULT_POLL_MS, help=f"storage polling interval (default {DEFAULT_POLL_MS})"
    )
    parser.add_argument(
        "--retry-scale",
        type=float,
        default=DEFAULT_RETRY_SCALE,
        help=f"factor on Azure's retry waits 10 s, 30 s, 1 min, ... (default {DEFAULT_RETRY_SCALE}: 1 s, 3 s, 6 s)",
    )
    parser.add_argument(
        "--validation-retry-s",
        type=float,
        default=DEFAULT_VALIDATION_RETRY_S,
        help=f"how often the handshake is retried while an endpoint is not up (default {DEFAULT_VALIDATION_RETRY_S})",
    )
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.poll_ms <= 0 or args.retry_scale <= 0 or args.validation_retry_s <= 0:
        parser.error("--poll-ms, --retry-scale and --validation-retry-s must be positive.")
    logging.basicConfig(
        level=args.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s eventgrid: %(message)s"
    )
    # The SDK logs every storage request at INFO; polling would drown the event lines.
    logging.getLogger("azure").setLevel(logging.WARNING)
    state_dir = args.state_dir or Path(os.environ.get(STATE_DIR, "").strip() or ".autopilot") / "eventgrid"
    try:
        stand_in = EventGridStandIn(
            load_subscriptions(args.subscriptions),
            state_dir=state_dir,
            storage_connection=os.environ.get(STORAGE_CONNECTION, "").strip() or None,
            port=args.port,
            poll_interval_s=args.poll_ms / 1000,
            policy=DeliveryPolicy(
                retry_schedule_s=scaled_retry_schedule(args.retry_scale), validation_retry_s=args.validation_retry_s
            ),
        )
    except SubscriptionsFileError as exc:
        logger.error("%s", exc)
        return EXIT_USAGE
    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        logger.info("%s received, stopping", signal.Signals(signum).name)
        stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        stand_in.start()
    except OSError as exc:
        logger.error("cannot listen on 127.0.0.1:%d (%s); pick another --port", args.port, exc.strerror or exc)
        return EXIT_USAGE
    except ValueError as exc:
        logger.error("cannot use %s: %s", STORAGE_CONNECTION, exc)
        return EXIT_USAGE
    while not stop_requested.wait(0.5):
        pass
    stand_in.stop()
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
