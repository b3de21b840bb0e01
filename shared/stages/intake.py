"""Dataset arrival and settling: blob events in, one run per dataset content out."""

from __future__ import annotations

from shared.datasets import (
    MANIFEST_NAME,
    content_hash,
    file_md5,
    is_dataset_file,
    make_run_id,
    parse_dataset_path,
    split_of,
)
from shared.errors import BlobChangedError, MalformedMessageError
from shared.events import BlobCreated, dataset_folder_problem, shown
from shared.ledger import Run, RunStage, RunStatus, iso
from shared.messages import SettleDatasetFolder, ValidateDataset
from shared.stages.context import StageContext, log
from shared.storage import BlobInfo

SETTLE_SLACK_SECONDS = 0.001


def note_blob_created(event: BlobCreated, ctx: StageContext) -> SettleDatasetFolder | None:
    """Remember that a dataset folder changed and schedule its settling after the quiet period.

    The manifest settles the folder at once; any other file waits, so a folder uploaded file by
    file starts one run after its last file. A folder whose names a store of the run cannot hold raises
    `MalformedMessageError` saying what to rename (see `shared.events.dataset_folder_problem`).
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
    if problem := dataset_folder_problem(path.dataset, path.version, path.file_name):
        # Every delivery of this event would fail the same way: the trigger sets it aside instead.
        raise MalformedMessageError(f"blob {shown(event.blob_name)} in {event.container}: {problem}")
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


def _content_md5s(ctx: StageContext, container: str, blobs: list[BlobInfo]) -> list[tuple[str, str]]:
    """(hex MD5, "property" or "content") per blob: its Content-MD5 property where it has one, else read.

    A blob is read pinned to the version listed; `BlobChangedError` when it has been written since.
    """
    md5s = []
    for blob in blobs:
        if blob.content_md5:
            md5s.append((blob.content_md5, "property"))
            continue
        with ctx.blobs.open_read(container, blob.name, blob.etag) as stream:
            md5s.append((file_md5(stream), "content"))
    return md5s


def _file_name(blob: BlobInfo) -> str:
    return blob.name.rsplit("/", 1)[-1]


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
    names = {_file_name(blob) for blob in blobs}
    if not any(split_of(name) == "train" for name in names):
        log.warning(
            "folder %s has no train file (train*.jsonl, .jsonl.gz or .parquet) yet: %s; waiting for more files",
            folder,
            ", ".join(sorted(names)) or "empty",
        )
        return None
    try:
        md5s = _content_md5s(ctx, container, blobs)
    except BlobChangedError as exc:
        log.info("folder %s changed while it was being settled (%s); a later message settles it", folder, exc)
        return None
    read = sum(1 for _, source in md5s if source == "content")
    log.info("folder %s: %d file(s) identified by Content-MD5, %d by reading them", folder, len(blobs) - read, read)
    digest = content_hash((_file_name(blob), md5) for blob, (md5, _) in zip(blobs, md5s, strict=True))
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
        inputs=sorted(
            (
                {
                    "name": _file_name(blob),
                    "url": blob.url,
                    "etag": blob.etag,
                    "size": blob.size,
                    "split": split_of(_file_name(blob)) or "manifest",
                    "md5": md5,
                    "md5_from": md5_from,
                }
                for blob, (md5, md5_from) in zip(blobs, md5s, strict=True)
            ),
            key=lambda item: item["name"],
        ),
    )
    if ctx.ledger.create(run):
        log.info("run %s started for %s (%d files)", run_id, folder, len(blobs))
        return ValidateDataset(run_id)
    existing = ctx.ledger.get(run_id)
    if existing is not None and existing.stage is RunStage.RECEIVED and existing.status is RunStatus.IN_PROGRESS:
        return ValidateDataset(run_id)
    log.info("folder %s has the same content as run %s; nothing new to do", folder, run_id)
    return None
