"""Starting a whole local stack (Azurite, Event Grid stand-in, runner) on free ports for a test module."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from autopilot.local.processes import free_port
from autopilot.local.stack import LocalStack, StackPorts
from shared.ledger import Run, TableRunLedger

FAST_SETTINGS = {
    "AUTOPILOT_ML_BACKEND": "simulated",
    "AUTOPILOT_QUIET_PERIOD_SECONDS": "1",
    "AUTOPILOT_SIMULATED_JOB_SECONDS": "1",
    "AUTOPILOT_DEPLOYMENT_POLL_SECONDS": "1",
    "AUTOPILOT_CLEANUP_SCHEDULE": "0 0 0 1 1 *",
    "AUTOPILOT_RECONCILE_SCHEDULE": "0 0 0 1 1 *",
}


def start_stack(state_dir: Path, **extra_env: str) -> LocalStack:
    ports = StackPorts(free_port(), free_port(), free_port(), free_port(), free_port())
    env = {**os.environ, **FAST_SETTINGS, **extra_env}
    env.pop("AzureWebJobsStorage", None)
    stack = LocalStack(state_dir=state_dir, ports=ports, env=env)
    stack.up(report=lambda line: None)
    return stack


def ledger_of(stack: LocalStack) -> TableRunLedger:
    state = stack.load()
    assert state is not None
    return TableRunLedger(state.connection_string, "autopilotruns")


def wait_for(condition: Callable[[], Any], timeout: float, what: str, stack: LocalStack | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    logs = ""
    if stack is not None:
        for log in sorted(stack.logs.glob("*.log")):
            logs += f"\n--- {log.name}\n" + log.read_text(errors="replace")[-3000:]
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{logs}")


def finished_runs(stack: LocalStack) -> list[Run]:
    return [run for run in ledger_of(stack).list_runs() if run.finished]


def http_json(url: str, method: str = "GET") -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
