"""Redeploy on registration on the real local stack (simulated backend): GIVEN AUTOPILOT_REDEPLOY_MODELS, WHEN
`autopilot register-model` registers a model from outside, THEN its ModelRegistered event rolls it out through
deploy, smoke test, quality gate, traffic steps and promotion on the endpoint its tag names; the app's own
registrations are announced too and change nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from autopilot.local.stack import LocalStack
from shared.ledger import Run, RunStage, RunStatus
from shared.stages.redeploy import redeploy_run_id
from shared.storage import AzureBlobStore
from tests.integration.stack_fixtures import ledger_of, start_stack, wait_for
from tests.integration.test_canary_stack import SAMPLE, SteadyClient, endpoint_traffic, finished_run, upload

pytestmark = pytest.mark.integration
# Test conversations with their answers, for the smoke test and quality gate of models registered outside.
TEST_CONVERSATIONS = "redeploy/support-tests.jsonl"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = start_stack(
        tmp_path_factory.mktemp("redeploy"),
        AUTOPILOT_REDEPLOY_MODELS="support-*,Phi-4-*",
        AUTOPILOT_TRAFFIC_STEPS="50,100",
        AUTOPILOT_BAKE_MINUTES="0.1",
        AUTOPILOT_CANARY_MIN_REQUESTS="5",
        AUTOPILOT_REDEPLOY_TEST_CONVERSATIONS=TEST_CONVERSATIONS,
    )
    state = stack.load()
    assert state is not None
    # Not <dataset>/<version>/<file>: the dataset trigger ignores it.
    AzureBlobStore(state.connection_string).upload(
        "training-data", TEST_CONVERSATIONS, (SAMPLE / "test_sft.jsonl").read_bytes()
    )
    yield stack
    stack.down(report=lambda line: None)


def register_model(stack: LocalStack, folder: Path, *args: str) -> dict[str, str]:
    state = stack.load()
    assert state is not None
    env = {
        **os.environ,
        "AzureWebJobsStorage": state.connection_string,
        "AUTOPILOT_STATE_DIR": str(stack.state_dir),
        "AUTOPILOT_ML_BACKEND": "simulated",
        "AUTOPILOT_EVENTGRID_PUBLISH_URL": f"{state.eventgrid_url}/api/events",
    }
    done = subprocess.run(
        [sys.executable, "-m", "autopilot", "register-model", str(folder), *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def rolled_out(stack: LocalStack, run_id: str) -> Run:
    run = wait_for(
        lambda: (found := ledger_of(stack).get(run_id)) is not None and found.finished and found, 60, run_id, stack
    )
    assert isinstance(run, Run)
    return run


def test_a_model_registered_from_outside_is_rolled_out_on_the_endpoint_its_tag_names(
    stack: LocalStack, tmp_path: Path
) -> None:
    folder = tmp_path / "support-bot"
    folder.mkdir()
    (folder / "MLmodel").write_text("flavors: {}\n")

    # WHEN a first version is registered from outside, naming its endpoint in a tag
    first = register_model(stack, folder, "--name", "support-bot", "--tag", "autopilot_endpoint=ep-support")

    # THEN a run deploys, smoke-tests and promotes it there (nothing live yet: all traffic at once)
    run = rolled_out(stack, redeploy_run_id("support-bot", first["version"]))
    assert (run.status, run.stage) == (RunStatus.SUCCEEDED, RunStage.LIVE), run.error_message
    assert (run.model_name, run.model_version, run.endpoint_name) == ("support-bot", "1", "ep-support")
    assert run.manifest["registered_outside"] and run.smoke["passed"]
    assert {RunStage.DEPLOYING.value, RunStage.SMOKE_TESTING.value, RunStage.PROMOTING.value} <= set(run.stage_times)

    # WHEN a second version is registered while a client uses the endpoint
    with SteadyClient(stack, "ep-support") as client:
        second = register_model(stack, folder, "--name", "support-bot", "--tag", "autopilot_endpoint=ep-support")
        next_run = rolled_out(stack, second["redeploy_run_id"])

    # THEN it went through the smoke test with the setting's conversations and the quality gate against the live
    # one, then 50 % and 100 %
    assert (next_run.status, next_run.stage) == (RunStatus.SUCCEEDED, RunStage.LIVE), next_run.error_message
    assert (next_run.model_version, next_run.endpoint_name) == ("2", "ep-support")
    assert next_run.previous_deployment == run.deployment_name
    assert next_run.smoke["passed"] and next_run.smoke["requests"] > 0
    assert all(result["ok"] and result["live"]["ok"] for result in next_run.smoke["results"])
    assert next_run.smoke["similarity"] >= 0 and next_run.smoke["live_similarity"] >= 0
    first_step, last_step = next_run.traffic_steps
    assert (first_step["percent"], first_step["verdict"], last_step["percent"]) == (50, "passed", 100)
    assert first_step["new"]["requests"] >= 5 and first_step["new"]["errors_5xx"] == 0
    assert endpoint_traffic(stack, "ep-support") == {next_run.deployment_name: 100}
    assert client.answers and not any(answer.error for answer in client.answers)


def test_a_model_the_app_registered_itself_changes_nothing(stack: LocalStack) -> None:
    # GIVEN the setting matches the app's own model names (Phi-4-<dataset>)
    before = {run.run_id for run in ledger_of(stack).list_runs()}

    # WHEN a dataset's run registers its model, and the ModelRegistered event reaches the app
    upload(stack, "tide/v1", {})
    run = finished_run(stack, "tide/v1")
    assert run.status is RunStatus.SUCCEEDED, run.error_message
    log = stack.logs / "runner.log"
    wait_for(
        lambda: f"{run.model_name}:{run.model_version} was registered by run {run.run_id}" in log.read_text(),
        30,
        "the app's ModelRegistered to reach the function app",
        stack,
    )

    # THEN no other run started
    assert {r.run_id for r in ledger_of(stack).list_runs()} - before == {run.run_id}


@pytest.fixture(scope="module")
def local_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalStack, Path]]:
    """The local backend for real, and an MLflow model folder of a tiny model saved outside the app."""
    import mlflow
    from transformers import AutoModelForCausalLM

    from shared.ml.local.registry import MODEL_PIP_REQUIREMENTS
    from shared.ml.local.weights import build_tiny_model, load_gguf_tokenizer

    models = tmp_path_factory.mktemp("outside-models")
    tiny = build_tiny_model(models / "tiny-smollm2")

    folder = models / "support-local"
    mlflow.transformers.save_model(
        transformers_model={"model": AutoModelForCausalLM.from_pretrained(tiny), "tokenizer": load_gguf_tokenizer()},
        path=str(folder),
        task="text-generation",
        pip_requirements=MODEL_PIP_REQUIREMENTS,
    )
    stack = start_stack(
        tmp_path_factory.mktemp("redeploy-local"),
        AUTOPILOT_ML_BACKEND="local",
        AUTOPILOT_LOCAL_BASE_MODEL=str(tiny),
        AUTOPILOT_SMOKE_PROMPTS="2",
        AUTOPILOT_REDEPLOY_MODELS="support-*",
    )
    yield stack, folder
    stack.down(report=lambda line: None)


def test_on_the_local_backend_an_mlflow_folder_registered_from_outside_is_served(
    local_stack: tuple[LocalStack, Path],
) -> None:
    stack, folder = local_stack
    state = stack.load()
    assert state is not None

    # WHEN an MLflow model folder is registered from outside in the local MLflow registry
    env = {**stack.child_env(state), "AUTOPILOT_ML_BACKEND": "local"}
    argv = ["register-model", str(folder), "--name", "support-local", "--tag", "autopilot_endpoint=ep-local", "--json"]
    done = subprocess.run(
        [sys.executable, "-m", "autopilot", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    registered = json.loads(done.stdout)
    assert (registered["version"], registered["uri"]) == ("1", "models:/support-local/1")

    # THEN its run serves it on the endpoint its tag names, through a real serving process
    run = wait_for(
        lambda: (found := ledger_of(stack).get(registered["redeploy_run_id"])) is not None and found.finished and found,
        240,
        "the local rollout of support-local:1",
        stack,
    )
    assert (run.status, run.stage) == (RunStatus.SUCCEEDED, RunStage.LIVE), run.error_message
    assert (run.model_name, run.endpoint_name, run.ml_backend) == ("support-local", "ep-local", "local")
    assert run.smoke["passed"] and all(result["ok"] for result in run.smoke["results"])
