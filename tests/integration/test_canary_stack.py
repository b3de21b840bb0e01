"""Progressive traffic on the real local stack (simulated backend): GIVEN a live model and a client sending steady
scoring requests, WHEN a new model answers 5xx on a share of its live requests, THEN the canary step rolls it back
and the live deployment keeps serving; a good model reaches 100 % through the steps, each in the ledger."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from autopilot.local.stack import LocalStack
from shared.ledger import Run, RunStage, RunStatus
from shared.ml.scoring import chat_request, response_text
from shared.ml.simulated import SimulatedMLBackend
from shared.storage import AzureBlobStore
from shared.timestamps import parse_iso
from tests.integration.stack_fixtures import ledger_of, start_stack, wait_for

pytestmark = pytest.mark.integration
SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "ahoy-chat" / "v1"
# A bake of 9 s, judged once 5 requests reached the new deployment: a client at ~20 requests a second gets
# about 18 of them there at 10 %.
CANARY_SETTINGS = {
    "AUTOPILOT_BAKE_MINUTES": "0.15",
    "AUTOPILOT_CANARY_MIN_REQUESTS": "5",
}


@dataclass(frozen=True)
class Answer:
    at: float
    model: str  # "name:version" of the model that answered, "" for an error
    error: str


class SteadyClient:
    """Scores the endpoint every `interval` seconds from this process, as an application would, through the
    simulated backend's shared state file; keeps who answered each request."""

    def __init__(self, stack: LocalStack, endpoint: str, interval: float = 0.05) -> None:
        self._backend = SimulatedMLBackend(job_seconds=None, state_path=stack.state_dir / "simulated-backend.json")
        self._endpoint = endpoint
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="steady-client", daemon=True)
        self.answers: list[Answer] = []

    def __enter__(self) -> SteadyClient:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        request = chat_request([{"role": "user", "content": "Where is the harbour?"}], {"max_new_tokens": 20})
        while not self._stop.is_set():
            at = time.time()
            try:
                text = response_text(self._backend.score(self._endpoint, request))
                self.answers.append(Answer(at, text.split("]", 1)[0].removeprefix("[simulated "), ""))
            except Exception as exc:  # every failure the client sees is what the test checks
                self.answers.append(Answer(at, "", str(exc)))
            self._stop.wait(self._interval)


def upload(stack: LocalStack, folder: str, manifest: dict[str, Any]) -> None:
    state = stack.load()
    assert state is not None
    store = AzureBlobStore(state.connection_string)
    for path in (SAMPLE / "train_sft.jsonl", SAMPLE / "test_sft.jsonl"):
        store.upload("training-data", f"{folder}/{path.name}", path.read_bytes())
    store.upload("training-data", f"{folder}/autopilot.json", json.dumps(manifest).encode())


def run_of(stack: LocalStack, folder: str) -> Run | None:
    dataset, version = folder.split("/")
    runs = [run for run in ledger_of(stack).list_runs() if (run.dataset, run.version) == (dataset, version)]
    return runs[0] if runs else None


def finished_run(stack: LocalStack, folder: str, timeout: float = 60) -> Run:
    run = wait_for(
        lambda: (found := run_of(stack, folder)) is not None and found.finished and found, timeout, folder, stack
    )
    assert isinstance(run, Run)
    return run


def live_run(stack: LocalStack, folder: str) -> Run:
    """GIVEN a first good run on the endpoint: a live deployment to compare with and to fall back on."""
    upload(stack, folder, {})
    run = finished_run(stack, folder)
    assert (run.status, run.stage) == (RunStatus.SUCCEEDED, RunStage.LIVE), run.error_message
    return run


def autopilot(stack: LocalStack, *args: str) -> subprocess.CompletedProcess[str]:
    state = stack.load()
    assert state is not None
    env = {**os.environ, "AzureWebJobsStorage": state.connection_string, "AUTOPILOT_STATE_DIR": str(stack.state_dir)}
    return subprocess.run(
        [sys.executable, "-m", "autopilot", *args], env=env, capture_output=True, text=True, timeout=60
    )


def endpoint_traffic(stack: LocalStack, endpoint: str) -> dict[str, int]:
    state = json.loads((stack.state_dir / "simulated-backend.json").read_text())
    return {name: share for name, share in state["endpoints"][endpoint]["traffic"].items() if share}


@pytest.fixture(scope="module")
def split_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = start_stack(tmp_path_factory.mktemp("canary-split"), AUTOPILOT_TRAFFIC_STEPS="10,100", **CANARY_SETTINGS)
    yield stack
    stack.down(report=lambda line: None)


@pytest.fixture(scope="module")
def mirror_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = start_stack(tmp_path_factory.mktemp("canary-mirror"), AUTOPILOT_MIRROR_PERCENT="50", **CANARY_SETTINGS)
    yield stack
    stack.down(report=lambda line: None)


def test_a_model_failing_live_requests_is_rolled_back_in_the_canary_step_while_the_live_one_serves(
    split_stack: LocalStack,
) -> None:
    stack = split_stack
    live = live_run(stack, "harbour/v1")
    live_model = f"{live.model_name}:{live.model_version}"
    with SteadyClient(stack, live.endpoint_name) as client:
        # WHEN a new version's model answers every second live request with a 503
        upload(stack, "harbour/v2", {"parameters": {"simulate_failure": "canary"}})
        bad = finished_run(stack, "harbour/v2", timeout=90)
        time.sleep(2)

    # THEN it is rolled back in the canary step, with the figures on the run
    assert (bad.status, bad.error_category) == (RunStatus.ROLLED_BACK, "canary"), bad.error_message
    [step] = bad.traffic_steps
    assert (step["step"], step["mode"], step["percent"], step["verdict"]) == (1, "split", 10, "breach")
    assert step["new"]["requests"] >= 5 and step["new"]["errors_5xx"] > 0
    assert step["live"]["requests"] > step["new"]["requests"] and step["live"]["errors_5xx"] == 0
    assert "5xx rate" in bad.error_message and live.deployment_name in bad.error_message
    # AND the live deployment keeps all traffic, the new one is gone
    assert endpoint_traffic(stack, live.endpoint_name) == {live.deployment_name: 100}
    # AND the client's requests were all answered by the live model without error, except the new deployment's
    # 10 % share during the canary step (where it met the 503s), and by the live model alone after the rollback
    started, ended = parse_iso(step["started_at"]).timestamp(), parse_iso(bad.finished_at).timestamp()
    answers = client.answers
    assert len(answers) > 100
    assert all(a.model == live_model for a in answers if a.at < started - 1 or a.at > ended + 1)
    during = [a for a in answers if started <= a.at <= ended]
    new_model = f"{bad.model_name}:{bad.model_version}"
    assert all(a.model in (live_model, new_model) or bad.deployment_name in a.error for a in during)
    assert any(a.error for a in during), "the client never met the canary: the test proves nothing"
    assert not any(live.deployment_name in a.error for a in answers)

    # AND `autopilot run` shows it as a user sees it
    shown = autopilot(stack, "run", bad.run_id)
    assert shown.returncode == 0, shown.stderr
    assert "rolled_back" in shown.stdout and "canary" in shown.stdout
    print(f"\n$ autopilot run {bad.run_id}\n{shown.stdout}")


def test_a_good_model_reaches_all_traffic_through_the_steps_each_in_the_ledger(split_stack: LocalStack) -> None:
    stack = split_stack
    before = run_of(stack, "harbour/v1") or live_run(stack, "harbour/v1")
    with SteadyClient(stack, before.endpoint_name) as client:
        # WHEN a good new version comes while the client keeps sending
        upload(stack, "harbour/v3", {"parameters": {"max_steps": 40}})  # new content: a new run
        good = finished_run(stack, "harbour/v3", timeout=90)

    # THEN it went live through 10 % (judged on its figures) and then 100 %, each step with its time
    assert (good.status, good.stage) == (RunStatus.SUCCEEDED, RunStage.LIVE), good.error_message
    first, second = good.traffic_steps
    assert (first["step"], first["mode"], first["percent"], first["verdict"]) == (1, "split", 10, "passed")
    assert first["new"]["requests"] >= 5 and first["new"]["errors_5xx"] == 0 and first["live"]["requests"] > 0
    assert parse_iso(first["judged_at"]) >= parse_iso(first["started_at"])
    assert (second["step"], second["percent"]) == (2, 100) and parse_iso(second["started_at"])
    assert endpoint_traffic(stack, good.endpoint_name) == {good.deployment_name: 100}
    assert not any(a.error for a in client.answers)


def test_with_mirroring_every_client_request_is_answered_by_the_live_deployment(mirror_stack: LocalStack) -> None:
    stack = mirror_stack
    live = live_run(stack, "harbour/v1")
    with SteadyClient(stack, live.endpoint_name) as client:
        # WHEN the failing model gets a mirrored half of live traffic instead of a share of it
        upload(stack, "harbour/v2", {"parameters": {"simulate_failure": "canary"}})
        bad = finished_run(stack, "harbour/v2", timeout=90)
        time.sleep(1)

    # THEN the mirror's errors roll it back, and no client request ever saw it
    assert (bad.status, bad.error_category) == (RunStatus.ROLLED_BACK, "canary"), bad.error_message
    [step] = bad.traffic_steps
    assert (step["mode"], step["percent"], step["verdict"]) == ("mirror", 50, "breach")
    assert step["new"]["errors_5xx"] > 0
    assert len(client.answers) > 100
    assert all((a.model, a.error) == (f"{live.model_name}:{live.model_version}", "") for a in client.answers)
    assert endpoint_traffic(stack, live.endpoint_name) == {live.deployment_name: 100}
