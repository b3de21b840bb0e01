"""`validate_dataset`: one streaming pass per file, row checks, dataset checks, and a cleaned copy.

Only counters, bounded example lists, histograms and one set of row hashes per split are kept, so
memory does not grow with a file's size (the hash sets grow with its row count, capped by
`ValidationOptions.duplicate_check_limit`).
"""

from __future__ import annotations

import io
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from typing import IO, Any, BinaryIO, cast

import orjson

from shared.errors import AutopilotError
from shared.validation.codes import CODE_INFO, Code, Scope, Severity
from shared.validation.errors import CleanOutputError, SourceReadError, ValidationError
from shared.validation.options import SPLITS, DatasetSource, ValidationOptions
from shared.validation.parallel import ByteRange, ForkedCall, KeptRows, can_fork, line_ranges
from shared.validation.readers import (
    GZIP_MAGIC,
    OVERLONG_LINE,
    FileProblem,
    LineBatch,
    ReadInto,
    gzip_readinto,
    iter_jsonl_batches,
    iter_parquet_batches,
)
from shared.validation.report import (
    MAX_EXAMPLES,
    CodeSummary,
    Example,
    FileReport,
    ValidationReport,
    code_counts,
    percent,
    plural,
)
from shared.validation.rows import Issue, RowFacts, inspect_messages, ordinary_facts, shown
from shared.validation.statistics import SplitStatistics
from shared.validation.tokens import METHOD, content_tokens, tokens_for

CleanOutput = Callable[[DatasetSource], BinaryIO]

NUL = b"\x00"
_ENCODING_CODES = frozenset({Code.NOT_UTF8, Code.NUL_BYTE})


def validate_dataset(
    sources: Sequence[DatasetSource],
    options: ValidationOptions | None = None,
    clean_output: CleanOutput | None = None,
    workers: int | None = None,
) -> ValidationReport:
    """Check every source in one pass each and judge the dataset as a whole.

    With `clean_output`, each readable source's kept rows are written as UTF-8 JSONL to the stream it
    returns for that source (the caller closes it). Bad data never raises: it is in the report.
    A local JSONL file (`DatasetSource.path`) of at least 64 MiB is read by one process per CPU, each
    taking a byte range; the report and the cleaned copy are the same as from one process. `workers`
    sets the number of processes for every local JSONL file, whatever its size; 1 keeps to one.
    Raises `SourceReadError` when a source cannot be opened or read, `CleanOutputError` when a
    cleaned copy cannot be written; errors of the project's own types (`AutopilotError`) that a
    source's stream raises pass through unchanged, so a `TransientError` is still retried.
    """
    scan = _DatasetScan(options or ValidationOptions())
    # Train first, so that test rows can be checked against everything train holds.
    for source in sorted(sources, key=lambda source: SPLITS.index(source.split)):
        scan.scan_source(source, clean_output, workers)
    return scan.finish({source.split for source in sources})


def planned_processes(source: DatasetSource, workers: int | None = None) -> int:
    """How many processes `validate_dataset` reads `source` with (the caller's included)."""
    return max(1, len(_byte_ranges(source, workers)))


def _byte_ranges(source: DatasetSource, workers: int | None) -> list[ByteRange]:
    if source.path is None or source.format != "jsonl" or workers == 1 or not can_fork():
        return []
    ranges = line_ranges(source.path, workers)
    return ranges if len(ranges) > 1 else []


class _GuardedRead:
    """`stream.read` and `readinto` that count bytes, stop after `limit` of them, and turn foreign
    exceptions into `SourceReadError`."""

    def __init__(self, stream: IO[bytes], name: str, limit: int | None = None) -> None:
        self._read = stream.read
        self._readinto: ReadInto | None = cast(io.RawIOBase, stream).readinto if _fills_buffers(stream) else None
        self._name = name
        self._limit = limit
        self.bytes = 0

    def __call__(self, size: int) -> bytes:
        if self._limit is not None:
            size = min(size, self._limit - self.bytes)
            if size <= 0:
                return b""
        chunk = self._guarded(self._read, size)
        if not isinstance(chunk, bytes):
            if not isinstance(chunk, (bytearray, memoryview)):
                raise SourceReadError(f"{self._name}: the stream returned {type(chunk).__name__}, not bytes")
            chunk = bytes(chunk)
        self.bytes += len(chunk)
        return chunk

    def readinto(self, view: memoryview) -> int:
        """Fill `view` from the front with the stream's next bytes; the number written, 0 at the end."""
        if self._limit is not None:
            room = self._limit - self.bytes
            if room <= 0:
                return 0
            view = view[:room]
        if self._readinto is None:
            chunk = self(len(view))
            if len(chunk) > len(view):
                raise SourceReadError(f"{self._name}: the stream returned more bytes than were asked for")
            view[: len(chunk)] = chunk
            return len(chunk)
        received = self._guarded(self._readinto, view)
        if received is None:
            raise SourceReadError(f"{self._name}: the stream has no data ready (a non-blocking stream cannot be read)")
        self.bytes += received
        return int(received)

    def _guarded(self, read: Callable[[Any], Any], argument: Any) -> Any:
        with _foreign_errors_as(SourceReadError, f"{self._name}: cannot read"):
            return read(argument)


def _fills_buffers(stream: IO[bytes]) -> bool:
    """True for files and the io module's streams, which read into a buffer themselves; any other
    stream's `read` is copied in (a raw stream that defines only `read` cannot `readinto`)."""
    readinto = getattr(type(stream), "readinto", None)
    return isinstance(stream, io.IOBase) and readinto is not None and readinto is not io.RawIOBase.readinto


class _DatasetScan:
    def __init__(self, options: ValidationOptions) -> None:
        self.options = options
        self.files: list[FileReport] = []
        self.errors: dict[Code, CodeSummary] = {}
        self.warnings: dict[Code, CodeSummary] = {}
        self.statistics: dict[str, SplitStatistics] = {}
        self.reasons: list[str] = []
        # Hashes of kept rows per split: O(rows), about 70 B an entry (100k rows: 14 MB), capped.
        self.conversations: dict[str, set[int]] = {}
        self.prompt_ids: dict[str, set[int]] = {}
        self.capped_splits: list[str] = []
        self.long_row_severity = Severity.ERROR if options.strict_seq_length else Severity.WARNING

    def note(
        self,
        code: Code,
        severity: Severity,
        file: str | None,
        message: str,
        line: int | None = None,
        row: int | None = None,
    ) -> None:
        tallies = self.errors if severity is Severity.ERROR else self.warnings
        tally = tallies.get(code)
        if tally is None:
            tally = tallies[code] = CodeSummary(code, severity)
        tally.count += 1
        if len(tally.examples) < MAX_EXAMPLES:
            tally.examples.append(Example(file, message, line, row))

    def file_error(self, file: FileReport, code: Code, message: str) -> None:
        file.errors[code] = file.errors.get(code, 0) + 1
        self.note(code, Severity.ERROR, file.name, message)
        self.reasons.append(f"{file.name}: {message}")

    def scan_source(self, source: DatasetSource, clean_output: CleanOutput | None, workers: int | None) -> None:
        file = FileReport(source.name, source.split, source.format)
        self.files.append(file)
        self.statistics.setdefault(source.split, SplitStatistics())
        if file.format is None:
            self.file_error(file, Code.UNSUPPORTED_FORMAT, "not a .jsonl, .jsonl.gz or .parquet file")
            return
        ranges = _byte_ranges(source, workers)
        if ranges:
            self.scan_ranges(source, file, ranges, clean_output)
            return
        stream = _open_source(source)
        try:
            out = _open_output(clean_output, source) if clean_output is not None else None
            read = _GuardedRead(stream, source.name)
            scanner = _FileScan(self, file, source.split, out)
            try:
                if file.format == "parquet":
                    scanner.scan_parquet(stream, read)
                else:
                    scanner.scan_jsonl(gzip_readinto(read) if file.format == "jsonl.gz" else read.readinto)
            except FileProblem as problem:
                self.file_error(file, problem.code, problem.message)
            if file.format != "parquet":
                file.bytes_read = read.bytes
        finally:
            _close_quietly(stream)
        self.judge_file(file, scanner.encoding_bad_rows, scanner.looks_gzipped)

    def scan_ranges(
        self, source: DatasetSource, file: FileReport, ranges: list[ByteRange], clean_output: CleanOutput | None
    ) -> None:
        """`scan_source` for a local JSONL file, its byte ranges read at once by forked children and this process.

        Each range is judged on its own, with line numbers counted from its start; its findings, counts
        and statistics are then merged in file order, and the duplicate and leakage checks run here on
        its kept rows' fingerprints, so the outcome is the one a single pass gives.
        """
        first_stream = _open_source(source)
        out = _open_output(clean_output, source) if clean_output is not None else None
        copies = [tempfile.TemporaryFile() if out is not None else None for _ in ranges[1:]]  # noqa: SIM115
        children: list[ForkedCall[_RangeScan]] = []
        try:
            for (start, end), copy in zip(ranges[1:], copies, strict=True):
                task = partial(_scan_range_alone, source, self.options, start, end, copy)
                children.append(ForkedCall(task, f"{source.name} bytes {start}-{end}"))
            merged = _MergedRanges(self, file)
            merged.add(_scan_range(source, self.options, first_stream, ranges[0], out))
            for child, copy in zip(children, copies, strict=True):
                merged.add(child.result())
                if copy is not None:
                    _append_copy(copy, out, source.name)
            merged.finish()
        finally:
            _close_quietly(first_stream)
            for child in children:
                child.cancel()
            for copy in copies:
                if copy is not None:
                    copy.close()
        self.judge_file(file, merged.encoding_bad_rows, merged.looks_gzipped)

    def sharing_checks(self) -> _DatasetScan:
        """A scan with its own findings, sharing this one's statistics and duplicate-check state."""
        scan = _DatasetScan(self.options)
        scan.statistics, scan.conversations, scan.prompt_ids = self.statistics, self.conversations, self.prompt_ids
        scan.capped_splits = self.capped_splits
        return scan

    def judge_file(self, file: FileReport, encoding_bad_rows: int, looks_gzipped: bool) -> None:
        file.rows = file.kept_rows + file.bad_rows
        if any(CODE_INFO[code].scope is Scope.FILE for code in file.errors):
            return
        if not file.rows:
            self.file_error(
                file, Code.FILE_EMPTY, "file has no rows" + (" (only blank lines)" if file.blank_lines else "")
            )
            return
        if encoding_bad_rows == file.rows:
            hint = " (it looks gzip-compressed: name it .jsonl.gz)" if looks_gzipped else ""
            self.file_error(file, Code.FILE_NOT_UTF8, f"no line of the file is UTF-8 text{hint}")
            return
        if not file.kept_rows:
            message = f"none of its {plural(file.rows, 'row')} is valid: {code_counts(file.errors)}"
            self.file_error(file, Code.NO_VALID_ROWS, message)
            return
        limit = self.options.max_bad_row_fraction
        if file.bad_rows and (self.options.strict or file.bad_rows / file.rows > limit):
            share = file.bad_rows / file.rows
            rule = "strict validation allows none" if self.options.strict else f"{percent(share)} > {percent(limit)}"
            message = f"has {plural(file.bad_rows, 'bad row')} of {file.rows} ({rule}): {code_counts(file.errors)}"
            file.errors[Code.TOO_MANY_BAD_ROWS] = 1
            self.note(Code.TOO_MANY_BAD_ROWS, Severity.ERROR, file.name, message)
            self.reasons.append(f"{file.name} {message}")

    def finish(self, splits: set[str]) -> ValidationReport:
        if "train" not in splits:
            message = "no train file: name one train*.jsonl, train*.jsonl.gz or train*.parquet"
            self.note(Code.NO_TRAIN_SPLIT, Severity.ERROR, None, message)
            self.reasons.append(message)
        else:
            kept = self.statistics["train"].rows
            if kept < self.options.min_train_rows:
                needed = self.options.min_train_rows
                message = f"only {plural(kept, 'valid training row')}; at least {needed} are needed"
                self.note(Code.TOO_FEW_TRAIN_ROWS, Severity.ERROR, None, message)
                self.reasons.append(message)
        if not splits & {"test", "validation"}:
            self.note(
                Code.NO_TEST_SPLIT,
                Severity.WARNING,
                None,
                "no test file: the pipeline will split the data 80/10/10 itself",
            )
        for split in self.capped_splits:
            limit = self.options.duplicate_check_limit
            message = f"{split} has more than {limit:,} rows: later duplicates and leakage are not detected"
            self.note(Code.DUPLICATE_CHECK_CAPPED, Severity.WARNING, None, message)
        return ValidationReport(
            valid=not self.errors.keys() - _row_codes(),
            files=self.files,
            errors=self.errors,
            warnings=self.warnings,
            statistics={split: self.statistics[split] for split in SPLITS if split in self.statistics},
            options=self.options,
            reasons=self.reasons,
            token_estimate=METHOD,
        )


def _row_codes() -> set[Code]:
    return {code for code, info in CODE_INFO.items() if info.scope is Scope.ROW}


class _FileScan:
    """The per-row work for one file; its methods are the validator's hot loop."""

    def __init__(
        self,
        dataset: _DatasetScan,
        file: FileReport,
        split: str,
        out: IO[bytes] | None,
        kept: KeptRows | None = None,
    ) -> None:
        """With `kept`, kept rows are recorded there for the duplicate and leakage checks, not checked."""
        self.dataset = dataset
        self.file = file
        self.name = file.name
        self.out = out
        self.by_row = file.format == "parquet"
        self.stats = dataset.statistics[split]
        self.max_tokens = dataset.options.max_seq_length
        self.long_row_severity = dataset.long_row_severity
        self.dedupe_limit = dataset.options.duplicate_check_limit
        self.conversations = dataset.conversations.setdefault(split, set())
        self.prompt_ids = dataset.prompt_ids.setdefault(split, set())
        self.train_conversations = dataset.conversations.get("train", set()) if split != "train" else None
        self.kept = kept
        self.capped = False
        self.encoding_bad_rows = 0
        self.looks_gzipped = False

    def scan_jsonl(self, readinto: ReadInto, file_start: bool = True) -> int:
        """Scan the lines `readinto` gives; the number of lines read."""
        loads = orjson.loads
        decode_error = orjson.JSONDecodeError
        take = self.hot_path()
        out = self.out
        number = 0
        for batch in iter_jsonl_batches(readinto, self.dataset.options.max_line_bytes, file_start=file_start):
            number = batch.first_line - 1
            kept: list[bytes | memoryview] | None = [] if out is not None else None
            for line in batch.lines:
                number += 1
                try:
                    row = loads(line)
                except decode_error as exc:
                    self.unparsable(line, number, batch, exc)
                    continue
                if take(row, number) and kept is not None:
                    kept.append(line)
            if kept:
                data = b"\n".join(kept)
                if b"\r" in data:
                    data = b"\n".join(map(_without_cr, kept))
                self.write(data)
                self.write(b"\n")
        return number

    def scan_parquet(self, stream: IO[bytes], read: Callable[[int], bytes]) -> None:
        dumps = orjson.dumps
        take = self.hot_path()
        number = -1
        for rows in iter_parquet_batches(stream, read):
            kept: list[bytes] = []
            for row in rows:
                number += 1
                try:
                    line = dumps(row, default=str, option=orjson.OPT_NON_STR_KEYS)
                except orjson.JSONEncodeError as exc:
                    self.bad_row(number, Code.INVALID_JSON, f"row cannot be written as JSON: {exc}")
                    continue
                if take(row, number):
                    kept.append(line)
            if kept and self.out is not None:
                self.write(b"\n".join(kept))
                self.write(b"\n")

    def write(self, data: bytes) -> None:
        assert self.out is not None
        with _foreign_errors_as(CleanOutputError, f"{self.name}: cannot write the cleaned copy"):
            self.out.write(data)

    def unparsable(self, line: bytes | memoryview, number: int, batch: LineBatch, exc: Exception) -> None:
        if line is OVERLONG_LINE:
            limit = self.dataset.options.max_line_bytes
            self.bad_row(number, Code.LINE_TOO_LONG, f"line is longer than {limit:,} bytes; skipped unread")
            return
        line = bytes(line)
        if not line.strip():
            self.file.blank_lines += 1
            return
        if number == 1 and line.startswith(GZIP_MAGIC):
            self.looks_gzipped = True
        if NUL in line:
            code, message = Code.NUL_BYTE, f"line contains NUL bytes (the first at byte {line.index(NUL)})"
        elif batch.unterminated:
            code, message = Code.TRUNCATED_LAST_LINE, f"last line has no newline and is cut off: {exc}"
        else:
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as bad:
                code, message = (
                    Code.NOT_UTF8,
                    f"line is not UTF-8: byte {bad.start} is {line[bad.start : bad.start + 1]!r}",
                )
            else:
                code, message = Code.INVALID_JSON, f"not valid JSON: {exc}"
        if code in _ENCODING_CODES:
            self.encoding_bad_rows += 1
        self.bad_row(number, code, message)

    def hot_path(self) -> Callable[[Any, int], bool]:
        """`take(row, number)`: count one parsed row; True when it is kept.

        The common case, a flawless conversation not seen before, is handled here on local state
        only (this runs once per row of multi-GB files) and counted as `SplitStatistics.add` would,
        inline; anything else goes to `take_slowly`, which alone decides on findings.
        """
        file, stats = self.file, self.stats
        messages_seen, tokens_seen = stats.messages.counts, stats.tokens.counts
        assistant_seen, roles = stats.assistant_tokens.counts, stats.roles
        conversations, prompt_ids = self.conversations, self.prompt_ids
        train: set[int] | frozenset[int] = self.train_conversations or frozenset()
        record = None if self.kept is None else self.kept.add
        # Recording, the sets stay empty: no row is a duplicate here, and none is past the cap.
        max_tokens, room = self.max_tokens, self.dedupe_limit if record is None else sys.maxsize
        take_slowly = self.take_slowly

        def take(row: Any, number: int) -> bool:
            messages = row.get("messages") if type(row) is dict else None
            quick = ordinary_facts(messages) if type(messages) is list else None
            if quick is None:
                return take_slowly(row, number)
            count, content_bytes, assistant_bytes, systems, fingerprint = quick
            tokens = tokens_for(content_bytes, count)
            prompt_id = row.get("prompt_id")
            prompt_key = hash(prompt_id) if type(prompt_id) is str or type(prompt_id) is int else None
            if (
                tokens > max_tokens
                or fingerprint in conversations
                or fingerprint in train
                or (prompt_key is not None and prompt_key in prompt_ids)
                or len(conversations) >= room
                or len(prompt_ids) >= room
            ):
                return take_slowly(row, number)
            file.kept_rows += 1
            stats.rows += 1
            messages_seen[count] = messages_seen.get(count, 0) + 1
            tokens_seen[tokens] = tokens_seen.get(tokens, 0) + 1
            assistant_tokens = content_tokens(assistant_bytes)
            assistant_seen[assistant_tokens] = assistant_seen.get(assistant_tokens, 0) + 1
            pairs = (count - systems) >> 1
            roles["user"] += pairs
            roles["assistant"] += pairs
            if systems:
                roles["system"] += systems
            if record is not None:
                record(number, fingerprint, prompt_key, prompt_id, False)
                return True
            conversations.add(fingerprint)
            if prompt_key is not None:
                prompt_ids.add(prompt_key)
            return True

        return take

    def take_slowly(self, row: Any, number: int) -> bool:
        """The full check of one row, with findings; True when it is kept."""
        file = self.file
        facts: RowFacts = inspect_messages(row)
        issues = facts.issues
        tokens = tokens_for(facts.content_bytes, facts.messages)
        if tokens > self.max_tokens:
            long_row = (Code.SEQ_TOO_LONG, f"about {tokens:,} tokens > max_seq_length {self.max_tokens:,}")
            issues = [long_row] if issues is None else [*issues, long_row]
        if issues is not None and self.row_issues(number, issues):
            file.bad_rows += 1
            return False
        file.kept_rows += 1
        self.stats.add(facts, tokens, tokens > self.max_tokens)
        prompt_id = row.get("prompt_id")
        prompt_key = hash(prompt_id) if type(prompt_id) is str or type(prompt_id) is int else None
        warned = issues is not None
        if self.kept is not None:
            self.kept.add(number, facts.fingerprint, prompt_key, prompt_id, warned)
        elif prompt_key is None:
            warned = self.check_duplicates(facts.fingerprint, None, "", number) or warned
        else:
            warned = self.check_duplicates(facts.fingerprint, prompt_key, shown(prompt_id), number) or warned
        if warned:
            file.warning_rows += 1
        return True

    def check_duplicates(self, fingerprint: int, prompt_key: int | None, prompt_id: str, number: int) -> bool:
        """The slow path of `take`: a row seen before, or a split past the duplicate-check cap.

        `prompt_id` is the row's prompt_id as findings show it; True when there were findings.
        """
        found: list[Issue] = []
        if self.train_conversations is not None and fingerprint in self.train_conversations:
            found.append((Code.TEST_IN_TRAIN, "the same conversation is in the train split"))
        conversation = "same conversation as an earlier row"
        found += self.remember(self.conversations, fingerprint, Code.DUPLICATE_CONVERSATION, conversation)
        if prompt_key is not None:
            seen_before = f"prompt_id {prompt_id} seen before"
            found += self.remember(self.prompt_ids, prompt_key, Code.DUPLICATE_PROMPT_ID, seen_before)
        if found:
            self.row_issues(number, found)
        return bool(found)

    def remember(self, seen: set[int], key: int, code: Code, message: str) -> list[Issue]:
        if key in seen:
            return [(code, message)]
        if len(seen) < self.dedupe_limit:
            seen.add(key)
        elif not self.capped:
            self.capped = True
            if self.file.split not in self.dataset.capped_splits:
                self.dataset.capped_splits.append(self.file.split)
        return []

    def row_issues(self, number: int, issues: list[Issue]) -> bool:
        """Count a row's findings, each code once; True when one is an error (its warnings then go unsaid)."""
        file = self.file
        line, row = (None, number) if self.by_row else (number, None)
        graded = [(code, message, self.severity_of(code)) for code, message in issues]
        bad = any(severity is Severity.ERROR for _, _, severity in graded)
        counted: set[Code] = set()
        for code, message, severity in graded:
            if code in counted or (bad and severity is Severity.WARNING):
                continue
            counted.add(code)
            self.dataset.note(code, severity, self.name, message, line, row)
            tally = file.errors if severity is Severity.ERROR else file.warnings
            tally[code] = tally.get(code, 0) + 1
        return bad

    def severity_of(self, code: Code) -> Severity:
        return self.long_row_severity if code is Code.SEQ_TOO_LONG else CODE_INFO[code].severity

    def bad_row(self, number: int, code: Code, message: str) -> None:
        self.file.bad_rows += 1
        self.row_issues(number, [(code, message)])


@dataclass
class _RangeScan:
    """What one byte range of a JSONL file held, judged on its own: line numbers count from its start."""

    lines: int
    file: FileReport
    errors: dict[Code, CodeSummary]
    warnings: dict[Code, CodeSummary]
    statistics: SplitStatistics
    kept: KeptRows
    encoding_bad_rows: int
    looks_gzipped: bool


def _scan_range(
    source: DatasetSource, options: ValidationOptions, stream: IO[bytes], byte_range: ByteRange, out: IO[bytes] | None
) -> _RangeScan:
    """Scan one byte range of `stream`, which is at its start; kept rows are recorded, not checked for duplicates."""
    start, end = byte_range
    dataset = _DatasetScan(options)
    file = FileReport(source.name, source.split, source.format)
    statistics = dataset.statistics[source.split] = SplitStatistics()
    scanner = _FileScan(dataset, file, source.split, out, KeptRows())
    read = _GuardedRead(stream, source.name, limit=end - start)
    lines = scanner.scan_jsonl(read.readinto, file_start=start == 0)
    file.bytes_read = read.bytes
    assert scanner.kept is not None
    return _RangeScan(
        lines,
        file,
        dataset.errors,
        dataset.warnings,
        statistics,
        scanner.kept,
        scanner.encoding_bad_rows,
        scanner.looks_gzipped,
    )


def _scan_range_alone(
    source: DatasetSource, options: ValidationOptions, start: int, end: int, out: IO[bytes] | None
) -> _RangeScan:
    """`_scan_range` on a stream of its own, as a forked child runs it; `out` is flushed before the child exits."""
    stream = _open_source(source)
    try:
        try:
            stream.seek(start)
        except Exception as exc:
            raise SourceReadError(f"{source.name}: cannot seek to byte {start}: {exc}") from exc
        scan = _scan_range(source, options, stream, (start, end), out)
        if out is not None:
            out.flush()
        return scan
    finally:
        _close_quietly(stream)


# Noted only by `_FileScan.check_duplicates`, after the row's other findings.
_DUPLICATE_CODES = frozenset({Code.TEST_IN_TRAIN, Code.DUPLICATE_CONVERSATION, Code.DUPLICATE_PROMPT_ID})


class _MergedRanges:
    """The byte ranges of one file merged, in file order, into its report and the dataset's findings."""

    def __init__(self, dataset: _DatasetScan, file: FileReport) -> None:
        self.dataset = dataset
        self.file = file
        # The file's findings are gathered apart, so that they can be put in the order a single pass
        # meets them before they join the dataset's.
        self.findings = dataset.sharing_checks()
        self.duplicates = _FileScan(self.findings, file, file.split, None)
        self.ranges = 0
        self.lines_before = 0
        self.encoding_bad_rows = 0
        self.looks_gzipped = False

    def add(self, part: _RangeScan) -> None:
        """Merge the next range."""
        file, counts, offset = self.file, part.file, self.lines_before
        if not self.ranges:
            self.looks_gzipped = part.looks_gzipped
        file.kept_rows += counts.kept_rows
        file.bad_rows += counts.bad_rows
        file.warning_rows += counts.warning_rows
        file.blank_lines += counts.blank_lines
        file.bytes_read = (file.bytes_read or 0) + (counts.bytes_read or 0)
        for total, more in ((file.errors, counts.errors), (file.warnings, counts.warnings)):
            for code, count in more.items():
                total[code] = total.get(code, 0) + count
        _merge_tallies(self.findings.errors, part.errors, offset)
        _merge_tallies(self.findings.warnings, part.warnings, offset)
        self.dataset.statistics[file.split].merge(part.statistics)
        self.encoding_bad_rows += part.encoding_bad_rows
        self.check_duplicates(part.kept, offset)
        self.ranges += 1
        self.lines_before += part.lines

    def check_duplicates(self, kept: KeptRows, offset: int) -> None:
        """The duplicate and leakage checks of `_FileScan.take`, on the recorded kept rows."""
        scanner, file = self.duplicates, self.file
        conversations, prompt_ids = scanner.conversations, scanner.prompt_ids
        train: set[int] | frozenset[int] = scanner.train_conversations or frozenset()
        room = scanner.dedupe_limit
        for line, fingerprint, prompt_key, prompt_id, warned in kept:
            if (
                fingerprint in conversations
                or fingerprint in train
                or (prompt_key is not None and prompt_key in prompt_ids)
                or len(conversations) >= room
                or len(prompt_ids) >= room
            ):
                if scanner.check_duplicates(fingerprint, prompt_key, prompt_id, line + offset) and not warned:
                    file.warning_rows += 1
                continue
            conversations.add(fingerprint)
            if prompt_key is not None:
                prompt_ids.add(prompt_key)

    def finish(self) -> None:
        """Order codes as a single pass meets them, then add the file's findings to the dataset's."""
        first_seen: dict[Code, tuple[int, bool]] = {}
        for tallies in (self.findings.errors, self.findings.warnings):
            for code, tally in tallies.items():
                first_seen[code] = (tally.examples[0].line or 0, code in _DUPLICATE_CODES)
        # Sorting is stable: codes first met on one line keep the order they were met in.
        self.file.errors = dict(sorted(self.file.errors.items(), key=lambda item: first_seen[item[0]]))
        self.file.warnings = dict(sorted(self.file.warnings.items(), key=lambda item: first_seen[item[0]]))
        for total, found in (
            (self.dataset.errors, self.findings.errors),
            (self.dataset.warnings, self.findings.warnings),
        ):
            _merge_tallies(total, dict(sorted(found.items(), key=lambda item: first_seen[item[0]])), 0)


def _merge_tallies(total: dict[Code, CodeSummary], more: dict[Code, CodeSummary], line_offset: int) -> None:
    """Add `more`'s counts and, while there is room, its examples (their lines moved on by `line_offset`)."""
    for code, found in more.items():
        tally = total.get(code)
        if tally is None:
            tally = total[code] = CodeSummary(code, found.severity)
        tally.count += found.count
        for example in found.examples[: MAX_EXAMPLES - len(tally.examples)]:
            line = None if example.line is None else example.line + line_offset
            tally.examples.append(replace(example, line=line) if line_offset else example)


def _append_copy(copy: IO[bytes], out: IO[bytes] | None, name: str) -> None:
    """Append a range's cleaned rows, written by its child to `copy`, to the cleaned copy."""
    assert out is not None
    copy.seek(0)
    with _foreign_errors_as(CleanOutputError, f"{name}: cannot write the cleaned copy"):
        shutil.copyfileobj(copy, out)


def _without_cr(line: bytes | memoryview) -> bytes:
    """The line without carriage returns, which some JSONL readers take for line breaks.

    A raw CR cannot sit inside a JSON string: it is whitespace between tokens, usually of a CR LF
    line ending, and a row that has one elsewhere is written anew.
    """
    line = bytes(line).rstrip(b"\r")
    return orjson.dumps(orjson.loads(line)) if b"\r" in line else line


@contextmanager
def _foreign_errors_as(error: type[ValidationError], doing: str) -> Iterator[None]:
    """Inside, an exception of a foreign type becomes `error("<doing>: <exception>")`; the project's own
    (`AutopilotError`, so a `TransientError` too) pass through unchanged."""
    try:
        yield
    except AutopilotError:
        raise
    except Exception as exc:
        raise error(f"{doing}: {exc}") from exc


def _open_source(source: DatasetSource) -> IO[bytes]:
    with _foreign_errors_as(SourceReadError, f"{source.name}: cannot open"):
        return source.open()


def _open_output(clean_output: CleanOutput, source: DatasetSource) -> IO[bytes]:
    with _foreign_errors_as(CleanOutputError, f"{source.name}: cannot open the cleaned copy for writing"):
        return clean_output(source)


def _close_quietly(stream: Any) -> None:
    # A failed close of a stream that was only read changes nothing that was judged.
    try:
        stream.close()
    except Exception:
        return
