"""Malformed events through the real local stack: the runner's Event Grid webhook answers 2xx, and the events are
listed by `GET /api/rejected` with their reasons.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from autopilot.local.stack import LocalStack
from tests.integration.stack_fixtures import http_json, start_stack, wait_for

pytestmark = pytest.mark.integration
BLOBS = "/blobServices/default/containers/training-data/blobs/"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = start_stack(tmp_path_factory.mktemp("rejected"))
    yield stack
    stack.down(report=lambda line: None)


def deliver(stack: LocalStack, function: str, events: list[dict[str, Any]]) -> int:
    """POST a batch to the runner's Event Grid webhook as Event Grid does (azure-facts.md, Event Grid trigger)."""
    state = stack.load()
    assert state is not None
    request = urllib.request.Request(
        f"{state.functions_url}/runtime/webhooks/EventGrid?functionName={function}",
        data=json.dumps(events).encode("utf-8"),
        method="POST",
        headers={"aeg-event-type": "Notification", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return int(response.status)


def test_malformed_events_are_answered_2xx_and_listed_with_their_reasons(stack: LocalStack) -> None:
    bad_name: dict[str, Any] = {
        "id": "bad-name",
        "eventType": "Microsoft.Storage.BlobCreated",
        "subject": BLOBS + "a#b/v1/train.jsonl",
        "data": {"url": "http://127.0.0.1/training-data/a%23b/v1/train.jsonl?sig=c2VjcmV0%3D"},
    }
    empty: dict[str, Any] = {"id": "empty-event"}
    no_run: dict[str, Any] = {
        "id": "no-run",
        "eventType": "Microsoft.MachineLearningServices.RunCompleted",
        "subject": "x",
        "data": {},
    }
    assert 200 <= deliver(stack, "dataset_arrival", [bad_name, empty]) < 300
    assert 200 <= deliver(stack, "ml_job_events", [no_run]) < 300
    # The same batch again (Event Grid delivers at least once) adds nothing.
    assert 200 <= deliver(stack, "dataset_arrival", [bad_name]) < 300

    state = stack.load()
    assert state is not None

    def listed() -> list[dict[str, Any]]:
        status, body = http_json(f"{state.functions_url}/api/rejected")
        return body["items"] if status == 200 else []

    items = wait_for(lambda: len(listed()) >= 3 and listed(), 30, "three rejected events", stack)
    by_id = {item["input_id"]: item for item in items if item["kind"] == "event"}
    assert set(by_id) == {"bad-name", "empty-event", "no-run"}
    assert "'#'" in by_id["bad-name"]["reason"] and "rename the folder" in by_id["bad-name"]["reason"]
    assert "c2VjcmV0" not in json.dumps(items)
    assert by_id["no-run"]["source"] == "ml_job_events"
    status, one = http_json(f"{state.functions_url}/api/rejected/{by_id['bad-name']['item_id']}")
    assert status == 200 and one["subject"] == BLOBS + "a#b/v1/train.jsonl"
