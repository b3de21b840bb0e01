"""Endpoint routing, key checks and request counting, with the servers in threads and a fake model."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from shared.errors import BackendError, NotFoundError
from shared.ml.local.backend import LocalMLBackend
from shared.ml.local.serving import (
    EndpointHandler,
    choose_deployment,
    make_deployment_server,
    make_endpoint_server,
)
from shared.ml.scoring import chat_request, response_text
from tests.unit.ml_local.fakes import FakePublisher, FakeSpawn


def first(names: list[str], weights: list[int]) -> str:
    return names[0]


def test_routing_follows_the_header_then_the_weights() -> None:
    traffic = {"blue": 0, "green": 100}
    assert choose_deployment(traffic, None, first) == "green"
    assert choose_deployment(traffic, "blue", first) == "blue"
    with pytest.raises(LookupError, match="does not exist"):
        choose_deployment(traffic, "red", first)
    with pytest.raises(LookupError, match="no valid deployments"):
        choose_deployment({"blue": 0}, None, first)


def serve(server: ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[LocalMLBackend]:
    """A backend whose endpoint 'ep' and deployment 'blue' are servers in this process."""
    backend = LocalMLBackend(
        tmp_path,
        storage_connection="UseDevelopmentStorage=true",
        publish_url="http://127.0.0.1:1/api/events",
        base_model="SmolLM2-135M-Instruct",
        publisher=FakePublisher(),
        watch_seconds=None,
        spawn=FakeSpawn(),
    )
    endpoint = backend.ensure_endpoint("ep", {"managed_by": "finetune-autopilot"})
    model = make_deployment_server(lambda messages, parameters: f"Ahoy! {messages[-1]['content']}", 0)
    with backend.store.lock():
        record = backend.store.read_endpoint("ep")
        assert record is not None
        record["deployments"]["blue"] = {
            "model_name": "m",
            "model_version": "1",
            "created_at": "2026-01-01T00:00:00Z",
            "port": model.server_address[1],
            "pid": 0,
        }
        record["traffic"] = {"blue": 100}
        backend.store.write_endpoint(record)
    port = int(endpoint.scoring_uri.split(":")[2].split("/")[0])
    servers = [make_endpoint_server(backend.store, "ep", port), model]
    for server in servers:
        serve(server)
    yield backend
    for server in servers:
        server.shutdown()
        server.server_close()


def test_a_keyed_request_in_the_azure_format_is_answered_and_counted(backend: LocalMLBackend) -> None:
    answer = backend.score("ep", chat_request([{"role": "user", "content": "hello"}]))
    pinned = backend.score("ep", chat_request([{"role": "user", "content": "again"}]), "blue")
    assert (answer, response_text(pinned)) == ({"output": "Ahoy! hello"}, "Ahoy! again")
    now = datetime.now(timezone.utc)
    assert sum(backend.requests_per_minute("ep", now - timedelta(minutes=5))["blue"]) == 2
    endpoint = backend.get_endpoint("ep")
    assert endpoint is not None and endpoint.last_request_at is not None
    deployment = backend.get_deployment("ep", "blue")
    assert deployment is not None and deployment.ready


def post(uri: str, headers: dict[str, str]) -> int:
    body = json.dumps(chat_request([{"role": "user", "content": "hello"}])).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(uri, data=body, headers=headers), timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def test_a_missing_or_wrong_key_gets_401_and_errors_are_translated(backend: LocalMLBackend) -> None:
    endpoint = backend.get_endpoint("ep")
    assert endpoint is not None
    secondary = backend.store.endpoint_keys("ep")["secondary"]
    assert post(endpoint.scoring_uri, {}) == 401
    assert post(endpoint.scoring_uri, {"Authorization": "Bearer not-the-key"}) == 401
    assert post(endpoint.scoring_uri, {"Authorization": f"Bearer {secondary}"}) == 200
    with pytest.raises(NotFoundError, match="404"):
        backend.score("ep", chat_request([{"role": "user", "content": "hello"}]), "green")
    with pytest.raises(NotFoundError):
        backend.score("missing", chat_request([{"role": "user", "content": "hello"}]))


def test_traffic_must_name_deployments_and_add_up_and_live_ones_are_not_deleted(backend: LocalMLBackend) -> None:
    with pytest.raises(BackendError, match="unknown deployments"):
        backend.set_traffic("ep", {"green": 100})
    with pytest.raises(BackendError, match="add up to 100"):
        backend.set_traffic("ep", {"blue": 50})
    with pytest.raises(BackendError, match="still takes traffic"):
        backend.delete_deployment("ep", "blue")
    backend.set_traffic("ep", {"blue": 0})
    backend.delete_deployment("ep", "blue")
    endpoint = backend.get_endpoint("ep")
    assert endpoint is not None and endpoint.deployments == ()


def test_a_deployment_whose_process_died_is_failed_with_its_log(backend: LocalMLBackend) -> None:
    with backend.store.lock():
        record = backend.store.read_endpoint("ep")
        assert record is not None
        record["deployments"]["green"] = {
            "model_name": "m",
            "model_version": "2",
            "created_at": "2026-01-01T00:00:00Z",
            "port": 9,
            "pid": 2**22 + 12345,
        }
        backend.store.write_endpoint(record)
    log = backend.store.deployment_dir("ep", "green") / "deployment.log"
    log.parent.mkdir(parents=True)
    log.write_text("loading model\nRuntimeError: out of memory\n")
    deployment = backend.get_deployment("ep", "green")
    assert deployment is not None and deployment.failed
    assert deployment.error is not None and "out of memory" in deployment.error


def test_mirror_traffic_copies_its_share_of_unpinned_requests_and_drops_the_answers(
    backend: LocalMLBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a second deployment 'green' with no live traffic and 50 % mirror traffic
    heard: list[str] = []
    mirror = make_deployment_server(lambda messages, parameters: heard.append(messages[-1]["content"]) or "x", 0)
    serve(mirror)
    with backend.store.lock():
        record = backend.store.read_endpoint("ep")
        assert record is not None
        record["deployments"]["green"] = {**record["deployments"]["blue"], "port": mirror.server_address[1]}
        record["traffic"] = {"blue": 100, "green": 0}
        record["mirror_traffic"] = {"green": 50}
        backend.store.write_endpoint(record)
    draws = iter([0.2, 0.7])  # under 50 %, then over
    monkeypatch.setattr(EndpointHandler, "chance", staticmethod(lambda: next(draws)))
    try:
        # WHEN two unpinned requests and one pinned to blue come in
        first = backend.score("ep", chat_request([{"role": "user", "content": "one"}]))
        second = backend.score("ep", chat_request([{"role": "user", "content": "two"}]))
        pinned = backend.score("ep", chat_request([{"role": "user", "content": "three"}]), "blue")
        # THEN the callers get blue's answers, and green hears only the first request
        assert [response_text(answer) for answer in (first, second, pinned)] == [
            "Ahoy! one",
            "Ahoy! two",
            "Ahoy! three",
        ]
        deadline = datetime.now(timezone.utc) + timedelta(seconds=5)
        while not heard and datetime.now(timezone.utc) < deadline:
            threading.Event().wait(0.05)
        assert heard == ["one"]
        counts = backend.requests_per_minute("ep", datetime.now(timezone.utc) - timedelta(minutes=5))
        assert (sum(counts["blue"]), sum(counts["green"])) == (3, 1)
    finally:
        mirror.shutdown()
        mirror.server_close()
