"""`autopilot chat ... --json` prints the endpoint's answer as one JSON document on stdout.

GIVEN the simulated backend's state file in the CLI's state folder, holding an endpoint whose deployment takes all
traffic (made through the backend's own API, as the function host would), WHEN `chat` runs with --json, THEN
stdout parses and holds the scoring answer.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from autopilot.cli import main
from autopilot.commands.exits import EXIT_OK
from shared.ml.port import DeploymentSpec
from shared.ml.simulated import SimulatedMLBackend


@pytest.fixture
def simulated_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    state = tmp_path / "state"
    an_hour_ago = datetime.now(timezone.utc) - timedelta(hours=1)  # the deployment is ready by any reader's clock
    backend = SimulatedMLBackend(
        job_seconds=None, state_path=state / "simulated-backend.json", clock=lambda: an_hour_ago
    )
    model = backend.register_model_folder(tmp_path, "support-bot", {})
    backend.ensure_endpoint("ftap-support", {})
    backend.begin_deployment(DeploymentSpec("ftap-support", "blue", model.name, model.version))
    backend.set_traffic("ftap-support", {"blue": 100})
    monkeypatch.setenv("AUTOPILOT_ML_BACKEND", "simulated")
    monkeypatch.setenv("AUTOPILOT_STATE_DIR", str(state))
    monkeypatch.delenv("AUTOPILOT_DEBUG", raising=False)
    return "ftap-support"


def test_chat_json_prints_the_answer_alone_on_stdout(
    simulated_endpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["chat", simulated_endpoint, "Where is the harbour?", "--json"]) == EXIT_OK
    answer = json.loads(capsys.readouterr().out)
    assert answer["output"].endswith("You asked: Where is the harbour?")
    assert "support-bot:1" in answer["output"]
