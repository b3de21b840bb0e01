"""`autopilot rejected [--json]` and `autopilot replay ID`: what the app set aside, and a poison message put back."""

from __future__ import annotations

import argparse
import json

from autopilot.commands.exits import EXIT_OK, NotFound

REASON_WIDTH = 100


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    listing = subparsers.add_parser(
        "rejected", help="events and messages set aside, and the poison queues' messages, newest first, with why"
    )
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.add_argument("--limit", type=int, default=50, help="show at most this many (default 50)")
    listing.set_defaults(func=list_rejected)
    replay = subparsers.add_parser("replay", help="put a poison message back on its queue (after a fix)")
    replay.add_argument("message_id", metavar="ID", help="the poison message's id, as `autopilot rejected` shows it")
    replay.add_argument("--json", action="store_true", help="print the message replayed as JSON")
    replay.set_defaults(func=replay_message)


def list_rejected(args: argparse.Namespace) -> int:
    from autopilot.commands.common import cli_settings, open_ledger
    from shared.bootstrap import build_poison_queues
    from shared.rejected import TableRejectedInputs, list_set_aside

    settings = cli_settings()
    items = list_set_aside(
        TableRejectedInputs(settings.storage_connection, settings.rejected_table),
        build_poison_queues(settings),
        args.limit,
        ledger=open_ledger(settings),
    )
    if args.json:
        print(json.dumps([item.to_dict() for item in items], indent=1))
        return 0
    if not items:
        print("(nothing set aside)")
        return 0
    rows = [("AT", "KIND", "SOURCE", "ID", "REASON")]
    rows += [(item.at[:19], item.kind, item.source, item.item_id, item.reason[:REASON_WIDTH]) for item in items]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    if any(item.kind == "poison" for item in items):
        print("\n`autopilot replay ID` puts a poison message back on its queue.")
    return 0


def replay_message(args: argparse.Namespace) -> int:
    """Put the poison message back on its queue; exit 2 when no poison queue holds it."""
    from autopilot.commands.common import cli_settings
    from shared.bootstrap import build_poison_queues
    from shared.rejected import POISON_SUFFIX, TableRejectedInputs, replay_poison_message, safe_text

    settings = cli_settings()
    replayed = replay_poison_message(build_poison_queues(settings), args.message_id)
    if replayed is None:
        record = TableRejectedInputs(settings.storage_connection, settings.rejected_table).get(args.message_id)
        hint = "`autopilot rejected` lists the poison messages with their ids"
        if record is not None:
            hint = (
                f"{args.message_id} is the record of a rejected {record.kind}, which cannot be replayed (a malformed "
                "message's copy in its poison queue has an id of its own: see `autopilot rejected`)"
            )
        raise NotFound(f"no poison queue holds message {args.message_id}", hint)
    text = replayed.text
    what = ""
    if text is not None:
        try:
            body = json.loads(text)
        except (ValueError, RecursionError):
            body = None
        if isinstance(body, dict) and body.get("run_id"):
            what = f" ({safe_text(str(body.get('type', 'message')), 100)} of run {safe_text(str(body['run_id']), 100)})"
    if args.json:
        print(json.dumps({"message_id": replayed.message_id, "queue": replayed.queue, "what": what.strip(" ()")}))
        return EXIT_OK
    print(
        f"message {replayed.message_id}{what} moved from {replayed.queue}{POISON_SUFFIX} back to {replayed.queue}; "
        "the function app takes it from there, and work already done is not done twice (the ledger's claims)"
    )
    return EXIT_OK
