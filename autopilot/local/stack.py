"""`autopilot up` / `down`: Azurite, the Event Grid stand-in and the function runner, in the background.

What `up` started is written to `<state dir>/stack.json` (process ids and ports); `down` stops
exactly those processes. Logs go to `<state dir>/logs/`. `up` also brings back the local ML backend's
endpoints and waits until each answers its health URL, so that a request right after it is served.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from autopilot.local.processes import (
    PROJECT_ROOT,
    is_our_process,
    port_answers,
    process_start_time,
    start_azurite,
)
from shared.ml.local.processes import pid_alive, stop_process
from shared.settings import STATE_DIR, STORAGE_CONNECTION, azurite_connection_string

SERVICES = ("azurite", "eventgrid", "runner")
DEFAULT_CLEANUP_SCHEDULE = "0 */10 * * * *"
DEFAULT_RECONCILE_SCHEDULE = "0 */5 * * * *"
# A deployment loads its model before it answers: a few seconds for the small default, minutes for a large one.
ENDPOINT_TIMEOUT_S = 300.0
PROGRESS_EVERY_S = 10.0
# App settings that override host.json values (autopilot.local.hostconfig.OVERRIDE_PREFIX), as in Azure.
LOCAL_HOST_OVERRIDES = {
    "AzureFunctionsJobHost__extensions__queues__maxPollingInterval": "00:00:02",
    "AzureFunctionsJobHost__extensions__queues__visibilityTimeout": "00:00:05",
}


@dataclass(frozen=True)
class StackPorts:
    blob: int = 10000
    queue: int = 10001
    table: int = 10002
    runner: int = 7071
    eventgrid: int = 7072

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StackPorts:
        """Ports from AUTOPILOT_*_PORT variables, the usual local ones otherwise."""
        names = {"blob": "BLOB", "queue": "QUEUE", "table": "TABLE", "runner": "RUNNER", "eventgrid": "EVENTGRID"}
        return cls(**{key: int(env.get(f"AUTOPILOT_{name}_PORT", getattr(cls, key))) for key, name in names.items()})


@dataclass
class StackState:
    ports: StackPorts
    pids: dict[str, int] = field(default_factory=dict)
    # Each process's start time (psutil's create_time): with the command line, what tells it from a reused pid.
    started: dict[str, float] = field(default_factory=dict)

    def owns(self, service: str) -> bool:
        """Whether the remembered pid of `service` is still the process `up` started."""
        pid = self.pids.get(service)
        return pid is not None and pid_alive(pid) and is_our_process(pid, service, self.started.get(service))

    @property
    def connection_string(self) -> str:
        return azurite_connection_string(self.ports.blob, self.ports.queue, self.ports.table)

    @property
    def functions_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.runner}"

    @property
    def eventgrid_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.eventgrid}"


class WaitNews(Protocol):
    """Where a wait's news goes, every `news_every` seconds (autopilot.commands.progress.Wait)."""

    @property
    def news(self) -> Callable[[str], None]: ...

    @property
    def news_every(self) -> float: ...


# A spinner shown while the block runs, given what is awaited (autopilot.commands.progress.Progress.waiting).
Spinner = Callable[[str], AbstractContextManager[WaitNews]]


def default_state_dir(env: Mapping[str, str] | None = None) -> Path:
    """AUTOPILOT_STATE_DIR (a relative one from the project folder), else the project's `.autopilot/`.

    Never the current directory: a command run elsewhere must find the same stack.
    """
    given = Path((os.environ if env is None else env).get(STATE_DIR, "").strip() or ".autopilot").expanduser()
    return given if given.is_absolute() else (PROJECT_ROOT / given).resolve()


class EndpointsNotServing(RuntimeError):
    """Local endpoints or deployments that did not answer their health URL in time, or whose process exited."""

    def __init__(self, loading: list[ServingProcess], exited: list[ServingProcess], timeout: float) -> None:
        parts = []
        if loading:
            parts.append(f"still loading after {timeout:.0f} s: {', '.join(p.name for p in loading)}")
        if exited:
            parts.append(f"exited: {', '.join(p.name for p in exited)}")
        super().__init__(f"local endpoints not serving ({'; '.join(parts)})")
        self.loading = loading
        self.exited = exited

    @property
    def logs(self) -> list[Path]:
        return [process.log for process in (*self.loading, *self.exited)]


@dataclass(frozen=True)
class ServingProcess:
    """A local endpoint server or deployment process: the URL that says it serves, and its pid."""

    name: str
    health_url: str
    pid: int | None
    log: Path


def serving_processes(state_dir: Path) -> list[ServingProcess]:
    """Every local endpoint and deployment recorded in the state folder (their routes: shared/ml/local/serving.py)."""
    from shared.ml.local.serving import HEALTH_PATH
    from shared.ml.local.store import LocalStore

    store = LocalStore(state_dir)
    found = []
    for name in store.endpoint_names():
        record = store.read_endpoint(name) or {}
        if "port" in record:
            url = f"http://127.0.0.1:{record['port']}{HEALTH_PATH}"
            found.append(ServingProcess(name, url, record.get("pid"), store.endpoint_dir(name) / "endpoint.log"))
        for deployment_name, deployment in sorted(record.get("deployments", {}).items()):
            url = f"http://127.0.0.1:{deployment['port']}{HEALTH_PATH}"
            log = store.deployment_dir(name, deployment_name) / "deployment.log"
            found.append(ServingProcess(f"{name}/{deployment_name}", url, deployment.get("pid"), log))
    return found


def wait_until_serving(
    processes: list[ServingProcess],
    report: Callable[[str], None],
    timeout: float = ENDPOINT_TIMEOUT_S,
    interval: float = 0.25,
    wait: WaitNews | None = None,
) -> None:
    """Return once every process answers its health URL; EndpointsNotServing naming those that did not.

    A line says when each answers, and every PROGRESS_EVERY_S seconds (or to `wait`, as often as it asks)
    which are still loading.
    """
    if not processes:
        return
    pending = {process.name: process for process in processes}
    exited: list[ServingProcess] = []
    report(f"local endpoints: waiting up to {timeout:.0f} s until each answers: {', '.join(pending)}")
    started = said = time.monotonic()
    while True:
        for name, process in list(pending.items()):
            if _http_ok(process.health_url):
                report(f"local endpoint {name}: answers ({time.monotonic() - started:.1f} s)")
                del pending[name]
            elif process.pid is not None and not pid_alive(process.pid):
                report(f"local endpoint {name}: its process exited; see {process.log}")
                exited.append(process)
                del pending[name]
        now = time.monotonic()
        if not pending or now - started >= timeout:
            break
        if now - said >= (wait.news_every if wait else PROGRESS_EVERY_S):
            said = now
            (wait.news if wait else report)(
                f"local endpoints: still loading after {now - started:.0f} s of {timeout:.0f} s: {', '.join(pending)}"
            )
        time.sleep(interval)
    if pending or exited:
        raise EndpointsNotServing(list(pending.values()), exited, timeout)


def _http_ok(url: str) -> bool:
    # Imported here: it costs more than the rest of a CLI command's start-up (benchmarks/cli_startup.py).
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return 200 <= response.status < 300
    except OSError:
        return False


class LocalStack:
    """The local stack rooted at one state directory."""

    def __init__(
        self,
        state_dir: Path | None = None,
        ports: StackPorts | None = None,
        app_dir: Path = PROJECT_ROOT,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._env = dict(os.environ if env is None else env)
        self.state_dir = (state_dir or default_state_dir(self._env)).resolve()
        self.app_dir = app_dir
        self._ports = ports or StackPorts.from_env(self._env)
        self.logs = self.state_dir / "logs"
        self._state_file = self.state_dir / "stack.json"

    def default_state(self) -> StackState:
        return StackState(self._ports)

    def load(self) -> StackState | None:
        if not self._state_file.exists():
            return None
        raw = json.loads(self._state_file.read_text())
        return StackState(
            StackPorts(**raw["ports"]),
            {k: int(v) for k, v in raw["pids"].items()},
            {k: float(v) for k, v in raw.get("started", {}).items()},
        )

    def _save(self, state: StackState) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        document = {"ports": asdict(state.ports), "pids": state.pids, "started": state.started}
        self._state_file.write_text(json.dumps(document, indent=1))

    def child_env(self, state: StackState) -> dict[str, str]:
        """What the runner and the stand-in see: the caller's settings, pointed at this stack."""
        env = dict(self._env)
        env.update(
            {
                STORAGE_CONNECTION: state.connection_string,
                STATE_DIR: str(self.state_dir),
                "AUTOPILOT_FUNCTIONS_URL": state.functions_url,
                "AUTOPILOT_EVENTGRID_PUBLISH_URL": f"{state.eventgrid_url}/api/events",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.setdefault("AUTOPILOT_CLEANUP_SCHEDULE", DEFAULT_CLEANUP_SCHEDULE)
        env.setdefault("AUTOPILOT_RECONCILE_SCHEDULE", DEFAULT_RECONCILE_SCHEDULE)
        # Lifecycle events go to this stack's Event Grid stand-in (its relay topic).
        env.setdefault("AUTOPILOT_LIFECYCLE_TOPIC_ENDPOINT", f"{state.eventgrid_url}/api/events")
        # The stand-in takes any key; a key keeps the publisher off DefaultAzureCredential (https only).
        env.setdefault("AUTOPILOT_LIFECYCLE_TOPIC_KEY", "local-stand-in")
        # host.json carries Azure's polling; locally every stage should follow the last within seconds.
        for name, value in LOCAL_HOST_OVERRIDES.items():
            env.setdefault(name, value)
        return env

    def status(self) -> dict[str, bool]:
        """Which of the stack's services answer now."""
        state = self.load() or self.default_state()
        return {
            "azurite": all(port_answers(p) for p in (state.ports.blob, state.ports.queue, state.ports.table)),
            "eventgrid": _http_ok(f"{state.eventgrid_url}/api/health"),
            "runner": _http_ok(f"{state.functions_url}/admin/host/status"),
        }

    def endpoint_status(self) -> dict[str, bool]:
        """Which local endpoints and deployments answer their health URL now."""
        return {process.name: _http_ok(process.health_url) for process in serving_processes(self.state_dir)}

    def up(
        self,
        report: Callable[[str], None] = print,
        timeout: float = 90.0,
        endpoint_timeout: float | None = ENDPOINT_TIMEOUT_S,
        spinner: Spinner | None = None,
    ) -> StackState:
        """Start whatever is not running yet and return once everything answers.

        The local endpoints too, unless `endpoint_timeout` is None: EndpointsNotServing names those that did not
        answer within it (they go on loading in the background). With `spinner`, each wait shows one.
        """
        spin: Callable[[str], AbstractContextManager[WaitNews | None]] = spinner or (lambda what: nullcontext(None))
        state = self.load() or self.default_state()
        running = self.status()
        for service in SERVICES:
            pid = state.pids.get(service)
            if running[service] and (pid is None or pid_alive(pid)):
                if pid is None:
                    report(f"{service}: something already answers on its port (not started by autopilot up); using it")
                continue
            if state.owns(service):
                stop_process(pid, timeout=20.0)
            report(f"{service}: starting (waiting up to {timeout:.0f} s until it answers)")
            with spin(f"{service}: starting"):
                state.pids[service] = self._start(service, state, timeout)
            started = process_start_time(state.pids[service])
            if started is not None:
                state.started[service] = started
            self._save(state)
            report(f"{service}: started (pid {state.pids[service]}, log {self.logs / (service + '.log')})")
        self._save(state)
        self._restore_local_endpoints(state, report)
        if endpoint_timeout is not None:
            with spin("local endpoints: loading their models") as wait:
                wait_until_serving(serving_processes(self.state_dir), report, endpoint_timeout, wait=wait)
        return state

    def _restore_local_endpoints(self, state: StackState, report: Callable[[str], None]) -> None:
        """Bring back the local ML backend's endpoints and deployments (their pids are in its records)."""
        from shared.ml.local.store import LocalStore

        if not LocalStore(self.state_dir).endpoint_names():
            return
        from shared.ml.local.backend import LocalMLBackend
        from shared.settings import Settings

        backend = LocalMLBackend.from_settings(Settings.from_env(self.child_env(state)), watch=False)
        for name in backend.restore_serving():
            report(f"local endpoint {name}: started (log {backend.store.endpoints_dir})")

    def _start(self, service: str, state: StackState, timeout: float) -> int:
        self.logs.mkdir(parents=True, exist_ok=True)
        log_path = self.logs / f"{service}.log"
        if service == "azurite":
            ports = (state.ports.blob, state.ports.queue, state.ports.table)
            return start_azurite(ports, log_path, self.state_dir / "azurite", timeout=timeout).pid
        if service == "eventgrid":
            args = [
                "-m",
                "autopilot.local.eventgrid",
                "--subscriptions",
                str(self.app_dir / "eventgrid.subscriptions.json"),
                "--port",
                str(state.ports.eventgrid),
                "--state-dir",
                str(self.state_dir / "eventgrid"),
            ]
            ready = f"{state.eventgrid_url}/api/health"
        else:
            args = ["-m", "autopilot.local.runner", "--app-dir", str(self.app_dir), "--port", str(state.ports.runner)]
            ready = f"{state.functions_url}/admin/host/status"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.app_dir,
                env=self.child_env(state),
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not _http_ok(ready):
            if process.poll() is not None:
                raise RuntimeError(f"{service} exited with code {process.returncode}; see {log_path}")
            if time.monotonic() > deadline:
                process.terminate()
                raise RuntimeError(f"{service} did not answer on {ready} within {timeout:.0f} s; see {log_path}")
            time.sleep(0.2)
        return process.pid

    def down(self, report: Callable[[str], None] = print) -> None:
        """Stop exactly the processes `up` started (the runner first, Azurite last)."""
        state = self.load()
        if state is None:
            report("the local stack is not up (no stack.json)")
            return
        for service in reversed(SERVICES):
            pid = state.pids.get(service)
            if pid is None:
                continue
            if pid_alive(pid) and not state.owns(service):
                # After a reboot the id may belong to another program: never signal what `up` did not start.
                report(f"{service}: pid {pid} is no longer the process autopilot up started; left alone")
                continue
            stopped = stop_process(pid, timeout=20.0)
            report(f"{service}: {'stopped' if stopped else 'was not running'} (pid {pid})")
        from shared.ml.local.backend import stop_serving
        from shared.ml.local.store import LocalStore

        for name in stop_serving(LocalStore(self.state_dir)):
            report(f"local endpoint {name}: stopped")
        self._state_file.unlink(missing_ok=True)
