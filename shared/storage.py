"""Blob storage and dataset-folder tracking: ports and their Azure Storage adapters."""

from __future__ import annotations

import contextlib
import io
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any, BinaryIO, Protocol, cast

from shared.errors import BlobChangedError, MalformedMessageError, TransientError
from shared.storage_connection import StorageConnection, as_storage_connection


@dataclass(frozen=True)
class BlobInfo:
    container: str
    name: str
    url: str
    etag: str
    size: int
    # The blob's Content-MD5 property in hex, "" when it has none: the service sets it for a blob
    # uploaded in one request, `autopilot upload` for any; a blob committed from blocks has none.
    content_md5: str = ""


class BlobStore(Protocol):
    def list_blobs(self, container: str, prefix: str) -> list[BlobInfo]: ...

    def open_read(self, container: str, name: str, etag: str = "") -> BinaryIO:
        """A readable stream of the blob, downloaded in chunks as it is read.

        With `etag`, only that version of the blob: `BlobChangedError` if it has been written since.
        """
        ...

    def upload(
        self,
        container: str,
        name: str,
        data: bytes | IO[bytes],
        content_type: str = "",
        content_md5: str = "",
        progress: Callable[[int, int | None], None] | None = None,
    ) -> BlobInfo:
        """Write the blob; `content_md5` (hex) is stored as its Content-MD5 property.

        With `progress`, it is called with the bytes sent so far and the blob's size (None if unknown).
        """
        ...

    def url(self, container: str, name: str) -> str: ...


# Chunks a blob download fetches ahead of its reader: what that costs in memory is bounded
# (`_PREFETCH_CHUNKS` x `_DOWNLOAD_CHUNK_BYTES`), and downloading overlaps with reading.
_PREFETCH_CHUNKS = 2
_DOWNLOAD_CHUNK_BYTES = 4 * 1024 * 1024
_END = object()


class DownloadStream(io.RawIOBase):
    """A readable stream over a blob's chunks (anything with `chunks()`, as the SDK's downloader has).

    A background thread fetches the next chunks while the reader works on the current one, at most
    `_PREFETCH_CHUNKS` ahead, so memory does not grow with the blob's size. An error of the
    download is raised to the reader as a `TransientError` naming the blob. Closing the stream
    stops the thread.
    """

    def __init__(self, downloader: Any, blob: str) -> None:
        super().__init__()
        self._blob = blob
        self._ahead: queue.Queue[object] = queue.Queue(maxsize=_PREFETCH_CHUNKS)
        self._current = memoryview(b"")
        self._ended = False
        self._stopping = threading.Event()
        # The thread holds the queue and the event, not the stream: a stream dropped unread is
        # collected, and closing it (as collection does) stops the thread.
        self._thread = threading.Thread(
            target=_fetch_chunks, args=(downloader, self._ahead, self._stopping), name=f"download {blob}", daemon=True
        )
        self._thread.start()

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        """Copy the next bytes into `target`: at most the rest of the current chunk; 0 at the end."""
        while not self._current:
            if self._ended or self.closed:
                return 0
            item = self._ahead.get()
            if item is _END:
                self._ended = True
                return 0
            if isinstance(item, BaseException):
                self._ended = True
                raise _download_error(item, self._blob)
            self._current = memoryview(cast(bytes, item))
        size = min(len(target), len(self._current))
        target[:size] = self._current[:size]
        self._current = self._current[size:]
        return size

    def close(self) -> None:
        # The thread sees this at its next hand-over (within 0.1 s of a chunk) and ends; nobody waits for it.
        self._stopping.set()
        self._current = memoryview(b"")
        super().close()


def _fetch_chunks(downloader: Any, ahead: queue.Queue[object], stopping: threading.Event) -> None:
    """Put the download's chunks on `ahead`, then `_END`, or the error that broke it off; stop when asked."""

    def hand_over(item: object) -> bool:
        while not stopping.is_set():
            try:
                ahead.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    try:
        for chunk in downloader.chunks():
            if not hand_over(chunk):
                return
    except Exception as exc:  # the reader raises it, as a TransientError where it is the service's
        hand_over(exc)
        return
    hand_over(_END)


def _download_error(error: BaseException, blob: str) -> BaseException:
    from azure.core.exceptions import AzureError

    if isinstance(error, (AzureError, ConnectionError, TimeoutError)):
        transient = TransientError(f"the download of blob {blob} broke off: {error}")
        transient.__cause__ = error
        return transient
    return error


class AzureBlobStore:
    """`BlobStore` over azure-storage-blob; SDK errors become `TransientError`s worth retrying.

    `connection`: a `StorageConnection`, or a connection string.
    """

    def __init__(self, connection: StorageConnection | str) -> None:
        # The first GET of a download fetches max_single_get_size bytes (32 MiB by default) before the
        # reader sees any: smaller gets let reading start sooner and bound the download's memory.
        self._service = as_storage_connection(connection).blob_service_client(
            max_single_get_size=_DOWNLOAD_CHUNK_BYTES,
            max_chunk_get_size=_DOWNLOAD_CHUNK_BYTES,
        )
        self._containers_made: set[str] = set()

    def list_blobs(self, container: str, prefix: str) -> list[BlobInfo]:
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        client = self._service.get_container_client(container)
        try:
            return [
                BlobInfo(
                    container,
                    blob.name,
                    client.get_blob_client(blob.name).url,
                    blob.etag,
                    blob.size,
                    bytes(blob.content_settings.content_md5 or b"").hex(),
                )
                for blob in client.list_blobs(name_starts_with=prefix)
            ]
        except ResourceNotFoundError:
            return []
        except AzureError as exc:
            raise TransientError(f"could not list {container}/{prefix}: {exc}") from exc

    def open_read(self, container: str, name: str, etag: str = "") -> BinaryIO:
        from azure.core import MatchConditions
        from azure.core.exceptions import AzureError, ResourceModifiedError

        # Only when pinned: a None condition would be passed on to the HTTP transport.
        pinned: dict[str, Any] = {"etag": etag, "match_condition": MatchConditions.IfNotModified} if etag else {}
        try:
            downloader = self._service.get_blob_client(container, name).download_blob(max_concurrency=1, **pinned)
        except ResourceModifiedError:
            raise BlobChangedError(f"blob {container}/{name} has been written since its version {etag}") from None
        except AzureError as exc:
            raise TransientError(f"could not read blob {container}/{name}: {exc}") from exc
        return cast(BinaryIO, DownloadStream(downloader, f"{container}/{name}"))

    def upload(
        self,
        container: str,
        name: str,
        data: bytes | IO[bytes],
        content_type: str = "",
        content_md5: str = "",
        progress: Callable[[int, int | None], None] | None = None,
    ) -> BlobInfo:
        from azure.core.exceptions import AzureError, ResourceExistsError
        from azure.storage.blob import ContentSettings

        try:
            if container not in self._containers_made:
                with contextlib.suppress(ResourceExistsError):
                    self._service.create_container(container)
                self._containers_made.add(container)
            client = self._service.get_blob_client(container, name)
            settings = ContentSettings(
                content_type=content_type or None, content_md5=bytearray.fromhex(content_md5) if content_md5 else None
            )
            # progress_hook(current, total): the bytes sent so far and the blob's size, None if unknown
            # (azure-storage-blob's BlobClient.upload_blob docstring, azure/storage/blob/_blob_client.py).
            client.upload_blob(data, overwrite=True, content_settings=settings, progress_hook=progress)
            properties = client.get_blob_properties()
        except AzureError as exc:
            raise TransientError(f"could not upload blob {container}/{name}: {exc}") from exc
        stored_md5 = bytes(properties.content_settings.content_md5 or b"").hex()
        return BlobInfo(container, name, client.url, str(properties.etag), properties.size, stored_md5)

    def url(self, container: str, name: str) -> str:
        return str(self._service.get_blob_client(container, name).url)


class FolderTracker(Protocol):
    """Remembers when the last blob event of each dataset folder came, for the quiet period."""

    def record_event(self, dataset: str, version: str, at: datetime) -> None: ...

    def last_event(self, dataset: str, version: str) -> datetime | None: ...


class TableFolderTracker:
    """`FolderTracker` on Azure Table Storage: one row per dataset folder."""

    def __init__(self, connection: StorageConnection | str, table_name: str) -> None:
        """`connection`: a `StorageConnection`, or a connection string."""
        service = as_storage_connection(connection).table_service_client()
        self._table = service.create_table_if_not_exists(table_name)

    def record_event(self, dataset: str, version: str, at: datetime) -> None:
        from azure.core.exceptions import HttpResponseError

        try:
            self._record_event(dataset, version, at)
        except HttpResponseError as exc:
            if exc.status_code != 400:
                raise
            # The key checks at the door should make this impossible; should one slip by, the event can
            # never succeed and must be set aside, not retried for a day.
            raise MalformedMessageError(
                f"Table Storage refused the dataset folder {dataset!r}/{version!r} as a key ({exc.message}): "
                "rename the folder"
            ) from exc

    def _record_event(self, dataset: str, version: str, at: datetime) -> None:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
        from azure.data.tables import UpdateMode

        # Keep the latest moment even when deliveries race: write only if ours is newer (ETag-guarded).
        for _ in range(5):
            try:
                entity = self._table.get_entity(dataset, version)
            except ResourceNotFoundError:
                try:
                    self._table.create_entity({"PartitionKey": dataset, "RowKey": version, "last_event_at": at})
                    return
                except ResourceExistsError:
                    continue
            if entity["last_event_at"] >= at:
                return
            entity["last_event_at"] = at
            try:
                self._table.update_entity(
                    entity,
                    mode=UpdateMode.MERGE,
                    etag=entity.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )
                return
            except ResourceModifiedError:
                continue
        raise TransientError(f"folder {dataset}/{version} kept changing while recording a blob event")

    def last_event(self, dataset: str, version: str) -> datetime | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self._table.get_entity(dataset, version)["last_event_at"]  # type: ignore[no-any-return]
        except ResourceNotFoundError:
            return None
