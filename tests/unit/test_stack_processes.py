"""`autopilot down` signals only the processes `up` started: command line and start time, not the pid alone."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from autopilot.local.processes import is_our_process, process_start_time
from autopilot.local.stack import LocalStack


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A process whose command line names the runner's module, as `up` starts it."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "autopilot.local.runner"])
    yield process
    process.kill()
    process.wait()


def test_a_process_is_ours_only_with_its_command_line_and_start_time(sleeper: subprocess.Popen[bytes]) -> None:
    started = process_start_time(sleeper.pid)

    assert started is not None
    assert is_our_process(sleeper.pid, "runner", started)
    assert is_our_process(sleeper.pid, "runner", None)
    assert not is_our_process(sleeper.pid, "runner", started - 3600)  # a reused pid started at another time
    assert not is_our_process(sleeper.pid, "azurite", started)  # another program's command line


def test_down_leaves_a_process_alone_whose_pid_was_reused(sleeper: subprocess.Popen[bytes], tmp_path: Path) -> None:
    # GIVEN a stack.json that remembers the pid with another start time (the machine rebooted since)
    started = process_start_time(sleeper.pid)
    assert started is not None
    state = {"ports": {}, "pids": {"runner": sleeper.pid}, "started": {"runner": started - 3600}}
    (tmp_path / "stack.json").write_text(json.dumps(state))
    lines: list[str] = []

    LocalStack(state_dir=tmp_path, env={}).down(report=lines.append)

    assert sleeper.poll() is None
    assert any("left alone" in line for line in lines)
