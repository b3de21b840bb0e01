"""Lifecycle events on the real local stack: GIVEN a subscriber (a small HTTP server here) subscribed through an
Event Grid stand-in's relay topic, WHEN a dataset's run goes live, THEN its RunSucceeded reaches the subscriber."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from autopilot.local.eventgrid import EventGridStandIn
from autopilot.local.eventgrid_delivery import DeliveryPolicy, scaled_retry_schedule
from autopilot.local.eventgrid_subscriptions import parse_subscriptions
from autopilot.local.stack import LocalStack
from shared.storage import AzureBlobStore
from tests.integration.stack_fixtures import finished_runs, start_stack, wait_for

pytestmark = pytest.mark.integration
SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "ahoy-chat" / "v1"
LIFECYCLE_TOPIC = "/subscriptions/0/resourceGroups/local/providers/Microsoft.EventGrid/topics/evgt-lifecycle-local"


class Subscriber(ThreadingHTTPServer):
    """A webhook that answers Event Grid's validation handshake and keeps the events delivered to it."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Receive)
        self.events: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/lifecycle"


class _Receive(BaseHTTPRequestHandler):
    server: Subscriber

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        answer = b""
        if self.headers.get("aeg-event-type") == "SubscriptionValidation":
            answer = json.dumps({"validationResponse": body[0]["data"]["validationCode"]}).encode()
        else:
            self.server.events.extend(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def subscriber() -> Iterator[Subscriber]:
    server = Subscriber()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def lifecycle_topic(tmp_path_factory: pytest.TempPathFactory, subscriber: Subscriber) -> Iterator[EventGridStandIn]:
    """A stand-in whose one relay topic is the lifecycle topic, with the subscriber's webhook subscribed to it."""
    document = {
        "topics": {"lifecycle": {"kind": "relay", "topic": LIFECYCLE_TOPIC}},
        "subscriptions": [
            {
                "name": "lifecycle-subscriber",
                "topic": "lifecycle",
                "destination": {"endpointType": "WebHook", "endpointUrl": subscriber.url},
                "filter": {"includedEventTypes": ["FinetuneAutopilot.RunSucceeded"]},
                "retryPolicy": {"maxDeliveryAttempts": 5},
            }
        ],
    }
    stand_in = EventGridStandIn(
        parse_subscriptions(document, {}),
        state_dir=tmp_path_factory.mktemp("lifecycle-topic"),
        port=0,
        policy=DeliveryPolicy(retry_schedule_s=scaled_retry_schedule(0.002), validation_retry_s=0.1),
    )
    stand_in.start()
    yield stand_in
    stand_in.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, lifecycle_topic: EventGridStandIn) -> Iterator[LocalStack]:
    stack = start_stack(
        tmp_path_factory.mktemp("lifecycle"),
        AUTOPILOT_LIFECYCLE_TOPIC_ENDPOINT=lifecycle_topic.publish_url,
        AUTOPILOT_LIFECYCLE_TOPIC_KEY="local-key",
    )
    yield stack
    stack.down(report=lambda line: None)


def test_a_run_that_goes_live_is_announced_to_the_subscriber(stack: LocalStack, subscriber: Subscriber) -> None:
    # GIVEN a dataset folder uploaded
    state = stack.load()
    assert state is not None
    store = AzureBlobStore(state.connection_string)
    for path in (SAMPLE / "train_sft.jsonl", SAMPLE / "test_sft.jsonl"):
        store.upload("training-data", f"chat/v1/{path.name}", path.read_bytes())

    # WHEN its run goes live
    run = wait_for(lambda: finished_runs(stack), 90, "the run to finish", stack)[0]

    # THEN the subscriber gets its RunSucceeded, stamped with the topic, with the run, model, endpoint and figures
    [event] = wait_for(lambda: list(subscriber.events), 30, "RunSucceeded at the subscriber", stack)
    assert (event["eventType"], event["subject"]) == ("FinetuneAutopilot.RunSucceeded", f"/runs/{run.run_id}")
    assert event["topic"] == LIFECYCLE_TOPIC and event["dataVersion"] == "1.0" and event["id"]
    data = event["data"]
    assert (data["runId"], data["dataset"], data["status"]) == (run.run_id, run.dataset, "succeeded")
    assert data["model"] == {"name": run.model_name, "version": run.model_version}
    assert data["endpoint"]["name"] == run.endpoint_name
    assert "similarity" in data["figures"] and data["figures"]["losses"]
