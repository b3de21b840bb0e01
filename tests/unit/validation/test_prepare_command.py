"""`autopilot prepare`: the first N percent of each split of a local dataset, and the upload of the folder."""

from __future__ import annotations

import argparse
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, BinaryIO

import orjson
import pytest
from validation_helpers import conversation, jsonl, parquet

from autopilot.commands import prepare as prepare_command
from autopilot.commands import upload as upload_command
from autopilot.commands.exits import run_command
from shared.storage import BlobInfo

SPLITS = ("train_sft", "test_sft", "train_gen", "test_gen")


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="autopilot")
    prepare_command.register(parser.add_subparsers())
    args = parser.parse_args(["prepare", *argv])
    return run_command(args)


@pytest.fixture(scope="module")
def hub_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local copy of a hub dataset repository: data/<split>-00000-of-00001.parquet, 40 rows each."""
    root = tmp_path_factory.mktemp("ultrachat_like")
    (root / "data").mkdir()
    for number, split in enumerate(SPLITS):
        rows = [conversation(number * 1000 + i) for i in range(40)]
        (root / "data" / f"{split}-00000-of-00001.parquet").write_bytes(parquet(rows))
    return root


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach the hub; `prepare` itself must set HF_HUB_OFFLINE for a local dataset."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def prompt_ids(path: Path) -> list[str]:
    return [orjson.loads(line)["prompt_id"] for line in path.read_bytes().splitlines()]


def test_prepare_keeps_the_first_percent_of_each_split(hub_layout: Path, tmp_path: Path, capsys: Any) -> None:
    out = tmp_path / "out"

    code = run(
        ["--dataset", str(hub_layout), "--split-pc", "25", "--out", str(out), "--cache-dir", str(tmp_path / "c")]
    )

    assert code == 0
    assert sorted(path.name for path in out.iterdir()) == sorted(f"{split}.jsonl" for split in SPLITS)
    assert prompt_ids(out / "train_sft.jsonl") == [f"id-{i:06d}" for i in range(10)]
    assert prompt_ids(out / "test_gen.jsonl") == [f"id-{3000 + i:06d}" for i in range(10)]
    row = orjson.loads((out / "train_sft.jsonl").read_bytes().splitlines()[0])
    assert row == conversation(0)
    printed = capsys.readouterr()
    assert "valid: 20 train, 20 test rows in 4 files" in printed.out
    assert "train_sft" in printed.err  # the progress bar


def test_prepare_takes_only_the_splits_named_and_a_rejected_verdict_exits_1(
    hub_layout: Path, tmp_path: Path, capsys: Any
) -> None:
    out = tmp_path / "out"

    assert (
        run(
            [
                "--dataset",
                str(hub_layout),
                "--splits",
                "train_sft,test_sft",
                "--out",
                str(out),
                "--cache-dir",
                str(tmp_path / "c"),
            ]
        )
        == 1  # 2 training rows are fewer than the validator's minimum of 10: rejected
    )

    assert sorted(path.name for path in out.iterdir()) == ["test_sft.jsonl", "train_sft.jsonl"]
    assert len(prompt_ids(out / "train_sft.jsonl")) == 2  # 5 % of 40
    assert "is rejected" in capsys.readouterr().err


def test_an_unknown_split_or_dataset_exits_2(hub_layout: Path, tmp_path: Path, capsys: Any) -> None:
    cache = str(tmp_path / "c")
    assert run(["--dataset", str(hub_layout), "--splits", "train", "--out", str(tmp_path), "--cache-dir", cache]) == 2
    assert "has no split train; it has" in capsys.readouterr().err


def test_a_folder_of_split_files_and_a_single_file_load_too(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "train.jsonl").write_bytes(jsonl(conversation(i) for i in range(10)))
    (source / "test.jsonl").write_bytes(jsonl(conversation(100 + i) for i in range(10)))
    cache = tmp_path / "c"

    written = prepare_command.prepare_dataset(str(source), 50, tmp_path / "a", cache_dir=cache)
    single = prepare_command.prepare_dataset(str(source / "train.jsonl"), 100, tmp_path / "b", cache_dir=cache)

    assert {path.name: rows for path, rows in written.items()} == {"test.jsonl": 5, "train.jsonl": 5}
    assert {path.name: rows for path, rows in single.items()} == {"train.jsonl": 10}
    assert os.environ["HF_HUB_OFFLINE"] == "1"


@pytest.mark.parametrize(
    ("rows", "percent", "kept"), [(0, 5, 0), (1, 5, 1), (40, 5, 2), (207865, 5, 10393), (30, 100, 30)]
)
def test_rows_to_keep(rows: int, percent: float, kept: int) -> None:
    assert prepare_command.rows_to_keep(rows, percent) == kept


@pytest.mark.parametrize("value", ["ultrachat", "a/b/c", "/v1", "ultrachat/"])
def test_an_upload_target_is_dataset_slash_version(value: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        prepare_command.parse_upload_target(value)


class FakeBlobStore:
    """Keeps uploaded blobs in a dict, in the order they came."""

    def __init__(self) -> None:
        self.blobs: dict[tuple[str, str], bytes] = {}
        self.md5s: dict[tuple[str, str], str] = {}

    def upload(
        self,
        container: str,
        name: str,
        data: bytes | IO[bytes],
        content_type: str = "",
        content_md5: str = "",
        progress: Callable[[int, int | None], None] | None = None,
    ) -> BlobInfo:
        content = data if isinstance(data, bytes) else data.read()
        if progress is not None:
            progress(len(content), len(content))
        self.blobs[(container, name)] = content
        self.md5s[(container, name)] = content_md5
        return BlobInfo(container, name, self.url(container, name), "etag", len(content), content_md5)

    def list_blobs(self, container: str, prefix: str) -> list[BlobInfo]:
        return [
            BlobInfo(where, name, self.url(where, name), "etag", len(content))
            for (where, name), content in self.blobs.items()
            if where == container and name.startswith(prefix)
        ]

    def open_read(self, container: str, name: str) -> BinaryIO:
        return io.BytesIO(self.blobs[(container, name)])

    def url(self, container: str, name: str) -> str:
        return f"memory://{container}/{name}"


def test_upload_sends_data_files_and_the_manifest_last(tmp_path: Path) -> None:
    (tmp_path / "autopilot.json").write_text('{"description": "x"}')
    (tmp_path / "train_sft.jsonl").write_bytes(jsonl(conversation(i) for i in range(3)))
    (tmp_path / "test_sft.jsonl").write_bytes(jsonl(conversation(i) for i in range(3, 5)))
    (tmp_path / "notes.txt").write_text("not part of the dataset")
    store = FakeBlobStore()

    run_id = upload_command.upload_folder(
        tmp_path, "ultrachat", "v1", report=lambda line: None, store=store, container="training-data"
    )

    names = ["ultrachat/v1/test_sft.jsonl", "ultrachat/v1/train_sft.jsonl", "ultrachat/v1/autopilot.json"]
    assert list(store.blobs) == [("training-data", name) for name in names]
    assert store.blobs[("training-data", "ultrachat/v1/train_sft.jsonl")] == (tmp_path / "train_sft.jsonl").read_bytes()
    # The same Content-MD5 and run id as `autopilot upload`: prepare uploads through its code.
    assert store.md5s[("training-data", "ultrachat/v1/train_sft.jsonl")] == upload_command.md5_of(
        tmp_path / "train_sft.jsonl"
    )
    files = upload_command.dataset_files(tmp_path)
    assert run_id == upload_command.expected_run_id("ultrachat", files)


@pytest.mark.integration
def test_prepare_uploads_the_folder_to_azurite(
    hub_layout: Path, tmp_path: Path, azurite: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.storage.blob import BlobServiceClient

    monkeypatch.setenv("AzureWebJobsStorage", azurite)
    monkeypatch.setenv("AUTOPILOT_TRAINING_CONTAINER", "prepare-test")
    out = tmp_path / "out"
    out.mkdir()
    (out / "autopilot.json").write_text("{}")

    argv = ["--dataset", str(hub_layout), "--splits", "train_sft,test_sft", "--split-pc", "50", "--out", str(out)]
    assert run([*argv, "--cache-dir", str(tmp_path / "c"), "--upload", "ultrachat/v1"]) == 0

    container = BlobServiceClient.from_connection_string(azurite).get_container_client("prepare-test")
    blobs = {blob.name: blob for blob in container.list_blobs(name_starts_with="ultrachat/v1/")}
    assert set(blobs) == {"ultrachat/v1/train_sft.jsonl", "ultrachat/v1/test_sft.jsonl", "ultrachat/v1/autopilot.json"}
    uploaded = container.download_blob("ultrachat/v1/train_sft.jsonl").readall()
    assert uploaded == (out / "train_sft.jsonl").read_bytes()
    assert len(uploaded.splitlines()) == 20
    assert blobs["ultrachat/v1/autopilot.json"].last_modified >= blobs["ultrachat/v1/train_sft.jsonl"].last_modified


def test_prepare_json_prints_the_verdict_on_stdout_and_refuses_to_upload_a_rejected_dataset(
    hub_layout: Path, tmp_path: Path, capsys: Any
) -> None:
    out = tmp_path / "out"
    argv = ["--source", str(hub_layout), "--splits", "train_sft", "--out", str(out), "--cache-dir", str(tmp_path / "c")]

    # No storage is set up: an upload attempt would fail with exit 3, not 1.
    assert run([*argv, "--json", "--upload", "ultrachat/v1"]) == 1

    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["valid"] is False and result["uploaded"] is None
    assert "nothing was uploaded" in captured.err
