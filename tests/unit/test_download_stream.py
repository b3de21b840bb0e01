"""The blob download stream: chunks fetched ahead by a thread, read back unchanged, errors named."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest
from azure.core.exceptions import ServiceResponseError

from shared.errors import TransientError
from shared.storage import DownloadStream
from shared.validation import DatasetSource, validate_dataset


class FakeDownloader:
    """Hands out `chunks` one by one, then raises `error` if there is one; counts what it handed out."""

    def __init__(self, chunks: list[bytes], error: Exception | None = None) -> None:
        self._chunks = chunks
        self._error = error
        self.handed_out = 0
        self.finished = threading.Event()

    def chunks(self) -> Iterator[bytes]:
        try:
            for chunk in self._chunks:
                self.handed_out += 1
                yield chunk
            if self._error is not None:
                raise self._error
        finally:
            self.finished.set()


def test_reads_of_any_size_give_back_the_blob_unchanged() -> None:
    chunks = [bytes(range(256)) * 3, b"", b"x" * 1000, b"tail"]
    for size in (1, 7, 100, 5000):
        with DownloadStream(FakeDownloader(chunks), "data/train.jsonl") as stream:
            parts = []
            while part := stream.read(size):
                parts.append(part)
        assert b"".join(parts) == b"".join(chunks)


def test_read_without_a_size_reads_to_the_end() -> None:
    with DownloadStream(FakeDownloader([b"{", b'"a": 1}']), "data/autopilot.json") as stream:
        assert stream.read() == b'{"a": 1}'
        assert stream.read(10) == b""


def test_a_download_that_breaks_off_is_a_transient_error_naming_the_blob() -> None:
    downloader = FakeDownloader([b"abc"], ServiceResponseError("connection reset"))

    with DownloadStream(downloader, "data/v1/train.jsonl") as stream:
        assert stream.read(3) == b"abc"
        with pytest.raises(TransientError, match=r"data/v1/train\.jsonl broke off: connection reset"):
            stream.read(3)


def test_the_validator_gets_a_broken_download_as_a_retryable_error() -> None:
    def broken() -> DownloadStream:
        return DownloadStream(FakeDownloader([b'{"messages": [', b""], ServiceResponseError("reset")), "d/train.jsonl")

    with pytest.raises(TransientError, match="broke off"):
        validate_dataset([DatasetSource("train.jsonl", "train", broken)])  # type: ignore[arg-type]


def test_closing_early_stops_the_fetching_thread() -> None:
    downloader = FakeDownloader([b"x" * 10] * 1000)
    stream = DownloadStream(downloader, "data/big.jsonl")

    assert stream.read(5) == b"xxxxx"
    stream.close()

    assert downloader.finished.wait(5)
    assert downloader.handed_out < 10


def test_a_stream_dropped_unread_is_collected_and_stops_its_thread() -> None:
    downloader = FakeDownloader([b"x" * 10] * 1000)
    stream = DownloadStream(downloader, "data/big.jsonl")
    assert stream.read(1) == b"x"

    del stream
    gc.collect()

    assert downloader.finished.wait(5)
    assert downloader.handed_out < 10
