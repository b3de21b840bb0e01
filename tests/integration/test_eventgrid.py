"""The local Event Grid stand-in against a real Azurite and a real HTTP receiver.

The receiver stands in for the function runner: it answers the validation handshake and records
every notification. Relies on azure-facts.md, "Event Grid" (BlobCreated subject and data fields,
one event per delivery) and "Azure Functions" (the EventGrid webhook and its aeg-event-type header).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobBlock, BlobServiceClient, ContainerClient

from autopilot.local.eventgrid import EventGridStandIn
from autopilot.local.eventgrid_delivery import DeliveryPolicy, scaled_retry_schedule
from autopilot.local.eventgrid_subscriptions import parse_subscriptions
from autopilot.local.processes import PROJECT_ROOT, free_port
from shared.settings import AZURITE_KEY
from tests.conftest import load_event

pytestmark = pytest.mark.integration

STORAGE_TOPIC = "/subscriptions/0/resourceGroups/local/providers/Microsoft.Storage/storageAccounts/devstoreaccount1"
ML_TOPIC = "/subscriptions/0/resourceGroups/local/providers/Microsoft.MachineLearningServices/workspaces/local"
RUN_EVENTS = ["Microsoft.MachineLearningServices.RunCompleted", "Microsoft.MachineLearningServices.RunStatusChanged"]
# Azure's schedule times 0.002: 20 ms, 60 ms, 120 ms, 0.6 s, ...
FAST_POLICY = DeliveryPolicy(retry_schedule_s=scaled_retry_schedule(0.002), validation_retry_s=0.1)
QUIET_S = 0.5
INCOMING_PREFIX = "/blobServices/default/containers/{env:AUTOPILOT_TRAINING_CONTAINER}/blobs/incoming/"


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    events: list[dict[str, Any]]

    @property
    def event(self) -> dict[str, Any]:
        assert len(self.events) == 1, "Event Grid delivers one event per request"
        return self.events[0]


class RecordingReceiver:
    """A webhook like the Functions host's: answers handshakes, records notifications, fails on demand."""

    def __init__(self, port: int = 0) -> None:
        self.handshakes: list[Received] = []
        self.arrivals: list[tuple[str, str]] = []
        self.notifications: list[Received] = []
        self.failures: list[int] = []
        self.always_failing: int | None = None
        self.ignore_handshakes = False
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                received = Received(self.path, {key.lower(): value for key, value in self.headers.items()}, body)
                status, answer = receiver.answer(received)
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def answer(self, received: Received) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.arrivals.append((received.headers["aeg-subscription-name"], received.headers["aeg-event-type"]))
            if received.headers.get("aeg-event-type") == "SubscriptionValidation":
                self.handshakes.append(received)
                if self.ignore_handshakes:
                    return 200, {}
                return 200, {"validationResponse": received.event["data"]["validationCode"]}
            self.notifications.append(received)
            if self.always_failing is not None:
                return self.always_failing, {}
            if self.failures:
                return self.failures.pop(0), {}
            return 200, {}

    def notifications_to(self, function_name: str) -> list[Received]:
        with self._lock:
            return [item for item in self.notifications if item.path.endswith(f"functionName={function_name}")]

    def __enter__(self) -> RecordingReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def wait_until(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def subscriptions_document(max_attempts: int) -> dict[str, Any]:
    """Both kinds of topic; only blobs under incoming/ and only run events reach the receiver."""
    return {
        "topics": {
            "storage": {
                "kind": "storage",
                "topic": STORAGE_TOPIC,
                "containers": ["{env:AUTOPILOT_TRAINING_CONTAINER}"],
            },
            "ml": {"kind": "relay", "topic": ML_TOPIC},
        },
        "subscriptions": [
            {
                "name": "dataset-arrival",
                "topic": "storage",
                "destination": {
                    "endpointType": "WebHook",
                    "endpointUrl": "{functions_url}/hook?functionName=dataset_arrival",
                },
                "filter": {
                    "includedEventTypes": ["Microsoft.Storage.BlobCreated"],
                    "subjectBeginsWith": INCOMING_PREFIX,
                },
                "retryPolicy": {"maxDeliveryAttempts": max_attempts},
            },
            {
                "name": "ml-job-events",
                "topic": "ml",
                "destination": {
                    "endpointType": "WebHook",
                    "endpointUrl": "{functions_url}/hook?functionName=ml_job_events",
                },
                "filter": {"includedEventTypes": RUN_EVENTS},
                "retryPolicy": {"maxDeliveryAttempts": max_attempts},
            },
        ],
    }


@pytest.fixture
def container(azurite: str) -> ContainerClient:
    """A fresh, not yet created container of its own for each test."""
    return BlobServiceClient.from_connection_string(azurite).get_container_client(f"t{uuid.uuid4().hex[:16]}")


StandInFactory = Callable[..., EventGridStandIn]


@pytest.fixture
def start_stand_in(azurite: str, tmp_path: Path, container: ContainerClient) -> Iterator[StandInFactory]:
    """Starts stand-ins on free ports (state in tmp_path unless given) and stops them all afterwards."""
    started: list[EventGridStandIn] = []

    def start(receiver_url: str, state_dir: Path = tmp_path / "state", max_attempts: int = 10) -> EventGridStandIn:
        env = {"AUTOPILOT_FUNCTIONS_URL": receiver_url, "AUTOPILOT_TRAINING_CONTAINER": container.container_name}
        stand_in = EventGridStandIn(
            parse_subscriptions(subscriptions_document(max_attempts), env),
            state_dir=state_dir,
            storage_connection=azurite,
            port=0,
            poll_interval_s=0.1,
            policy=FAST_POLICY,
        )
        stand_in.start()
        started.append(stand_in)
        return stand_in

    yield start
    for stand_in in started:
        stand_in.stop()


def post_json(url: str, body: bytes) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def publish(stand_in: EventGridStandIn, events: list[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    return post_json(stand_in.publish_url, json.dumps(events).encode())


# --- storage topic ---------------------------------------------------------------------------------------


def test_uploaded_blob_becomes_one_blob_created_event(
    start_stand_in: StandInFactory, container: ContainerClient
) -> None:
    with RecordingReceiver() as receiver:
        container.create_container()
        start_stand_in(receiver.url)

        blob = container.upload_blob("incoming/train.jsonl", b'{"messages": []}\n')

        [received] = wait_until(lambda: receiver.notifications_to("dataset_arrival"), what="the BlobCreated event")
        time.sleep(QUIET_S)
        assert len(receiver.notifications) == 1
        event = received.event
        properties = blob.get_blob_properties()
        assert event["topic"] == STORAGE_TOPIC
        assert (
            event["subject"]
            == f"/blobServices/default/containers/{container.container_name}/blobs/incoming/train.jsonl"
        )
        assert event["eventType"] == "Microsoft.Storage.BlobCreated"
        assert event["eventTime"].endswith("Z")
        assert (event["dataVersion"], event["metadataVersion"]) == ("", "1")
        uuid.UUID(event["id"])
        data = event["data"]
        assert data["api"] == "PutBlob"
        assert data["eTag"] == properties.etag
        assert data["contentLength"] == properties.size == 17
        assert data["contentType"] == properties.content_settings.content_type
        assert data["blobType"] == "BlockBlob"
        assert data["url"] == blob.url
        assert set(data) >= {"clientRequestId", "requestId", "sequencer", "storageDiagnostics"}
        assert received.headers["content-type"] == "application/json"
        assert received.headers["aeg-event-type"] == "Notification"
        assert received.headers["aeg-subscription-name"] == "DATASET-ARRIVAL"
        assert received.headers["aeg-delivery-count"] == "0"


def test_overwritten_blob_fires_again_with_new_etag_and_greater_sequencer(
    start_stand_in: StandInFactory, container: ContainerClient
) -> None:
    with RecordingReceiver() as receiver:
        start_stand_in(receiver.url)
        container.create_container()
        container.upload_blob("incoming/train.jsonl", b"first\n")
        wait_until(lambda: receiver.notifications_to("dataset_arrival"), what="the first event")

        container.upload_blob("incoming/train.jsonl", b"second, longer\n", overwrite=True)

        first, second = wait_until(
            lambda: len(receiver.notifications) == 2 and receiver.notifications, what="the second event"
        )
        assert first.event["subject"] == second.event["subject"]
        assert first.event["data"]["eTag"] != second.event["data"]["eTag"]
        assert second.event["data"]["sequencer"] > first.event["data"]["sequencer"]
        assert second.event["data"]["contentLength"] == 15


def test_blob_committed_from_blocks_reports_put_block_list(
    start_stand_in: StandInFactory, container: ContainerClient
) -> None:
    with RecordingReceiver() as receiver:
        start_stand_in(receiver.url)
        container.create_container()
        blob = container.get_blob_client("incoming/big.jsonl")

        blob.stage_block("b1", b"a\n")
        blob.stage_block("b2", b"b\n")
        blob.commit_block_list([BlobBlock("b1"), BlobBlock("b2")])

        [received] = wait_until(lambda: receiver.notifications_to("dataset_arrival"), what="the BlobCreated event")
        assert received.event["data"]["api"] == "PutBlockList"
        assert received.event["data"]["contentLength"] == 4


def test_blobs_outside_the_filter_or_the_watched_containers_fire_nothing(
    start_stand_in: StandInFactory, container: ContainerClient, azurite: str
) -> None:
    other = BlobServiceClient.from_connection_string(azurite).get_container_client(f"o{uuid.uuid4().hex[:16]}")
    with RecordingReceiver() as receiver:
        start_stand_in(receiver.url)
        container.create_container()
        other.create_container()

        container.upload_blob("notes/readme.txt", b"not a dataset")
        other.upload_blob("incoming/train.jsonl", b"unwatched container")
        container.upload_blob("incoming/train.jsonl", b"{}\n")

        wait_until(lambda: receiver.notifications_to("dataset_arrival"), what="the event for incoming/")
        time.sleep(QUIET_S)
        assert [item.event["subject"].rsplit("/blobs/", 1)[1] for item in receiver.notifications] == [
            "incoming/train.jsonl"
        ]


def test_restart_reports_only_writes_not_reported_before(
    start_stand_in: StandInFactory, container: ContainerClient, tmp_path: Path
) -> None:
    def names(receiver: RecordingReceiver) -> list[str]:
        return [item.event["subject"].rsplit("/", 1)[1] for item in receiver.notifications]

    container.create_container()
    container.upload_blob("incoming/before.jsonl", b"there before the subscription\n")
    with RecordingReceiver() as receiver:
        first = start_stand_in(receiver.url, state_dir=tmp_path / "kept")
        container.upload_blob("incoming/a.jsonl", b"a\n")
        wait_until(lambda: names(receiver) == ["a.jsonl"], what="a.jsonl")
        first.stop()

        container.upload_blob("incoming/b.jsonl", b"written while the stand-in was down\n")
        start_stand_in(receiver.url, state_dir=tmp_path / "kept")
        wait_until(lambda: names(receiver) == ["a.jsonl", "b.jsonl"], what="b.jsonl after the restart")

        container.delete_blob("incoming/a.jsonl")
        time.sleep(QUIET_S)
        container.upload_blob("incoming/a.jsonl", b"a again\n")

        wait_until(lambda: names(receiver) == ["a.jsonl", "b.jsonl", "a.jsonl"], what="the re-uploaded a.jsonl")


# --- relay topic -----------------------------------------------------------------------------------------


def test_relayed_events_reach_the_ml_subscription_when_their_type_matches(start_stand_in: StandInFactory) -> None:
    run_completed = load_event("run-completed.json")[0]
    model_registered = load_event("model-registered.json")[0]
    bare_failure = {"eventType": RUN_EVENTS[1], "subject": "experiments/e/runs/r", "data": {"runStatus": "Failed"}}
    with RecordingReceiver() as receiver:
        stand_in = start_stand_in(receiver.url)

        status, body = publish(stand_in, [run_completed, model_registered, bare_failure])

        assert (status, body) == (200, {"accepted": 3})
        completed, failed = wait_until(lambda: len(receiver.notifications) == 2 and receiver.notifications)
        time.sleep(QUIET_S)
        assert len(receiver.notifications) == 2
        by_type = {item.event["eventType"]: item for item in (completed, failed)}
        assert by_type[RUN_EVENTS[0]].event == run_completed
        filled = by_type[RUN_EVENTS[1]].event
        assert filled["topic"] == ML_TOPIC
        assert filled["eventTime"].endswith("Z")
        uuid.UUID(filled["id"])
        assert all(item.path.endswith("functionName=ml_job_events") for item in (completed, failed))
        assert {item.headers["aeg-subscription-name"] for item in (completed, failed)} == {"ML-JOB-EVENTS"}


def test_relay_refuses_bad_requests_and_reports_health(start_stand_in: StandInFactory) -> None:
    with RecordingReceiver() as receiver:
        stand_in = start_stand_in(receiver.url)

        not_json = post_json(stand_in.publish_url, b"[{")
        not_array = publish(stand_in, {"eventType": "x"})  # type: ignore[arg-type]
        no_subject = publish(
            stand_in, [{"eventType": RUN_EVENTS[0], "subject": "s", "data": {}}, {"eventType": "x", "data": {}}]
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{stand_in.port}/api/health", timeout=5) as health:
            health_answer = (health.status, json.loads(health.read()))

        assert not_json[0] == 400 and "not valid JSON" in not_json[1]["error"]
        assert not_array[0] == 400 and "JSON array" in not_array[1]["error"]
        assert no_subject[0] == 400 and "event 1 lacks subject" in no_subject[1]["error"]
        assert health_answer == (200, {"state": "Running"})
        time.sleep(QUIET_S)
        assert receiver.notifications == []


# --- delivery --------------------------------------------------------------------------------------------


def test_failed_deliveries_are_retried_with_a_growing_delivery_count(start_stand_in: StandInFactory) -> None:
    with RecordingReceiver() as receiver:
        receiver.failures = [500, 500]
        stand_in = start_stand_in(receiver.url)

        publish(stand_in, load_event("run-completed.json"))

        attempts = wait_until(lambda: len(receiver.notifications) == 3 and receiver.notifications, what="3 attempts")
        assert [item.headers["aeg-delivery-count"] for item in attempts] == ["0", "1", "2"]
        assert len({item.event["id"] for item in attempts}) == 1
        time.sleep(QUIET_S)
        assert len(receiver.notifications) == 3


def test_event_is_dead_lettered_after_max_delivery_attempts(start_stand_in: StandInFactory, tmp_path: Path) -> None:
    event = load_event("run-completed.json")[0]
    with RecordingReceiver() as receiver:
        receiver.always_failing = 503
        stand_in = start_stand_in(receiver.url, max_attempts=3)

        publish(stand_in, [event])

        dead_letter = tmp_path / "state" / "deadletter" / "ml-job-events" / f"{event['id']}.json"
        wait_until(dead_letter.exists, what="the dead-letter file")
        record = json.loads(dead_letter.read_text())
        assert record["deadLetterReason"] == "MaxDeliveryAttemptsExceeded"
        assert record["deliveryAttempts"] == 3
        assert (record["lastHttpStatusCode"], record["lastError"]) == (503, "HTTP 503")
        assert {key: record[key] for key in event} == event
        assert [item.headers["aeg-delivery-count"] for item in receiver.notifications] == ["0", "1", "2"]


def test_bad_request_answer_is_dead_lettered_without_retries(start_stand_in: StandInFactory, tmp_path: Path) -> None:
    event = load_event("run-completed.json")[0]
    with RecordingReceiver() as receiver:
        receiver.always_failing = 400
        stand_in = start_stand_in(receiver.url)

        publish(stand_in, [event])

        dead_letter = tmp_path / "state" / "deadletter" / "ml-job-events" / f"{event['id']}.json"
        wait_until(dead_letter.exists, what="the dead-letter file")
        assert json.loads(dead_letter.read_text())["deliveryAttempts"] == 1
        assert len(receiver.notifications) == 1


def test_validation_handshake_happens_once_per_subscription_before_its_first_delivery(
    start_stand_in: StandInFactory, container: ContainerClient
) -> None:
    run_completed = load_event("run-completed.json")[0]
    with RecordingReceiver() as receiver:
        stand_in = start_stand_in(receiver.url)
        container.create_container()

        for number in range(3):
            publish(stand_in, [{**run_completed, "id": f"run-{number}"}])
            container.upload_blob(f"incoming/{number}.jsonl", b"{}\n")

        wait_until(lambda: len(receiver.notifications) == 6, what="6 deliveries")
        assert sorted(item.headers["aeg-subscription-name"] for item in receiver.handshakes) == [
            "DATASET-ARRIVAL",
            "ML-JOB-EVENTS",
        ]
        first_arrivals = {name: kind for name, kind in reversed(receiver.arrivals)}
        assert first_arrivals == {
            "DATASET-ARRIVAL": "SubscriptionValidation",
            "ML-JOB-EVENTS": "SubscriptionValidation",
        }
        for handshake in receiver.handshakes:
            assert handshake.event["eventType"] == "Microsoft.EventGrid.SubscriptionValidationEvent"
            assert handshake.event["data"]["validationCode"]
            assert handshake.event["data"]["validationUrl"].startswith(f"http://127.0.0.1:{stand_in.port}/")


def test_events_wait_for_an_endpoint_that_starts_later(start_stand_in: StandInFactory) -> None:
    port = free_port()
    stand_in = start_stand_in(f"http://127.0.0.1:{port}")
    publish(stand_in, load_event("run-completed.json"))
    time.sleep(QUIET_S)

    with RecordingReceiver(port) as receiver:
        [received] = wait_until(lambda: receiver.notifications, what="the queued event")

    assert received.headers["aeg-delivery-count"] == "0"
    assert len(receiver.handshakes) == 1


def test_validation_url_validates_a_subscription_whose_endpoint_does_not_answer_the_handshake(
    start_stand_in: StandInFactory,
) -> None:
    with RecordingReceiver() as receiver:
        receiver.ignore_handshakes = True
        stand_in = start_stand_in(receiver.url)
        publish(stand_in, load_event("run-completed.json"))
        handshake = wait_until(lambda: receiver.handshakes, what="the handshake")[0]

        with urllib.request.urlopen(handshake.event["data"]["validationUrl"], timeout=5) as answer:
            assert answer.status == 200

        wait_until(lambda: receiver.notifications, what="the event after manual validation")


# --- the command line ------------------------------------------------------------------------------------


def test_command_line_delivers_with_the_repository_file_and_stops_on_sigterm(
    azurite: str, container: ContainerClient, tmp_path: Path
) -> None:
    port = free_port()
    with RecordingReceiver() as receiver:
        env = {
            **os.environ,
            "AzureWebJobsStorage": azurite,
            "AUTOPILOT_FUNCTIONS_URL": receiver.url,
            "AUTOPILOT_TRAINING_CONTAINER": container.container_name,
        }
        command = [
            sys.executable, "-m", "autopilot.local.eventgrid",
            "--subscriptions", str(PROJECT_ROOT / "eventgrid.subscriptions.json"),
            "--port", str(port), "--state-dir", str(tmp_path / "state"), "--poll-ms", "100",
        ]  # fmt: skip
        process = subprocess.Popen(command, env=env, cwd=PROJECT_ROOT, stderr=subprocess.PIPE, text=True)
        try:
            wait_until(lambda: _health(port), what="the stand-in's health endpoint")
            container.create_container()
            container.upload_blob("ultrachat/train.jsonl", b"{}\n")
            publish_status = post_json(
                f"http://127.0.0.1:{port}/api/events", json.dumps(load_event("run-completed.json")).encode()
            )
            wait_until(lambda: receiver.notifications_to("dataset_arrival"), what="the BlobCreated event")
            wait_until(lambda: receiver.notifications_to("ml_job_events"), what="the relayed run event")
        finally:
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=10)

    assert publish_status == (200, {"accepted": 1})
    assert process.returncode == 0
    assert "delivered Microsoft.Storage.BlobCreated" in stderr
    assert "published Microsoft.MachineLearningServices.RunCompleted" in stderr
    assert AZURITE_KEY not in stderr


def _health(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=1) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def test_events_pending_when_the_stand_in_stops_are_delivered_after_it_starts_again(
    start_stand_in: StandInFactory, tmp_path: Path
) -> None:
    event = load_event("run-completed.json")[0]
    pending = tmp_path / "state" / "pending" / "ml-job-events" / f"{event['id']}.json"
    with RecordingReceiver() as receiver:
        receiver.always_failing = 503
        stand_in = start_stand_in(receiver.url)
        publish(stand_in, [event])
        wait_until(lambda: len(receiver.notifications) >= 2, what="two failed attempts")
        stand_in.stop()
        # GIVEN the event is still waiting for delivery, on disk, with its attempts so far
        record = json.loads(pending.read_text())
        attempts = record["deliveryAttempts"]
        assert record["event"] == event and attempts >= 2 and record["lastError"] == "HTTP 503"
        receiver.always_failing = None
        # WHEN the stand-in starts again THEN it is delivered, its count going on, and no longer pending
        start_stand_in(receiver.url)
        delivered = wait_until(
            lambda: [item for item in receiver.notifications if item.headers["aeg-delivery-count"] == str(attempts)],
            what="the delivery after the restart",
        )
        assert delivered[0].event == event
        wait_until(lambda: not pending.exists(), what="the pending file to go")
