"""The JSONL line reader: chunk boundaries, byte-order marks, over-long and unterminated lines."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.validation.codes import Code
from shared.validation.readers import OVERLONG_LINE, FileProblem, iter_jsonl_batches


def read_all(data: bytes, chunk_bytes: int, max_line_bytes: int = 1 << 20) -> tuple[list[bytes], bool]:
    lines: list[bytes] = []
    unterminated = False
    for batch in iter_jsonl_batches(io.BytesIO(data).readinto, max_line_bytes, chunk_bytes):
        assert batch.first_line == len(lines) + 1
        # A batch's lines are views of a buffer that the next batch fills again: keep copies.
        lines.extend(line if line is OVERLONG_LINE else bytes(line) for line in batch.lines)
        unterminated = batch.unterminated
    return lines, unterminated


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300), chunk_bytes=st.integers(min_value=1, max_value=40))
def test_lines_are_the_same_whatever_the_chunk_size(data: bytes, chunk_bytes: int) -> None:
    if data.startswith((b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")):
        return
    body = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    expected = body.split(b"\n")
    last = expected.pop()

    lines, unterminated = read_all(data, chunk_bytes)

    assert lines == expected + ([last] if last else [])
    assert unterminated == bool(last)


def test_an_over_long_line_is_skipped_and_marked_in_place() -> None:
    data = b"short\n" + b"x" * 5000 + b"\nafter\n" + b"y" * 5000

    lines, unterminated = read_all(data, chunk_bytes=1024, max_line_bytes=1024)

    assert lines == [b"short", OVERLONG_LINE, b"after", OVERLONG_LINE]
    assert lines[1] is OVERLONG_LINE
    assert unterminated


@pytest.mark.parametrize("bom", [b"\xff\xfe", b"\xfe\xff"])
def test_a_utf16_byte_order_mark_is_a_file_problem(bom: bytes) -> None:
    with pytest.raises(FileProblem) as problem:
        read_all(bom + "{}\n".encode("utf-16-le"), chunk_bytes=1)
    assert problem.value.code is Code.FILE_NOT_UTF8


@settings(max_examples=300, deadline=None)
@given(
    lengths=st.lists(st.integers(min_value=0, max_value=40), max_size=12),
    chunk_bytes=st.integers(min_value=1, max_value=50),
    max_line_bytes=st.integers(min_value=4, max_value=30),
    terminated=st.booleans(),
)
def test_only_lines_over_the_limit_are_marked_whatever_the_chunk_size(
    lengths: list[int], chunk_bytes: int, max_line_bytes: int, terminated: bool
) -> None:
    body = [bytes([65 + index % 26]) * length for index, length in enumerate(lengths)]
    data = b"\n".join(body) + (b"\n" if terminated and body else b"")

    lines, _ = read_all(data, chunk_bytes, max_line_bytes)

    expected = [line if len(line) <= max_line_bytes else OVERLONG_LINE for line in body]
    if body and not terminated and not body[-1]:
        expected.pop()
    assert lines == expected


def test_a_line_exactly_at_the_limit_is_kept_and_one_byte_more_is_not() -> None:
    data = b"a" * 64 + b"\n" + b"b" * 65 + b"\nc\n"

    lines, unterminated = read_all(data, chunk_bytes=8, max_line_bytes=64)

    assert lines == [b"a" * 64, OVERLONG_LINE, b"c"]
    assert not unterminated
