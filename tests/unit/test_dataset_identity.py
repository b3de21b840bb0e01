"""Which content a run is for: files identified by their Content-MD5 property or by reading them, and
pinned to the versions the run was started for."""

from __future__ import annotations

import hashlib

from shared.datasets import MD5Reader, content_hash, make_run_id
from shared.ledger import RunStage, RunStatus
from shared.messages import SettleDatasetFolder, ValidateDataset
from shared.stages import intake, validation
from tests.fakes import FakeBlobStore, FakeMessageSender, fake_context
from tests.unit.test_stages import CONTAINER, conversation, jsonl, only_run, start, upload, upload_folder


def settle_only(ctx, service_md5: bool) -> None:  # type: ignore[no-untyped-def]
    """Upload the usual folder and settle it, without going further."""
    assert isinstance(ctx.blobs, FakeBlobStore) and isinstance(ctx.sender, FakeMessageSender)
    ctx.blobs.service_md5 = service_md5
    for event in upload_folder(ctx):
        intake.note_blob_created(event, ctx)
    settle = next(message for message, _ in ctx.sender.sent if isinstance(message, SettleDatasetFolder))
    ctx.clock.advance(60)
    assert isinstance(intake.settle_dataset_folder(settle, ctx), ValidateDataset)


def test_files_with_a_content_md5_are_not_read_to_identify_the_run_and_get_the_same_run_id() -> None:
    with_md5, without_md5 = fake_context(), fake_context()

    settle_only(with_md5, service_md5=True)
    settle_only(without_md5, service_md5=False)

    assert with_md5.blobs.reads == [] and sorted(without_md5.blobs.reads) == [  # type: ignore[attr-defined]
        "chat/v1/test_sft.jsonl",
        "chat/v1/train_sft.jsonl",
    ]
    first, second = only_run(with_md5), only_run(without_md5)
    assert first.run_id == second.run_id
    assert {item["md5_from"] for item in first.inputs} == {"property"}
    assert {item["md5_from"] for item in second.inputs} == {"content"}
    train = jsonl([conversation(i) for i in range(30)])
    test = jsonl([conversation(i) for i in range(100, 105)])
    expected = content_hash(
        [("train_sft.jsonl", hashlib.md5(train).hexdigest()), ("test_sft.jsonl", hashlib.md5(test).hexdigest())]
    )
    assert first.run_id == make_run_id("chat", expected)


def test_a_file_written_again_after_its_run_started_ends_that_run_and_the_newer_run_goes_live() -> None:
    ctx = fake_context()
    settle_only(ctx, service_md5=True)
    older = only_run(ctx)
    # WHEN the train file is uploaded again before the older run is validated
    rewritten = upload(ctx, "chat/v1/train_sft.jsonl", jsonl([conversation(i) for i in range(40)]))
    validation.validate_run(ValidateDataset(older.run_id), ctx)
    # THEN the older run ends, naming the file, and the folder's new content gets a run of its own
    ended = ctx.ledger.get(older.run_id)
    assert ended is not None and (ended.status, ended.error_category) == (RunStatus.FAILED, "dataset_changed")
    assert "chat/v1/train_sft.jsonl has been written since" in ended.error_message
    ctx.sender.sent.clear()  # type: ignore[attr-defined]
    start(ctx, [rewritten])
    newer = next(run for run in ctx.ledger.list_runs() if run.run_id != older.run_id)
    assert (newer.status, newer.stage) == (RunStatus.SUCCEEDED, RunStage.LIVE)


def test_a_wrong_content_md5_property_fails_the_run_and_says_which_file() -> None:
    ctx = fake_context()
    assert isinstance(ctx.blobs, FakeBlobStore)
    train = jsonl([conversation(i) for i in range(30)])
    ctx.blobs.upload(CONTAINER, "chat/v1/train_sft.jsonl", train, content_md5="0" * 32)
    settle = SettleDatasetFolder("chat", "v1", ctx.clock().timestamp(), True)
    command = intake.settle_dataset_folder(settle, ctx)
    assert command is not None

    validation.validate_run(command, ctx)

    run = only_run(ctx)
    assert (run.status, run.error_category) == (RunStatus.FAILED, "dataset_changed")
    assert f"Content-MD5 property says {'0' * 32} but its content's MD5 is {hashlib.md5(train).hexdigest()}" in (
        run.error_message
    )


def test_the_md5_reader_passes_the_bytes_through_and_knows_when_it_read_everything() -> None:
    import io

    reader = MD5Reader(io.BytesIO(b"abc" * 1000))
    assert reader.read(10) == b"abcabcabca" and not reader.read_to_end
    assert len(reader.read()) == 2990 and reader.read_to_end
    assert reader.hexdigest() == hashlib.md5(b"abc" * 1000).hexdigest()
