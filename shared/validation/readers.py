"""Streaming readers: JSONL (plain or gzip) as batches of raw lines, parquet as batches of rows.

Memory is bounded by the chunk size (and, for parquet, the row group) whatever the file's size.
pyarrow is imported only when a parquet file is read: the function app's cold start skips it.
"""

from __future__ import annotations

import gzip
import tempfile
import zlib
from collections.abc import Callable, Iterator
from typing import IO, Any, NamedTuple

from shared.validation.codes import Code
from shared.validation.errors import ValidationError

Read = Callable[[int], bytes]
# Fills the buffer it is given from the front, as far as it can; returns the bytes written, 0 at the end.
ReadInto = Callable[[memoryview], int]

CHUNK_BYTES = 1024 * 1024
PARQUET_BATCH_ROWS = 1024
UTF8_BOM = b"\xef\xbb\xbf"
_WIDE_BOMS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")
GZIP_MAGIC = b"\x1f\x8b"
# Stands in for a line longer than max_line_bytes. It is not JSON, so the validator meets it only
# on its (rare) error path, where it tells it apart by identity.
OVERLONG_LINE = b"\x00<line too long>"


class FileProblem(ValidationError):
    """A finding about a whole file, raised by a reader and turned into a report entry by the validator."""

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class LineBatch(NamedTuple):
    first_line: int
    lines: list[bytes | memoryview]
    unterminated: bool = False


class _ReadOnly:
    """The least a `gzip.GzipFile` needs of its `fileobj`."""

    mode = "rb"

    def __init__(self, read: Read) -> None:
        self._read = read

    def read(self, size: int) -> bytes:
        return self._read(size)

    def seek(self, offset: int) -> int:
        raise OSError("the validator reads gzip streams front to back only")


def gzip_readinto(read: Read) -> ReadInto:
    """`readinto` of a gzip stream, decompressed; corrupt or cut-off data becomes a `FileProblem`."""
    inflated = gzip.GzipFile(fileobj=_ReadOnly(read), mode="rb")

    def readinto_inflated(view: memoryview) -> int:
        try:
            return inflated.readinto(view)
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise FileProblem(Code.FILE_UNREADABLE, f"not a valid gzip stream: {exc}") from None

    return readinto_inflated


def starts_with_wide_bom(data: bytes) -> bool:
    """True when `data` begins with a UTF-16 or UTF-32 byte-order mark."""
    return data.startswith(_WIDE_BOMS)


def iter_jsonl_batches(
    readinto: ReadInto, max_line_bytes: int, chunk_bytes: int = CHUNK_BYTES, file_start: bool = True
) -> Iterator[LineBatch]:
    """Complete lines (without their b"\\n") in batches; the first line loses a UTF-8 BOM.

    The lines are memoryviews of one buffer that the reader fills again for the next batch: a
    batch's lines are valid until the next batch is asked for (`bytes(line)` keeps one). Reading
    into one buffer and slicing it spares a copy of every line and an allocation of every chunk.
    A line longer than `max_line_bytes` is skipped as it streams by and stands as `OVERLONG_LINE`.
    A final line without a newline comes alone in a batch marked `unterminated`. With `file_start`
    false, `readinto` starts a range in the middle of a file, where byte-order marks are just bytes.
    """
    # A buffer of at most max_line_bytes + 1 bytes holds no complete line over the limit, and a full
    # one without a newline holds the start of a line that is.
    if max_line_bytes < len(_WIDE_BOMS[-1]):
        raise ValueError(f"max_line_bytes={max_line_bytes}: the reader needs at least 4 to recognise a byte-order mark")
    capacity_limit = max_line_bytes + 1
    buffer = bytearray(max(len(_WIDE_BOMS[-1]), min(chunk_bytes, capacity_limit)))
    view = memoryview(buffer)
    filled = 0
    start = 0
    if file_start:
        filled = _fill_at_least(readinto, view, len(_WIDE_BOMS[-1]))
        if starts_with_wide_bom(buffer[:filled]):
            raise FileProblem(Code.FILE_NOT_UTF8, "file starts with a UTF-16/32 byte-order mark: save it as UTF-8")
        if buffer.startswith(UTF8_BOM) and filled >= len(UTF8_BOM):
            start = len(UTF8_BOM)
    next_line = 1
    overlong = False
    searched = start
    while True:
        received = readinto(view[filled:]) if filled < len(buffer) else 0
        end = filled + received
        if end == searched:
            break
        find = buffer.find
        lines: list[bytes | memoryview] = []
        if overlong:
            newline = find(b"\n", 0, end)
            if newline < 0:
                filled = searched = 0
                continue
            lines.append(OVERLONG_LINE)
            start = searched = newline + 1
            overlong = False
        while (newline := find(b"\n", searched, end)) >= 0:
            lines.append(view[start:newline])
            start = searched = newline + 1
        if lines:
            yield LineBatch(next_line, lines)
            next_line += len(lines)
        tail = end - start
        if start:
            buffer[:tail] = buffer[start:end]
        elif tail == len(buffer):
            if len(buffer) >= capacity_limit:
                overlong, tail = True, 0
            else:
                # A line longer than the buffer: a larger one, with this one's bytes, takes its place.
                larger = bytearray(min(2 * len(buffer), capacity_limit))
                larger[:tail] = buffer
                buffer, view = larger, memoryview(larger)
        filled, start, searched = tail, 0, tail
    if overlong:
        yield LineBatch(next_line, [OVERLONG_LINE], unterminated=True)
    elif filled > start:
        yield LineBatch(next_line, [view[start:filled]], unterminated=True)


def _fill_at_least(readinto: ReadInto, view: memoryview, size: int) -> int:
    # Enough bytes to recognise a byte-order mark even from a stream that returns short reads.
    filled = 0
    while filled < size:
        received = readinto(view[filled:])
        if not received:
            break
        filled += received
    return filled


def _seekable(stream: IO[bytes]) -> bool:
    try:
        return bool(stream.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _spooled(stream: IO[bytes], read: Read) -> IO[bytes]:
    # Parquet keeps its index at the end of the file, so a stream that cannot seek is copied first.
    spool = tempfile.TemporaryFile()  # noqa: SIM115 (closed by the caller once parquet is read)
    while chunk := read(CHUNK_BYTES):
        spool.write(chunk)
    spool.seek(0)
    return spool


def _drop_null_fields(rows: list[dict[str, Any]]) -> None:
    # Parquet structs carry every field in every row; a null one stands for "absent" in JSON terms.
    for row in rows:
        messages = row.get("messages")
        if type(messages) is list:
            for index, message in enumerate(messages):
                if type(message) is dict and None in message.values():
                    messages[index] = {key: value for key, value in message.items() if value is not None}


def iter_parquet_batches(
    stream: IO[bytes], read: Read, batch_rows: int = PARQUET_BATCH_ROWS
) -> Iterator[list[dict[str, Any]]]:
    """The rows of a parquet file as dicts, a batch at a time; needs the `messages` column."""
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise FileProblem(Code.FILE_UNREADABLE, f"reading parquet needs pyarrow: {exc}") from None
    file = stream if _seekable(stream) else _spooled(stream, read)
    try:
        # pyarrow raises many types (ArrowInvalid, OSError, ...) for a corrupt file; all mean the same here.
        try:
            parquet = pq.ParquetFile(file)
            names = parquet.schema_arrow.names
        except Exception as exc:
            raise FileProblem(Code.FILE_UNREADABLE, f"not a valid parquet file: {exc}") from None
        if "messages" not in names:
            shown = ", ".join(names[:10]) or "none"
            raise FileProblem(Code.MESSAGES_COLUMN_MISSING, f"parquet file has no `messages` column (columns: {shown})")
        batches = parquet.iter_batches(batch_size=batch_rows)
        while True:
            try:
                batch = next(batches, None)
                rows = None if batch is None else batch.to_pylist()
            except Exception as exc:
                raise FileProblem(Code.FILE_UNREADABLE, f"parquet data cannot be read: {exc}") from None
            if rows is None:
                return
            _drop_null_fields(rows)
            yield rows
    finally:
        if file is not stream:
            file.close()
