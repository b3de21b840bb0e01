"""`autopilot cleanup [--dry-run] [--json]`: one idle-cleanup pass by hand, and its decisions."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from autopilot.commands.exits import EXIT_OK

if TYPE_CHECKING:
    from shared.cleanup_log import Savings
    from shared.stages.cleanup import CleanupReport

DETAIL_WIDTH = 110


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    cleanup = subparsers.add_parser(
        "cleanup", help="run one idle-endpoint cleanup pass now and print its decision on every managed endpoint"
    )
    cleanup.add_argument("--dry-run", action="store_true", help="decide and record, but delete nothing")
    cleanup.add_argument("--json", action="store_true", help="print JSON (the pass and the savings) for scripts")
    cleanup.set_defaults(func=run_cleanup)


def run_cleanup(args: argparse.Namespace) -> int:
    from autopilot.commands.common import cli_settings
    from autopilot.commands.endpoints import _backend
    from shared.bootstrap import build_context
    from shared.cleanup_log import savings
    from shared.stages.cleanup import run_cleanup_pass

    ctx = build_context(cli_settings(), backend=_backend())
    # The setting's dry run holds unless the flag asks for one too.
    report = run_cleanup_pass(ctx, dry_run=True if args.dry_run else None)
    total = savings(ctx.cleanup.deletions(), ctx.ledger, ctx.clock())
    if args.json:
        print(json.dumps({**report.to_dict(), "savings": total.to_dict()}, indent=1))
    else:
        print_report(report, total)
    return EXIT_OK


def print_report(report: CleanupReport, total: Savings) -> None:
    """The pass as a table, then the running savings."""
    print(f"cleanup pass at {report.decided_at[:19]}Z{' (dry run: nothing deleted)' if report.dry_run else ''}")
    if not report.decisions:
        print("(no endpoint managed by this app)")
    else:
        rows = [("ENDPOINT", "DECISION", "REQUESTS", "SMOKE", "IDLE SINCE", "USD/H", "WHY")]
        for item in report.decisions:
            rows.append(
                (
                    item.endpoint,
                    item.reason,
                    "-" if item.requests < 0 else str(item.requests),
                    str(item.smoke_requests),
                    item.idle_since[:19] or "-",
                    "?" if item.cost_per_hour is None else f"{item.cost_per_hour:.2f}",
                    item.detail[:DETAIL_WIDTH],
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    print(
        f"saved so far: {total.hours:.1f} endpoint-hours, about ${total.saved:.2f} "
        f"({len(total.items)} deletions; list prices, see `shared/pricing.py`)"
    )
