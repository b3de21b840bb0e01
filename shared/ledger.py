"""The run ledger: one row per run, every stage change compare-and-swap on the row's ETag.

A run walks the stages in `STAGE_ORDER`. Each stage has two states, running and done
(`Run.stage_done`); the function of the next stage claims the run by moving it from
"previous stage, done" to "its stage, running". Because every claim is a conditional write,
two deliveries of the same message cannot both claim a stage, and a message that arrives
after its stage has finished changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, Protocol

from shared.errors import ClaimLostError, LedgerConflictError, TransientError
from shared.storage_connection import StorageConnection, as_storage_connection
from shared.timestamps import iso, parse_iso, utc_now


class RunStage(str, Enum):
    RECEIVED = "received"
    VALIDATING = "validating"
    SUBMITTING = "submitting"
    TRAINING = "training"
    REGISTERING = "registering"
    DEPLOYING = "deploying"
    SMOKE_TESTING = "smoke_testing"
    PROMOTING = "promoting"
    LIVE = "live"


STAGE_ORDER = tuple(RunStage)


class RunStatus(str, Enum):
    IN_PROGRESS = "in_progress"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REJECTED = "rejected"
    ROLLED_BACK = "rolled_back"
    CANCELED = "canceled"
    # A newer run of the same data's endpoint took over: its data wins (what the run made is removed).
    SUPERSEDED = "superseded"


@dataclass
class InputFile:
    name: str
    url: str
    etag: str
    size: int
    split: str


# Fields kept as JSON text in the table (Table Storage has no nested values).
_JSON_FIELDS = frozenset(
    {
        "inputs",
        "manifest",
        "stage_times",
        "validation",
        "metrics",
        "smoke",
        "smoke_prompts",
        "base_model_info",
        "removed",
        "retries",
        "traffic_steps",
    }
)


@dataclass
class Run:
    """One run of the chain for one dataset content; what the ledger row holds."""

    run_id: str
    dataset: str
    version: str
    content_hash: str
    ml_backend: str
    created_at: str
    stage: RunStage = RunStage.RECEIVED
    stage_done: bool = True
    status: RunStatus = RunStatus.IN_PROGRESS
    # Which delivery works on the stage now, and until when ("" when none): see `claim_stage`.
    claim_owner: str = ""
    claim_expires: str = ""
    updated_at: str = ""
    finished_at: str = ""
    stage_times: dict[str, str] = field(default_factory=dict)
    inputs: list[dict[str, Any]] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    report_url: str = ""
    clean_train_file: str = ""
    clean_test_file: str = ""
    clean_validation_file: str = ""
    smoke_prompts: list[list[dict[str, str]]] = field(default_factory=list)
    base_model: str = ""
    base_model_info: dict[str, Any] = field(default_factory=dict)
    job_name: str = ""
    job_status: str = ""
    job_check_due: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    model_name: str = ""
    model_version: str = ""
    model_uri: str = ""
    endpoint_name: str = ""
    scoring_uri: str = ""
    deployment_name: str = ""
    previous_deployment: str = ""
    deploy_check_due: str = ""
    # The ARM operation creating the deployment (Azure), to read why it failed from any process.
    deployment_operation: str = ""
    # Whether this run created its endpoint (so removing the run's deployment may remove the endpoint too).
    created_endpoint: bool = False
    # What was removed when the run ended without going live (deployment, endpoint), for people to see.
    removed: list[str] = field(default_factory=list)
    # Transient failures met per stage (what people see), and in a row (what the next delay grows with).
    retries: dict[str, int] = field(default_factory=dict)
    retry_streak: int = 0
    smoke: dict[str, Any] = field(default_factory=dict)
    # The progressive-traffic steps of the promote stage: share, mode, start, and the figures it was judged on.
    traffic_steps: list[dict[str, Any]] = field(default_factory=list)
    endpoint_state: str = ""
    error_category: str = ""
    error_message: str = ""
    error_stage: str = ""
    etag: str = ""

    @property
    def finished(self) -> bool:
        return self.status is not RunStatus.IN_PROGRESS

    def to_dict(self) -> dict[str, Any]:
        """The run as plain JSON-ready values (what `GET /api/runs/{id}` and `autopilot run --json` show)."""
        out: dict[str, Any] = {}
        for spec in fields(self):
            if spec.name == "etag":
                continue
            value = getattr(self, spec.name)
            out[spec.name] = value.value if isinstance(value, Enum) else value
        return out

    def to_entity(self) -> dict[str, Any]:
        entity: dict[str, Any] = {"PartitionKey": PARTITION, "RowKey": self.run_id}
        for key, value in self.to_dict().items():
            if key == "run_id":
                continue
            entity[key] = json.dumps(value, sort_keys=True) if key in _JSON_FIELDS else value
        return entity

    @classmethod
    def from_entity(cls, entity: dict[str, Any], etag: str) -> Run:
        known = {spec.name for spec in fields(cls)}
        values: dict[str, Any] = {"run_id": entity["RowKey"], "etag": etag}
        for key, value in entity.items():
            if key not in known or key in ("run_id", "etag"):
                continue
            values[key] = json.loads(value) if key in _JSON_FIELDS and isinstance(value, str) else value
        values["stage"] = RunStage(values.get("stage", RunStage.RECEIVED.value))
        values["status"] = RunStatus(values.get("status", RunStatus.IN_PROGRESS.value))
        return cls(**values)


PARTITION = "runs"


class RunLedger(Protocol):
    """Storage of runs; `replace` is conditional on `run.etag`."""

    def create(self, run: Run) -> bool:
        """Insert a new run; False if a run with that id exists (the same content arrived again)."""
        ...

    def get(self, run_id: str) -> Run | None: ...

    def replace(self, run: Run) -> Run:
        """Write the run if its row still has `run.etag`; raise `LedgerConflictError` otherwise."""
        ...

    def list_runs(self, limit: int = 200) -> list[Run]:
        """Newest first."""
        ...

    def runs_of_endpoint(self, endpoint_name: str) -> list[Run]:
        """Every run that deployed (or is deploying) to `endpoint_name`, however old; newest first."""
        ...

    def runs_in_endpoint_state(self, *prefixes: str) -> list[Run]:
        """Every run whose `endpoint_state` starts with one of `prefixes`, however old; newest first."""
        ...

    def unfinished_runs(self) -> list[Run]:
        """Every run still in progress, however old; newest first."""
        ...


class TableRunLedger:
    """`RunLedger` on Azure Table Storage (Azurite locally)."""

    def __init__(self, connection: StorageConnection | str, table_name: str) -> None:
        """`connection`: a `StorageConnection`, or a connection string."""
        service = as_storage_connection(connection).table_service_client()
        self._table = service.create_table_if_not_exists(table_name)

    def create(self, run: Run) -> bool:
        from azure.core.exceptions import ResourceExistsError

        try:
            self._table.create_entity(run.to_entity())
        except ResourceExistsError:
            return False
        return True

    def get(self, run_id: str) -> Run | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            entity = self._table.get_entity(PARTITION, run_id)
        except ResourceNotFoundError:
            return None
        return Run.from_entity(dict(entity), str(entity.metadata["etag"]))

    def replace(self, run: Run) -> Run:
        from azure.core import MatchConditions
        from azure.core.exceptions import HttpResponseError, ResourceModifiedError
        from azure.data.tables import UpdateMode

        try:
            metadata = self._table.update_entity(
                run.to_entity(), mode=UpdateMode.REPLACE, etag=run.etag, match_condition=MatchConditions.IfNotModified
            )
        except ResourceModifiedError:
            raise LedgerConflictError(f"run {run.run_id} changed while it was being updated") from None
        except HttpResponseError as exc:
            if exc.status_code == 412:
                raise LedgerConflictError(f"run {run.run_id} changed while it was being updated") from None
            raise TransientError(f"could not write run {run.run_id} to the ledger: {exc.message}") from exc
        return replace(run, etag=metadata["etag"])

    def list_runs(self, limit: int = 200) -> list[Run]:
        return self._query("PartitionKey eq @partition", {})[:limit]

    def runs_of_endpoint(self, endpoint_name: str) -> list[Run]:
        return self._query("PartitionKey eq @partition and endpoint_name eq @endpoint", {"endpoint": endpoint_name})

    def runs_in_endpoint_state(self, *prefixes: str) -> list[Run]:
        if not prefixes or not all(prefixes):
            raise ValueError("runs_in_endpoint_state needs at least one non-empty prefix")
        # The Table service has no startswith; a prefix is a range of strings instead, from the prefix up
        # to (not including) the prefix with its last character one higher, as the SDK's samples compare
        # strings ("LastName ge 'A' and LastName lt 'B'",
        # https://github.com/Azure/azure-sdk-for-python/tree/main/sdk/tables/azure-data-tables/samples#writing-filters).
        parameters: dict[str, str] = {}
        ranges = []
        for index, prefix in enumerate(prefixes):
            parameters[f"from{index}"] = prefix
            parameters[f"below{index}"] = prefix[:-1] + chr(ord(prefix[-1]) + 1)
            ranges.append(f"( endpoint_state ge @from{index} and endpoint_state lt @below{index} )")
        return self._query(f"PartitionKey eq @partition and ( {' or '.join(ranges)} )", parameters)

    def unfinished_runs(self) -> list[Run]:
        return self._query("PartitionKey eq @partition and status eq @status", {"status": RunStatus.IN_PROGRESS.value})

    def _query(self, query_filter: str, parameters: dict[str, str]) -> list[Run]:
        """The runs matching `query_filter`, filtered by the service, newest first.

        Values go in as `parameters` (`@name`), which the SDK quotes with inner quotes doubled as OData
        wants; it recognises a parameter only as a word of its own, hence the spaces inside parentheses.
        """
        entities = self._table.query_entities(query_filter, parameters={"partition": PARTITION, **parameters})
        runs = [Run.from_entity(dict(entity), str(entity.metadata["etag"])) for entity in entities]
        runs.sort(key=lambda run: run.created_at, reverse=True)
        return runs


class ClaimAction(str, Enum):
    PROCEED = "proceed"  # this delivery owns the stage now (or resumes it after a crash)
    RESEND_NEXT = "resend_next"  # the stage finished but the next one has not started: hand on again
    SKIP = "skip"  # a duplicate or stale message: nothing to do


@dataclass(frozen=True)
class Claim:
    action: ClaimAction
    run: Run | None
    reason: str = ""


def previous_stage(stage: RunStage) -> RunStage:
    return STAGE_ORDER[STAGE_ORDER.index(stage) - 1]


# How long a delivery holds its stage by default: host.json's functionTimeout, after which the host gives up on
# an invocation and its message comes back (a crashed delivery's claim is then taken over). The stages pass
# the app's own (`Settings.claim_lease_seconds`: host.json's, or its AzureFunctionsJobHost__functionTimeout).
CLAIM_LEASE = timedelta(minutes=10)


def claim_stage(
    ledger: RunLedger,
    run_id: str,
    stage: RunStage,
    now: datetime | None = None,
    owner: str = "",
    lease: timedelta = CLAIM_LEASE,
) -> Claim:
    """Decide what a delivery for `stage` of `run_id` should do, claiming the stage when it is its turn.

    With `owner` (a token unique to the delivery) the claim is held: the run records the owner and when
    its hold ends (`CLAIM_LEASE`); another delivery for the same stage is skipped meanwhile, and the
    stage's writes go through `update_claimed`, which refuses them once the hold is lost. Without an
    owner (job events, which only read and record) nothing is held.

    Raises `TransientError` when the run has not reached the stage before (an out-of-order
    delivery), so the message comes back later.
    """
    moment = now or utc_now()
    run = ledger.get(run_id)
    if run is None:
        return Claim(ClaimAction.SKIP, None, f"run {run_id} is not in the ledger")
    if run.finished:
        return Claim(ClaimAction.SKIP, run, f"run {run_id} already ended ({run.status.value})")
    position, current = STAGE_ORDER.index(stage), STAGE_ORDER.index(run.stage)
    if current > position:
        return Claim(ClaimAction.SKIP, run, f"run {run_id} is past {stage.value} (now {run.stage.value})")
    if current == position:
        if run.stage_done:
            return Claim(ClaimAction.RESEND_NEXT, run, f"{stage.value} of run {run_id} is done")
        if not owner:
            return Claim(ClaimAction.PROCEED, run, f"resuming {stage.value} of run {run_id}")
        if run.claim_owner and run.claim_expires and parse_iso(run.claim_expires) > moment:
            return Claim(
                ClaimAction.SKIP,
                run,
                f"another delivery works on {stage.value} of run {run_id} (held until {run.claim_expires})",
            )
        return _hold(ledger, run, owner, moment + lease, f"resuming {stage.value} of run {run_id}")
    if current == position - 1 and run.stage_done:
        run.stage, run.stage_done, run.updated_at = stage, False, iso(moment)
        run.stage_times[stage.value] = iso(moment)
        run.retry_streak = 0
        return _hold(ledger, run, owner, moment + lease, "")
    raise TransientError(
        f"run {run_id} is in {run.stage.value} (done={run.stage_done}), not ready for {stage.value}; retrying later"
    )


def _hold(ledger: RunLedger, run: Run, owner: str, until: datetime, reason: str) -> Claim:
    run.claim_owner = owner
    run.claim_expires = iso(until) if owner else ""
    try:
        return Claim(ClaimAction.PROCEED, ledger.replace(run), reason)
    except LedgerConflictError:
        return Claim(ClaimAction.SKIP, None, f"another delivery claimed {run.stage.value} of run {run.run_id}")


def holds(current: Run, claimed: Run) -> bool:
    """Whether the delivery that claimed `claimed` still holds that stage of `current` (the run as it is now)."""
    return (
        not current.finished
        and current.stage is claimed.stage
        and not current.stage_done
        and current.claim_owner == claimed.claim_owner
    )


def update_claimed(ledger: RunLedger, claimed: Run, change: Callable[[Run], None]) -> Run:
    """`update_run` for a stage's own writes: applied only while this delivery holds the stage.

    Raises `ClaimLostError` (nothing written) when the run moved on, ended, or another delivery took the
    stage over: a slow duplicate can never mark a later stage done.
    """

    def guarded(current: Run) -> None:
        if not holds(current, claimed):
            raise ClaimLostError(
                f"run {claimed.run_id} is no longer in {claimed.stage.value} for this delivery "
                f"(now {current.stage.value}, {current.status.value}); its work is dropped"
            )
        change(current)

    return update_run(ledger, claimed.run_id, guarded)


def release_claim(ledger: RunLedger, claimed: Run, *, clean: bool = False) -> None:
    """Let go of the stage (when the delivery ends): the next delivery for it need not wait for the lease.

    `clean`: the delivery met no transient error, so the next one starts its delays afresh.
    """

    def release(current: Run) -> None:
        if current.claim_owner == claimed.claim_owner:
            current.claim_owner, current.claim_expires = "", ""
            if clean:
                current.retry_streak = 0

    current = ledger.get(claimed.run_id)
    if current is not None and claimed.claim_owner and current.claim_owner == claimed.claim_owner:
        update_run(ledger, claimed.run_id, release)


def update_run(ledger: RunLedger, run_id: str, change: Callable[[Run], None], attempts: int = 5) -> Run:
    """Apply `change` to the freshest copy of the run and write it, re-reading on ETag conflicts."""
    for _ in range(attempts):
        run = ledger.get(run_id)
        if run is None:
            raise TransientError(f"run {run_id} vanished from the ledger")
        change(run)
        run.updated_at = iso(utc_now())
        try:
            return ledger.replace(run)
        except LedgerConflictError:
            continue
    raise LedgerConflictError(f"run {run_id} kept changing; gave up after {attempts} attempts")


def end_run(run: Run, status: RunStatus, *, category: str = "", message: str = "") -> None:
    """Mark `run` (in memory) as ended; with a category and message for failures."""
    run.status = status
    run.finished_at = iso(utc_now())
    if category or message:
        run.error_category = category
        run.error_message = message[:4000]
        run.error_stage = run.stage.value
