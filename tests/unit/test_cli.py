"""The command line's one voice: exit codes, messages with what to do, no traceback, JSON on stdout."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from autopilot.cli import build_parser, main
from autopilot.commands import common, runs
from autopilot.commands.exits import (
    EXIT_BUG,
    EXIT_FAILED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CommandError,
    classify,
)
from autopilot.commands.upload import remember_upload, upload_settling
from autopilot.local.processes import PROJECT_ROOT
from autopilot.local.stack import default_state_dir
from shared.errors import CannotCancelError, ConfigurationError, NothingToRestoreError, TransientError
from shared.ledger import Run, RunStage
from tests.fakes import FakeRunLedger

SAMPLE = PROJECT_ROOT / "samples" / "ahoy-chat" / "v1"
AZURE_STORAGE = "DefaultEndpointsProtocol=https;AccountName=fake;AccountKey=ZmFrZQ==;EndpointSuffix=core.windows.net"


@pytest.fixture
def stack_down(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """GIVEN settings that point at a local stack nobody started (ports where nothing listens)."""
    for name, port in (("BLOB", 1), ("QUEUE", 2), ("TABLE", 3), ("RUNNER", 4), ("EVENTGRID", 5)):
        monkeypatch.setenv(f"AUTOPILOT_{name}_PORT", str(port))
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    monkeypatch.setenv("AUTOPILOT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("AUTOPILOT_DEBUG", raising=False)
    return tmp_path


@pytest.mark.parametrize(
    "argv",
    [
        ["runs"],
        ["run", "r1"],
        ["run", "r1", "--follow", "--timeout", "1"],
        ["cancel", "r1"],
        ["rejected"],
        ["replay", "m1"],
        ["endpoints"],
        ["chat", "e1", "hello"],
        ["restore", "e1"],
        ["restore", "e1", "--no-wait", "--json"],
        ["cancel", "r1", "--no-wait", "--json"],
        ["upload", str(SAMPLE), "--dataset", "ahoy"],
        ["upload", str(SAMPLE), "--to", "ahoy/v1", "--json"],
        ["status"],
        ["cleanup", "--dry-run"],
        ["prepare", "--source", str(SAMPLE), "--out", "{tmp}/out", "--to", "ahoy/v1"],
    ],
)
def test_every_command_with_the_stack_down_says_autopilot_up_and_exits_3(
    stack_down: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([word.replace("{tmp}", str(stack_down)) for word in argv])

    err = capsys.readouterr().err
    assert code == EXIT_UNREACHABLE
    assert "autopilot up" in err
    assert "Traceback" not in err
    # What went wrong and what to do, at the end (prepare's progress on the splits it wrote comes before);
    # `status` reports the stack on stdout, and says on stderr what to start.
    failure = err if argv[0] == "status" else err[err.index(f"autopilot {argv[0]}: error: ") :]
    assert len(failure.splitlines()) <= 2


def test_debug_adds_the_traceback(stack_down: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runs", "--debug"]) == EXIT_UNREACHABLE
    err = capsys.readouterr().err
    assert "Traceback" in err and "autopilot up" in err


@pytest.fixture
def ledger(monkeypatch: pytest.MonkeyPatch, stack_down: Path) -> FakeRunLedger:
    """GIVEN a ledger with one training run, in place of the storage table of an Azure account."""
    monkeypatch.setenv("AzureWebJobsStorage", AZURE_STORAGE)
    fake = FakeRunLedger()
    run = Run("r1", "chat", "v1", "c" * 64, "simulated", "2026-11-22T05:00:00+00:00", stage=RunStage.TRAINING)
    fake.create(run)
    monkeypatch.setattr(common, "open_ledger", lambda settings: fake)
    return fake


@pytest.mark.parametrize(
    "argv", [["run", "TYPO"], ["run", "TYPO", "--follow"], ["cancel", "TYPO"], ["restore", "TYPO"]]
)
def test_an_unknown_run_or_endpoint_exits_2(
    ledger: FakeRunLedger, argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runs, "APPEAR_WITHIN_S", 0.2)

    code = main(argv)

    err = capsys.readouterr().err
    assert code == EXIT_USAGE
    assert "TYPO" in err and "Traceback" not in err


def test_follow_of_an_unknown_run_gives_up_quickly(ledger: FakeRunLedger) -> None:
    started = time.monotonic()

    found = runs.follow(ledger, "TYPO", lambda line: None, timeout=60, interval=0.01, appear_within=0.1)

    assert found is None
    assert time.monotonic() - started < 5


def test_follow_waits_for_a_run_whose_upload_is_settling(tmp_path: Path) -> None:
    remember_upload(tmp_path, "chat-abc")

    assert upload_settling("chat-abc", tmp_path)
    assert not upload_settling("chat-other", tmp_path)


def test_run_follow_json_keeps_progress_off_stdout(ledger: FakeRunLedger, capsys: pytest.CaptureFixture[str]) -> None:
    run = ledger.rows["r1"]
    run.stage_times = {"received": "2026-11-22T05:00:00.000000+00:00"}
    from shared.ledger import RunStatus, end_run

    end_run(run, RunStatus.SUCCEEDED)

    assert main(["run", "r1", "--follow", "--json"]) == 0

    captured = capsys.readouterr()
    assert json.loads(captured.out)["run_id"] == "r1"
    assert "received" in captured.err


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (CommandError("x", EXIT_FAILED), EXIT_FAILED),
        (NothingToRestoreError("no run of this app has deployed to endpoint e"), EXIT_USAGE),
        (ConfigurationError("AzureWebJobsStorage is missing"), EXIT_USAGE),
        (TransientError("could not list: connection refused"), EXIT_UNREACHABLE),
        (CannotCancelError("run r1 has already ended"), EXIT_FAILED),
        (ConnectionRefusedError(111, "Connection refused"), EXIT_UNREACHABLE),
        (KeyError("surprise"), EXIT_BUG),
    ],
)
def test_each_error_has_one_exit_code(error: BaseException, code: int) -> None:
    assert classify(error).exit_code == code


def test_the_state_folder_is_the_projects_wherever_the_command_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)

    assert default_state_dir({}) == PROJECT_ROOT / ".autopilot"
    assert default_state_dir({"AUTOPILOT_STATE_DIR": "elsewhere"}) == PROJECT_ROOT / "elsewhere"
    assert default_state_dir({"AUTOPILOT_STATE_DIR": str(tmp_path / "s")}) == tmp_path / "s"
    monkeypatch.delenv("AUTOPILOT_STATE_DIR", raising=False)
    assert common.settings_env()["AUTOPILOT_STATE_DIR"] == str(PROJECT_ROOT / ".autopilot")


def test_validate_dir_agrees_with_the_stage_on_a_bad_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "chat" / "v1"
    folder.mkdir(parents=True)
    for item in SAMPLE.iterdir():
        (folder / item.name).write_bytes(item.read_bytes())
    (folder / "autopilot.json").write_text('{"parameters": [1, 2]}')
    (folder / "test_sft.json").write_text("{}")

    code = main(["validate", str(folder)])

    err = capsys.readouterr().err
    assert code == EXIT_FAILED
    assert "manifest key parameters must be an object" in err
    assert "test_sft.json" in err  # named as skipped


def test_validate_dir_uses_the_manifests_max_seq_length(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "chat" / "v1"
    folder.mkdir(parents=True)
    for item in SAMPLE.iterdir():
        (folder / item.name).write_bytes(item.read_bytes())
    (folder / "autopilot.json").write_text('{"parameters": {"max_seq_length": 5}}')

    main(["validate", str(folder), "--json"])

    assert json.loads(capsys.readouterr().out)["options"]["max_seq_length"] == 5


def test_every_option_has_help_text() -> None:
    parser = build_parser()
    subparsers = next(action for action in parser._actions if action.choices and isinstance(action.choices, dict))
    missing = [
        f"{name} {'/'.join(action.option_strings) or action.dest}"
        for name, command in subparsers.choices.items()
        for action in command._actions
        if action.help is None and action.dest != "help"
    ]
    assert missing == []


def test_the_readme_lists_the_exit_codes() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    for code, words in ((0, "success"), (1, "failed"), (2, "usage"), (3, "unreachable")):
        assert f"| {code} " in readme and words in readme


def _stdout_json(capsys: pytest.CaptureFixture[str]) -> Any:
    return json.loads(capsys.readouterr().out)


def test_status_json_parses_and_says_where(stack_down: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--json"]) == EXIT_UNREACHABLE

    status = _stdout_json(capsys)
    assert status["healthy"] is False
    assert set(status["services"]) == {"azurite", "eventgrid", "runner"}
    assert status["state_dir"] == str(stack_down / "state")


def test_the_readme_command_table_names_only_flags_the_commands_have() -> None:
    parser = build_parser()
    subparsers = next(action for action in parser._actions if action.choices and isinstance(action.choices, dict))
    section = (PROJECT_ROOT / "README.md").read_text().split("## Command line", 1)[1].split("\n## ", 1)[0]
    unknown = []
    for row in re.findall(r"^\| `autopilot ([a-z-]+)([^`]*)`", section, re.MULTILINE):
        command, usage = row
        flags = {flag for action in subparsers.choices[command]._actions for flag in action.option_strings}
        unknown += [f"{command} {flag}" for flag in re.findall(r"--[a-z-]+", usage) if flag not in flags]
    assert unknown == []
