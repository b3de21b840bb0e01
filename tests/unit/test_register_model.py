"""`autopilot register-model`: GIVEN a model folder from outside the app, WHEN it is registered, THEN the backend
keeps the version and publishes ModelRegistered, which rolls it out; the app's own registrations are announced
too and change nothing."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from autopilot.cli import main
from autopilot.commands.exits import EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE
from autopilot.local.processes import free_port
from shared.errors import InvalidParameterError, TransientError
from shared.messages import DeployModel
from shared.ml.local.backend import LocalMLBackend
from shared.ml.port import RUN_TAG, ModelRegistration
from shared.ml.simulated import SimulatedMLBackend
from shared.stages.redeploy import MODEL_REGISTERED, ModelRegistered, redeploy_model, redeploy_run_id
from tests.fakes import fake_context
from tests.unit.ml_local.fakes import FakePublisher
from tests.unit.test_simulated_faults import job

AZURE_STORAGE = "DefaultEndpointsProtocol=https;AccountName=fake;AccountKey=ZmFrZQ==;EndpointSuffix=core.windows.net"


class EventSink(ThreadingHTTPServer):
    """The Event Grid stand-in's publish URL, keeping what is posted."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Keep)
        self.events: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/api/events"


class _Keep(BaseHTTPRequestHandler):
    server: EventSink

    def do_POST(self) -> None:
        self.server.events.extend(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def sink() -> Iterator[EventSink]:
    server = EventSink()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def simulated_stack(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sink: EventSink) -> Path:
    """GIVEN the simulated backend's state folder and a stand-in taking events (storage: an account's, not Azurite)."""
    monkeypatch.setenv("AzureWebJobsStorage", AZURE_STORAGE)
    monkeypatch.setenv("AUTOPILOT_ML_BACKEND", "simulated")
    monkeypatch.setenv("AUTOPILOT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("AUTOPILOT_EVENTGRID_PUBLISH_URL", sink.url)
    monkeypatch.delenv("AUTOPILOT_DEBUG", raising=False)
    return tmp_path / "state"


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "support-bot"
    folder.mkdir()
    (folder / "MLmodel").write_text("flavors: {}\n")
    return folder


def test_a_model_registered_from_outside_is_kept_and_announced(
    simulated_stack: Path, sink: EventSink, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # WHEN a folder is registered twice, the second time naming its endpoint
    assert main(["register-model", str(model_dir), "--name", "support-bot", "--json"]) == EXIT_OK
    first = json.loads(capsys.readouterr().out)
    argv = ["register-model", str(model_dir), "--name", "support-bot", "--tag", "autopilot_endpoint=ep-a=b", "--json"]
    assert main([*argv, "--version", "2"]) == EXIT_OK
    captured = capsys.readouterr()
    second = json.loads(captured.out)

    # THEN the versions count up, each has its ModelRegistered event, and progress stayed off stdout
    assert (first["version"], second["version"]) == ("1", "2")
    assert second["tags"] == {"autopilot_endpoint": "ep-a=b"}
    assert second["redeploy_run_id"] == redeploy_run_id("support-bot", "2")
    assert "registering" in captured.err
    assert [event["eventType"] for event in sink.events] == [MODEL_REGISTERED, MODEL_REGISTERED]
    assert sink.events[1]["subject"] == "models/support-bot:2"
    assert sink.events[1]["data"]["modelTags"] == {"autopilot_endpoint": "ep-a=b"}
    # AND the function host's backend, reading the same state file, can deploy it
    state = json.loads((simulated_stack / "simulated-backend.json").read_text())
    assert set(state["models"]["support-bot"]) == {"1", "2"}


def test_the_event_starts_a_run_when_the_setting_names_the_model(
    simulated_stack: Path, sink: EventSink, model_dir: Path
) -> None:
    assert main(["register-model", str(model_dir), "--name", "support-bot"]) == EXIT_OK
    [raw] = sink.events
    ctx = fake_context(redeploy_models=("support-*",))
    ctx.backend = SimulatedMLBackend(job_seconds=None, state_path=simulated_stack / "simulated-backend.json")

    command = redeploy_model(ModelRegistered.parse(raw["id"], raw["eventType"], raw["subject"], raw["data"]), ctx)

    assert command == DeployModel(redeploy_run_id("support-bot", "1"))


def test_a_version_other_than_the_next_one_is_refused_before_anything_is_registered(
    simulated_stack: Path, sink: EventSink, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["register-model", str(model_dir), "--name", "support-bot", "--version", "7"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "version 1, not 7" in err and "--version 1" in err
    assert sink.events == []


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--tag", f"{RUN_TAG}=r1"], RUN_TAG),
        (["--tag", "no-equals"], "is not K=V"),
    ],
)
def test_bad_tags_are_usage_errors(
    simulated_stack: Path, model_dir: Path, argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["register-model", str(model_dir), "--name", "m", *argv])
    assert exited.value.code == EXIT_USAGE and words in capsys.readouterr().err


def test_a_missing_folder_exits_2(simulated_stack: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["register-model", str(tmp_path / "nowhere"), "--name", "m"]) == EXIT_USAGE
    assert "does not exist" in capsys.readouterr().err


def test_with_the_stand_in_down_nothing_is_registered_and_it_says_autopilot_up(
    simulated_stack: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AUTOPILOT_EVENTGRID_PUBLISH_URL", f"http://127.0.0.1:{free_port()}/api/events")

    assert main(["register-model", str(model_dir), "--name", "m"]) == EXIT_UNREACHABLE

    err = capsys.readouterr().err
    assert "autopilot up" in err and "Traceback" not in err
    assert not (simulated_stack / "simulated-backend.json").exists()


def test_with_the_stack_down_it_says_autopilot_up(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, port in (("BLOB", 1), ("QUEUE", 2), ("TABLE", 3), ("RUNNER", 4), ("EVENTGRID", 5)):
        monkeypatch.setenv(f"AUTOPILOT_{name}_PORT", str(port))
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    monkeypatch.setenv("AUTOPILOT_STATE_DIR", str(tmp_path / "state"))

    assert main(["register-model", str(model_dir), "--name", "m"]) == EXIT_UNREACHABLE
    assert "autopilot up" in capsys.readouterr().err


def test_the_azure_backend_is_told_to_register_in_the_workspace(
    simulated_stack: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AUTOPILOT_ML_BACKEND", "azureml")
    assert main(["register-model", str(model_dir), "--name", "m"]) == EXIT_USAGE
    assert "az ml model create" in capsys.readouterr().err


def test_the_apps_own_registration_is_announced_once_and_changes_nothing() -> None:
    # GIVEN a run's fine-tuning job that completed
    publisher = FakePublisher()
    backend = SimulatedMLBackend(job_seconds=None, publisher=publisher)
    backend.submit_finetune_job(job("j1"))
    backend.finish_job("j1")
    publisher.events.clear()

    # WHEN the app registers its model, and a retry registers it again
    registration = ModelRegistration("j1", "support-bot", "5", tags={RUN_TAG: "run-1"})
    backend.register_model(registration)
    backend.register_model(registration)

    # THEN one ModelRegistered carries the run tag, and the handler leaves it alone even though the name matches
    [raw] = publisher.events
    event = ModelRegistered.parse(raw["id"], raw["eventType"], raw["subject"], raw["data"])
    assert event.tags[RUN_TAG] == "run-1"
    ctx = fake_context(redeploy_models=("*",))
    assert redeploy_model(event, ctx) is None
    assert ctx.ledger.list_runs() == []


def test_the_apps_own_registration_survives_a_stand_in_that_is_down() -> None:
    publisher = FakePublisher()
    backend = SimulatedMLBackend(job_seconds=None, publisher=publisher)
    backend.submit_finetune_job(job("j1"))
    backend.finish_job("j1")
    publisher.fail = True
    assert backend.register_model(ModelRegistration("j1", "m", "1", tags={RUN_TAG: "r"})).version == "1"


def test_two_processes_on_one_state_file_keep_each_others_writes(tmp_path: Path) -> None:
    # GIVEN the function host's backend and the CLI's on one state file
    path = tmp_path / "simulated-backend.json"
    host = SimulatedMLBackend(job_seconds=None, state_path=path)
    cli = SimulatedMLBackend(job_seconds=None, state_path=path, publisher=FakePublisher())
    host.ensure_endpoint("ep", {})

    # WHEN the CLI registers a model and the host writes after it
    cli.register_model_folder(tmp_path, "outside", {})
    host.submit_finetune_job(job("j1"))

    # THEN both writes are in the file, and each backend sees the other's
    again = SimulatedMLBackend(job_seconds=None, state_path=path)
    assert "outside" in again.state["models"] and "j1" in again.state["jobs"] and "ep" in again.state["endpoints"]
    assert cli.get_job("j1").status == "Running"
    assert cli.get_endpoint("ep") is not None


def test_the_local_backend_registers_an_mlflow_folder_and_announces_it(tmp_path: Path, model_dir: Path) -> None:
    publisher = FakePublisher()
    backend = LocalMLBackend(
        tmp_path / "state",
        storage_connection="UseDevelopmentStorage=true",
        publish_url="http://127.0.0.1:1/api/events",
        base_model=str(model_dir),
        publisher=publisher,
        watch_seconds=None,
    )
    assert backend.next_model_version("support-bot") == "1"

    registered = backend.register_model_folder(model_dir, "support-bot", {"autopilot_endpoint": "ep"})

    assert (registered.name, registered.version, registered.uri) == ("support-bot", "1", "models:/support-bot/1")
    [event] = publisher.events
    assert (event["eventType"], event["subject"]) == (MODEL_REGISTERED, "models/support-bot:1")
    assert event["data"]["modelTags"] == {"autopilot_endpoint": "ep"}
    assert backend.next_model_version("support-bot") == "2"
    # the version keeps a copy under the state dir, so the folder it came from may go
    copies = list((backend.store.artifact_root / "registered" / "support-bot").iterdir())
    assert len(copies) == 1 and (copies[0] / "MLmodel").is_file()
    with pytest.raises(InvalidParameterError, match="no MLmodel file"):
        backend.register_model_folder(tmp_path, "support-bot", {})
    publisher.fail = True
    with pytest.raises(TransientError, match="support-bot:2 is registered, but its ModelRegistered event"):
        backend.register_model_folder(model_dir, "support-bot", {})
