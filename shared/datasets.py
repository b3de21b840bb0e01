"""The dataset folder convention: `<dataset>/<version>/<file>` in the training container.

A folder holds a train file (`train*.jsonl`, `train*.jsonl.gz` or `train*.parquet`), optionally
test and validation files, and optionally the manifest `autopilot.json`. A run's id comes from
the dataset name and a hash of the folder's content (its files' names and MD5s), so the same content
uploaded twice is one run.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Any

from shared.errors import DatasetRejectedError
from shared.validation.options import split_of

MANIFEST_NAME = "autopilot.json"
MANIFEST_KEYS = frozenset({"base_model", "base_model_version", "parameters", "endpoint_name", "description"})
_CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class DatasetPath:
    dataset: str
    version: str
    file_name: str

    @property
    def folder(self) -> str:
        return f"{self.dataset}/{self.version}/"


def parse_dataset_path(blob_name: str) -> DatasetPath | None:
    """`<dataset>/<version>/<file>` or None for anything deeper or shallower (e.g. `validated/` copies)."""
    parts = blob_name.split("/")
    if len(parts) != 3 or not all(parts):
        return None
    return DatasetPath(*parts)


def is_dataset_file(file_name: str) -> bool:
    return file_name == MANIFEST_NAME or split_of(file_name) is not None


def file_md5(stream: IO[bytes]) -> str:
    """The hex MD5 of a stream's content: what Blob Storage keeps as a blob's Content-MD5."""
    digest = hashlib.md5(usedforsecurity=False)
    while chunk := stream.read(_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


class MD5Reader(io.RawIOBase):
    """Reads `stream` through, keeping the MD5 of all it has read so far in `hexdigest()`; `read_to_end`
    once a read found nothing more."""

    def __init__(self, stream: IO[bytes]) -> None:
        super().__init__()
        self._stream = stream
        self._digest = hashlib.md5(usedforsecurity=False)
        self.read_to_end = False

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        view = memoryview(target).cast("B")
        fill = getattr(self._stream, "readinto", None)
        if fill is not None:
            size = fill(view) or 0
        else:
            chunk = self._stream.read(len(view))
            size = len(chunk)
            view[:size] = chunk
        self._digest.update(view[:size])
        if view and not size:
            self.read_to_end = True
        return int(size)

    def hexdigest(self) -> str:
        return self._digest.hexdigest()

    def close(self) -> None:
        self._stream.close()
        super().close()


def content_hash(files: Iterable[tuple[str, str]]) -> str:
    """SHA-256 over the files' (name, hex MD5 of content) pairs, independent of the order they come in.

    MD5s, so that a blob whose Content-MD5 property is set need not be read to know its content.
    """
    return hashlib.sha256("".join(sorted(f"{name}\n{md5}\n" for name, md5 in files)).encode()).hexdigest()


def slug(text: str, limit: int = 40) -> str:
    """Lower-case letters, digits and dashes only: safe in table keys, job, model and endpoint names."""
    cleaned = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return cleaned[:limit].strip("-") or "dataset"


def make_run_id(dataset: str, digest: str) -> str:
    return f"{slug(dataset)}-{digest[:12]}"


@dataclass(frozen=True)
class Manifest:
    """What a dataset folder's `autopilot.json` may override."""

    base_model: str | None = None
    base_model_version: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    endpoint_name: str | None = None
    description: str = ""

    @classmethod
    def parse(cls, raw: bytes, where: str) -> Manifest:
        """Parse and check a manifest; `DatasetRejectedError` says what is wrong and where."""
        try:
            data = json.loads(raw.decode("utf-8-sig"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise DatasetRejectedError(f"{where}: manifest is not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise DatasetRejectedError(f"{where}: manifest must be a JSON object")
        unknown = sorted(set(data) - MANIFEST_KEYS)
        if unknown:
            raise DatasetRejectedError(
                f"{where}: unknown manifest key(s) {', '.join(unknown)}; known: {', '.join(sorted(MANIFEST_KEYS))}"
            )
        for key in ("base_model", "base_model_version", "endpoint_name", "description"):
            if key in data and not isinstance(data[key], str):
                raise DatasetRejectedError(f"{where}: manifest key {key} must be a string")
        parameters = data.get("parameters", {})
        if not isinstance(parameters, dict):
            raise DatasetRejectedError(f"{where}: manifest key parameters must be an object")
        return cls(
            base_model=data.get("base_model"),
            base_model_version=data.get("base_model_version"),
            parameters=parameters,
            endpoint_name=data.get("endpoint_name"),
            description=data.get("description", ""),
        )
