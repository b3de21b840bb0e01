"""The validate stage: one streaming pass over the run's files, a report, cleaned copies, go or no-go."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from functools import partial
from typing import IO, Any, BinaryIO, cast

from shared.datasets import MANIFEST_NAME, Manifest, MD5Reader
from shared.errors import ContentMD5MismatchError, DatasetRejectedError
from shared.ledger import Run, RunStage, update_claimed
from shared.messages import SubmitFinetuneJob, ValidateDataset
from shared.stages.context import StageContext, fail_run, log, run_stage
from shared.validation import DatasetSource, ValidationOptions, validate_dataset

SMOKE_CONTENT_LIMIT = 1500


def validate_run(message: ValidateDataset, ctx: StageContext) -> SubmitFinetuneJob | None:
    """Validate the run's dataset; a rejected one ends the run, a valid one goes on to submission."""
    return run_stage(
        ctx, message.run_id, RunStage.VALIDATING, lambda run: _validate(run, ctx), SubmitFinetuneJob, retry=message
    )


def _validate(run: Run, ctx: StageContext) -> SubmitFinetuneJob | None:
    container = ctx.settings.training_container
    folder = f"{run.dataset}/{run.version}/"
    manifest = Manifest()
    sources = []
    # Files identified by their Content-MD5 property, which nobody checked against their content yet.
    unchecked: dict[str, MD5Reader] = {}
    for item in run.inputs:
        blob_name = folder + item["name"]
        # The versions the run was started for: a file written since belongs to a newer run.
        open_pinned = partial(ctx.blobs.open_read, container, blob_name, item.get("etag", ""))
        if item["name"] == MANIFEST_NAME:
            with open_pinned() as stream:
                manifest = Manifest.parse(stream.read(), f"{folder}{MANIFEST_NAME}")
            continue
        if item.get("md5_from") == "property":
            open_pinned = partial(_opened_with_md5, open_pinned, item["name"], unchecked)
        sources.append(DatasetSource(name=item["name"], split=item["split"], open=open_pinned))
    options = ValidationOptions(
        strict=ctx.settings.strict_validation,
        max_bad_row_fraction=ctx.settings.max_bad_row_fraction,
        max_seq_length=int(manifest.parameters.get("max_seq_length", ctx.settings.max_seq_length) or 0)
        or ctx.settings.max_seq_length,
    )
    cleaned: dict[str, IO[bytes]] = {}

    def clean_output(source: DatasetSource) -> BinaryIO:
        # Sources of one split go into one cleaned file: the fine-tuning job takes one file per split.
        if source.split not in cleaned:
            cleaned[source.split] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
        return cast(BinaryIO, _Unclosable(cleaned[source.split]))

    try:
        report = validate_dataset(sources, options, clean_output)
        _check_content_md5s(run, unchecked)
        clean_urls = {}
        if report.valid:
            for split, handle in cleaned.items():
                handle.seek(0)
                blob = ctx.blobs.upload(container, f"{folder}validated/{split}.jsonl", handle, "application/x-ndjson")
                clean_urls[split] = blob.url
        prompts = _smoke_prompts(cleaned.get("test") or cleaned.get("train"), ctx.settings.smoke_prompts)
    finally:
        for handle in cleaned.values():
            handle.close()
    document = report.to_dict()
    document["clean_files"] = clean_urls
    document["run_id"] = run.run_id
    report_blob = ctx.blobs.upload(
        ctx.settings.artifacts_container,
        f"{run.run_id}/validation-report.json",
        json.dumps(document, indent=2).encode(),
        "application/json",
    )
    summary = _ledger_summary(document, report.summary())

    def record(current: Run) -> None:
        current.validation = summary
        current.report_url = report_blob.url
        current.manifest = {k: v for k, v in vars(manifest).items() if v not in (None, "", {})}
        current.clean_train_file = clean_urls.get("train", "")
        current.clean_test_file = clean_urls.get("test", "")
        current.clean_validation_file = clean_urls.get("validation", "")
        current.smoke_prompts = prompts
        if report.valid:
            current.stage_done = True

    update_claimed(ctx.ledger, run, record)
    if not report.valid:
        fail_run(ctx, run.run_id, DatasetRejectedError(report.summary()))
        return None
    log.info("run %s: dataset valid: %s", run.run_id, report.summary())
    return SubmitFinetuneJob(run.run_id)


def _opened_with_md5(open_blob: Callable[[], BinaryIO], name: str, readers: dict[str, MD5Reader]) -> BinaryIO:
    reader = readers[name] = MD5Reader(open_blob())
    return cast(BinaryIO, reader)


def _check_content_md5s(run: Run, readers: dict[str, MD5Reader]) -> None:
    """Each file that was identified by its Content-MD5 property, and read to its end, has that MD5 (Blob
    Storage does not check the property of a blob committed from blocks, so a tool may have set a wrong one)."""
    for item in run.inputs:
        reader = readers.get(item["name"])
        if reader is not None and reader.read_to_end and reader.hexdigest() != item["md5"]:
            raise ContentMD5MismatchError(
                f"{item['name']}: its Content-MD5 property says {item['md5']} but its content's MD5 is "
                f"{reader.hexdigest()}; upload it again without a Content-MD5 or with the right one"
            )


class _Unclosable:
    """Lets the validator 'close' its output without losing the temporary file we still upload."""

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle

    def write(self, data: bytes) -> int:
        return self._handle.write(data)

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        self._handle.flush()

    def close(self) -> None:
        self._handle.flush()


def _ledger_summary(document: dict[str, Any], summary: str) -> dict[str, Any]:
    """The few figures of the report that belong on the ledger row (the full report is a blob)."""
    keep = ("valid", "files", "totals", "errors_by_code", "warnings_by_code")
    out: dict[str, Any] = {"summary": summary}
    for key in keep:
        if key in document:
            out[key] = document[key]
    for key in ("errors", "warnings"):
        if isinstance(document.get(key), dict):
            out[f"{key}_by_code"] = {
                code: entry.get("count", 0) for code, entry in document[key].items() if isinstance(entry, dict)
            }
    text = json.dumps(out)
    if len(text) > 30_000:
        out = {"valid": document.get("valid"), "summary": summary}
    return out


def _smoke_prompts(handle: IO[bytes] | None, count: int) -> list[list[dict[str, str]]]:
    """The first `count` conversations of the cleaned file, cut after their first assistant answer.

    The smoke test sends each without that answer and compares the deployment's reply with it.
    """
    if handle is None or count <= 0:
        return []
    handle.seek(0)
    prompts: list[list[dict[str, str]]] = []
    for line in handle:
        if len(prompts) >= count:
            break
        try:
            messages = json.loads(line).get("messages", [])
        except (ValueError, AttributeError):
            continue
        prompt = []
        for item in messages:
            prompt.append({"role": item["role"], "content": item["content"][:SMOKE_CONTENT_LIMIT]})
            if item.get("role") == "assistant":
                break
        if len(prompt) >= 2 and prompt[-1]["role"] == "assistant" and prompt[-2]["role"] == "user":
            prompts.append(prompt)
    return prompts
