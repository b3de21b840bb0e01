"""`autopilot up` waits until the local endpoints answer, or names those still loading.

GIVEN local endpoint records in a state folder and real HTTP servers on some of their ports (standing in for
the endpoint and deployment processes of shared/ml/local/serving.py), WHEN `up` (or its wait) runs THEN it
returns once each answers its health URL, a line per endpoint, or fails naming those that do not answer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from autopilot.cli import main
from autopilot.commands.exits import EXIT_OK, EXIT_UNREACHABLE
from autopilot.local.processes import free_port
from autopilot.local.stack import EndpointsNotServing, ServingProcess, serving_processes, wait_until_serving
from shared.ml.local.store import LocalStore


class _Answers(BaseHTTPRequestHandler):
    """200 to any GET: a health URL that answers."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:
        pass


class AnsweringServers:
    """Real HTTP servers on free ports, started now or later."""

    def __init__(self) -> None:
        self.servers: list[ThreadingHTTPServer] = []

    def start(self, port: int) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", port), _Answers)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.servers.append(server)

    def stop(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()


@pytest.fixture
def servers() -> Iterator[AnsweringServers]:
    started = AnsweringServers()
    yield started
    started.stop()


def _endpoint_record(name: str, port: int, deployments: dict[str, int], pid: int | None) -> dict[str, object]:
    return {
        "name": name,
        "port": port,
        "pid": pid,
        "deployments": {
            d: {"port": p, "pid": pid, "model_name": "m", "model_version": "1"} for d, p in deployments.items()
        },
        "traffic": {d: 100 // len(deployments) for d in deployments},
    }


def test_serving_processes_are_each_endpoint_and_deployment_with_its_health_url(tmp_path: Path) -> None:
    LocalStore(tmp_path).write_endpoint(_endpoint_record("chat", 9001, {"blue": 9002, "green": 9003}, 42))

    found = serving_processes(tmp_path)

    assert [(p.name, p.health_url, p.pid) for p in found] == [
        ("chat", "http://127.0.0.1:9001/health", 42),
        ("chat/blue", "http://127.0.0.1:9002/health", 42),
        ("chat/green", "http://127.0.0.1:9003/health", 42),
    ]
    assert found[1].log.name == "deployment.log"


def test_the_wait_ends_once_each_answers_with_a_line_for_each(servers: AnsweringServers, tmp_path: Path) -> None:
    ready, loading = free_port(), free_port()
    servers.start(ready)
    # The deployment answers once it has loaded its model: a second later.
    timer = threading.Timer(1.0, servers.start, args=(loading,))
    timer.start()
    lines: list[str] = []
    processes = [
        ServingProcess("chat", f"http://127.0.0.1:{ready}/health", None, tmp_path / "endpoint.log"),
        ServingProcess("chat/blue", f"http://127.0.0.1:{loading}/health", None, tmp_path / "deployment.log"),
    ]

    wait_until_serving(processes, lines.append, timeout=30, interval=0.05)

    timer.join()
    assert lines[0] == "local endpoints: waiting up to 30 s until each answers: chat, chat/blue"
    assert [line.split(":")[0] for line in lines[1:]] == ["local endpoint chat", "local endpoint chat/blue"]


def test_the_wait_names_those_still_loading_and_those_whose_process_exited(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    processes = [
        ServingProcess("chat/blue", f"http://127.0.0.1:{free_port()}/health", None, tmp_path / "blue.log"),
        ServingProcess("chat/green", f"http://127.0.0.1:{free_port()}/health", gone.pid, tmp_path / "green.log"),
    ]
    lines: list[str] = []

    with pytest.raises(EndpointsNotServing) as raised:
        wait_until_serving(processes, lines.append, timeout=0.5, interval=0.05)

    assert str(raised.value) == "local endpoints not serving (still loading after 0 s: chat/blue; exited: chat/green)"
    assert raised.value.logs == [tmp_path / "blue.log", tmp_path / "green.log"]
    assert f"local endpoint chat/green: its process exited; see {tmp_path / 'green.log'}" in lines


@pytest.fixture
def stack_answering(servers: AnsweringServers, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """GIVEN a local stack whose services answer (servers on their ports), so that `up` starts nothing."""
    for name in ("BLOB", "QUEUE", "TABLE", "RUNNER", "EVENTGRID"):
        port = free_port()
        servers.start(port)
        monkeypatch.setenv(f"AUTOPILOT_{name}_PORT", str(port))
    monkeypatch.delenv("AzureWebJobsStorage", raising=False)
    monkeypatch.setenv("AUTOPILOT_ML_BACKEND", "local")
    monkeypatch.setenv("AUTOPILOT_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def test_up_returns_once_the_local_endpoints_answer(
    stack_answering: Path, servers: AnsweringServers, capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint, deployment = free_port(), free_port()
    servers.start(endpoint)
    servers.start(deployment)
    # Running processes (this one stands in for them): `up` starts none, it waits for them to answer.
    LocalStore(stack_answering).write_endpoint(_endpoint_record("chat", endpoint, {"blue": deployment}, os.getpid()))

    assert main(["up", "--json"]) == EXIT_OK

    captured = capsys.readouterr()
    assert "local endpoint chat/blue: answers" in captured.err
    assert json.loads(captured.out)["local_endpoints"] == {"chat": True, "chat/blue": True}


def test_up_names_the_local_endpoints_still_loading_and_exits_3(
    stack_answering: Path, servers: AnsweringServers, capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint = free_port()
    servers.start(endpoint)
    LocalStore(stack_answering).write_endpoint(_endpoint_record("chat", endpoint, {"blue": free_port()}, os.getpid()))

    assert main(["up", "--timeout", "1"]) == EXIT_UNREACHABLE

    err = capsys.readouterr().err
    assert "autopilot up: error: local endpoints not serving (still loading after 1 s: chat/blue)" in err
    assert "autopilot up --timeout S" in err and "deployment.log" in err and "Traceback" not in err


def test_up_no_wait_does_not_wait_for_the_local_endpoints(
    stack_answering: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    LocalStore(stack_answering).write_endpoint(
        _endpoint_record("chat", free_port(), {"blue": free_port()}, os.getpid())
    )

    assert main(["up", "--no-wait"]) == EXIT_OK

    assert "local endpoints: waiting" not in capsys.readouterr().out
