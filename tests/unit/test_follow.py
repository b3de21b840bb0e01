"""`autopilot run --follow` and the demo: stages as they happen, and training steps while the job trains."""

from __future__ import annotations

from typing import Any

from autopilot.commands.runs import follow
from shared.ledger import Run, RunStage, RunStatus, end_run
from tests.fakes import FakeRunLedger


class TrainingJob:
    """A job that reports one more step each time it is asked, then the run ends."""

    def __init__(self, ledger: FakeRunLedger, run_id: str, steps: int) -> None:
        self.ledger, self.run_id, self.steps, self.asked = ledger, run_id, steps, 0

    def progress(self, job_name: str) -> dict[str, Any] | None:
        assert job_name == "job-1"
        self.asked += 1
        if self.asked > 2 * self.steps + 1:
            run = self.ledger.rows[self.run_id]
            run.stage, run.stage_times["registering"] = RunStage.REGISTERING, "2026-11-22T05:03:00.000000+00:00"
            end_run(run, RunStatus.FAILED, category="registration", message="stopped here for the test")
            return {"step": self.steps, "steps": self.steps, "loss": 0.5}
        # No step before the first one; then each step twice in a row, printed once.
        step = self.asked // 2
        return None if step == 0 else {"step": step, "steps": self.steps, "loss": 3.0 / step}


def test_training_steps_are_printed_once_each_while_the_job_trains() -> None:
    ledger = FakeRunLedger()
    run = Run("r1", "chat", "v1", "c" * 64, "local", "2026-11-22T05:00:00+00:00", stage=RunStage.TRAINING)
    run.job_name = "job-1"
    run.stage_times = {"received": "2026-11-22T05:00:00.000000+00:00", "training": "2026-11-22T05:01:00.000000+00:00"}
    ledger.create(run)
    job = TrainingJob(ledger, "r1", steps=3)
    lines: list[str] = []

    ended = follow(ledger, "r1", lines.append, timeout=10, interval=0, job_progress=job.progress)

    assert ended is not None and ended.finished
    steps = [line.split("    ", 1)[1] for line in lines if "step" in line]
    assert steps == ["step 1/3, loss 3.000", "step 2/3, loss 1.500", "step 3/3, loss 1.000", "step 3/3, loss 0.500"]
    assert [line.split()[-1] for line in lines if "step" not in line] == ["received", "training", "registering"]
