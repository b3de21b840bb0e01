"""Bad events and messages are answered, recorded once and set aside; names are checked at the door.

GIVEN the function app wired to fakes (the process-wide context of `shared.bootstrap`), WHEN an Event Grid
function gets an event that can never succeed, THEN it returns normally (Event Grid counts the delivery done:
azure-facts.md, "Event Grid ... an event that can never succeed should be answered 2xx and recorded") and the
event is recorded once, with why, without secrets; a failure of the store itself is still raised.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import azure.functions as func
import pytest
from azure.functions.queue import QueueMessage as TriggerQueueMessage

from functions.dataset_arrival import dataset_arrival
from functions.ml_job_events import ml_job_events
from functions.rejected_api import get_rejected, list_rejected
from functions.support import parse_message
from shared import bootstrap
from shared.errors import MalformedMessageError, TransientError
from shared.events import BLOB_CREATED, RUN_COMPLETED, RUN_STATUS_CHANGED, table_key_problem
from shared.ledger import Run, RunStatus, end_run
from shared.messages import SETTLE_QUEUE, VALIDATE_QUEUE, SettleDatasetFolder, ValidateDataset
from shared.queueing import encode_queue_body
from shared.rejected import (
    MAX_BODY_CHARACTERS,
    LoggedRejectedInputs,
    list_set_aside,
    replay_poison_message,
    safe_document,
    set_aside_if_malformed,
)
from shared.stages.context import StageContext
from tests.fakes import FakeMessageSender, FakePoisonQueues, FakeRejectedInputs, fake_context

BLOBS = "/blobServices/default/containers/training-data/blobs/"
ACCOUNT_KEY = "a2V5IG9mIHRoZSB0ZXN0IGFjY291bnQga2V5IG9mIHRoZSB0ZXN0IGFjY291bnQ=="  # base64 text, not a key


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> Iterator[StageContext]:
    """The function app's process-wide context and poison queues, on fakes."""
    ctx = fake_context()
    monkeypatch.setattr(bootstrap, "_context", ctx)
    monkeypatch.setattr(bootstrap, "_poison", FakePoisonQueues())
    yield ctx


def rejected(ctx: StageContext) -> FakeRejectedInputs:
    assert isinstance(ctx.rejected, FakeRejectedInputs)
    return ctx.rejected


def sent(ctx: StageContext) -> list[Any]:
    assert isinstance(ctx.sender, FakeMessageSender)
    return [message for message, _ in ctx.sender.sent]


def event(
    event_type: str = BLOB_CREATED, subject: str = "", data: Any = None, event_id: str = "e1"
) -> func.EventGridEvent:
    return func.EventGridEvent(
        id=event_id, data=data, topic="t", subject=subject, event_type=event_type, event_time=None, data_version=""
    )


def blob_event(blob_name: str, event_id: str = "e1", **data: Any) -> func.EventGridEvent:
    return event(BLOB_CREATED, BLOBS + blob_name, {"url": f"https://acct.blob/{blob_name}", **data}, event_id)


def job_event(subject: str, data: Any, event_type: str = RUN_STATUS_CHANGED) -> func.EventGridEvent:
    return event(event_type, subject, data)


class Out(func.Out[str]):
    def __init__(self) -> None:
        self.value: str | None = None

    def set(self, val: str) -> None:
        self.value = val

    def get(self) -> str:
        return self.value or ""


# The kinds of bad delivery seen on the local stack (issue 10): each answered normally and recorded once.
BAD_BLOB_EVENTS = {
    "an event type the function does not handle": event("Microsoft.Storage.BlobDeleted", BLOBS + "chat/v1/a.jsonl", {}),
    "a BlobCreated without subject": event(BLOB_CREATED, "", {"url": "u"}),
    "a BlobCreated without data": event(BLOB_CREATED, BLOBS + "chat/v1/train.jsonl", None),
    "an empty event": event("", "", None, event_id=""),
    "a subject with a control character": blob_event("chat\x07/v1/train.jsonl"),
    "a subject with #": blob_event("a#b/v1/train.jsonl"),
    "a contentLength that is no number": blob_event("chat/v1/train.jsonl", contentLength="many"),
}
BAD_JOB_EVENTS = {
    "an event type the function does not handle": job_event("experiments/e/runs/j", {}, BLOB_CREATED),
    "an ML event without a run id": job_event("experiments/e/runs/", {"runStatus": "Completed"}),
    "an ML event with a malformed subject": job_event("/runs/j1", {"runId": "j1", "runStatus": "Failed"}),
    "an ML event without data": job_event("experiments/e/runs/j1", None, RUN_COMPLETED),
    "an ML event whose run tag no Table key can be": job_event(
        "experiments/e/runs/j1", {"runId": "j1", "runTags": {"autopilot_run_id": "a#b"}, "runStatus": "Completed"}
    ),
}


@pytest.mark.parametrize("bad", BAD_BLOB_EVENTS.values(), ids=BAD_BLOB_EVENTS.keys())
def test_a_bad_blob_event_is_answered_and_recorded_once(app: StageContext, bad: func.EventGridEvent) -> None:
    # WHEN Event Grid delivers it twice THEN both deliveries return normally and one record says why
    assert dataset_arrival(bad) is None
    assert dataset_arrival(bad) is None
    (record,) = rejected(app).rows.values()
    assert (record.kind, record.source, record.input_id) == ("event", "dataset_arrival", bad.id)
    assert record.reason and record.received_at.startswith("2026-11-20T09:00:00")
    assert json.loads(record.body)["eventType"] == bad.event_type
    assert sent(app) == [] and app.folders.last_event("chat", "v1") is None  # type: ignore[attr-defined]


@pytest.mark.parametrize("bad", BAD_JOB_EVENTS.values(), ids=BAD_JOB_EVENTS.keys())
def test_a_bad_job_event_is_answered_and_recorded_once(app: StageContext, bad: func.EventGridEvent) -> None:
    out = Out()
    assert ml_job_events(bad, out) is None
    assert ml_job_events(bad, out) is None
    (record,) = rejected(app).rows.values()
    assert (record.kind, record.source, record.subject) == ("event", "ml_job_events", bad.subject)
    assert out.value is None


def test_in_a_batch_of_one_good_and_one_bad_event_the_good_one_is_handled_and_the_bad_one_set_aside(
    app: StageContext,
) -> None:
    # GIVEN one delivery of two events (Event Grid redelivers a whole batch when one event of it fails)
    batch = [blob_event("chat/v1/train.jsonl", "good"), blob_event("a#b/v1/train.jsonl", "bad")]
    # WHEN each is handled THEN neither raises: the good one schedules its folder's settling, the bad one is kept
    for item in batch:
        dataset_arrival(item)
    assert [type(message) for message in sent(app)] == [SettleDatasetFolder]
    assert [record.input_id for record in rejected(app).rows.values()] == ["bad"]


def test_a_job_event_of_another_app_is_ignored_not_rejected(app: StageContext) -> None:
    other = job_event("experiments/e/runs/j1", {"runId": "j1", "runTags": {}, "runStatus": "Completed"})
    out = Out()
    ml_job_events(other, out)
    assert rejected(app).rows == {} and out.value is None


def test_when_the_store_is_down_a_bad_event_still_fails_so_that_event_grid_retries(app: StageContext) -> None:
    rejected(app).down = True
    with pytest.raises(TransientError):
        dataset_arrival(BAD_BLOB_EVENTS["a subject with #"])
    with pytest.raises(TransientError):
        ml_job_events(BAD_JOB_EVENTS["an ML event with a malformed subject"], Out())


def test_the_record_holds_no_secret_and_is_capped(app: StageContext) -> None:
    sas_url = (
        "https://acct.blob.core.windows.net/training-data/a%23b/v1/train.jsonl?sv=2024-11-04&sig=c2VjcmV0%2Bc2ln%3D"
    )
    bad = blob_event(
        "a#b/v1/train.jsonl",
        url=sas_url,
        connection=f"DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={ACCOUNT_KEY};",
        accountKey="plain-secret",
        note="Authorization: Bearer eyJhbGciOi.eyJzdWIiOi.c2ln",
        zz_padding="x" * 50_000,
    )
    dataset_arrival(bad)
    (record,) = rejected(app).rows.values()
    for secret in ("c2VjcmV0", ACCOUNT_KEY, "plain-secret", "eyJhbGciOi"):
        assert secret not in record.body
    assert "sig=***" in record.body and "AccountKey=***" in record.body and "Bearer ***" in record.body
    assert len(record.body) < MAX_BODY_CHARACTERS + 100 and "[cut: " in record.body


def test_masking_a_long_run_of_base64_characters_takes_linear_time() -> None:
    # An event's data is anyone's text: a quadratic pattern would hold the function for minutes.
    started = time.monotonic()
    assert safe_document({"blob": "A" * 300_000}).startswith('{"blob": "AAAA')
    assert time.monotonic() - started < 1.0


def test_an_event_nested_deeper_than_python_recurses_is_still_set_aside(app: StageContext) -> None:
    deep: list[Any] = []
    for _ in range(5000):
        deep = [deep]
    dataset_arrival(event(BLOB_CREATED, "", {"deep": deep}))
    (record,) = rejected(app).rows.values()
    assert record.body == "(dict nested too deeply to show)"


def test_the_record_id_is_a_safe_table_key_whatever_the_event_holds(app: StageContext) -> None:
    dataset_arrival(blob_event("b\\c#d?e\t/v1/train.jsonl", event_id="id/with#odd?chars\n"))
    (record,) = rejected(app).rows.values()
    assert table_key_problem(record.rejected_id) is None and len(record.rejected_id) == 32
    assert "\n" not in record.input_id and "\t" not in record.subject


LONG_BLOB_NAME = "chat/v1/train" + "x" * 1006 + ".jsonl"
NAMES_AT_THE_DOOR = {
    "600 characters": ("d" * 600 + "/v1/train.jsonl", "600 characters long"),
    "a tab": ("chat\tdata/v1/train.jsonl", "control character (U+0009, tab)"),
    "a newline": ("chat/v1\n/train.jsonl", "control character (U+000A, line feed)"),
    "#": ("a#b/v1/train.jsonl", "contains '#', which Table Storage keys cannot hold: rename the folder"),
    "?": ("chat/v1?/train.jsonl", "the version folder name 'v1?' contains '?'"),
    "a 1,025-character blob name": (LONG_BLOB_NAME, "is 1,025 characters long; Blob Storage names hold at most 1,024"),
    "..": ("../v1/train.jsonl", "relative path step"),
    "no letter or digit": ("---/v1/train.jsonl", "has no letter a-z or digit"),
    "300 characters (an Azure tag value)": ("d" * 300 + "/v1/train.jsonl", "tag values hold at most 256"),
    "a control character in the file name": ("chat/v1/train\x85.jsonl", "which blob names cannot hold"),
}


@pytest.mark.parametrize(("blob_name", "why"), NAMES_AT_THE_DOOR.values(), ids=NAMES_AT_THE_DOOR.keys())
def test_a_name_no_store_can_hold_is_rejected_at_arrival_with_what_to_rename(
    app: StageContext, blob_name: str, why: str
) -> None:
    dataset_arrival(blob_event(blob_name))
    (record,) = rejected(app).rows.values()
    assert why in record.reason, record.reason
    assert sent(app) == [] and app.folders.last == {}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "blob_name", ["chat/v1/train.jsonl", "Ahoy Chat.v2/2026-11 (b)/train_sft.jsonl", "ä.b/v./train.jsonl"]
)
def test_names_every_store_can_hold_pass_the_door(app: StageContext, blob_name: str) -> None:
    dataset_arrival(blob_event(blob_name))
    assert rejected(app).rows == {}


def malformed(body: bytes, message_id: str = "m1") -> TriggerQueueMessage:
    return TriggerQueueMessage(id=message_id, body=body, dequeue_count=1)


def test_a_malformed_message_is_recorded_with_its_queue_and_id_before_it_is_raised_on(app: StageContext) -> None:
    # WHEN the same malformed message is tried twice THEN each try raises (the host moves it to the poison queue)
    # and one record names the queue, the message and why
    for _ in range(2):
        with pytest.raises(MalformedMessageError):
            parse_message(malformed(b'{"type": "ValidateDataset", "run_id": 42}'), ValidateDataset)
    (record,) = rejected(app).rows.values()
    assert (record.kind, record.source, record.input_id, record.input_type) == (
        "message",
        VALIDATE_QUEUE,
        "m1",
        "ValidateDataset",
    )
    assert "wrong type" in record.reason


def test_a_malformed_message_goes_to_the_poison_queue_even_when_it_cannot_be_recorded(app: StageContext) -> None:
    rejected(app).down = True
    with pytest.raises(MalformedMessageError):
        parse_message(malformed(b"not json"), ValidateDataset)


def test_a_context_wired_without_a_store_only_logs_what_it_sets_aside() -> None:
    full = fake_context()
    ctx = StageContext(
        settings=full.settings,
        ledger=full.ledger,
        blobs=full.blobs,
        folders=full.folders,
        sender=full.sender,
        backend=full.backend,
    )
    assert isinstance(ctx.rejected, LoggedRejectedInputs)
    with set_aside_if_malformed(ctx, "dataset_arrival", BAD_BLOB_EVENTS["an empty event"]):
        raise MalformedMessageError("nothing to read")
    assert ctx.rejected.list_rejected() == [] and ctx.rejected.get("x") is None


def failed_run(ctx: StageContext, run_id: str, message: str) -> None:
    run = Run(run_id, "chat", "v1", "h", "simulated", "2026-11-20T08:00:00Z")
    end_run(run, RunStatus.FAILED, category="retries_exhausted", message=message)
    assert ctx.ledger.create(run)


def test_the_list_holds_rejected_inputs_and_poison_messages_newest_first_each_with_why(app: StageContext) -> None:
    poison = bootstrap.poison_queues()
    assert isinstance(poison, FakePoisonQueues)
    # GIVEN a rejected event, a malformed message and its copy in the poison queue, a message whose run failed
    # on every try, and a message the queue trigger could not even decode
    dataset_arrival(blob_event("a#b/v1/train.jsonl"))
    with pytest.raises(MalformedMessageError):
        parse_message(malformed(b'{"type": "SettleDatasetFolder"}'), SettleDatasetFolder)
    poison.add(SETTLE_QUEUE, encode_queue_body('{"type": "SettleDatasetFolder"}'), "2026-11-20T08:00:00.000Z")
    failed_run(app, "chat-0123456789ab", "gave up after 5 tries; last transient error: 503")
    poison.add(VALIDATE_QUEUE, encode_queue_body(ValidateDataset("chat-0123456789ab").to_json()), "2026-11-20T10:00Z")
    poison.add(VALIDATE_QUEUE, "this is not base64 {", "2026-11-20T07:00:00.000Z")
    # WHEN the list is read THEN it has all five, newest first, and every one says why
    items = list_set_aside(app.rejected, poison, ledger=app.ledger)
    assert [(item.kind, item.source) for item in items] == [
        ("poison", "validate-dataset-poison"),
        ("event", "dataset_arrival"),
        ("message", SETTLE_QUEUE),
        ("poison", "settle-dataset-poison"),
        ("poison", "validate-dataset-poison"),
    ]
    assert "503" in items[0].reason and items[0].run_id == "chat-0123456789ab"
    assert "'#'" in items[1].reason
    assert items[3].reason.startswith("malformed: ") and "lacks field" in items[3].reason
    assert "not base64" in items[4].reason
    assert len(list_set_aside(app.rejected, poison, limit=2)) == 2


def test_get_api_rejected_lists_them_and_shows_one(app: StageContext) -> None:
    dataset_arrival(blob_event("a#b/v1/train.jsonl"))
    response = list_rejected(func.HttpRequest("GET", "/api/rejected", params={"limit": "10"}, body=b""))
    body = json.loads(response.get_body())
    assert response.status_code == 200 and body["count"] == 1 and body["items"][0]["kind"] == "event"
    item_id = body["items"][0]["item_id"]
    one = get_rejected(func.HttpRequest("GET", "/api/rejected/x", route_params={"rejected_id": item_id}, body=b""))
    assert one.status_code == 200 and json.loads(one.get_body())["subject"].endswith("a#b/v1/train.jsonl")
    unknown = get_rejected(func.HttpRequest("GET", "/api/rejected/x", route_params={"rejected_id": "nope"}, body=b""))
    assert unknown.status_code == 404
    wrong = list_rejected(func.HttpRequest("GET", "/api/rejected", params={"limit": "lots"}, body=b""))
    assert wrong.status_code == 400


def test_replay_puts_a_poison_message_back_on_its_queue_and_takes_it_out_of_the_poison_queue() -> None:
    poison = FakePoisonQueues()
    body = encode_queue_body(ValidateDataset("chat-0123456789ab").to_json())
    message = poison.add(VALIDATE_QUEUE, body)
    replayed = replay_poison_message(poison, message.message_id)
    assert replayed == message and replayed.text == ValidateDataset("chat-0123456789ab").to_json()
    assert poison.sent == [(VALIDATE_QUEUE, body)] and poison.peek(VALIDATE_QUEUE) == []
    assert replay_poison_message(poison, message.message_id) is None


def test_a_replay_whose_send_fails_leaves_the_message_in_the_poison_queue() -> None:
    poison = FakePoisonQueues()
    message = poison.add(VALIDATE_QUEUE, encode_queue_body("{}"))
    poison.sends_fail = True
    with pytest.raises(TransientError):
        replay_poison_message(poison, message.message_id)
    assert poison.peek(VALIDATE_QUEUE) == [message] and poison.sent == []
