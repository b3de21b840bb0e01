"""`autopilot upload DIR --dataset NAME [--version V]`: put a dataset folder into the training container."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path

from shared.datasets import MANIFEST_NAME, content_hash, file_md5, make_run_id, split_of

EXIT_USAGE = 2


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("upload", help="upload a dataset folder as <dataset>/<version>/ (manifest last)")
    parser.add_argument("directory", type=Path, metavar="DIR")
    parser.add_argument("--dataset", required=True, metavar="NAME")
    parser.add_argument("--version", metavar="V", help="default: the current UTC time, e.g. 20261122-101500")
    parser.set_defaults(func=run)


def dataset_files(directory: Path) -> list[Path]:
    """The folder's data files and manifest, manifest last (its arrival starts the run at once)."""
    files = sorted(p for p in directory.iterdir() if p.is_file() and (split_of(p.name) or p.name == MANIFEST_NAME))
    return sorted(files, key=lambda p: p.name == MANIFEST_NAME)


def md5_of(path: Path) -> str:
    with path.open("rb") as handle:
        return file_md5(handle)


def expected_run_id(dataset: str, files: list[Path]) -> str:
    """The run id the app gives a folder of these files."""
    return make_run_id(dataset, content_hash((path.name, md5_of(path)) for path in files))


def upload_folder(directory: Path, dataset: str, version: str, report=print) -> str:  # type: ignore[no-untyped-def]
    """Upload the folder and return the id of the run its content will get."""
    from autopilot.commands.common import cli_settings
    from shared.storage import AzureBlobStore

    files = dataset_files(directory)
    settings = cli_settings()
    store = AzureBlobStore(settings.storage_connection)
    md5s = {}
    for path in files:
        content_type = "application/json" if path.name == MANIFEST_NAME else "application/x-ndjson"
        # Stored as the blob's Content-MD5, which spares the app reading the file to identify the run.
        md5s[path.name] = md5_of(path)
        with path.open("rb") as handle:
            blob = store.upload(
                settings.training_container, f"{dataset}/{version}/{path.name}", handle, content_type, md5s[path.name]
            )
        report(f"uploaded {path.name} ({blob.size:,} bytes) -> {settings.training_container}/{blob.name}")
    return make_run_id(dataset, content_hash(md5s.items()))


def run(args: argparse.Namespace) -> int:
    directory: Path = args.directory
    if not directory.is_dir():
        print(f"error: {directory} is not a folder", file=sys.stderr)
        return EXIT_USAGE
    files = dataset_files(directory)
    if not any(split_of(p.name) == "train" for p in files):
        print(
            f"error: {directory} has no train file (train*.jsonl, train*.jsonl.gz or train*.parquet)", file=sys.stderr
        )
        return EXIT_USAGE
    skipped = sorted(p.name for p in directory.iterdir() if p.is_file() and p not in files)
    if skipped:
        print(f"skipping files that are not part of a dataset folder: {', '.join(skipped)}")
    version = args.version or datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    run_id = upload_folder(directory, args.dataset, version)
    print(f"run id: {run_id}   (follow it with: autopilot run {run_id} --follow)")
    return 0
