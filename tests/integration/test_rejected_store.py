"""The rejected-inputs table and the poison queues against a real Azurite, and `autopilot rejected` / `replay`.

GIVEN records and poison messages in Azurite, WHEN they are kept, listed and replayed THEN each input is kept
once whatever its names hold, the list is newest first, and a replayed message lands on its queue unchanged and
leaves the poison queue, while the messages the replay looked at come back into view at once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from azure.storage.queue import QueueClient

from shared.messages import CHECK_JOB_QUEUE, CheckFinetuneJob
from shared.queueing import encode_queue_body
from shared.rejected import (
    PEEK_LIMIT,
    StoragePoisonQueues,
    TableRejectedInputs,
    rejected_event,
    rejected_message,
    replay_poison_message,
)

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Event:
    id: str
    event_type: str
    subject: str
    data: Any
    topic: str = "t"
    event_time: datetime | None = None

    def get_json(self) -> Any:
        return self.data


def odd_event() -> Event:
    return Event(
        "id/with#odd?chars\t",
        "Microsoft.Storage.BlobCreated",
        "/blobServices/default/containers/training-data/blobs/a#b\\c?\t/v1/train.jsonl",
        {"url": "https://acct.blob/x?sig=c2VjcmV0%3D", "text": "é\u0085" + "x" * 60_000},
    )


def test_the_table_keeps_each_input_once_whatever_it_holds_and_lists_them_newest_first(azurite: str) -> None:
    store = TableRejectedInputs(azurite, f"rejected{uuid.uuid4().hex[:12]}")
    message = rejected_message("validate-dataset", "m1", b'{"type": "ValidateDataset", "run_id": 42}', "wrong", T0)
    event = rejected_event("dataset_arrival", odd_event(), "the dataset folder name 'a#b' contains '#'", T0)
    later = rejected_event("dataset_arrival", odd_event(), "same event, a minute later", T0 + timedelta(minutes=1))
    assert store.record(message) and not store.record(message)
    assert store.record(event) and not store.record(later)
    assert [item.rejected_id for item in store.list_rejected()] == [event.rejected_id, message.rejected_id]
    assert store.get(event.rejected_id) == event and "c2VjcmV0" not in event.body
    assert store.get("a#b/c?") is None and store.get("0" * 32) is None


def poison_queue(azurite: str, queue: str) -> QueueClient:
    client = QueueClient.from_connection_string(azurite, f"{queue}-poison")
    client.create_queue()
    return client


def test_poison_messages_are_peeked_in_place_and_one_is_replayed_onto_its_queue(azurite: str) -> None:
    queue = f"q{uuid.uuid4().hex[:12]}"
    poison_client = poison_queue(azurite, queue)
    ids = [poison_client.send_message(encode_queue_body(json.dumps({"n": n}))).id for n in range(40)]
    poison = StoragePoisonQueues(azurite)
    assert len(poison.peek(queue)) == PEEK_LIMIT and len(poison.peek(queue)) == PEEK_LIMIT
    assert poison.peek(f"none{uuid.uuid4().hex[:8]}") == []
    # WHEN the last one, which no peek sees, is replayed
    replayed = replay_poison_message(poison, ids[-1], queues=[queue])
    # THEN it is on its queue as it was, out of the poison queue, and the others are visible again at once
    assert replayed is not None and replayed.text == '{"n": 39}'
    target = QueueClient.from_connection_string(azurite, queue)
    assert [m.content for m in target.peek_messages(max_messages=32)] == [encode_queue_body('{"n": 39}')]
    assert len(poison.peek(queue)) == PEEK_LIMIT
    assert ids[-1] not in {m.id for m in poison_client.receive_messages(max_messages=50, visibility_timeout=1)}
    assert replay_poison_message(poison, "no-such-message", queues=[queue]) is None


def autopilot(azurite: str, cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "autopilot", *args],
        env={**os.environ, "AzureWebJobsStorage": azurite, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_autopilot_rejected_lists_what_was_set_aside_and_replay_puts_a_poison_message_back(
    azurite: str, tmp_path: Path
) -> None:
    env = {"AUTOPILOT_REJECTED_TABLE": f"rejected{uuid.uuid4().hex[:12]}"}
    TableRejectedInputs(azurite, env["AUTOPILOT_REJECTED_TABLE"]).record(
        rejected_event("dataset_arrival", odd_event(), "the dataset folder name 'a#b' contains '#'", T0)
    )
    body = encode_queue_body(CheckFinetuneJob("chat-0123456789ab", "job-1", 3).to_json())
    sent = poison_queue(azurite, CHECK_JOB_QUEUE).send_message(body)

    listing = autopilot(azurite, tmp_path, env, "rejected", "--json")
    assert listing.returncode == 0, listing.stderr
    items = {item["item_id"]: item for item in json.loads(listing.stdout)}
    assert items[sent.id]["kind"] == "poison" and items[sent.id]["run_id"] == "chat-0123456789ab"
    assert any(item["kind"] == "event" and "'#'" in item["reason"] for item in items.values())
    table = autopilot(azurite, tmp_path, env, "rejected")
    assert table.returncode == 0 and "REASON" in table.stdout and sent.id in table.stdout

    replay = autopilot(azurite, tmp_path, env, "replay", sent.id)
    assert replay.returncode == 0, replay.stderr
    assert f"back to {CHECK_JOB_QUEUE}" in replay.stdout and "chat-0123456789ab" in replay.stdout
    target = QueueClient.from_connection_string(azurite, CHECK_JOB_QUEUE)
    assert body in [message.content for message in target.peek_messages(max_messages=32)]
    unknown = autopilot(azurite, tmp_path, env, "replay", sent.id)
    assert unknown.returncode == 2 and "no poison queue holds" in unknown.stderr
    target.clear_messages()
