"""Lifecycle events out, on fakes: GIVEN runs and endpoints changing, THEN each end and each coming and going of an
endpoint is published once, with the run's figures, and a topic that fails never fails a run."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from shared.ledger import Run, RunStage, RunStatus
from shared.lifecycle import (
    EventGridLifecyclePublisher,
    LifecycleEvent,
    NoLifecyclePublisher,
    RetryingLifecyclePublisher,
    announce,
    build_lifecycle_publisher,
    run_event,
)
from shared.settings import Settings
from shared.stages import rollout
from shared.stages.cleanup import clean_up_idle_endpoints
from shared.stages.context import StageContext
from shared.stages.restore import request_restore
from tests.fakes import fake_context
from tests.unit.test_restore import deliver
from tests.unit.test_stages import only_run, start, upload_folder


class FakeLifecyclePublisher:
    """Keeps what was published; fails the first `failures` publishes."""

    def __init__(self, failures: int = 0) -> None:
        self.events: list[LifecycleEvent] = []
        self.failures = failures
        self.tries = 0

    def publish(self, event: LifecycleEvent) -> None:
        self.tries += 1
        if self.failures:
            self.failures -= 1
            raise ConnectionError("topic unreachable")
        self.events.append(event)

    def types(self) -> list[str]:
        return [event.event_type for event in self.events]


def context_with(publisher: FakeLifecyclePublisher, **settings: object) -> StageContext:
    ctx = fake_context(**settings)
    ctx.lifecycle = publisher
    return ctx


def test_a_promoted_run_is_announced_once_with_its_model_endpoint_and_figures() -> None:
    # GIVEN a dataset WHEN its run goes live, every message delivered twice
    published = FakeLifecyclePublisher()
    ctx = context_with(published)
    start(ctx, upload_folder(ctx), twice=True)
    run = only_run(ctx)

    # THEN one RunSucceeded says which run, data, model and endpoint, with the similarity and the losses
    assert published.types() == ["FinetuneAutopilot.RunSucceeded"]
    event = published.events[0]
    assert event.subject == f"/runs/{run.run_id}"
    data = event.data
    assert (data["runId"], data["dataset"], data["version"], data["status"]) == (
        run.run_id,
        run.dataset,
        run.version,
        "succeeded",
    )
    assert data["model"] == {"name": run.model_name, "version": run.model_version}
    assert data["endpoint"]["name"] == run.endpoint_name and data["endpoint"]["deployment"] == run.deployment_name
    assert data["figures"]["similarity"] == run.smoke["similarity"]
    assert data["figures"]["losses"] == {"train_loss": 1.234, "eval_loss": 1.456}
    assert data["error"] is None
    json.dumps(dict(data))


@pytest.mark.parametrize(
    ("manifest", "event_type", "category"),
    [
        ({"base_modle": "x"}, "FinetuneAutopilot.RunRejected", "validation"),
        ({"parameters": {"simulate_failure": "training"}}, "FinetuneAutopilot.RunFailed", "training"),
        ({"parameters": {"simulate_failure": "deployment"}}, "FinetuneAutopilot.RunFailed", "deployment"),
        ({"parameters": {"simulate_failure": "scoring"}}, "FinetuneAutopilot.RunRolledBack", "smoke_test"),
    ],
)
def test_a_run_that_ends_otherwise_is_announced_with_its_error(
    manifest: dict[str, Any], event_type: str, category: str
) -> None:
    published = FakeLifecyclePublisher()
    ctx = context_with(published)
    start(ctx, upload_folder(ctx, manifest=manifest))
    assert published.types() == [event_type]
    assert published.events[0].data["error"]["category"] == category


def test_a_superseded_run_is_announced() -> None:
    # GIVEN a run about to deploy to an endpoint, and a newer run for it
    published = FakeLifecyclePublisher()
    ctx = context_with(published)
    older = Run("r-old", "chat", "v1", "h1", "simulated", "2026-11-20T09:00:00Z", endpoint_name="ep")
    older.stage, older.stage_done = RunStage.REGISTERING, True
    newer = replace(older, run_id="r-new", version="v2", created_at="2026-11-20T10:00:00Z")
    ctx.ledger.create(older)
    ctx.ledger.create(newer)

    # WHEN the older one is superseded (twice: a duplicate delivery)
    rollout.supersede(ctx, older.run_id, newer)
    rollout.supersede(ctx, older.run_id, newer)

    # THEN RunSuperseded goes out, a repeat with the same id (subscribers drop it as a copy)
    assert set(published.types()) == {"FinetuneAutopilot.RunSuperseded"}
    assert len({event.id for event in published.events}) == 1
    assert published.events[0].data["error"]["category"] == "superseded"


def test_an_endpoint_deleted_as_idle_and_restored_is_announced_with_its_run() -> None:
    published = FakeLifecyclePublisher()
    ctx = context_with(published, idle_endpoint_minutes=60)
    start(ctx, upload_folder(ctx))
    ctx.clock.advance(2 * 3600)  # type: ignore[attr-defined]
    run = only_run(ctx)

    assert clean_up_idle_endpoints(ctx) == [run.endpoint_name]
    _, command = request_restore(ctx.ledger, run.endpoint_name)
    assert command is not None
    deliver(ctx, command)

    assert published.types() == [
        "FinetuneAutopilot.RunSucceeded",
        "FinetuneAutopilot.EndpointDeletedIdle",
        "FinetuneAutopilot.EndpointRestored",
    ]
    deleted, restored = published.events[1:]
    assert deleted.subject == restored.subject == f"/endpoints/{run.endpoint_name}"
    assert deleted.data["runId"] == restored.data["runId"] == run.run_id
    assert deleted.data["endpoint"]["state"].startswith("deleted_idle")
    assert restored.data["endpoint"]["state"] == "live"
    assert len({event.id for event in published.events}) == 3


def test_a_topic_that_keeps_failing_never_fails_the_run(caplog: pytest.LogCaptureFixture) -> None:
    # GIVEN a topic that fails every publish, tried three times
    failing = FakeLifecyclePublisher(failures=100)
    waits: list[float] = []
    ctx = fake_context()
    ctx.lifecycle = RetryingLifecyclePublisher(failing, sleep=waits.append)

    # WHEN a run goes live
    with caplog.at_level(logging.WARNING, logger="autopilot.lifecycle"):
        start(ctx, upload_folder(ctx))

    # THEN it is live all the same, the publish was tried 3 times with growing waits, and the loss is logged
    assert only_run(ctx).status is RunStatus.SUCCEEDED
    assert failing.tries == 3 and waits == [1.0, 2.0]
    assert "could not publish FinetuneAutopilot.RunSucceeded" in caplog.text


def test_a_publish_that_fails_once_goes_out_on_the_next_try() -> None:
    flaky = FakeLifecyclePublisher(failures=1)
    waits: list[float] = []
    ctx = fake_context()
    ctx.lifecycle = RetryingLifecyclePublisher(flaky, sleep=waits.append)
    start(ctx, upload_folder(ctx))
    assert flaky.types() == ["FinetuneAutopilot.RunSucceeded"] and waits == [1.0]


def test_a_run_in_progress_is_not_announced() -> None:
    published = FakeLifecyclePublisher()
    ctx = context_with(published)
    run = Run("r1", "chat", "v1", "h", "simulated", "2026-11-20T09:00:00Z")
    assert run_event(run) is None
    announce(ctx, run)
    assert published.events == []


def test_lifecycle_events_are_off_without_a_topic_and_use_the_key_when_one_is_set() -> None:
    settings = Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true"})
    assert isinstance(build_lifecycle_publisher(settings), NoLifecyclePublisher)
    keyed = Settings.from_env(
        {
            "AzureWebJobsStorage": "UseDevelopmentStorage=true",
            "AUTOPILOT_LIFECYCLE_TOPIC_ENDPOINT": "http://127.0.0.1:7072/api/events",
            "AUTOPILOT_LIFECYCLE_TOPIC_KEY": "local-key",
        }
    )
    assert "local-key" not in repr(keyed)
    publisher = build_lifecycle_publisher(keyed)
    assert isinstance(publisher, RetryingLifecyclePublisher)
    assert isinstance(publisher.publisher, EventGridLifecyclePublisher)


class _Topic(BaseHTTPRequestHandler):
    received: list[tuple[dict[str, str], Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((dict(self.headers), json.loads(body)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def topic() -> Iterator[tuple[str, list[tuple[dict[str, str], Any]]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Topic)
    _Topic.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api/events", _Topic.received
    finally:
        server.shutdown()
        server.server_close()


def test_the_event_grid_adapter_posts_an_event_grid_schema_event_with_the_key(
    topic: tuple[str, list[tuple[dict[str, str], Any]]],
) -> None:
    # GIVEN a topic (a real HTTP server) and the adapter with a key
    url, received = topic
    settings = Settings.from_env(
        {
            "AzureWebJobsStorage": "UseDevelopmentStorage=true",
            "AUTOPILOT_LIFECYCLE_TOPIC_ENDPOINT": url,
            "AUTOPILOT_LIFECYCLE_TOPIC_KEY": "local-key",
        }
    )
    publisher = EventGridLifecyclePublisher.from_settings(settings)
    run = Run("r1", "chat", "v1", "h", "simulated", "2026-11-20T09:00:00Z", status=RunStatus.SUCCEEDED)
    run.finished_at = "2026-11-20T10:00:00Z"
    event = run_event(run)
    assert event is not None

    # WHEN it publishes
    publisher.publish(event)

    # THEN the topic got one Event Grid schema event, authenticated with the key
    [(headers, body)] = received
    assert {key.lower(): value for key, value in headers.items()}["aeg-sas-key"] == "local-key"
    [sent] = body
    assert (sent["eventType"], sent["subject"], sent["dataVersion"], sent["id"]) == (
        "FinetuneAutopilot.RunSucceeded",
        "/runs/r1",
        "1.0",
        event.id,
    )
    assert sent["data"]["runId"] == "r1" and sent["eventTime"]
