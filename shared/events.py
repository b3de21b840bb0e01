"""Typed forms of the Event Grid events the app reacts to, one parser per event type."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from shared.errors import MalformedMessageError
from shared.ml.port import RUN_TAG

BLOB_CREATED = "Microsoft.Storage.BlobCreated"
RUN_COMPLETED = "Microsoft.MachineLearningServices.RunCompleted"
RUN_STATUS_CHANGED = "Microsoft.MachineLearningServices.RunStatusChanged"

_BLOB_SUBJECT_PREFIX = "/blobServices/default/containers/"
# Azure ML job events: subject experiments/<experiment id>/runs/<run id>
# (https://learn.microsoft.com/azure/event-grid/event-schema-machine-learning).
_ML_JOB_SUBJECT = re.compile(r"experiments/[^/]+/runs/([^/]+)")

# The names a blob event brings go to places with rules of their own; an event whose names one of them
# cannot hold is rejected at the door, with what to rename, instead of failing at every delivery.
# Blob names: 1 to 1,024 characters, no control characters (0x00-0x1F, 0x7F-0x9F)
# (https://learn.microsoft.com/rest/api/storageservices/naming-and-referencing-containers--blobs--and-metadata).
BLOB_NAME_LIMIT = 1024
# Table keys (the folder tracker's rows are keyed by dataset and version, the ledger's by run id): no / \ # ?,
# no control characters U+0000-U+001F and U+007F-U+009F, at most 1 KiB, which is 512 UTF-16 code units
# (https://learn.microsoft.com/rest/api/storageservices/understanding-the-table-service-data-model).
TABLE_KEY_LIMIT_BYTES = 1024
_TABLE_KEY_FORBIDDEN = "/\\#?"
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# Lone surrogates cannot be encoded for any request (UTF-8 or UTF-16).
_SURROGATE = re.compile("[\ud800-\udfff]")
# The dataset name is a tag of the job, the model and the endpoint; an Azure resource's tag values hold at most
# 256 characters (https://learn.microsoft.com/azure/azure-resource-manager/management/tag-resources#limitations).
TAG_VALUE_LIMIT = 256
# The run id and the job, model and endpoint names are made of the dataset name's ASCII letters and digits
# (`shared.datasets.slug`): a name with none would give every such dataset the same endpoint.
_SLUG_CHARACTER = re.compile("[A-Za-z0-9]")
_SHOWN_CHARACTERS = 60


def shown(name: str) -> str:
    """`name` quoted for a message, control characters escaped, cut after 60 characters."""
    return repr(name[:_SHOWN_CHARACTERS]) + ("..." if len(name) > _SHOWN_CHARACTERS else "")


_CONTROL_NAMES = {"\t": "tab", "\n": "line feed", "\r": "carriage return"}


def _character_problem(name: str) -> str | None:
    """What is wrong with the first control character or lone surrogate of `name`, or None."""
    if match := _SURROGATE.search(name):
        return f"contains U+{ord(match.group()):04X}, which is not a character"
    if match := _CONTROL.search(name):
        character = match.group()
        known = f", {_CONTROL_NAMES[character]}" if character in _CONTROL_NAMES else ""
        return f"contains a control character (U+{ord(character):04X}{known})"
    return None


def table_key_problem(key: str) -> str | None:
    """Why Table Storage cannot hold `key` as a PartitionKey or RowKey, to follow "the name ..."; None if it can."""
    if not key:
        return "is empty, which a Table Storage key cannot be"
    if problem := _character_problem(key):
        return f"{problem}, which Table Storage keys cannot hold"
    forbidden = next((character for character in key if character in _TABLE_KEY_FORBIDDEN), None)
    if forbidden is not None:
        return f"contains {forbidden!r}, which Table Storage keys cannot hold"
    units = len(key.encode("utf-16-le")) // 2
    if units * 2 > TABLE_KEY_LIMIT_BYTES:
        return f"is {units:,} characters long, more than the {TABLE_KEY_LIMIT_BYTES // 2} a Table Storage key holds"
    return None


def dataset_folder_problem(dataset: str, version: str, file_name: str) -> str | None:
    """Why a dataset folder's names cannot go where the run takes them, said so the user knows what to rename.

    None when every place can hold them: blob names, Table keys, resource tags and Azure ML names.
    """
    for what, name in (("dataset folder", dataset), ("version folder", version)):
        if name in (".", ".."):
            return f"the {what} name {name!r} is a relative path step, which URLs resolve away: rename the folder"
        if problem := table_key_problem(name):
            return f"the {what} name {shown(name)} {problem}: rename the folder"
    if len(dataset) > TAG_VALUE_LIMIT:
        return (
            f"the dataset folder name {shown(dataset)} is {len(dataset):,} characters long; it becomes a tag of the "
            f"job, model and endpoint, and Azure tag values hold at most {TAG_VALUE_LIMIT}: use a shorter name"
        )
    if not _SLUG_CHARACTER.search(dataset):
        return (
            f"the dataset folder name {shown(dataset)} has no letter a-z or digit, of which the run, job, model and "
            "endpoint names are made: rename the folder to include some"
        )
    if problem := _character_problem(file_name):
        return f"the file name {shown(file_name)} {problem}, which blob names cannot hold: rename the file"
    return None


@dataclass(frozen=True)
class BlobCreated:
    event_id: str
    container: str
    blob_name: str
    url: str
    etag: str
    content_length: int
    sequencer: str

    @classmethod
    def parse(cls, event_id: str, event_type: str, subject: str, data: Any) -> BlobCreated:
        if event_type != BLOB_CREATED:
            raise MalformedMessageError(f"event {event_id}: expected {BLOB_CREATED}, got {event_type!r}")
        if not subject.startswith(_BLOB_SUBJECT_PREFIX) or "/blobs/" not in subject:
            raise MalformedMessageError(f"event {event_id}: subject {shown(subject)} does not name a blob")
        container, _, blob_name = subject[len(_BLOB_SUBJECT_PREFIX) :].partition("/blobs/")
        if not container or not blob_name:
            raise MalformedMessageError(f"event {event_id}: subject {shown(subject)} lacks the container or blob name")
        if len(blob_name) > BLOB_NAME_LIMIT:
            raise MalformedMessageError(
                f"event {event_id}: the blob name {shown(blob_name)} is {len(blob_name):,} characters long; Blob "
                f"Storage names hold at most {BLOB_NAME_LIMIT:,}: shorten the folder or file names"
            )
        if not isinstance(data, dict):
            raise MalformedMessageError(f"event {event_id}: data is not an object")
        try:
            content_length = int(data.get("contentLength") or 0)
        except (TypeError, ValueError):
            raise MalformedMessageError(f"event {event_id}: contentLength is not a number") from None
        return cls(
            event_id=event_id,
            container=container,
            blob_name=blob_name,
            url=str(data.get("url", "")),
            etag=str(data.get("eTag", "")),
            content_length=content_length,
            sequencer=str(data.get("sequencer", "")),
        )


@dataclass(frozen=True)
class MLJobEvent:
    """`RunCompleted` or `RunStatusChanged` of an Azure ML job (or the local backend's imitation)."""

    event_id: str
    event_type: str
    job_name: str
    experiment_name: str
    status: str
    tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, event_id: str, event_type: str, subject: str, data: Any) -> MLJobEvent:
        if event_type not in (RUN_COMPLETED, RUN_STATUS_CHANGED):
            raise MalformedMessageError(f"event {event_id}: not an ML job event ({event_type!r})")
        if not isinstance(data, dict):
            raise MalformedMessageError(f"event {event_id}: data is not an object")
        subject_match = _ML_JOB_SUBJECT.fullmatch(subject)
        if subject_match is None:
            raise MalformedMessageError(
                f"event {event_id}: subject {shown(subject)} is not experiments/<experiment>/runs/<run id>"
            )
        # Casing of data fields differs between documentation and payloads: accept both.
        lowered = {str(key).lower(): value for key, value in data.items()}
        job_name = lowered.get("runid") or subject_match.group(1)
        tags = lowered.get("runtags") or {}
        run_id = tags.get(RUN_TAG) if isinstance(tags, dict) else None
        # The ledger is read by this run id: a value no Table key can be would fail at every delivery.
        if run_id is not None and (problem := table_key_problem(str(run_id))):
            raise MalformedMessageError(
                f"event {event_id}: tag {RUN_TAG} {shown(str(run_id))} {problem}, so it names no run of this app"
            )
        status = "Completed" if event_type == RUN_COMPLETED else str(lowered.get("runstatus") or "")
        return cls(
            event_id=event_id,
            event_type=event_type,
            job_name=str(job_name),
            experiment_name=str(lowered.get("experimentname") or ""),
            status=status,
            tags={str(k): str(v) for k, v in tags.items()} if isinstance(tags, dict) else {},
        )


def ml_job_event_payload(
    *,
    job_name: str,
    experiment_name: str,
    status: str,
    tags: dict[str, str],
    topic: str,
    event_time: str,
    event_id: str,
) -> list[dict[str, Any]]:
    """The Event Grid events Azure ML raises when a job reaches `status` (RunCompleted only on success)."""
    data = {
        "experimentId": experiment_name,
        "experimentName": experiment_name,
        "runId": job_name,
        "runType": "azureml.PipelineRun",
        "runTags": tags,
        "runProperties": {},
    }
    subject = f"experiments/{experiment_name}/runs/{job_name}"
    base = {"topic": topic, "subject": subject, "eventTime": event_time, "dataVersion": "", "metadataVersion": "1"}
    events = [
        {**base, "id": f"{event_id}-status", "eventType": RUN_STATUS_CHANGED, "data": {**data, "runStatus": status}}
    ]
    if status == "Completed":
        events.append({**base, "id": f"{event_id}-completed", "eventType": RUN_COMPLETED, "data": data})
    return events
