"""The idle cleanup's decisions, kept or deleted, each with its reason, and the money the deletions saved.

One Table Storage row per endpoint per pass. What a deletion saved runs from the pass until the endpoint was
restored (the `restored` time of a run of it, see `shared.stages.restore`) or until now.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

from shared.errors import TransientError
from shared.storage_connection import LazyTable, StorageConnection
from shared.timestamps import iso, parse_iso

if TYPE_CHECKING:
    from shared.ledger import RunLedger

log = logging.getLogger("autopilot.cleanup")

PARTITION = "cleanup"


class CleanupReason(str, Enum):
    """Why the cleanup kept or deleted an endpoint."""

    PROTECTED = "protected"
    GRACE = "grace"
    BUSY = "busy"
    METRICS_UNREADABLE = "metrics_unreadable"
    CAP_REACHED = "cap_reached"
    DRY_RUN = "dry_run"
    DELETE_FAILED = "delete_failed"
    DELETED = "deleted"


@dataclass(frozen=True)
class CleanupDecision:
    """What one pass decided about one managed endpoint."""

    endpoint: str
    # When the pass looked (ISO 8601, UTC); with `endpoint`, the row's key.
    decided_at: str
    reason: str
    # Why, in words (the run deploying to it, the grace period's end, the error reading metrics ...).
    detail: str = ""
    # Requests in the idle window, the smoke test's own subtracted; -1 when they were not read.
    requests: int = -1
    # Smoke-test requests found in the window and not counted.
    smoke_requests: int = 0
    # The last request the backend saw, or the endpoint's creation ("" when unknown).
    idle_since: str = ""
    deployments: str = ""
    instance_type: str = ""
    instance_count: int = 0
    # Estimated USD per hour of what the endpoint bills (None: the price table lacks the size).
    cost_per_hour: float | None = None

    @property
    def deleted(self) -> bool:
        return self.reason == CleanupReason.DELETED.value

    @property
    def row_key(self) -> str:
        return f"{self.decided_at}_{self.endpoint}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_entity(self) -> dict[str, Any]:
        values = self.to_dict()
        if values["cost_per_hour"] is None:
            del values["cost_per_hour"]
        return {"PartitionKey": PARTITION, "RowKey": self.row_key, **values}

    @classmethod
    def from_entity(cls, entity: Mapping[str, Any]) -> CleanupDecision:
        values: dict[str, Any] = {}
        for spec in fields(cls):
            if spec.name not in entity:
                continue
            value = entity[spec.name]
            if spec.name in ("requests", "smoke_requests", "instance_count"):
                value = int(value)
            elif spec.name == "cost_per_hour":
                value = None if value is None else float(value)
            else:
                value = str(value)
            values[spec.name] = value
        return cls(**values)


@dataclass(frozen=True)
class Saving:
    """One deletion's saving: hours without the endpoint and their estimated cost."""

    endpoint: str
    deleted_at: str
    restored_at: str
    hours: float
    cost_per_hour: float | None
    saved: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Savings:
    """The running total over every deletion recorded."""

    hours: float
    saved: float
    items: list[Saving]

    def to_dict(self) -> dict[str, Any]:
        return {
            "hours": round(self.hours, 2),
            "saved": round(self.saved, 2),
            "items": [i.to_dict() for i in self.items],
        }


class CleanupLog(Protocol):
    """Where the cleanup's decisions are kept."""

    def record(self, decision: CleanupDecision) -> None: ...

    def list_decisions(self, limit: int = 200) -> list[CleanupDecision]:
        """Newest first."""
        ...

    def deletions(self) -> list[CleanupDecision]:
        """Every deletion ever recorded (the savings need all of them), newest first."""
        ...


class TableCleanupLog:
    """`CleanupLog` on Azure Table Storage: one partition, one row per endpoint per pass."""

    def __init__(self, connection: StorageConnection | str, table_name: str) -> None:
        """`connection`: a `StorageConnection`, or a connection string; the table is made on first use."""
        self._client = LazyTable(connection, table_name)

    def record(self, decision: CleanupDecision) -> None:
        from azure.core.exceptions import AzureError

        try:
            self._client().upsert_entity(decision.to_entity())
        except AzureError as exc:
            raise TransientError(f"could not record the cleanup decision on {decision.endpoint}: {exc}") from exc

    def _query(self, condition: str, parameters: dict[str, Any]) -> list[CleanupDecision]:
        from azure.core.exceptions import AzureError

        try:
            entities = list(self._client().query_entities(condition, parameters=parameters))
        except AzureError as exc:
            raise TransientError(f"could not read the cleanup decisions: {exc}") from exc
        decisions = [CleanupDecision.from_entity(entity) for entity in entities]
        decisions.sort(key=lambda item: item.decided_at, reverse=True)
        return decisions

    def list_decisions(self, limit: int = 200) -> list[CleanupDecision]:
        return self._query("PartitionKey eq @partition", {"partition": PARTITION})[:limit]

    def deletions(self) -> list[CleanupDecision]:
        return self._query(
            "PartitionKey eq @partition and reason eq @reason",
            {"partition": PARTITION, "reason": CleanupReason.DELETED.value},
        )


class LoggedCleanupLog:
    """`CleanupLog` that keeps nothing but a log line: the default of a context wired without a store."""

    def record(self, decision: CleanupDecision) -> None:
        log.info("cleanup (not stored): %s %s %s", decision.endpoint, decision.reason, decision.detail)

    def list_decisions(self, limit: int = 200) -> list[CleanupDecision]:
        return []

    def deletions(self) -> list[CleanupDecision]:
        return []


def restored_times(ledger: RunLedger, endpoints: Iterable[str]) -> dict[str, list[datetime]]:
    """When each endpoint was brought back, from its runs' `restored` stage time."""
    times: dict[str, list[datetime]] = {}
    for name in set(endpoints):
        for run in ledger.runs_of_endpoint(name):
            if run.stage_times.get("restored"):
                times.setdefault(name, []).append(parse_iso(run.stage_times["restored"]))
    return times


def savings(deletions: Iterable[CleanupDecision], ledger: RunLedger, now: datetime) -> Savings:
    """Hours and money saved: each deletion's cost per hour x the hours from it until the endpoint came back, or now.

    A deletion without a price counts its hours but no money.
    """
    deleted = sorted(deletions, key=lambda item: item.decided_at)
    restores = restored_times(ledger, (item.endpoint for item in deleted))
    items = []
    for item in deleted:
        at = parse_iso(item.decided_at)
        back = min((moment for moment in restores.get(item.endpoint, []) if moment >= at), default=None)
        hours = max(0.0, ((back or now) - at).total_seconds() / 3600)
        saved = hours * item.cost_per_hour if item.cost_per_hour is not None else 0.0
        items.append(
            Saving(
                endpoint=item.endpoint,
                deleted_at=item.decided_at,
                restored_at=iso(back) if back else "",
                hours=round(hours, 2),
                cost_per_hour=item.cost_per_hour,
                saved=round(saved, 2),
            )
        )
    return Savings(hours=sum(i.hours for i in items), saved=sum(i.saved for i in items), items=items)
