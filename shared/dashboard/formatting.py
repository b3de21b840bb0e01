"""Values as the page writes them: every one escaped, times in UTC, durations and money short."""

from __future__ import annotations

import html
from datetime import datetime, timezone

from shared.timestamps import parse_iso


def escaped(value: object) -> str:
    """`value` as text safe inside an element and inside a double-quoted attribute."""
    return html.escape(str(value), quote=True)


def moment(text: str) -> datetime | None:
    """An ISO timestamp from the ledger or the backend; None when it is empty or not one."""
    if not text:
        return None
    try:
        parsed = parse_iso(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def clock_time(text: str) -> str:
    """`HH:MM:SS` of an ISO timestamp (UTC), or "" for none."""
    parsed = moment(text)
    return parsed.astimezone(timezone.utc).strftime("%H:%M:%S") if parsed else ""


def day_and_time(text: str) -> str:
    """`MM-DD HH:MM:SS` of an ISO timestamp (UTC), or "" for none."""
    parsed = moment(text)
    return parsed.astimezone(timezone.utc).strftime("%m-%d %H:%M:%S") if parsed else ""


def full_time(text: str) -> str:
    """`YYYY-MM-DD HH:MM:SS UTC` of an ISO timestamp, for a tooltip; the text itself when it is not one."""
    parsed = moment(text)
    return parsed.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if parsed else text


def duration(seconds: float) -> str:
    """A duration in its two largest units: `0.4 s`, `12 s`, `3 min 4 s`, `2 h 5 min`, `3 d 4 h`."""
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    if whole < 86400:
        return f"{whole // 3600} h {whole % 3600 // 60} min"
    return f"{whole // 86400} d {whole % 86400 // 3600} h"


def money(amount: float | None) -> str:
    """`$3.67`, or `$1,234` for large sums; `unknown` when there is no price."""
    if amount is None:
        return "unknown"
    return f"${amount:,.0f}" if amount >= 1000 else f"${amount:,.2f}"
