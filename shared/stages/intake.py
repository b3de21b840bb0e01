"""Dataset arrival and settling: blob events in, one run per dataset content out."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO

from shared.datasets import MANIFEST_NAME, content_hash, is_dataset_file, make_run_id, parse_dataset_path, split_of
from shared.events import BlobCreated
from shared.ledger import Run, RunStage, RunStatus, iso
from shared.messages import SettleDatasetFolder, ValidateDataset
from shared.stages.context import StageContext, log
from shared.storage import BlobInfo

SETTLE_SLACK_SECONDS = 0.001


def note_blob_created(event: BlobCreated, ctx: StageContext) -> SettleDatasetFolder | None:
    """Remember that a dataset folder changed and schedule its settling after the quiet period.

    The manifest settles the folder at once; any other file waits, so a folder uploaded file by
    file starts one run after its last file.
    """
    if event.container != ctx.settings.training_container:
        log.info("ignoring blob %s in container %s (not the training container)", event.blob_name, event.container)
        return None
    path = parse_dataset_path(event.blob_name)
    if path is None or not is_dataset_file(path.file_name):
        log.info(
            "ignoring blob %s: not <dataset>/<version>/<train|test|validation file or %s>",
            event.blob_name,
            MANIFEST_NAME,
        )
        return None
    now = ctx.clock()
    ctx.folders.record_event(path.dataset, path.version, now)
    manifest = path.file_name == MANIFEST_NAME
    message = SettleDatasetFolder(path.dataset, path.version, now.timestamp(), manifest)
    ctx.sender.send(message, delay_seconds=0 if manifest else ctx.settings.quiet_period_seconds)
    log.info(
        "dataset folder %s changed (%s); settling %s",
        path.folder,
        path.file_name,
        "now" if manifest else "after the quiet period",
    )
    return message


def _read_one_by_one(ctx: StageContext, container: str, blobs: list[BlobInfo]) -> Iterator[tuple[str, IO[bytes]]]:
    """(file name, open stream) per blob, each opened when it is wanted and closed when the next one is."""
    for blob in blobs:
        with ctx.blobs.open_read(container, blob.name) as stream:
            yield blob.name.rsplit("/", 1)[-1], stream


def settle_dataset_folder(message: SettleDatasetFolder, ctx: StageContext) -> ValidateDataset | None:
    """Start the run for a folder that has been quiet (or whose manifest came); a repeat does nothing."""
    folder = f"{message.dataset}/{message.version}/"
    if not message.manifest_arrived:
        last = ctx.folders.last_event(message.dataset, message.version)
        if last is not None and last.timestamp() > message.scheduled_at + SETTLE_SLACK_SECONDS:
            log.info("folder %s changed again after this message was scheduled; a later message settles it", folder)
            return None
    container = ctx.settings.training_container
    blobs = [
        blob
        for blob in ctx.blobs.list_blobs(container, folder)
        if (path := parse_dataset_path(blob.name)) is not None and is_dataset_file(path.file_name)
    ]
    names = {blob.name.rsplit("/", 1)[-1] for blob in blobs}
    if not any(split_of(name) == "train" for name in names):
        log.warning(
            "folder %s has no train file (train*.jsonl, .jsonl.gz or .parquet) yet: %s; waiting for more files",
            folder,
            ", ".join(sorted(names)) or "empty",
        )
        return None
    digest = content_hash(_read_one_by_one(ctx, container, blobs))
    run_id = make_run_id(message.dataset, digest)
    now = iso(ctx.clock())
    run = Run(
        run_id=run_id,
        dataset=message.dataset,
        version=message.version,
        content_hash=digest,
        ml_backend=ctx.backend.name,
        created_at=now,
        updated_at=now,
        stage_times={RunStage.RECEIVED.value: now},
        inputs=[
            {
                "name": b.name.rsplit("/", 1)[-1],
                "url": b.url,
                "etag": b.etag,
                "size": b.size,
                "split": split_of(b.name.rsplit("/", 1)[-1]) or "manifest",
            }
            for b in sorted(blobs, key=lambda b: b.name)
        ],
    )
    if ctx.ledger.create(run):
        log.info("run %s started for %s (%d files)", run_id, folder, len(blobs))
        return ValidateDataset(run_id)
    existing = ctx.ledger.get(run_id)
    if existing is not None and existing.stage is RunStage.RECEIVED and existing.status is RunStatus.IN_PROGRESS:
        return ValidateDataset(run_id)
    log.info("folder %s has the same content as run %s; nothing new to do", folder, run_id)
    return None
