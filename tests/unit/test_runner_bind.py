"""The runner's HTTP server waits a little for its port: a killed runner's forked children may still hold it."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from autopilot.local import runner


def _listening_socket() -> socket.socket:
    held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    held.bind(("127.0.0.1", 0))
    held.listen()
    return held


def test_a_port_freed_while_the_runner_starts_is_taken() -> None:
    held = _listening_socket()
    port = held.getsockname()[1]
    threading.Timer(0.5, held.close).start()
    server = runner._RunnerHttpServer(("127.0.0.1", port), None, None)  # type: ignore[arg-type]
    try:
        assert server.server_address[1] == port
    finally:
        server.server_close()


def test_a_port_that_stays_taken_fails_the_start_after_the_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner._RunnerHttpServer, "BIND_WAIT_SECONDS", 0.5)
    held = _listening_socket()
    try:
        with pytest.raises(OSError, match="in use"):
            runner._RunnerHttpServer(("127.0.0.1", held.getsockname()[1]), None, None)  # type: ignore[arg-type]
    finally:
        held.close()


def test_free_ports_are_distinct_and_outside_the_range_outgoing_connections_get() -> None:
    from autopilot.local.processes import SERVICE_PORTS, free_port

    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    assert all(port in SERVICE_PORTS for port in ports)
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert max(SERVICE_PORTS) < low
