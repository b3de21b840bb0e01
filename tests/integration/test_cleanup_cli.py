"""`autopilot cleanup --dry-run --json` on the real local stack (simulated backend), and `GET /api/cleanup`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from autopilot.local.stack import LocalStack
from shared.ledger import RunStatus
from shared.storage import AzureBlobStore
from tests.integration.stack_fixtures import finished_runs, http_json, start_stack, wait_for

pytestmark = pytest.mark.integration
SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "ahoy-chat" / "v1"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = start_stack(tmp_path_factory.mktemp("cleanup"))
    yield stack
    stack.down(report=lambda line: None)
    shutil.rmtree(stack.state_dir, ignore_errors=True)


def autopilot(stack: LocalStack, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    state = stack.load()
    assert state is not None
    env = {
        **os.environ,
        "AzureWebJobsStorage": state.connection_string,
        # The CLI reads the same simulated endpoints as the stack's function runner.
        "AUTOPILOT_ML_BACKEND": "simulated",
        "AUTOPILOT_STATE_DIR": str(stack.state_dir),
        **settings,
    }
    return subprocess.run(
        [sys.executable, "-m", "autopilot", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_a_dry_run_reports_a_decision_per_managed_endpoint_and_deletes_nothing(stack: LocalStack) -> None:
    # GIVEN a dataset gone live on its endpoint
    state = stack.load()
    assert state is not None
    store = AzureBlobStore(state.connection_string)
    for path in (SAMPLE / "train_sft.jsonl", SAMPLE / "test_sft.jsonl"):
        store.upload("training-data", f"chat/v1/{path.name}", path.read_bytes())
    run = wait_for(lambda: finished_runs(stack), 90, "the run to finish", stack)[0]
    assert run.status == RunStatus.SUCCEEDED, run.error_message
    # WHEN a dry run passes with no grace period and a window shorter than the smoke test's age
    done = autopilot(
        stack,
        "cleanup",
        "--dry-run",
        "--json",
        AUTOPILOT_IDLE_ENDPOINT_MINUTES="0.01",
        AUTOPILOT_CLEANUP_GRACE_MINUTES="0",
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    # THEN its decision on the endpoint is "dry run", with the smoke test's requests not counted
    assert report["dry_run"] is True
    (decision,) = report["decisions"]
    assert (decision["endpoint"], decision["reason"], decision["requests"]) == (run.endpoint_name, "dry_run", 0)
    assert decision["cost_per_hour"] and "savings" in report
    # AND the endpoint is still there, its run still live
    listed = autopilot(stack, "endpoints", "--json")
    assert listed.returncode == 0 and run.endpoint_name in listed.stdout
    # AND the decision is recorded, for `GET /api/cleanup`
    status, body = http_json(f"{state.functions_url}/api/cleanup")
    assert status == 200 and [item["reason"] for item in body["decisions"]] == ["dry_run"]
    assert body["savings"]["hours"] == 0
