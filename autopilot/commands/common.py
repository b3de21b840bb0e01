"""What several commands share: settings as the app would see them, and the ledger."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from autopilot.commands.exits import EXIT_UNREACHABLE, START_THE_STACK, CommandError
from autopilot.local.processes import PROJECT_ROOT, port_answers
from autopilot.local.stack import LocalStack, default_state_dir
from shared.settings import STATE_DIR, STORAGE_CONNECTION, Settings
from shared.storage_connection import has_identity_settings

if TYPE_CHECKING:
    from shared.ledger import Run, RunLedger


def settings_env() -> dict[str, str]:
    """The environment, then `local.settings.json` Values, then the local stack's storage if none is set.

    None set: no connection string (or Azurite's short one) and no identity-based connection either.
    The state folder is the project's `.autopilot/` unless set; a relative setting is taken from the
    project folder, so every command finds the same stack and endpoints wherever it is run from.
    """
    env = dict(os.environ)
    local_settings = Path("local.settings.json")
    if not local_settings.exists():
        local_settings = PROJECT_ROOT / "local.settings.json"
    if local_settings.exists():
        for key, value in json.loads(local_settings.read_text()).get("Values", {}).items():
            env.setdefault(key, str(value))
    env[STATE_DIR] = str(default_state_dir(env))
    # An identity-based connection (AzureWebJobsStorage__accountName ...) counts only without a connection string.
    given = env.get(STORAGE_CONNECTION, "").strip()
    if given == "UseDevelopmentStorage=true" or (not given and not has_identity_settings(env, STORAGE_CONNECTION)):
        stack = LocalStack(env=env)
        state = stack.load()
        env[STORAGE_CONNECTION] = (state or stack.default_state()).connection_string
    return env


_LOCAL_ENDPOINT = re.compile(r"(Blob|Queue|Table)Endpoint=https?://(127\.0\.0\.1|localhost):(\d+)", re.IGNORECASE)


def cli_settings(need_storage: bool = True) -> Settings:
    """The settings as the app would see them.

    With `need_storage` and a local (Azurite) connection, the storage ports must answer: otherwise the SDK's
    retries would keep the user waiting for a minute and a half before saying the stack is down.
    """
    env = settings_env()
    if need_storage:
        down = [
            f"{service.lower()} {host}:{port}"
            for service, host, port in _LOCAL_ENDPOINT.findall(env.get(STORAGE_CONNECTION, ""))
            if not port_answers(int(port))
        ]
        if down:
            raise CommandError(
                f"the local stack is not running: nothing answers on {', '.join(down)} (Azurite)",
                EXIT_UNREACHABLE,
                START_THE_STACK,
            )
    return Settings.from_env(env)


PROGRESS_EVERY_S = 10.0


def wait_for_run(
    ledger: RunLedger,
    run_id: str,
    settled: Callable[[Run], bool],
    timeout: float,
    interval: float = 0.5,
    report: Callable[[str], None] | None = None,
    report_every: float = PROGRESS_EVERY_S,
) -> Run | None:
    """The run once `settled(run)` holds, polling the ledger; None if it did not within `timeout` seconds.

    With `report`, news every `report_every` seconds says the wait goes on, and where the run is.
    """
    started = time.monotonic()
    said = started
    while time.monotonic() < started + timeout:
        run = ledger.get(run_id)
        if run is not None and settled(run):
            return run
        now = time.monotonic()
        if report is not None and now - said >= report_every:
            said = now
            where = (
                f"{run.stage.value}, {run.status.value}, endpoint {run.endpoint_state or '-'}" if run else "not found"
            )
            report(f"  still waiting after {now - started:.0f} s of {timeout:.0f} s (run {run_id}: {where})")
        time.sleep(interval)
    return None


def open_ledger(settings: Settings) -> RunLedger:
    from shared.ledger import TableRunLedger

    return TableRunLedger(settings.storage_connection, settings.runs_table)
