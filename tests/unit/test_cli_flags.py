"""One spelling per meaning across commands, the old spellings kept, and the lazily built parser.

The upload target is `--to DATASET/VERSION` in `upload` and `prepare` (old: `upload --dataset N --version V`,
`prepare --upload N/V`); `--no-wait` returns without waiting for the work (`cancel`, `restore`, `up`, `demo`);
`--no-input` asks nothing (`demo`).
"""

from __future__ import annotations

import argparse

import pytest

from autopilot.cli import MODULE_OF_COMMAND, build_parser, main
from autopilot.commands.exits import EXIT_OK, EXIT_USAGE, CommandError
from autopilot.commands.upload import upload_target
from autopilot.local.processes import PROJECT_ROOT

SAMPLE = PROJECT_ROOT / "samples" / "ahoy-chat" / "v1"


def _parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize(
    ("argv", "target"),
    [
        (["--to", "chat/v1"], ("chat", "v1")),
        (["--dataset", "chat", "--version", "v1"], ("chat", "v1")),
        (["--to", "chat", "--version", "v1"], ("chat", "v1")),
    ],
)
def test_upload_takes_the_target_in_either_spelling(argv: list[str], target: tuple[str, str]) -> None:
    assert upload_target(_parse("upload", str(SAMPLE), *argv)) == target


@pytest.mark.parametrize("argv", [["--to", "chat"], ["--dataset", "chat"]])
def test_upload_without_a_version_takes_the_time(argv: list[str]) -> None:
    dataset, version = upload_target(_parse("upload", str(SAMPLE), *argv))

    assert dataset == "chat" and len(version) == len("20261122-101500") and version[8] == "-"


def test_two_versions_are_a_usage_error() -> None:
    with pytest.raises(CommandError) as raised:
        upload_target(_parse("upload", str(SAMPLE), "--to", "chat/v1", "--version", "v2"))

    assert raised.value.exit_code == EXIT_USAGE


@pytest.mark.parametrize(
    "argv",
    [
        ["upload", str(SAMPLE)],
        ["upload", str(SAMPLE), "--to", "chat/v1", "--dataset", "chat"],
        ["upload", str(SAMPLE), "--to", "a/b/c"],
        ["prepare", "--source", "x", "--out", "o", "--to", "chat"],
    ],
)
def test_a_missing_double_or_malformed_target_is_a_usage_error(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)

    assert exited.value.code == EXIT_USAGE
    assert "Traceback" not in capsys.readouterr().err


def test_prepare_takes_the_upload_target_as_upload_does_and_the_old_spellings() -> None:
    new = _parse("prepare", "--source", "hub/name", "--out", "o", "--splits", "a,b", "--to", "chat/v1")
    old = _parse("prepare", "--dataset", "hub/name", "--out", "o", "--split", "a,b", "--upload", "chat/v1")

    assert (
        (new.dataset, new.splits, new.upload)
        == (old.dataset, old.splits, old.upload)
        == (
            "hub/name",
            ["a", "b"],
            ("chat", "v1"),
        )
    )


@pytest.mark.parametrize("command", ["cancel r1", "restore e1", "up", "demo"])
def test_no_wait_is_spelled_the_same_wherever_a_command_can_return_early(command: str) -> None:
    assert _parse(*command.split(), "--no-wait").no_wait is True


def test_every_option_of_every_command_has_help_and_an_alias_is_named_in_it() -> None:
    """Each option says what it does; an option with two spellings names the old one in its help."""
    parser = build_parser()
    missing, unnamed = [], []
    for name, command in {"": parser, **_subparsers(parser)}.items():
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction) or action.dest == "help":
                continue
            if not action.help:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
            for old in action.option_strings[1:]:
                if old not in action.help:
                    unnamed.append(f"{name} {old}")
    assert missing == [] and unnamed == []


def test_running_one_command_builds_the_same_parser_as_the_whole_command_line() -> None:
    whole = _subparsers(build_parser())
    for command, module in MODULE_OF_COMMAND.items():
        if command not in whole:  # a module another change has not added yet
            continue
        alone = _subparsers(build_parser(command))
        flags = {flag for action in alone[command]._actions for flag in action.option_strings}
        assert flags == {flag for action in whole[command]._actions for flag in action.option_strings}, module


def test_the_command_is_found_after_the_global_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--debug", "validate", str(SAMPLE / "train_sft.jsonl")]) == EXIT_OK

    assert "VALID" in capsys.readouterr().out.upper()
