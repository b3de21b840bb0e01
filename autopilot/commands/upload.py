"""`autopilot upload DIR --to NAME[/VERSION]`: put a dataset folder into the training container.

The upload target is spelled the same in every command: `--to DATASET/VERSION` (`prepare --to` too). The old
spellings stay: `upload --dataset NAME [--version V]` and `prepare --upload DATASET/VERSION`.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from autopilot.commands.exits import EXIT_OK, CommandError, NotFound
from autopilot.commands.exits import EXIT_USAGE as EXIT_USAGE
from autopilot.commands.progress import BytesHook, Progress
from shared.datasets import MANIFEST_NAME, content_hash, file_md5, make_run_id, split_of

if TYPE_CHECKING:
    from shared.storage import BlobStore

UPLOADS_FILE = "uploads.json"
# How long after an upload `run ID --follow` waits for its run to appear, rather than giving up at once.
SETTLING_S = 600.0
DEFAULT_VERSION_HELP = "the version defaults to the current UTC time, e.g. 20261122-101500"


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("upload", help="upload a dataset folder as <dataset>/<version>/ (manifest last)")
    parser.add_argument("directory", type=Path, metavar="DIR", help="the dataset folder: train*, test*, autopilot.json")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--to",
        type=parse_upload_target,
        metavar="DATASET[/VERSION]",
        help=f"where the blobs go: DATASET/VERSION/<file>, e.g. ahoy-chat/v1; {DEFAULT_VERSION_HELP}",
    )
    target.add_argument(
        "--dataset", metavar="NAME", help="the dataset name alone (the old spelling of --to NAME, with --version)"
    )
    parser.add_argument(
        "--version", metavar="V", help=f"with --dataset: the version (old spelling); {DEFAULT_VERSION_HELP}"
    )
    parser.add_argument("--json", action="store_true", help="print the run id, target and skipped files as JSON")
    parser.set_defaults(func=run)


def parse_upload_target(text: str) -> tuple[str, str | None]:
    """ "ultrachat/v1" -> ("ultrachat", "v1"), "ultrachat" -> ("ultrachat", None): the `--to` of every command."""
    parts = text.strip().split("/")
    if len(parts) > 2 or not all(part.strip() for part in parts):
        raise argparse.ArgumentTypeError(f"{text!r} is not DATASET/VERSION, e.g. ultrachat/v1")
    return parts[0], (parts[1] if len(parts) == 2 else None)


def upload_target(args: argparse.Namespace) -> tuple[str, str]:
    """The (dataset, version) of `--to`, or of the old `--dataset`/`--version`; the version defaults to the time."""
    dataset, version = args.to if args.to is not None else (args.dataset, None)
    if args.version is not None:
        if version is not None:
            raise CommandError(f"two versions: --to {dataset}/{version} and --version {args.version}", EXIT_USAGE)
        version = args.version
    return dataset, version or datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")


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


def content_type_of(path: Path) -> str:
    if path.name == MANIFEST_NAME:
        return "application/json"
    return "application/x-ndjson" if path.name.endswith(".jsonl") else "application/octet-stream"


def upload_files(
    files: list[Path],
    dataset: str,
    version: str,
    store: BlobStore,
    container: str,
    report: Callable[[str], None],
    progress: Progress | None = None,
) -> dict[str, str]:
    """Upload the files in order as `<dataset>/<version>/<file>`, each with its Content-MD5; {file name: MD5}.

    With `progress` drawing on a terminal, a bar shows each file's bytes as they go.
    """
    md5s = {}
    for path in files:
        # Stored as the blob's Content-MD5, which spares the app reading the file to identify the run.
        md5 = md5_of(path)
        name = f"{dataset}/{version}/{path.name}"
        with path.open("rb") as handle, _byte_bar(progress, path) as sent:
            blob = store.upload(container, name, handle, content_type_of(path), md5, sent)
        report(f"uploaded {path.name} ({blob.size:,} bytes) -> {container}/{blob.name}")
        md5s[path.name] = md5
    return md5s


def _byte_bar(progress: Progress | None, path: Path) -> AbstractContextManager[BytesHook | None]:
    return progress.transfer(path.name, path.stat().st_size) if progress is not None else nullcontext(None)


def upload_folder(
    directory: Path,
    dataset: str,
    version: str,
    report: Callable[[str], None] = print,
    store: BlobStore | None = None,
    container: str | None = None,
    progress: Progress | None = None,
) -> str:
    """Upload the folder (manifest last) and return the id of the run its content will get.

    Without `store`/`container`, the settings' storage and training container. The run id is remembered
    in the state folder, so that `autopilot run ID --follow` waits for it while the upload settles.
    """
    from autopilot.commands.common import cli_settings

    files = dataset_files(directory)
    state_dir = None
    if store is None or container is None:
        from shared.storage import AzureBlobStore

        settings = cli_settings()
        store = store or AzureBlobStore(settings.storage_connection)
        container = container or settings.training_container
        state_dir = settings.state_dir
    md5s = upload_files(files, dataset, version, store, container, report, progress)
    run_id = make_run_id(dataset, content_hash(md5s.items()))
    if state_dir is not None:
        remember_upload(state_dir, run_id)
    return run_id


def remember_upload(state_dir: Path, run_id: str) -> None:
    path = state_dir / UPLOADS_FILE
    try:
        known = json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        known = {}
    now = time.time()
    known = {key: at for key, at in known.items() if now - float(at) < SETTLING_S}
    known[run_id] = now
    state_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(known))


def upload_settling(run_id: str, state_dir: Path | None = None) -> bool:
    """Whether this machine uploaded the folder of run `run_id` within the last SETTLING_S seconds."""
    if state_dir is None:
        from autopilot.commands.common import settings_env
        from autopilot.local.stack import default_state_dir

        state_dir = default_state_dir(settings_env())
    path = state_dir / UPLOADS_FILE
    try:
        at = json.loads(path.read_text()).get(run_id) if path.exists() else None
    except ValueError:
        return False
    return at is not None and time.time() - float(at) < SETTLING_S


def check_folder(directory: Path) -> tuple[list[Path], list[str]]:
    """The folder's dataset files and the names of those it skips; NotFound without a folder or a train file."""
    if not directory.is_dir():
        raise NotFound(f"{directory} is not a folder")
    files = dataset_files(directory)
    if not any(split_of(p.name) == "train" for p in files):
        raise CommandError(
            f"{directory} has no train file (train*.jsonl, train*.jsonl.gz or train*.parquet)", EXIT_USAGE
        )
    skipped = sorted(p.name for p in directory.iterdir() if p.is_file() and p not in files)
    return files, skipped


def run(args: argparse.Namespace) -> int:
    directory: Path = args.directory
    dataset, version = upload_target(args)
    _, skipped = check_folder(directory)
    # Progress goes to stderr (a bar of bytes on a terminal): stdout carries only the result.
    progress = Progress()
    if skipped:
        progress.say(f"skipping files that are not part of a dataset folder: {', '.join(skipped)}")
    run_id = upload_folder(directory, dataset, version, report=progress.say, progress=progress)
    if args.json:
        result = {"run_id": run_id, "dataset": dataset, "version": version, "skipped": skipped}
        print(json.dumps(result, indent=1))
    else:
        print(f"run id: {run_id}   (follow it with: autopilot run {run_id} --follow)")
    return EXIT_OK
