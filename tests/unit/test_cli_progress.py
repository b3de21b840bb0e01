"""Progress on the CLI's long waits: plain lines on stderr when it is no terminal, rich bars and spinners on one.

GIVEN an upload, a wait on the ledger, a followed run or the wait for local endpoints WHEN stderr is not a
terminal (as in CI and here) THEN each piece of news is a plain line as before, without control codes; WHEN
rich draws on a terminal (a forced one, writing to a StringIO) THEN bytes, elapsed time and steps are shown.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, BinaryIO

import pytest
from rich.console import Console

from autopilot.commands.common import wait_for_run
from autopilot.commands.progress import PLAIN_NEWS_EVERY_S, Progress, draws_on
from autopilot.commands.runs import follow
from autopilot.commands.upload import dataset_files, upload_files
from autopilot.local.processes import PROJECT_ROOT
from autopilot.local.stack import EndpointsNotServing, ServingProcess, wait_until_serving
from shared.ledger import Run, RunStage, RunStatus, end_run
from shared.storage import BlobInfo
from tests.fakes import FakeRunLedger
from tests.unit.test_follow import TrainingJob

SAMPLE = PROJECT_ROOT / "samples" / "ahoy-chat" / "v1"
CONTROL = re.compile(r"\x1b")


class ChunkedBlobStore:
    """Keeps blobs in a dict; reports the bytes of each upload in 1 KiB chunks to a `progress` hook, as the SDK does."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

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
            for sent in range(1024, len(content), 1024):
                progress(sent, len(content))
            progress(len(content), len(content))
        self.blobs[name] = content
        return BlobInfo(container, name, f"memory://{container}/{name}", "etag", len(content), content_md5)

    def list_blobs(self, container: str, prefix: str) -> list[BlobInfo]:
        return []

    def open_read(self, container: str, name: str, etag: str = "") -> BinaryIO:
        return io.BytesIO(self.blobs[name])

    def url(self, container: str, name: str) -> str:
        return f"memory://{container}/{name}"


def terminal() -> tuple[Progress, io.StringIO]:
    """A Progress drawing with rich as on a terminal, into a StringIO."""
    screen = io.StringIO()
    return Progress(Console(file=screen, force_terminal=True, width=120, color_system=None)), screen


def _run(ledger: FakeRunLedger, stage: RunStage = RunStage.TRAINING) -> Run:
    run = Run("r1", "chat", "v1", "c" * 64, "local", "2026-11-22T05:00:00+00:00", stage=stage)
    run.stage_times = {"received": "2026-11-22T05:00:00.000000+00:00"}
    ledger.create(run)
    return run


def test_without_a_terminal_an_upload_prints_the_plain_lines_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    store = ChunkedBlobStore()
    progress = Progress()

    upload_files(dataset_files(SAMPLE), "ahoy", "v1", store, "training", progress.say, progress)

    captured = capsys.readouterr()
    assert captured.out == ""
    assert "uploaded autopilot.json" in captured.err and " bytes) -> training/ahoy/v1/" in captured.err
    assert not CONTROL.search(captured.err)


def test_without_a_terminal_no_hook_is_asked_of_the_store() -> None:
    progress = Progress()

    with progress.transfer("train.jsonl", 10) as sent, progress.following("run r1") as watch:
        assert sent is None and watch.step is None


def test_without_a_terminal_a_wait_says_in_plain_lines_where_the_run_is(
    capsys: pytest.CaptureFixture[str],
) -> None:
    ledger = FakeRunLedger()
    _run(ledger)

    with Progress().waiting("waiting for run r1 to stop") as wait:
        assert wait.news_every == PLAIN_NEWS_EVERY_S
        found = wait_for_run(ledger, "r1", lambda run: run.finished, 0.3, 0.05, wait.news, report_every=0.1)

    err = capsys.readouterr().err
    assert found is None
    assert "  still waiting after 0 s of 0 s (run r1: training, in_progress, endpoint -)" in err
    assert "waiting for run r1 to stop" not in err and not CONTROL.search(err)


def test_term_dumb_or_a_pipe_draws_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("TERM", "xterm-256color")
    assert draws_on(Terminal()) and not draws_on(io.StringIO())
    monkeypatch.setenv("TERM", "dumb")
    assert not draws_on(Terminal())


def test_on_a_terminal_an_upload_shows_its_bytes() -> None:
    store = ChunkedBlobStore()
    progress, screen = terminal()
    files = dataset_files(SAMPLE)
    train = next(path for path in files if path.name.startswith("train"))

    upload_files(files, "ahoy", "v1", store, "training", progress.say, progress)

    drawn = screen.getvalue()
    size_kb = f"{train.stat().st_size / 1000:.1f}"
    # rich's DownloadColumn: bytes sent of the file's size, in kB for a file of some kB.
    assert re.search(rf"\d+\.\d/{re.escape(size_kb)} kB", drawn), drawn
    assert f"uploaded {train.name} ({train.stat().st_size:,} bytes)" in drawn
    assert store.blobs[f"ahoy/v1/{train.name}"] == train.read_bytes()


def test_on_a_terminal_a_wait_shows_a_spinner_with_the_seconds_gone_and_the_news() -> None:
    ledger = FakeRunLedger()
    _run(ledger)
    progress, screen = terminal()

    with progress.waiting("waiting for run r1 to stop") as wait:
        found = wait_for_run(ledger, "r1", lambda run: run.finished, 1.5, 0.05, wait.news, report_every=0.2)

    drawn = screen.getvalue()
    assert found is None
    assert "waiting for run r1 to stop" in drawn
    assert re.search(r"0:00:0\d", drawn), drawn
    assert "(run r1: training, in_progress, endpoint -)" in drawn


def test_on_a_terminal_follow_prints_stages_and_draws_training_steps() -> None:
    ledger = FakeRunLedger()
    _run(ledger)
    run = ledger.rows["r1"]
    run.job_name = "job-1"
    run.stage_times["training"] = "2026-11-22T05:01:00.000000+00:00"
    job = TrainingJob(ledger, "r1", steps=3)
    progress, screen = terminal()

    with progress.following("following run r1") as watch:
        ended = follow(
            ledger, "r1", watch.say, timeout=10, interval=0.05, job_progress=job.progress, on_step=watch.step
        )

    drawn = screen.getvalue()
    assert ended is not None and ended.status is RunStatus.FAILED
    assert "05:00:00.000  received" in drawn and "05:01:00.000  training" in drawn and "registering" in drawn
    assert "training, loss" in drawn and "3/3" in drawn
    # The steps are drawn, not printed as lines.
    assert "step 1/3" not in drawn


def test_on_a_terminal_the_wait_for_local_endpoints_shows_which_still_load(tmp_path: Path) -> None:
    progress, screen = terminal()
    never = ServingProcess("chat/blue", "http://127.0.0.1:9/health", None, tmp_path / "blue.log")
    lines: list[str] = []

    with pytest.raises(EndpointsNotServing), progress.waiting("local endpoints: loading their models") as wait:
        wait_until_serving([never], lines.append, timeout=1.5, interval=0.05, wait=wait)

    assert lines == ["local endpoints: waiting up to 2 s until each answers: chat/blue"]
    assert "local endpoints: still loading after 1 s of 2 s: chat/blue" in screen.getvalue()


def test_a_run_that_ends_stops_the_wait_at_once() -> None:
    ledger = FakeRunLedger()
    run = _run(ledger)
    end_run(ledger.rows[run.run_id], RunStatus.CANCELED, category="canceled", message="wrong data")
    progress, _ = terminal()

    with progress.waiting("waiting for run r1 to stop") as wait:
        found = wait_for_run(ledger, "r1", lambda current: current.finished, 30, 0.05, wait.news, wait.news_every)

    assert found is not None and found.status is RunStatus.CANCELED


@pytest.mark.parametrize("command", ["validate", "upload"])
def test_the_cli_does_not_import_rich_to_start(command: str) -> None:
    shown = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "autopilot", command, "--help"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )

    imported = {line.rsplit("|", 1)[-1].strip() for line in shown.stderr.splitlines() if "|" in line}
    assert "autopilot.cli" in imported
    # `upload` loads the progress module, which imports rich only to draw.
    assert ("autopilot.commands.progress" in imported) == (command == "upload")
    assert not any(name == "rich" or name.startswith("rich.") for name in imported)
