"""The local endpoint's request log: status and latency per request, read back as a deployment's health."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest

from shared.errors import BackendError, TransientError
from shared.ml.local.backend import LocalMLBackend
from shared.ml.local.serving import make_deployment_server
from shared.ml.scoring import chat_request
from tests.unit.ml_local.test_serving import backend, serve  # noqa: F401  (`backend` is the fixture)


def failing_model(messages: list[dict[str, str]], parameters: dict[str, object]) -> str:
    if "fail" in messages[-1]["content"]:
        raise RuntimeError("the model crashed")  # the deployment drops the connection: the endpoint answers 503
    return "fine"


def test_live_requests_are_logged_with_status_and_latency_and_pinned_ones_left_out(
    backend: LocalMLBackend,  # noqa: F811
) -> None:
    # GIVEN 'green' takes all live traffic and fails on some requests
    green = make_deployment_server(failing_model, 0)
    serve(green)
    with backend.store.lock():
        record = backend.store.read_endpoint("ep")
        assert record is not None
        record["deployments"]["green"] = {**record["deployments"]["blue"], "port": green.server_address[1]}
        record["traffic"] = {"blue": 0, "green": 100}
        backend.store.write_endpoint(record)
    since = datetime.now(timezone.utc) - timedelta(seconds=1)
    failures = 0
    try:
        # WHEN clients send four requests, two of which crash the model, and a smoke test one to blue
        for content in ("one", "fail two", "three", "fail four"):
            try:
                backend.score("ep", chat_request([{"role": "user", "content": content}]))
            except TransientError:  # a 5xx
                failures += 1
        backend.score("ep", chat_request([{"role": "user", "content": "smoke"}]), "blue")
    finally:
        threading.Thread(target=green.shutdown, daemon=True).start()
    # THEN green's health counts the four live requests and their two 5xx; blue's pinned request is left out
    health = backend.deployment_health("ep", "green", since)
    assert (failures, health.requests, health.errors_5xx) == (2, 4, 2)
    assert health.p95_ms is not None and health.p95_ms >= 0
    assert backend.deployment_health("ep", "blue", since).requests == 0
    assert backend.deployment_health("ep", "green", datetime.now(timezone.utc) + timedelta(seconds=1)).requests == 0


def test_health_of_an_unknown_endpoint_is_an_error(backend: LocalMLBackend) -> None:  # noqa: F811
    with pytest.raises(BackendError):
        backend.deployment_health("missing", "blue", datetime.now(timezone.utc))
