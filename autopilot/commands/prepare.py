"""`autopilot prepare`: the first N percent of each split of a dataset, as `<split>.jsonl` files.

It does what the walkthrough's download helper did: load each split with the `datasets` library (a
hub name, or a local folder or file), keep the first N percent, write `<split>.jsonl` into a folder,
and optionally upload that folder as a dataset version. `datasets` and `tqdm` are development
tools: they are imported here, lazily, and never by the function app.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from autopilot.commands.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CommandError
from shared.errors import AutopilotError
from shared.validation import DatasetSource, format_of, split_of, validate_dataset

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "prepare_dataset", "run_prepare"]
MANIFEST_NAME = "autopilot.json"
WRITE_BATCH_ROWS = 1000


class PrepareError(AutopilotError):
    """The dataset, a split or the upload target cannot be used as given."""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "prepare",
        help="take the first N percent of each split of a dataset into <split>.jsonl files (and upload them)",
        description=(
            "Load a dataset with the `datasets` library - a hub name such as HuggingFaceH4/ultrachat_200k, a local "
            "folder (laid out like a hub repository, or holding <split>.parquet/.jsonl files), or one local file - "
            "keep the first N percent of each split and write <split>.jsonl files into --out."
        ),
    )
    parser.add_argument(
        "--source",
        "--dataset",
        dest="dataset",
        required=True,
        metavar="NAME",
        help="hub dataset name, local folder or file to take rows from (--dataset: the old spelling)",
    )
    parser.add_argument(
        "--split-pc", type=_percent, default=5.0, metavar="PC", help="percent of each split to keep (default 5)"
    )
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder to write <split>.jsonl into")
    parser.add_argument(
        "--splits",
        "--split",
        dest="splits",
        type=_names,
        metavar="A,B",
        help="splits to take, comma-separated, e.g. train_sft,test_sft (default: all the dataset has); "
        "--split is the same option, as `validate` spells it",
    )
    parser.add_argument(
        "--to",
        "--upload",
        dest="upload",
        type=parse_upload_target,
        metavar="DATASET/VERSION",
        help="then upload the folder to the training container as DATASET/VERSION/<file>, the manifest last, as "
        "`autopilot upload DIR --to DATASET/VERSION` does (--upload: the old spelling)",
    )
    parser.add_argument("--cache-dir", type=Path, metavar="DIR", help="cache folder of the `datasets` library")
    parser.add_argument(
        "--json", action="store_true", help="print what was written, the verdict and the upload as JSON"
    )
    parser.set_defaults(func=run_prepare)


def run_prepare(args: argparse.Namespace) -> int:
    """Write the splits, judge them as the validate stage would, and upload them only if they pass."""
    json_output = getattr(args, "json", False)
    say = (lambda line: print(line, file=sys.stderr)) if json_output else print
    try:
        written = prepare_dataset(args.dataset, args.split_pc, args.out, args.splits, args.cache_dir)
    except PrepareError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from exc
    for path, rows in written.items():
        say(f"wrote {path} ({rows:,} rows)")
    sources = [DatasetSource.from_path(path) for path in written if split_of(path.name)]
    report = validate_dataset(sources) if sources else None
    if report is not None:
        say(report.summary())
    valid = report is not None and report.valid
    result: dict[str, Any] = {
        "written": {str(path): rows for path, rows in written.items()},
        "valid": valid,
        "summary": report.summary() if report is not None else "no file with a split name was written",
        "uploaded": None,
    }
    if not valid:
        if json_output:
            print(json.dumps(result, indent=1))
        hint = "nothing was uploaded; `autopilot validate` on the folder says why" if args.upload else ""
        raise CommandError(f"the prepared dataset in {args.out} is rejected", EXIT_FAILED, hint)
    if args.upload is not None:
        from autopilot.commands.upload import upload_folder as upload_dataset_folder

        dataset, version = args.upload
        run_id = upload_dataset_folder(args.out, dataset, version, report=say)
        say(f"uploaded to {dataset}/{version}/; run id: {run_id}")
        result["uploaded"] = {"dataset": dataset, "version": version, "run_id": run_id}
    if json_output:
        print(json.dumps(result, indent=1))
    return EXIT_OK


def prepare_dataset(
    name: str, percent: float, out: Path, splits: list[str] | None = None, cache_dir: Path | None = None
) -> dict[Path, int]:
    """Write the first `percent` % of each split to `out/<split>.jsonl`; returns each file's row count."""
    loaded = load_splits(name, cache_dir)
    available = list(loaded)
    chosen = splits or available
    missing = [split for split in chosen if split not in loaded]
    if missing:
        raise PrepareError(f"{name} has no split {', '.join(missing)}; it has {', '.join(available)}")
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for split in chosen:
        table = loaded[split]
        keep = rows_to_keep(len(table), percent)
        path = out / f"{split}.jsonl"
        with path.open("wb") as stream:
            write_jsonl(_batches(table, keep), stream, total=keep, label=split)
        written[path] = keep
    return written


def rows_to_keep(rows: int, percent: float) -> int:
    """The first `percent` % of `rows`, rounded, and at least one row of a split that has any."""
    if not rows:
        return 0
    return min(rows, max(1, math.floor(rows * percent / 100 + 0.5)))


def load_splits(name: str, cache_dir: Path | None) -> Any:
    """The dataset's splits as a `datasets.DatasetDict`; a local path never touches the network."""
    local = Path(name).expanduser()
    if local.exists():
        # Read by the hub client when `datasets` is first imported: set before that import.
        os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import datasets
    except ImportError:
        raise PrepareError("`datasets` is not installed: pip install -r requirements-dev.txt") from None
    cache = str(cache_dir) if cache_dir else None
    try:
        if local.is_file():
            return datasets.load_dataset(_builder(local), data_files={_split_name(local): str(local)}, cache_dir=cache)
        if local.is_dir():
            files = local_data_files(local)
            if files:
                builder = _builder(next(iter(files.values()))[0])
                data_files = {split: [str(path) for path in paths] for split, paths in files.items()}
                return datasets.load_dataset(builder, data_files=data_files, cache_dir=cache)
            return datasets.load_dataset(str(local), cache_dir=cache)
        return datasets.load_dataset(name, cache_dir=cache)
    except PrepareError:
        raise
    except Exception as exc:  # the library raises many types; all mean "this dataset cannot be loaded"
        raise PrepareError(f"cannot load dataset {name}: {type(exc).__name__}: {exc}") from exc


def local_data_files(folder: Path) -> dict[str, list[Path]]:
    """Data files directly in `folder`, by split (the name before the first '-' or '.'); one format only."""
    found: dict[str, list[Path]] = {}
    formats = set()
    for path in sorted(folder.iterdir()):
        kind = format_of(path.name)
        if path.is_file() and kind:
            formats.add("parquet" if kind == "parquet" else "json")
            found.setdefault(_split_name(path), []).append(path)
    if len(formats) > 1:
        raise PrepareError(f"{folder} mixes parquet and JSONL files: keep one format")
    return found


def _split_name(path: Path) -> str:
    return path.name.split(".", 1)[0].split("-", 1)[0]


def _builder(path: Path) -> str:
    return "parquet" if format_of(path.name) == "parquet" else "json"


def _batches(table: Any, keep: int) -> Iterator[list[dict[str, Any]]]:
    subset = table.select(range(keep)).with_format("arrow")
    for batch in subset.iter(batch_size=WRITE_BATCH_ROWS):
        yield batch.to_pylist()


def write_jsonl(batches: Iterator[list[dict[str, Any]]], stream: IO[bytes], total: int, label: str) -> None:
    """Rows as UTF-8 JSONL (non-ASCII kept as is), with a progress bar on stderr."""
    from tqdm import tqdm

    with tqdm(total=total, desc=label, unit=" rows", file=sys.stderr) as progress:
        for rows in batches:
            stream.write(b"".join(orjson.dumps(row, default=str, option=orjson.OPT_APPEND_NEWLINE) for row in rows))
            progress.update(len(rows))


def parse_upload_target(text: str) -> tuple[str, str]:
    """ "ultrachat/v1" -> ("ultrachat", "v1"): `upload --to`'s target, with the version named."""
    from autopilot.commands.upload import parse_upload_target as dataset_and_version

    dataset, version = dataset_and_version(text)
    if version is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not DATASET/VERSION, e.g. ultrachat/v1")
    return dataset, version


def _percent(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value <= 100:
        raise argparse.ArgumentTypeError(f"{value} must be above 0 and at most 100")
    return value


def _names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("name at least one split")
    return names
