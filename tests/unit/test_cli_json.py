"""`--json` on the commands that report something: stdout holds one JSON document, progress goes to stderr.

GIVEN a real Azurite (the session's, from tests/conftest.py) with fresh tables and container, and no function
app, WHEN upload, cancel, restore, replay and down run with --json THEN stdout parses and says the outcome.
(runs, run, rejected, endpoints, cleanup, plan, validate, prepare and status have theirs elsewhere: test_cli.py,
tests/integration/, tests/unit/validation/, tests/unit/azureml/.)
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient

from autopilot.cli import main
from autopilot.commands.exits import EXIT_OK
from autopilot.local.processes import PROJECT_ROOT
from shared.ledger import Run, RunStage, RunStatus, TableRunLedger, end_run
from shared.messages import CANCEL_QUEUE, CHECK_JOB_QUEUE, RESTORE_QUEUE, CheckFinetuneJob
from shared.queueing import decode_queue_body, encode_queue_body

SAMPLE = PROJECT_ROOT / "samples" / "ahoy-chat" / "v1"


@pytest.fixture
def on_azurite(azurite: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """GIVEN settings that point at Azurite, with this test's own runs table and training container."""
    names = {
        "AUTOPILOT_RUNS_TABLE": f"runs{uuid.uuid4().hex[:12]}",
        "AUTOPILOT_TRAINING_CONTAINER": f"training-{uuid.uuid4().hex[:12]}",
    }
    monkeypatch.setenv("AzureWebJobsStorage", azurite)
    monkeypatch.setenv("AUTOPILOT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("AUTOPILOT_DEBUG", raising=False)
    for key, value in names.items():
        monkeypatch.setenv(key, value)
    return {"connection": azurite, **names}


def _stdout_json(capsys: pytest.CaptureFixture[str]) -> Any:
    captured = capsys.readouterr()
    return json.loads(captured.out), captured.err


def _ledger(on_azurite: dict[str, str]) -> TableRunLedger:
    return TableRunLedger(on_azurite["connection"], on_azurite["AUTOPILOT_RUNS_TABLE"])


def _queued(on_azurite: dict[str, str], queue: str) -> list[str]:
    """The texts of the queue's first messages."""
    client = QueueClient.from_connection_string(on_azurite["connection"], queue)
    return [decode_queue_body(message.content) for message in client.peek_messages(max_messages=32)]


@pytest.mark.integration
def test_upload_json_gives_the_run_id_for_both_spellings_of_the_target(
    on_azurite: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["upload", str(SAMPLE), "--to", "ahoy/v1", "--json"]) == EXIT_OK
    new, progress = _stdout_json(capsys)
    assert main(["upload", str(SAMPLE), "--dataset", "ahoy", "--version", "v2", "--json"]) == EXIT_OK
    old, _ = _stdout_json(capsys)

    assert (new["dataset"], new["version"]) == ("ahoy", "v1") and (old["dataset"], old["version"]) == ("ahoy", "v2")
    # The same content: the same run id whatever the version or the spelling.
    assert new["run_id"] == old["run_id"] and new["run_id"].startswith("ahoy-")
    assert "uploaded autopilot.json" in progress


@pytest.mark.integration
def test_cancel_json_says_the_cancel_was_asked_for(
    on_azurite: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = f"chat-{uuid.uuid4().hex[:12]}"
    _ledger(on_azurite).create(
        Run(run_id, "chat", "v1", "c" * 64, "simulated", "2026-11-22T05:00:00+00:00", stage=RunStage.TRAINING)
    )

    assert main(["cancel", run_id, "--no-wait", "--json", "--reason", "wrong data"]) == EXIT_OK

    result, progress = _stdout_json(capsys)
    assert result == {"run_id": run_id, "requested": True, "status": None}
    assert f"canceling run {run_id}" in progress
    assert any(run_id in text for text in _queued(on_azurite, CANCEL_QUEUE))


@pytest.mark.integration
def test_cancel_json_waits_until_the_run_has_stopped_and_says_how_it_ended(
    on_azurite: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = f"chat-{uuid.uuid4().hex[:12]}"
    ledger = _ledger(on_azurite)
    ledger.create(Run(run_id, "chat", "v1", "c" * 64, "simulated", "2026-11-22T05:00:00+00:00"))

    def function_app_cancels() -> None:
        """The cancel stage's work once the command's message is queued, standing in for the function app."""
        deadline = time.monotonic() + 30
        while not any(run_id in text for text in _queued(on_azurite, CANCEL_QUEUE)) and time.monotonic() < deadline:
            time.sleep(0.1)
        run = ledger.get(run_id)
        assert run is not None
        end_run(run, RunStatus.CANCELED, message="wrong data")
        ledger.replace(run)

    app = threading.Thread(target=function_app_cancels)
    app.start()
    try:
        code = main(["cancel", run_id, "--json", "--timeout", "30"])
    finally:
        app.join()

    result, progress = _stdout_json(capsys)
    assert code == EXIT_OK
    assert result == {"run_id": run_id, "requested": True, "status": "canceled"}
    assert f"run {run_id} ended canceled" in progress


@pytest.mark.integration
def test_cancel_of_a_run_that_has_ended_leaves_stdout_empty(
    on_azurite: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    run_id = f"chat-{uuid.uuid4().hex[:12]}"
    ended = Run(run_id, "chat", "v1", "c" * 64, "simulated", "2026-11-22T05:00:00+00:00")
    end_run(ended, RunStatus.SUCCEEDED)
    _ledger(on_azurite).create(ended)

    code = main(["cancel", run_id, "--json"])

    captured = capsys.readouterr()
    assert code == 1 and captured.out == "" and run_id in captured.err


@pytest.mark.integration
def test_restore_json_names_the_run_and_the_state(
    on_azurite: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint = f"ep-{uuid.uuid4().hex[:8]}"
    deleted = Run(
        f"chat-{uuid.uuid4().hex[:12]}",
        "chat",
        "v1",
        "d" * 64,
        "simulated",
        "2026-11-22T05:00:00+00:00",
        stage=RunStage.PROMOTING,
        status=RunStatus.SUCCEEDED,
        model_name="chat-model",
        model_version="3",
        endpoint_name=endpoint,
        deployment_name="blue",
        endpoint_state="deleted_idle 2026-11-23T05:00:00+00:00",
    )
    _ledger(on_azurite).create(deleted)

    assert main(["restore", endpoint, "--no-wait", "--json"]) == EXIT_OK

    result, progress = _stdout_json(capsys)
    assert result == {"endpoint": endpoint, "run_id": deleted.run_id, "state": "restoring", "scoring_uri": ""}
    assert f"restoring endpoint {endpoint}" in progress
    assert any(deleted.run_id in text for text in _queued(on_azurite, RESTORE_QUEUE))


@pytest.mark.integration
def test_replay_json_names_the_message_and_its_queue(
    on_azurite: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    poison = QueueClient.from_connection_string(on_azurite["connection"], f"{CHECK_JOB_QUEUE}-poison")
    with contextlib.suppress(ResourceExistsError):
        poison.create_queue()
    run_id = f"chat-{uuid.uuid4().hex[:12]}"
    sent = poison.send_message(encode_queue_body(CheckFinetuneJob(run_id, "job-1", 3).to_json()))

    assert main(["replay", sent.id, "--json"]) == EXIT_OK

    result, _ = _stdout_json(capsys)
    assert result["message_id"] == sent.id and result["queue"] == CHECK_JOB_QUEUE
    assert run_id in result["what"]


def test_down_json_with_nothing_started_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AUTOPILOT_STATE_DIR", str(tmp_path / "state"))

    assert main(["down", "--json"]) == EXIT_OK

    result, _ = _stdout_json(capsys)
    assert result == {"stopped": ["the local stack is not up (no stack.json)"]}
