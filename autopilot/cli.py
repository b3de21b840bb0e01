"""The `autopilot` command line: one subcommand module each under `autopilot.commands`."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Each module registers its subcommand(s); the order here is the order in `--help`.
COMMAND_MODULES = (
    "autopilot.commands.stack",
    "autopilot.commands.upload",
    "autopilot.commands.runs",
    "autopilot.commands.rejected",
    "autopilot.commands.demo",
    "autopilot.commands.endpoints",
    "autopilot.commands.validate",
    "autopilot.commands.prepare",
    "autopilot.commands.plan",
)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autopilot", description="Keep a fine-tuned chat model fresh, driven by events."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
