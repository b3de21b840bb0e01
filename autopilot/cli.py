"""The `autopilot` command line: one subcommand module each under `autopilot.commands`."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from autopilot.commands.exits import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, run_command

# Each module registers its subcommand(s); the order here is the order in `--help`.
COMMAND_MODULES = (
    "autopilot.commands.stack",
    "autopilot.commands.upload",
    "autopilot.commands.runs",
    "autopilot.commands.rejected",
    "autopilot.commands.demo",
    "autopilot.commands.endpoints",
    "autopilot.commands.cleanup",
    "autopilot.commands.models",
    "autopilot.commands.validate",
    "autopilot.commands.prepare",
    "autopilot.commands.plan",
)
# The module that registers each command, so that running one imports that module alone: the start-up cost of
# `autopilot validate FILE` (benchmarks/cli_startup.py). A command not named here is found by importing them all.
MODULE_OF_COMMAND = {
    **dict.fromkeys(("up", "down", "status"), "autopilot.commands.stack"),
    "upload": "autopilot.commands.upload",
    **dict.fromkeys(("runs", "run", "cancel"), "autopilot.commands.runs"),
    **dict.fromkeys(("rejected", "replay"), "autopilot.commands.rejected"),
    "demo": "autopilot.commands.demo",
    **dict.fromkeys(("endpoints", "endpoint-key", "chat", "restore"), "autopilot.commands.endpoints"),
    "cleanup": "autopilot.commands.cleanup",
    "register-model": "autopilot.commands.models",
    "validate": "autopilot.commands.validate",
    "prepare": "autopilot.commands.prepare",
    "plan": "autopilot.commands.plan",
}

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_UNREACHABLE", "EXIT_USAGE", "build_parser", "main"]
DEBUG_HELP = "on an error, print the traceback too (or set AUTOPILOT_DEBUG=1)"


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; given a `command` that MODULE_OF_COMMAND knows, only the module that registers it."""
    parser = argparse.ArgumentParser(
        prog="autopilot",
        description="Keep a fine-tuned chat model fresh, driven by events.",
        epilog=(
            "exit codes: 0 success; 1 the thing checked failed (rejected dataset, failed run); 2 usage error or "
            "not found; 3 the local stack or Azure unreachable; 4 unexpected error (a bug); 130 interrupted"
        ),
    )
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = (MODULE_OF_COMMAND[command],) if command in MODULE_OF_COMMAND else COMMAND_MODULES
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(subparsers)
    for command in subparsers.choices.values():
        # After the command too (`autopilot runs --debug`); SUPPRESS keeps the global flag's value when absent.
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    # The global options take no value: the first word that is not an option names the command.
    command = next((word for word in arguments if not word.startswith("-")), None)
    parser = build_parser(command)
    args = parser.parse_args(arguments)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    return run_command(args, debug=args.debug or os.environ.get("AUTOPILOT_DEBUG", "") not in ("", "0"))
