"""Progress on the CLI's long waits: bars and spinners (rich) on a terminal, the plain lines otherwise.

Everything goes to stderr, so that stdout holds a command's result alone (its JSON with `--json`). Bars are
drawn only when stderr is a terminal and TERM is not `dumb`; rich leaves colour out under NO_COLOR. Elsewhere
(pipes, CI, tests) each piece of news is a plain line, worded as before. rich is imported only to draw: a
command that draws nothing does not pay for it (benchmarks/cli_startup.py).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import TaskID

# How often a wait gives its news: a plain line every 10 s is enough to say it goes on; a spinner's text can
# follow the run every second.
PLAIN_NEWS_EVERY_S = 10.0
DRAWN_NEWS_EVERY_S = 1.0

# An upload's bytes so far and the blob's size (None when unknown): azure-storage-blob's `progress_hook`.
BytesHook = Callable[[int, "int | None"], None]
# A training job's step, its number of steps, and its loss.
StepHook = Callable[[int, int, float], None]


def draws_on(stream: TextIO) -> bool:
    """Whether bars and spinners are drawn on `stream`: a terminal, and one that is not TERM=dumb."""
    if os.environ.get("TERM", "").lower() == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())


@dataclass(frozen=True)
class Wait:
    """What a wait reports to: `say` for lines that stay, `news` for where the wait stands, every `news_every` s.

    On a terminal the news is the text beside the spinner; otherwise each piece of news is a line.
    """

    say: Callable[[str], None]
    news: Callable[[str], None]
    news_every: float


@dataclass(frozen=True)
class Following:
    """What `run --follow` reports to: `say` for stage lines; `step` for training steps, None for plain lines."""

    say: Callable[[str], None]
    step: StepHook | None


class Progress:
    """A command's progress on stderr: drawn with rich on a terminal (or on `console`), plain lines otherwise."""

    def __init__(self, console: Console | None = None) -> None:
        self._console = console

    @property
    def drawn(self) -> bool:
        return self._console is not None or draws_on(sys.stderr)

    def _rich(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=True)
        return self._console

    def say(self, line: str) -> None:
        """A line that stays (above any bar being drawn)."""
        if self.drawn:
            self._rich().print(line, markup=False, highlight=False, emoji=False, soft_wrap=True)
        else:
            print(line, file=sys.stderr, flush=True)

    @contextmanager
    def waiting(self, what: str) -> Iterator[Wait]:
        """While the block runs, a spinner with `what`, the seconds gone and the wait's latest news."""
        if not self.drawn:
            yield Wait(self.say, self.say, PLAIN_NEWS_EVERY_S)
            return
        from rich.progress import Progress as Bars
        from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

        columns = (
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[news]}"),
        )
        with Bars(*columns, console=self._rich(), transient=True) as bars:
            task = bars.add_task(what, total=None, news="")
            yield Wait(self.say, lambda news: bars.update(task, news=news), DRAWN_NEWS_EVERY_S)

    @contextmanager
    def transfer(self, what: str, size: int) -> Iterator[BytesHook | None]:
        """While the block runs, a bar of the bytes sent, fed by the yielded hook; None when nothing is drawn."""
        if not self.drawn:
            yield None
            return
        from rich.progress import BarColumn, DownloadColumn, TextColumn, TransferSpeedColumn
        from rich.progress import Progress as Bars

        columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
        with Bars(*columns, console=self._rich(), transient=True) as bars:
            task = bars.add_task(what, total=size)
            yield lambda sent, total: bars.update(task, completed=sent, total=total or size)

    @contextmanager
    def following(self, what: str) -> Iterator[Following]:
        """While a run is followed, a spinner with `what` and the seconds gone, and a bar of its training steps."""
        if not self.drawn:
            yield Following(self.say, None)
            return
        from rich.progress import BarColumn, MofNCompleteColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Bars

        columns = (
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Bars(*columns, console=self._rich(), transient=True) as bars:
            bars.add_task(what, total=None)
            training: list[TaskID] = []

            def step(done: int, steps: int, loss: float) -> None:
                if not training:
                    training.append(bars.add_task("training", total=steps))
                bars.update(training[0], completed=done, total=steps, description=f"training, loss {loss:.3f}")

            yield Following(self.say, step)
