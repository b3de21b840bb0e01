"""`autopilot validate`: exit codes, the table, --json, --strict, --max-seq-length and --out-clean."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import orjson
import pytest
from validation_helpers import CORPUS, bad_conversation, conversation, jsonl, parquet

from autopilot.commands import validate as validate_command


def run(argv: list[str]) -> int:
    """The subcommand as `autopilot` runs it, without the other commands' imports."""
    parser = argparse.ArgumentParser(prog="autopilot")
    validate_command.register(parser.add_subparsers())
    args = parser.parse_args(["validate", *argv])
    return int(args.func(args))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A dataset folder: 200 training rows (one bad) and 20 test rows."""
    data = tmp_path / "dataset"
    data.mkdir()
    (data / "train.jsonl").write_bytes(jsonl(bad_conversation(i) if i == 50 else conversation(i) for i in range(200)))
    (data / "test.jsonl").write_bytes(jsonl(conversation(i) for i in range(1000, 1020)))
    (data / "autopilot.json").write_text("{}")
    return data


def test_a_valid_folder_exits_0_and_prints_the_table(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run([str(folder)]) == 0

    out = capsys.readouterr().out
    assert "train.jsonl  train   200   199    1" in out
    assert out.strip().splitlines()[-1].startswith("VALID: 199 train, 20 test rows in 2 files; dropped 1 bad row")


def test_strict_turns_one_bad_row_into_exit_1(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run([str(folder), "--strict"]) == 1
    assert "REJECTED: train.jsonl has 1 bad row of 200 (strict validation allows none)" in capsys.readouterr().out


def test_json_prints_the_report(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run([str(folder / "train.jsonl"), "--json", "--max-seq-length", "10"]) == 0

    report = json.loads(capsys.readouterr().out)
    assert report["valid"] is True
    assert report["options"]["max_seq_length"] == 10
    assert report["warnings"]["seq_too_long"]["count"] == 199
    assert report["statistics"]["train"]["over_max_seq_length"] == 199


def test_strict_seq_length_drops_over_length_rows(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run([str(folder), "--max-seq-length", "10", "--strict-seq-length", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["errors"]["seq_too_long"]["count"] == 220


def test_out_clean_writes_jsonl_copies_even_of_parquet(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (folder / "test.jsonl").unlink()
    (folder / "test.parquet").write_bytes(parquet([conversation(i) for i in range(1000, 1020)]))
    out = tmp_path / "clean"

    assert run([str(folder), "--out-clean", str(out), "--json"]) == 0

    report = json.loads(capsys.readouterr().out)
    assert report["clean_files"] == {"test.parquet": str(out / "test.jsonl"), "train.jsonl": str(out / "train.jsonl")}
    train = (out / "train.jsonl").read_bytes().splitlines()
    assert len(train) == 199 and b'"id-000050"' not in b"".join(train)
    assert [orjson.loads(line)["prompt_id"] for line in (out / "test.jsonl").read_bytes().splitlines()][:2] == [
        "id-001000",
        "id-001001",
    ]


def test_out_clean_keeps_nothing_of_a_rejected_dataset(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "clean"

    assert run([str(folder), "--strict", "--out-clean", str(out)]) == 1

    assert list(out.iterdir()) == []
    assert "no cleaned copies were kept" in capsys.readouterr().err


def test_an_invalid_dataset_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert run([str(CORPUS / "no_valid_rows.jsonl")]) == 1
    assert "REJECTED: " in capsys.readouterr().out


def test_a_name_without_split_is_validated_as_train_with_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(CORPUS / "good.jsonl", tmp_path / "good.jsonl")

    assert run([str(tmp_path / "good.jsonl")]) == 0
    assert "validated as train" in capsys.readouterr().err
    assert run([str(tmp_path / "good.jsonl"), "--split", "test"]) == 1  # then there is no train file


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["missing.jsonl"], "no such file or folder"),
        (["README.md"], "not a .jsonl, .jsonl.gz or .parquet file"),
        (["empty-folder"], "holds no train*, test* or validation* file"),
    ],
)
def test_usage_and_io_errors_exit_2(
    tmp_path: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "README.md").write_text("# not data")
    (tmp_path / "empty-folder").mkdir()

    assert run([str(tmp_path / arg) for arg in argv]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux /proc")
def test_a_file_that_fails_to_read_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Reading /proc/self/mem at offset 0 fails with EIO: a stand-in for a disk or network error.
    (tmp_path / "train.jsonl").symlink_to("/proc/self/mem")

    assert run([str(tmp_path / "train.jsonl")]) == 2
    assert "train.jsonl: cannot read" in capsys.readouterr().err


def test_a_bad_option_value_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exit_:
        run(["x.jsonl", "--max-seq-length", "0"])
    assert exit_.value.code == 2


def test_the_autopilot_command_line_runs_validate(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from autopilot.cli import main

    assert main(["validate", str(folder), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["valid"] is True
