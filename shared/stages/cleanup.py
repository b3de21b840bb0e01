"""Idle endpoint cleanup: endpoints this app made that nobody called for a while are deleted.

Every decision, kept or deleted, is recorded with its reason in `ctx.cleanup` (see shared/cleanup_log.py).
What remains approximate: a smoke test's requests are subtracted from the window as the run recorded them
(their count, at the smoke stage's start), since the platform's request metrics cannot tell them apart.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from shared.cleanup_log import CleanupDecision, CleanupReason, savings
from shared.ledger import Run, RunStage, iso
from shared.lifecycle import LifecycleEventType, announce_endpoint
from shared.ml.port import MANAGED_BY_TAG, MANAGED_BY_VALUE, EndpointInfo
from shared.pricing import PRICE_SOURCE, hourly_cost
from shared.stages.context import StageContext, log, mark_live_runs
from shared.timestamps import parse_iso

# The state a deleted endpoint's live run is left in; `autopilot restore` brings the endpoint back,
# the run saying `RESTORING` meanwhile.
DELETED_IDLE = "deleted_idle"
RESTORING = "restoring"
# An endpoint with this tag set to `true` is never deleted as idle.
KEEP_TAG = "autopilot-keep"


@dataclass(frozen=True)
class CleanupReport:
    """One pass: when it looked, whether it only reported, and its decision on every managed endpoint."""

    decided_at: str
    dry_run: bool
    decisions: list[CleanupDecision]

    @property
    def deleted(self) -> list[str]:
        return [decision.endpoint for decision in self.decisions if decision.deleted]

    def to_dict(self) -> dict[str, Any]:
        return {
            "decided_at": self.decided_at,
            "dry_run": self.dry_run,
            "decisions": [decision.to_dict() for decision in self.decisions],
        }


def clean_up_idle_endpoints(ctx: StageContext) -> list[str]:
    """One cleanup pass as the settings say (AUTOPILOT_CLEANUP_DRY_RUN ...); the names of the endpoints deleted."""
    return run_cleanup_pass(ctx).deleted


def run_cleanup_pass(ctx: StageContext, dry_run: bool | None = None) -> CleanupReport:
    """Decide on every managed endpoint, delete the idle ones (oldest idle first, at most the cap), record it all.

    Managed online endpoints bill for at least one instance around the clock, used or not. An endpoint is
    kept when tagged `autopilot-keep=true`, inside its grace period (after creation or a restore), while a
    run deploys to it or brings it back, when it had requests in the idle window (the smoke test's own not
    counted), and when its requests cannot be read: deleting a busy endpoint is worse than paying for an
    idle one until the next pass. `dry_run` (default: AUTOPILOT_CLEANUP_DRY_RUN) deletes nothing. A failure
    with one endpoint is recorded and the pass goes on with the others.
    """
    now = ctx.clock()
    dry = ctx.settings.cleanup_dry_run if dry_run is None else dry_run
    managed = [e for e in ctx.backend.list_endpoints() if e.tags.get(MANAGED_BY_TAG) == MANAGED_BY_VALUE]
    decisions = [_decide(ctx, endpoint, now) for endpoint in sorted(managed, key=lambda e: e.name)]
    idle = sorted((d for d in decisions if d.reason == CleanupReason.DELETED.value), key=lambda d: d.idle_since)
    acted: dict[str, CleanupDecision] = {}
    deletions = 0
    for decision in idle:
        if dry:
            acted[decision.endpoint] = replace(decision, reason=CleanupReason.DRY_RUN.value)
        elif deletions >= ctx.settings.cleanup_max_deletions:
            acted[decision.endpoint] = replace(
                decision,
                reason=CleanupReason.CAP_REACHED.value,
                detail=f"idle, but {deletions} deleted this pass already (AUTOPILOT_CLEANUP_MAX_DELETIONS)",
            )
        else:
            acted[decision.endpoint] = _delete(ctx, decision, now)
            deletions += acted[decision.endpoint].deleted
    report = CleanupReport(iso(now), dry, [acted.get(d.endpoint, d) for d in decisions])
    for decision in report.decisions:
        try:
            ctx.cleanup.record(decision)
        except Exception as error:
            log.error("could not record the cleanup decision on %s: %s", decision.endpoint, error)
    return report


def _delete(ctx: StageContext, decision: CleanupDecision, now: datetime) -> CleanupDecision:
    log.warning(
        "deleting endpoint %s: %s (setting AUTOPILOT_IDLE_ENDPOINT_MINUTES)", decision.endpoint, decision.detail
    )
    try:
        ctx.backend.delete_endpoint(decision.endpoint)
    except Exception as error:
        log.error("could not delete idle endpoint %s (the next pass tries again): %s", decision.endpoint, error)
        return replace(decision, reason=CleanupReason.DELETE_FAILED.value, detail=f"could not delete it: {error}")
    mark_live_runs(ctx, decision.endpoint, f"{DELETED_IDLE} {iso(now)}")
    announce_endpoint(ctx, decision.endpoint, LifecycleEventType.ENDPOINT_DELETED_IDLE, iso(now))
    return decision


def _decide(ctx: StageContext, endpoint: EndpointInfo, now: datetime) -> CleanupDecision:
    """The decision on one endpoint as if deleting were allowed: reason `deleted` means it is idle."""
    window = timedelta(minutes=ctx.settings.idle_endpoint_minutes)
    instance_type = ctx.settings.azureml_inference_instance_type
    instance_count = ctx.settings.azureml_inference_instance_count
    price = hourly_cost(instance_type, instance_count)
    decision = CleanupDecision(
        endpoint=endpoint.name,
        decided_at=iso(now),
        reason=CleanupReason.DELETED.value,
        idle_since=iso(endpoint.last_request_at or endpoint.created_at)
        if (endpoint.last_request_at or endpoint.created_at)
        else "",
        deployments=", ".join(endpoint.deployments),
        instance_type=instance_type,
        instance_count=instance_count,
        cost_per_hour=None if price is None else round(price * len(endpoint.deployments), 4),
    )
    if endpoint.tags.get(KEEP_TAG, "").strip().lower() == "true":
        return replace(decision, reason=CleanupReason.PROTECTED.value, detail=f"tagged {KEEP_TAG}=true")
    runs = ctx.ledger.runs_of_endpoint(endpoint.name)
    for run in runs:
        if not run.finished or run.endpoint_state.startswith(RESTORING):
            return replace(decision, reason=CleanupReason.BUSY.value, detail=f"run {run.run_id} is deploying to it")
    grace = _grace_until(ctx, endpoint, runs)
    if grace is not None and now < grace:
        return replace(decision, reason=CleanupReason.GRACE.value, detail=f"in its grace period until {iso(grace)}")
    since = now - window
    try:
        per_deployment = ctx.backend.requests_per_minute(endpoint.name, since)
    except Exception as error:
        log.warning("keeping endpoint %s: could not tell whether it is idle: %s", endpoint.name, error)
        return replace(decision, reason=CleanupReason.METRICS_UNREADABLE.value, detail=str(error))
    smoke = _smoke_requests(runs, since)
    counted = {name: sum(minutes) for name, minutes in per_deployment.items()}
    subtracted = {name: min(count, smoke.get(name, 0)) for name, count in counted.items()}
    requests = sum(counted.values()) - sum(subtracted.values())
    minutes = f"{ctx.settings.idle_endpoint_minutes:.0f} min"
    decision = replace(decision, requests=requests, smoke_requests=sum(subtracted.values()))
    if requests:
        return replace(decision, reason=CleanupReason.BUSY.value, detail=f"{requests} requests in the last {minutes}")
    return replace(decision, detail=f"no request in the last {minutes}")


def _grace_until(ctx: StageContext, endpoint: EndpointInfo, runs: list[Run]) -> datetime | None:
    """The end of the grace period: after the creation (at least the idle window, whose requests it lacks)
    and after the last restore."""
    grace = timedelta(minutes=ctx.settings.cleanup_grace_minutes)
    ends = []
    if endpoint.created_at is not None:
        ends.append(endpoint.created_at + max(grace, timedelta(minutes=ctx.settings.idle_endpoint_minutes)))
    ends.extend(parse_iso(run.stage_times["restored"]) + grace for run in runs if run.stage_times.get("restored"))
    return max(ends, default=None)


def _smoke_requests(runs: list[Run], since: datetime) -> dict[str, int]:
    """Smoke-test requests per deployment sent since `since`, as the runs recorded them.

    The smoke test sends each test conversation to the new deployment and, when there is one, to the live
    one (`shared.stages.rollout`); its requests are taken to fall at the smoke stage's start, to the minute.
    """
    # RequestsPerMinute splits only by deployment and status, not by who called or with which header
    # (https://learn.microsoft.com/azure/azure-monitor/reference/supported-metrics/microsoft-machinelearningservices-workspaces-onlineendpoints-metrics):
    # only the ledger can tell the smoke test's requests apart.
    start = since.replace(second=0, microsecond=0)
    counts: dict[str, int] = {}
    for run in runs:
        began = run.stage_times.get(RunStage.SMOKE_TESTING.value)
        if not began or not run.smoke or parse_iso(began) < start:
            continue
        results = [result for result in run.smoke.get("results", []) if isinstance(result, dict)]
        if run.deployment_name:
            counts[run.deployment_name] = counts.get(run.deployment_name, 0) + len(results)
        if run.previous_deployment:
            live = sum(1 for result in results if "live" in result)
            counts[run.previous_deployment] = counts.get(run.previous_deployment, 0) + live
    return counts


def cleanup_overview(ctx: StageContext, limit: int = 200) -> dict[str, Any]:
    """Recent decisions (newest first) and the running savings total, as `GET /api/cleanup` shows them."""
    decisions = ctx.cleanup.list_decisions(limit)
    total = savings(ctx.cleanup.deletions(), ctx.ledger, ctx.clock())
    return {
        "decisions": [decision.to_dict() for decision in decisions],
        "count": len(decisions),
        "savings": total.to_dict(),
        "price_source": PRICE_SOURCE,
    }
