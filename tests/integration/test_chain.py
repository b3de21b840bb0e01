"""The whole chain on the real local stack: Azurite, the Event Grid stand-in, the function runner."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from autopilot.local.stack import LocalStack
from shared.errors import BlobChangedError
from shared.ledger import RunStage, RunStatus
from shared.queueing import encode_queue_body
from shared.storage import AzureBlobStore
from tests.integration.stack_fixtures import finished_runs, http_json, ledger_of, start_stack, wait_for

pytestmark = pytest.mark.integration
SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "ahoy-chat" / "v1"


def upload(stack: LocalStack, folder: str, files: list[Path]) -> None:
    state = stack.load()
    assert state is not None
    store = AzureBlobStore(state.connection_string)
    for path in files:
        store.upload("training-data", f"{folder}/{path.name}", path.read_bytes())


def backend_state(stack: LocalStack) -> dict:  # type: ignore[type-arg]
    return json.loads((stack.state_dir / "simulated-backend.json").read_text())


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = start_stack(tmp_path_factory.mktemp("stack"))
    yield stack
    stack.down(report=lambda line: None)


@pytest.fixture(scope="module")
def doubled_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = start_stack(tmp_path_factory.mktemp("doubled"), AUTOPILOT_RUNNER_DUPLICATE_DELIVERIES="1")
    yield stack
    stack.down(report=lambda line: None)


def test_a_folder_uploaded_file_by_file_reaches_its_final_stage_as_one_run(stack: LocalStack) -> None:
    # GIVEN a dataset folder uploaded one file at a time, without a manifest (the quiet period decides)
    upload(stack, "chat/v1", [SAMPLE / "train_sft.jsonl", SAMPLE / "test_sft.jsonl"])
    # WHEN the chain runs THEN exactly one run ends, live
    runs = wait_for(lambda: finished_runs(stack), 90, "the run to finish", stack)
    assert len(ledger_of(stack).list_runs()) == 1
    run = runs[0]
    assert (run.status, run.stage) == (RunStatus.SUCCEEDED, RunStage.LIVE), run.error_message
    assert run.smoke["passed"] and run.validation["valid"]
    assert {item["name"] for item in run.inputs} == {"train_sft.jsonl", "test_sft.jsonl"}
    assert all(item["etag"] and item["size"] > 0 and item["url"].startswith("http") for item in run.inputs)


def test_the_http_api_lists_and_shows_runs(stack: LocalStack) -> None:
    run = wait_for(lambda: finished_runs(stack), 90, "a finished run", stack)[0]
    state = stack.load()
    assert state is not None
    status, body = http_json(f"{state.functions_url}/api/runs")
    assert status == 200 and run.run_id in [item["run_id"] for item in body["runs"]]
    status, body = http_json(f"{state.functions_url}/api/runs/{run.run_id}")
    assert status == 200 and body["status"] == "succeeded" and "AccountKey" not in json.dumps(body)
    status, body = http_json(f"{state.functions_url}/api/runs/no-such-run")
    assert status == 404


def test_a_malformed_queue_message_goes_to_the_poison_queue_and_disturbs_nothing(stack: LocalStack) -> None:
    from azure.storage.queue import QueueClient

    state = stack.load()
    assert state is not None
    queue = QueueClient.from_connection_string(state.connection_string, "validate-dataset")
    poison = QueueClient.from_connection_string(state.connection_string, "validate-dataset-poison")
    queue.send_message(encode_queue_body('{"type": "ValidateDataset", "run_id": 42}'))
    queue.send_message("this is not base64 {")
    before = len(ledger_of(stack).list_runs())
    upload(stack, "chat/v2", [SAMPLE / "train_sft.jsonl", SAMPLE / "autopilot.json"])

    def poisoned() -> list[str]:
        try:
            return [m.content for m in poison.peek_messages(max_messages=32)]
        except Exception:
            return []

    bodies = wait_for(lambda: len(poisoned()) >= 2 and poisoned(), 60, "two messages in the poison queue", stack)
    assert "this is not base64 {" in bodies
    runs = wait_for(
        lambda: len(finished_runs(stack)) == before + 1 and finished_runs(stack), 90, "the second run", stack
    )
    assert all(run.status is RunStatus.SUCCEEDED for run in runs)


def test_every_event_and_message_delivered_twice_still_gives_one_run_one_job_one_model(
    doubled_stack: LocalStack,
) -> None:
    upload(doubled_stack, "chat/v1", [SAMPLE / "train_sft.jsonl", SAMPLE / "test_sft.jsonl", SAMPLE / "autopilot.json"])
    runs = wait_for(lambda: finished_runs(doubled_stack), 90, "the run to finish", doubled_stack)
    assert len(ledger_of(doubled_stack).list_runs()) == 1
    run = runs[0]
    assert run.status is RunStatus.SUCCEEDED, run.error_message
    state = backend_state(doubled_stack)
    assert list(state["jobs"]) == [run.job_name]
    assert {name: list(v) for name, v in state["models"].items()} == {run.model_name: [run.model_version]}
    assert list(state["endpoints"][run.endpoint_name]["deployments"]) == [run.deployment_name]


def test_up_again_starts_nothing_and_down_stops_exactly_what_up_started(tmp_path: Path) -> None:
    stack = start_stack(tmp_path / "s")
    state = stack.load()
    assert state is not None
    lines: list[str] = []
    stack.up(report=lines.append)
    assert lines == [] and stack.load() == state
    stack.down(report=lines.append)
    assert all("stopped" in line for line in lines) and len(lines) == 3
    assert not any(stack.status().values())
    shutil.rmtree(tmp_path / "s", ignore_errors=True)


def autopilot(stack: LocalStack, *args: str) -> subprocess.CompletedProcess[str]:
    state = stack.load()
    assert state is not None
    env = {**os.environ, "AzureWebJobsStorage": state.connection_string}
    return subprocess.run(
        [sys.executable, "-m", "autopilot", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_the_cli_uploads_a_folder_and_follows_its_run_to_the_end(stack: LocalStack, tmp_path: Path) -> None:
    folder = tmp_path / "ds"
    folder.mkdir()
    shutil.copy(SAMPLE / "train_sft.jsonl", folder)
    (folder / "autopilot.json").write_text('{"description": "cli test"}')
    (folder / "notes.txt").write_text("not part of the dataset")
    uploaded = autopilot(stack, "upload", str(folder), "--dataset", "cli-test", "--version", "v7")
    assert uploaded.returncode == 0, uploaded.stderr
    said = uploaded.stdout + uploaded.stderr  # progress (the skipped file) goes to stderr, the run id to stdout
    assert "skipping" in said and "notes.txt" in said
    run_id = uploaded.stdout.split("run id: ")[1].split()[0]
    followed = autopilot(stack, "run", run_id, "--follow", "--timeout", "90")
    assert followed.returncode == 0, followed.stdout + followed.stderr
    assert "validating" in followed.stdout and "status    succeeded" in followed.stdout
    listed = json.loads(autopilot(stack, "runs", "--json").stdout)
    assert run_id in [run["run_id"] for run in listed]
    shown = json.loads(autopilot(stack, "run", run_id, "--json").stdout)
    assert shown["dataset"] == "cli-test" and shown["version"] == "v7" and shown["status"] == "succeeded"


def test_the_cli_names_usage_errors_with_exit_code_2(stack: LocalStack, tmp_path: Path) -> None:
    missing = autopilot(stack, "upload", str(tmp_path / "nope"), "--dataset", "x")
    assert missing.returncode == 2 and "is not a folder" in missing.stderr
    (tmp_path / "empty").mkdir()
    no_train = autopilot(stack, "upload", str(tmp_path / "empty"), "--dataset", "x")
    assert no_train.returncode == 2 and "no train file" in no_train.stderr
    unknown = autopilot(stack, "run", "no-such-run")
    assert unknown.returncode == 2 and "no run no-such-run" in unknown.stderr


def test_no_secret_reaches_the_logs_or_the_ledger(stack: LocalStack) -> None:
    from shared.settings import AZURITE_KEY

    wait_for(lambda: finished_runs(stack), 90, "a finished run", stack)
    for log in stack.logs.glob("*.log"):
        assert AZURITE_KEY not in log.read_text(errors="replace"), log.name
    for run in ledger_of(stack).list_runs():
        assert AZURITE_KEY not in json.dumps(run.to_dict())


def test_blob_store_keeps_content_md5s_and_reads_only_the_version_asked_for(stack: LocalStack) -> None:
    state = stack.load()
    assert state is not None
    store = AzureBlobStore(state.connection_string)
    # Azurite, as Blob Storage, sets Content-MD5 for a blob put in one request; upload can set it too
    put = store.upload("identity-check", "a/v1/train.jsonl", b"{}\n")
    given = store.upload("identity-check", "a/v1/test.jsonl", b"[]\n", content_md5=hashlib.md5(b"[]\n").hexdigest())
    listed = {blob.name: blob.content_md5 for blob in store.list_blobs("identity-check", "a/v1/")}
    assert listed == {put.name: hashlib.md5(b"{}\n").hexdigest(), given.name: hashlib.md5(b"[]\n").hexdigest()}
    # a version written over is refused; unpinned, the newest is read
    store.upload("identity-check", "a/v1/train.jsonl", b"{}\n{}\n")
    with pytest.raises(BlobChangedError, match="has been written since its version"):
        store.open_read("identity-check", "a/v1/train.jsonl", put.etag)
    with store.open_read("identity-check", "a/v1/train.jsonl") as stream:
        assert stream.read() == b"{}\n{}\n"


def test_a_new_version_that_answers_worse_is_rolled_back_and_the_live_one_keeps_serving(
    stack: LocalStack, tmp_path: Path
) -> None:
    # GIVEN a live model for dataset "gate" WHEN a new version's model answers worse than it
    live = tmp_path / "v1"
    worse = tmp_path / "v2"
    for folder, manifest in ((live, {}), (worse, {"parameters": {"simulate_failure": "quality"}})):
        folder.mkdir()
        shutil.copy(SAMPLE / "train_sft.jsonl", folder)
        shutil.copy(SAMPLE / "test_sft.jsonl", folder)
        (folder / "autopilot.json").write_text(json.dumps(manifest))
    first = autopilot(stack, "upload", str(live), "--dataset", "gate", "--version", "v1")
    first_id = first.stdout.split("run id: ")[1].split()[0]
    assert autopilot(stack, "run", first_id, "--follow", "--timeout", "90").returncode == 0
    second = autopilot(stack, "upload", str(worse), "--dataset", "gate", "--version", "v2")
    second_id = second.stdout.split("run id: ")[1].split()[0]
    followed = autopilot(stack, "run", second_id, "--follow", "--timeout", "90")
    # THEN it is rolled back for quality, with both similarities, and traffic stays on the live deployment
    assert followed.returncode == 1, followed.stdout + followed.stderr
    rolled_back = ledger_of(stack).get(second_id)
    kept = ledger_of(stack).get(first_id)
    assert rolled_back is not None and kept is not None
    assert (rolled_back.status, rolled_back.error_category) == (RunStatus.ROLLED_BACK, "quality")
    assert rolled_back.smoke["similarity"] < rolled_back.smoke["live_similarity"]
    assert "status    rolled_back" in followed.stdout and "similarity to the test answers" in followed.stdout
    endpoint = backend_state(stack)["endpoints"][kept.endpoint_name]
    assert endpoint["traffic"] == {kept.deployment_name: 100} and kept.endpoint_state == "live"
