"""`autopilot validate PATH...`: check a chat fine-tuning dataset and print a table or the JSON report."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from shared.errors import AutopilotError, DatasetRejectedError
from shared.validation import (
    SPLITS,
    DatasetSource,
    ValidationOptions,
    format_of,
    split_of,
    validate_dataset,
)

if TYPE_CHECKING:
    from shared.datasets import Manifest
    from shared.settings import Settings

EXIT_VALID = 0
EXIT_INVALID = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """A path or option the command cannot use: exit code 2."""


def register(subparsers: Any) -> None:
    defaults = ValidationOptions()
    parser = subparsers.add_parser(
        "validate",
        help="check a chat fine-tuning dataset (JSONL, JSONL.gz or parquet) before it costs GPU hours",
        description=(
            "Validate data files, or a dataset folder as the app's validate stage does, in one streaming pass "
            "each. A file's split comes from its name: train*, test*, validation*/valid*/val*. A folder's files "
            "are those the app takes (the others are named and skipped), its autopilot.json manifest is read, and "
            "the options default to the app's settings (environment, then local.settings.json), as in the stage. "
            "Exit code 0: valid; 1: rejected; 2: usage or I/O error."
        ),
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="a data file or a folder of them")
    parser.add_argument("--json", action="store_true", help="print the JSON report instead of tables")
    parser.add_argument(
        "--strict", action="store_true", help="reject the dataset on any bad row (default: AUTOPILOT_STRICT_VALIDATION)"
    )
    parser.add_argument(
        "--max-seq-length",
        type=_positive_int,
        metavar="N",
        help="estimated tokens above which a row is flagged (default: the manifest's parameters.max_seq_length, "
        "else the setting AUTOPILOT_MAX_SEQ_LENGTH, else 2048)",
    )
    parser.add_argument(
        "--strict-seq-length", action="store_true", help="over-length rows are errors (dropped), not warnings"
    )
    parser.add_argument(
        "--max-bad-row-fraction",
        type=_fraction,
        metavar="F",
        help="share of bad rows a file may have (default: the setting AUTOPILOT_MAX_BAD_ROW_FRACTION, else 0.01)",
    )
    parser.add_argument(
        "--min-train-rows",
        type=_positive_int,
        default=defaults.min_train_rows,
        metavar="N",
        help=f"valid training rows needed (default {defaults.min_train_rows})",
    )
    parser.add_argument("--split", choices=SPLITS, help="split of files whose name implies none (default: train)")
    parser.add_argument(
        "--out-clean",
        type=Path,
        metavar="DIR",
        help="write each file's kept rows to DIR/<name>.jsonl (removed again if the dataset is rejected)",
    )
    parser.set_defaults(func=run_validate)


def run_validate(args: argparse.Namespace) -> int:
    from autopilot.commands.common import cli_settings

    try:
        sources = collect_sources(args.paths, args.split)
        manifest = folder_manifest(args.paths)
    except DatasetRejectedError as exc:
        # What the stage records on the run when the manifest is broken: the dataset is rejected.
        print(f"autopilot validate: rejected: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except (UsageError, AutopilotError) as exc:
        print(f"autopilot validate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        options = stage_options(cli_settings(need_storage=False), manifest, args)
        copies = CleanCopies(args.out_clean, sources) if args.out_clean else None
        try:
            report = validate_dataset(sources, options, copies.open if copies else None)
        finally:
            if copies:
                copies.close()
        if copies:
            if report.valid:
                report.clean_files.update(copies.written())
            else:
                copies.remove()
                print(f"note: dataset rejected, so no cleaned copies were kept in {args.out_clean}", file=sys.stderr)
    except (UsageError, AutopilotError) as exc:
        print(f"autopilot validate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(report.to_table())
    return EXIT_VALID if report.valid else EXIT_INVALID


def stage_options(settings: Settings, manifest: Manifest | None, args: argparse.Namespace) -> ValidationOptions:
    """The options the validate stage uses (shared/stages/validation.py), the command's flags over them."""
    max_seq_length = settings.max_seq_length
    if manifest is not None:
        max_seq_length = int(manifest.parameters.get("max_seq_length", max_seq_length) or 0) or max_seq_length
    return ValidationOptions(
        strict=args.strict or settings.strict_validation,
        max_bad_row_fraction=(
            settings.max_bad_row_fraction if args.max_bad_row_fraction is None else args.max_bad_row_fraction
        ),
        max_seq_length=max_seq_length if args.max_seq_length is None else args.max_seq_length,
        strict_seq_length=args.strict_seq_length,
        min_train_rows=args.min_train_rows,
    )


def folder_manifest(paths: list[Path]) -> Manifest | None:
    """The manifest of the one dataset folder named, parsed as the stage parses it; None without one."""
    if not any(path.is_dir() for path in paths):
        return None
    from shared.datasets import MANIFEST_NAME, Manifest

    folders = [path for path in paths if path.is_dir() and (path / MANIFEST_NAME).is_file()]
    if len(folders) > 1:
        raise UsageError("more than one folder with a manifest: validate one dataset folder at a time")
    if not folders:
        return None
    manifest_path = folders[0] / MANIFEST_NAME
    return Manifest.parse(manifest_path.read_bytes(), str(manifest_path))


def collect_sources(paths: list[Path], default_split: str | None) -> list[DatasetSource]:
    """One source per data file named, and per file the app would take from a folder named (the rest: skipped)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            # Imported for folders only: files alone start faster (benchmarks/cli_startup.py).
            from shared.datasets import MANIFEST_NAME

            children = sorted(child for child in path.iterdir() if child.is_file())
            # The files intake puts on a run: a split in the name and a data format; the manifest is read apart.
            found = [child for child in children if split_of(child.name)]
            skipped = [child.name for child in children if child not in found and child.name != MANIFEST_NAME]
            if skipped:
                print(
                    f"note: skipped in {path}, as the app would skip them (no train*/test*/validation* name with "
                    f".jsonl, .jsonl.gz or .parquet): {', '.join(skipped)}",
                    file=sys.stderr,
                )
            if not found:
                raise UsageError(
                    f"{path}: folder holds no train*, test* or validation* file (.jsonl, .jsonl.gz or .parquet)"
                )
            files.extend(found)
        elif path.exists():
            if format_of(path.name) is None:
                raise UsageError(f"{path}: not a .jsonl, .jsonl.gz or .parquet file")
            files.append(path)
        else:
            raise UsageError(f"{path}: no such file or folder")
    unnamed = [file.name for file in files if split_of(file.name) is None]
    if unnamed and default_split is None:
        shown = ", ".join(unnamed[:5]) + (f" and {len(unnamed) - 5} more" if len(unnamed) > 5 else "")
        print(f"note: validated as train, since their names imply no split (see --split): {shown}", file=sys.stderr)
    return [DatasetSource.from_path(file, split_of(file.name) or default_split or "train") for file in files]


class CleanCopies:
    """Where `--out-clean` writes each source's cleaned copy: DIR/<name without suffix>.jsonl."""

    def __init__(self, folder: Path, sources: list[DatasetSource]) -> None:
        self.folder = folder
        self.paths: dict[str, Path] = {}
        for source in sources:
            target = folder / clean_name(source.name)
            if target in self.paths.values():
                raise UsageError(f"two files would have the same cleaned copy {target}: rename one")
            self.paths[source.name] = target
        self.opened: dict[str, BinaryIO] = {}

    def open(self, source: DatasetSource) -> BinaryIO:
        self.folder.mkdir(parents=True, exist_ok=True)
        stream = self.paths[source.name].open("wb")
        self.opened[source.name] = stream
        return stream

    def close(self) -> None:
        for stream in self.opened.values():
            stream.close()

    def written(self) -> dict[str, str]:
        return {name: str(self.paths[name]) for name in self.opened}

    def remove(self) -> None:
        for name in self.opened:
            self.paths[name].unlink(missing_ok=True)


def clean_name(file_name: str) -> str:
    """`train.parquet` -> `train.jsonl`: cleaned copies are always plain JSONL."""
    kind = format_of(file_name)
    stem = file_name[: -len(kind) - 1] if kind else file_name
    return f"{stem}.jsonl"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} must lie between 0 and 1")
    return value
