"""Starting the local stack's processes and waiting until they answer."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# A word each service's command line holds: a process id that `up` remembered counts as the service's only
# while its command line still holds it and it started when `up` saw it start (a reused id does neither).
SERVICE_MARKERS = {"azurite": "azurite", "eventgrid": "autopilot.local.eventgrid", "runner": "autopilot.local.runner"}
# create_time is derived from boot time and clock ticks: the same process reads the same to well within this.
_START_TIME_TOLERANCE_S = 0.5


def process_start_time(pid: int) -> float | None:
    """When the process started (seconds since the epoch, as psutil reads it); None if it is gone."""
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def is_our_process(pid: int, service: str, started_at: float | None) -> bool:
    """Whether `pid` is still the `service` process `up` started: its command line and start time match.

    A stack.json without start times (written before they were kept) is checked by the command line alone.
    """
    import psutil

    try:
        process = psutil.Process(pid)
        command_line = " ".join(process.cmdline())
        created = process.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    if SERVICE_MARKERS[service] not in command_line:
        return False
    return started_at is None or abs(created - started_at) <= _START_TIME_TOLERANCE_S


# Where free_port looks: below Linux's default ephemeral range (32768-60999, net.ipv4.ip_local_port_range), so that
# a service restarted on its port (the soak's runner kills) does not find it taken by some client's outgoing
# connection, which the kernel gives a port from that range. Azurite's own defaults (10000-10002) and the
# Functions host's 7071 sit below it too.
SERVICE_PORTS = range(20000, 32000)
_port_picker = random.Random()
# Ports this process handed out: a service may not have taken one yet, and the next call must not give it again.
_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing uses right now, outside the range outgoing connections are given."""
    for _ in range(200):
        port = _port_picker.choice(SERVICE_PORTS)
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as sock:  # a crowded range: any port the kernel gives
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_answers(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_ports(ports: list[int], timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until every port accepts connections; raise `RuntimeError` naming the ones that did not."""
    deadline = time.monotonic() + timeout
    while True:
        waiting = [port for port in ports if not port_answers(port)]
        if not waiting:
            return
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"process {process.args!r} exited with {process.returncode} before ports {waiting} answered"
            )
        if time.monotonic() > deadline:
            raise RuntimeError(f"ports {waiting} did not answer within {timeout:.0f} s")
        time.sleep(0.1)


def azurite_executable() -> str:
    """The project's pinned Azurite (`npm install` puts it under node_modules), else one on PATH."""
    local = PROJECT_ROOT / "node_modules" / ".bin" / "azurite"
    if local.exists():
        return str(local)
    found = shutil.which("azurite")
    if found is None:
        raise RuntimeError("Azurite is not installed: run `npm install` in the project folder (make does it).")
    return found


def start_azurite(
    ports: tuple[int, int, int], log_path: Path, location: Path | None = None, timeout: float = 30.0
) -> subprocess.Popen[bytes]:
    """Start Azurite (blob, queue, table on `ports`) in the background and return once all three answer.

    With `location` its data persists in that folder; without, it lives in memory.
    """
    blob, queue, table = ports
    args = [
        azurite_executable(),
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(blob),
        "--queueHost",
        "127.0.0.1",
        "--queuePort",
        str(queue),
        "--tableHost",
        "127.0.0.1",
        "--tablePort",
        str(table),
        "--disableTelemetry",
        "--skipApiVersionCheck",
        "--loose",
    ]
    if location is None:
        args.append("--inMemoryPersistence")
    else:
        location.mkdir(parents=True, exist_ok=True)
        args += ["--location", str(location)]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    try:
        wait_for_ports(list(ports), timeout, process)
    except RuntimeError:
        process.terminate()
        raise
    return process
