"""Benchmark of the dataset validator against `pandas.read_json(lines=True)` and a plain parse loop.

Generates ultrachat_200k-shaped JSONL (rows of 5-7 KB, 6-8 messages, a few flawed rows) in a
temporary folder, then runs each contender in its own subprocess on the same file and reports its
time, CPU time and peak resident memory side by side. The validator reads a large local file with one
process per CPU: its CPU time and peak memory then include its worker processes (the peak as the sum
of every process's peak, an upper bound). pandas and the plain loop run in one process.

    .venv/bin/python benchmarks/validate_bench.py --sizes-mb 150,600
    .venv/bin/python benchmarks/validate_bench.py --quick
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CONTENDERS = {
    "pandas": "pandas.read_json(lines=True)",
    "plain": "plain loop: for line in file: orjson.loads(line) (1 process)",
    "validator": "validate_dataset (no cleaned copy)",
    "validator_clean": "validate_dataset + cleaned copy",
    "validator_1proc": "validate_dataset in 1 process (workers=1)",
}
# With --azurite: what the validate stage does, reading the file as a blob stream from Azurite.
BLOB_CONTENDERS = {
    "download": "download the blob from Azurite only (1 process)",
    "validator_blob": "validate_dataset on the blob stream (the validate stage's path)",
}
BLOB_CONTAINER = "validate-bench"
BLOB_CONNECTION = "VALIDATE_BENCH_BLOB_CONNECTION"
TARGET_PANDAS_SPEEDUP = 8.0
TARGET_PLAIN_RATIO = 2.0
TARGET_PEAK_MB = 150.0

_WORDS = " ".join(
    (
        "the model learns from examples of conversations between a user and an assistant and each answer",
        "should be helpful honest and clear about what it knows when a question is ambiguous the assistant",
        "asks for details before it writes code or explains a concept in simple terms with steps history",
        "science cooking travel health finance poetry summary compare contrast describe benefits risks",
    )
).split()
# Chat-model prose is mostly ASCII with some typographic quotes, dashes and accented names.
_ACCENTS = ("it\u2019s", "caf\u00e9", "na\u00efve", "r\u00e9sum\u00e9", "\u2014", "\u201cquoted\u201d")


def _paragraphs(rng: random.Random, count: int) -> list[str]:
    pool = []
    for _ in range(count):
        words = rng.choices(_WORDS, k=rng.randint(20, 60))
        if rng.random() < 0.15:
            words[rng.randrange(len(words))] = rng.choice(_ACCENTS)
        pool.append(" ".join(words).capitalize() + ".")
    return pool


def _text(rng: random.Random, pool: list[str], size: int) -> str:
    """Paragraphs separated by blank lines, some as numbered lists, as chat models write them."""
    parts: list[str] = []
    length = 0
    while length < size:
        paragraph = rng.choice(pool)
        if rng.random() < 0.2:
            paragraph = "\n".join(
                f"{number}. {sentence}" for number, sentence in enumerate(paragraph.split(" and "), 1)
            )
        parts.append(paragraph)
        length += len(paragraph) + 2
    return "\n\n".join(parts)


def generate(path: Path, size_mb: float, seed: int = 7) -> int:
    """Write ultrachat-shaped JSONL of about `size_mb` MB to `path`; return its row count.

    Rows are 5-7 KB (prompt, prompt_id and 6 or 8 alternating messages, 7.6 on average); about 0.02 %
    have an empty assistant message and 0.1 % end on a user turn, as in the real data.
    """
    rng = random.Random(seed)
    pool = _paragraphs(rng, 4000)
    target = int(size_mb * 1_000_000)
    written = rows = 0
    with path.open("wb") as out:
        while written < target:
            row_bytes = rng.randint(5_000, 7_000)
            pairs = 4 if rng.random() < 0.8 else 3
            messages = []
            for _ in range(pairs):
                # Questions are fresh word sequences, so no two rows share a prompt (as in the real data).
                question = " ".join(rng.choices(_WORDS, k=row_bytes // (pairs * 7 * 6))).capitalize() + "?"
                messages.append({"content": question, "role": "user"})
                messages.append({"content": _text(rng, pool, row_bytes * 5 // (pairs * 7)), "role": "assistant"})
            prompt = messages[0]["content"]
            row = {"prompt": prompt, "prompt_id": hashlib.sha256(prompt.encode()).hexdigest(), "messages": messages}
            excess = len(orjson.dumps(row)) - row_bytes
            if excess > 0:
                last = messages[-1]["content"]
                messages[-1]["content"] = last[: max(200, len(last) - excess)].rstrip() + "."
            flaw = rng.random()
            if flaw < 0.0002:
                messages[-1]["content"] = ""
            elif flaw < 0.0012:
                messages.pop()
            line = orjson.dumps(row) + b"\n"
            out.write(line)
            written += len(line)
            rows += 1
    return rows


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _processes(name: str, path: Path) -> int:
    """How many processes a contender uses on `path`, its own included."""
    if name not in ("validator", "validator_clean"):
        return 1
    from shared.validation import DatasetSource, planned_processes

    return planned_processes(DatasetSource.from_path(path, split="train"))


def _run_pandas(path: Path) -> int:
    import pandas

    return len(pandas.read_json(path, lines=True))


def _run_plain(path: Path) -> int:
    loads = orjson.loads
    rows = 0
    with path.open("rb") as file:
        for line in file:
            loads(line)
            rows += 1
    return rows


def _run_validator(path: Path, clean: bool = False, workers: int | None = None) -> int:
    from shared.validation import DatasetSource, validate_dataset

    source = DatasetSource.from_path(path, split="train")
    if not clean:
        report = validate_dataset([source], workers=workers)
    else:
        with tempfile.TemporaryDirectory() as folder, open(os.path.join(folder, "clean.jsonl"), "wb") as out:
            report = validate_dataset([source], clean_output=lambda _source: out)
    return sum(file.rows for file in report.files)


def _blob_store() -> Any:
    from shared.storage import AzureBlobStore

    return AzureBlobStore(os.environ[BLOB_CONNECTION])


def _run_download(path: Path) -> int:
    with _blob_store().open_read(BLOB_CONTAINER, path.name) as stream:
        size = 0
        while chunk := stream.read(1024 * 1024):
            size += len(chunk)
    return size


def _run_validator_blob(path: Path) -> int:
    from functools import partial

    from shared.validation import DatasetSource, validate_dataset

    source = DatasetSource(path.name, "train", partial(_blob_store().open_read, BLOB_CONTAINER, path.name))
    return sum(file.rows for file in validate_dataset([source]).files)


RUNNERS: dict[str, Callable[[Path], int]] = {
    "pandas": _run_pandas,
    "plain": _run_plain,
    "validator": _run_validator,
    "validator_clean": lambda path: _run_validator(path, clean=True),
    "validator_1proc": lambda path: _run_validator(path, workers=1),
    "download": _run_download,
    "validator_blob": _run_validator_blob,
}


def run_contender(name: str, path: Path) -> None:
    """Child process: import what the contender needs, then time only the work itself."""
    if name == "pandas":
        import pandas  # noqa: F401
    elif name.startswith("validator"):
        import shared.validation  # noqa: F401
    processes = _processes(name, path)
    start, cpu_start, children_start = time.perf_counter(), time.process_time(), _children_cpu_seconds()
    rows = RUNNERS[name](path)
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu_start + _children_cpu_seconds() - children_start
    # The kernel keeps only the largest peak among the (finished) children: counted once per child,
    # it bounds their sum from above.
    children_peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    peak = _peak_rss_mb() + (processes - 1) * children_peak_mb
    figures = {"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": peak, "rows": rows, "processes": processes}
    print(json.dumps(figures))


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _child(name: str, path: Path) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, __file__, "--contender", name, "--file", str(path)],
        check=True,
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def measure(path: Path, repeats: int, names: list[str]) -> dict[str, dict[str, float]]:
    """Each contender in fresh subprocesses, interleaved round by round so that a busy spell on the
    machine hits them all alike; keeps each one's best time and its highest peak memory."""
    figures: dict[str, dict[str, float]] = {}
    for _ in range(repeats):
        for name in names:
            result = _child(name, path)
            best = figures.setdefault(name, result)
            best["peak_rss_mb"] = max(best["peak_rss_mb"], result["peak_rss_mb"])
            for key in ("seconds", "cpu_seconds"):
                best[key] = min(best[key], result[key])
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--sizes-mb", default="150,600", help="file sizes to generate, comma-separated (default 150,600)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run on 5 and 20 MB files")
    parser.add_argument("--repeats", type=int, default=3, help="runs per contender, best time kept (default 3)")
    parser.add_argument("--keep", type=Path, help="generate into this folder and keep the files")
    parser.add_argument(
        "--azurite",
        action="store_true",
        help="also start Azurite, upload each file, and time the validate stage's path: the file as a blob stream",
    )
    parser.add_argument("--contender", choices=sorted(RUNNERS), help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.contender:
        run_contender(args.contender, args.file)
        return 0

    sizes = [5.0, 20.0] if args.quick else [float(size) for size in args.sizes_mb.split(",")]
    names = list(CONTENDERS) + (list(BLOB_CONTENDERS) if args.azurite else [])
    with tempfile.TemporaryDirectory(prefix="validate-bench-") as scratch, _azurite(args.azurite, Path(scratch)):
        folder = args.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        results: list[tuple[float, int, int, dict[str, dict[str, float]]]] = []
        for size in sizes:
            path = folder / f"ultrachat_like_{size:g}mb.jsonl"
            started = time.perf_counter()
            rows = generate(path, size)
            took = time.perf_counter() - started
            print(
                f"generated {path.name}: {path.stat().st_size / 1e6:.0f} MB, {rows:,} rows in {took:.0f} s", flush=True
            )
            if args.azurite:
                with path.open("rb") as data:
                    _blob_store().upload(BLOB_CONTAINER, path.name, data)
            figures = measure(path, args.repeats, names)
            results.append((size, path.stat().st_size, rows, figures))
            path.unlink() if args.keep is None else None
    print()
    print(_table(results))
    return 0 if _targets_met(results) else 1


def _table(results: list[tuple[float, int, int, dict[str, dict[str, float]]]]) -> str:
    header = [
        "file",
        "contender",
        "processes",
        "seconds",
        "CPU s",
        "MB/s",
        "peak RSS MB",
        "pandas time / this",
        "this / plain loop",
    ]
    lines = [header]
    for _size, size_bytes, rows, figures in results:
        for name, figure in figures.items():
            lines.append(
                [
                    f"{size_bytes / 1e6:.0f} MB, {rows:,} rows",
                    {**CONTENDERS, **BLOB_CONTENDERS}[name],
                    f"{figure['processes']:.0f}",
                    f"{figure['seconds']:.2f}",
                    f"{figure['cpu_seconds']:.2f}",
                    f"{size_bytes / 1e6 / figure['seconds']:.0f}",
                    f"{figure['peak_rss_mb']:.0f}",
                    f"{figures['pandas']['seconds'] / figure['seconds']:.1f}x",
                    f"{figure['seconds'] / figures['plain']['seconds']:.2f}x",
                ]
            )
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    rendered = [" | ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) for line in lines]
    rendered.insert(1, "-+-".join("-" * width for width in widths))
    checks = []
    for _size, size_bytes, _rows, figures in results:
        validator, plain, pandas = figures["validator"], figures["plain"], figures["pandas"]
        speedup = pandas["seconds"] / validator["seconds"]
        ratio = validator["seconds"] / plain["seconds"]
        checks.append(
            f"{size_bytes / 1e6:.0f} MB: validator in {validator['processes']:.0f} process(es), "
            f"{speedup:.1f}x faster than pandas (target >= {TARGET_PANDAS_SPEEDUP:g}x) "
            f"{_verdict(speedup >= TARGET_PANDAS_SPEEDUP)}; "
            f"{ratio:.2f}x the plain orjson loop (target <= {TARGET_PLAIN_RATIO:g}x) "
            f"{_verdict(ratio <= TARGET_PLAIN_RATIO)}; peak {validator['peak_rss_mb']:.0f} MB "
            f"(cleaned copy {figures['validator_clean']['peak_rss_mb']:.0f} MB; target < {TARGET_PEAK_MB:g} MB) "
            f"{_verdict(max(validator['peak_rss_mb'], figures['validator_clean']['peak_rss_mb']) < TARGET_PEAK_MB)}"
        )
        alone = figures["validator_1proc"]
        also = [f"in 1 process {pandas['seconds'] / alone['seconds']:.1f}x pandas, peak {alone['peak_rss_mb']:.0f} MB"]
        if "validator_blob" in figures:
            blob, download = figures["validator_blob"], figures["download"]
            also.append(
                f"from an Azurite blob stream {pandas['seconds'] / blob['seconds']:.1f}x pandas "
                f"({blob['seconds'] / download['seconds']:.2f}x the download alone), peak {blob['peak_rss_mb']:.0f} MB"
            )
        checks.append(f"{size_bytes / 1e6:.0f} MB, not a target: " + "; ".join(also))
    parser_note = (
        f"JSON parser of the validator and the plain loop: orjson {orjson.__version__}; "
        f"Python {sys.version.split()[0]}; {os.cpu_count()} CPUs"
    )
    return "\n".join([*rendered, "", *checks, parser_note])


@contextlib.contextmanager
def _azurite(wanted: bool, scratch: Path) -> Iterator[None]:
    """An Azurite on free ports, its connection string in the environment the contenders inherit."""
    if not wanted:
        yield
        return
    from autopilot.local.processes import free_port, start_azurite
    from shared.settings import azurite_connection_string

    ports = (free_port(), free_port(), free_port())
    process = start_azurite(ports, scratch / "azurite.log", scratch / "azurite")
    os.environ[BLOB_CONNECTION] = azurite_connection_string(*ports)
    try:
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)


def _verdict(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def _targets_met(results: list[tuple[float, int, int, dict[str, dict[str, float]]]]) -> bool:
    return all(
        figures["pandas"]["seconds"] / figures["validator"]["seconds"] >= TARGET_PANDAS_SPEEDUP
        and figures["validator"]["seconds"] / figures["plain"]["seconds"] <= TARGET_PLAIN_RATIO
        and figures["validator"]["peak_rss_mb"] < TARGET_PEAK_MB
        for _size, _bytes, _rows, figures in results
    )


if __name__ == "__main__":
    sys.exit(main())
