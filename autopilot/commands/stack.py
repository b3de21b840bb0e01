"""`autopilot up`, `autopilot down` and `autopilot status`: the local stack."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from autopilot.commands.exits import EXIT_OK, EXIT_UNREACHABLE, CommandError
from autopilot.commands.progress import Progress
from autopilot.local.stack import ENDPOINT_TIMEOUT_S, SERVICES, EndpointsNotServing, LocalStack

JSON_HELP = "print the outcome as JSON (progress goes to stderr)"


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    up = subparsers.add_parser(
        "up", help="start Azurite, the Event Grid stand-in and the function runner (localhost:7071)"
    )
    up.add_argument("--json", action="store_true", help=JSON_HELP)
    up.add_argument(
        "--no-wait",
        action="store_true",
        help="return once the services answer; do not wait for the local endpoints to load their models",
    )
    up.add_argument(
        "--timeout",
        type=float,
        default=ENDPOINT_TIMEOUT_S,
        metavar="S",
        help=f"seconds to wait for the local endpoints to answer (default {ENDPOINT_TIMEOUT_S:.0f})",
    )
    up.set_defaults(func=run_up)
    down = subparsers.add_parser("down", help="stop the processes `autopilot up` started")
    down.add_argument("--json", action="store_true", help=JSON_HELP)
    down.set_defaults(func=run_down)
    status = subparsers.add_parser(
        "status", help="what the local stack runs, where, and whether it answers; exit 3 if a service does not"
    )
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(func=run_status)


def _outcome(args: argparse.Namespace) -> Callable[[str], None]:
    """Where the closing lines go: stdout, or stderr when stdout carries --json. Progress: stderr always."""
    if args.json:
        return lambda line: print(line, file=sys.stderr, flush=True)
    return lambda line: print(line, flush=True)


def run_up(args: argparse.Namespace) -> int:
    from autopilot.commands.common import settings_env

    say = _outcome(args)
    progress = Progress()
    stack = LocalStack(env=settings_env())
    before = stack.status()
    try:
        state = stack.up(
            report=progress.say,
            endpoint_timeout=None if args.no_wait else args.timeout,
            spinner=progress.waiting,
        )
    except EndpointsNotServing as exc:
        raise CommandError(
            str(exc),
            EXIT_UNREACHABLE,
            "those loading go on in the background (`autopilot status` says when they answer; "
            f"`autopilot up --timeout S` waits longer); logs: {', '.join(str(log) for log in exc.logs)}",
        ) from exc
    except RuntimeError as exc:
        # A service that exits or does not answer in time: its log says why.
        raise CommandError(str(exc), EXIT_UNREACHABLE, f"the logs are in {stack.logs}") from exc
    if all(before.values()) and stack.load() is not None:
        say("the local stack is already up")
    say(
        f"functions: {state.functions_url}   storage: Azurite on 127.0.0.1:{state.ports.blob}-{state.ports.table}   "
        f"logs: {stack.logs}"
    )
    if args.json:
        print(json.dumps(stack_status(stack), indent=1))
    return EXIT_OK


def run_down(args: argparse.Namespace) -> int:
    from autopilot.commands.common import settings_env

    lines: list[str] = []
    say = _outcome(args)

    def report(line: str) -> None:
        lines.append(line)
        say(line)

    LocalStack(env=settings_env()).down(report=report)
    if args.json:
        print(json.dumps({"stopped": lines}, indent=1))
    return EXIT_OK


def stack_status(stack: LocalStack) -> dict[str, Any]:
    """Each service: whether `up` started it (its pid) and whether it answers; where the stack keeps its state."""
    state = stack.load()
    answering = stack.status()
    current = state or stack.default_state()
    where = {
        "azurite": f"127.0.0.1:{current.ports.blob}-{current.ports.table}",
        "eventgrid": current.eventgrid_url,
        "runner": current.functions_url,
    }
    return {
        "state_dir": str(stack.state_dir),
        "logs": str(stack.logs),
        "started": state is not None,
        "healthy": all(answering.values()),
        "services": {
            service: {
                "pid": current.pids.get(service),
                "answers": answering[service],
                "at": where[service],
                "log": str(stack.logs / f"{service}.log"),
            }
            for service in SERVICES
        },
        # The local ML backend's endpoints and deployments: whether each answers (or is still loading its model).
        "local_endpoints": stack.endpoint_status(),
    }


def run_status(args: argparse.Namespace) -> int:
    """Print the stack's status; exit 3 when a service does not answer, so that scripts can wait on it."""
    from autopilot.commands.common import settings_env
    from shared.settings import Settings

    env = settings_env()
    status = stack_status(LocalStack(env=env))
    status["ml_backend"] = Settings.from_env(env).ml_backend
    if args.json:
        print(json.dumps(status, indent=1))
    else:
        print(f"state     {status['state_dir']}   (ML backend: {status['ml_backend']})")
        for service, item in status["services"].items():
            health = "answers" if item["answers"] else "DOES NOT ANSWER"
            pid = f"pid {item['pid']}" if item["pid"] else "not started by autopilot up"
            print(f"{service:<9} {health:<16} {item['at']:<28} {pid}")
        for name, answers in status["local_endpoints"].items():
            print(f"local endpoint {name}: {'answers' if answers else 'DOES NOT ANSWER (loading, or stopped)'}")
        if not status["healthy"]:
            print("start what is missing with: autopilot up", file=sys.stderr)
    return EXIT_OK if status["healthy"] else EXIT_UNREACHABLE
