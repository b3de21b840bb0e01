"""Idle endpoint cleanup: endpoints this app made that nobody called for a while are deleted."""

from __future__ import annotations

from datetime import datetime, timedelta

from shared.ledger import iso
from shared.ml.port import MANAGED_BY_TAG, MANAGED_BY_VALUE
from shared.stages.context import StageContext, log, mark_live_runs

# The state a deleted endpoint's live run is left in; `autopilot restore` brings the endpoint back,
# the run saying `RESTORING` meanwhile.
DELETED_IDLE = "deleted_idle"
RESTORING = "restoring"


def clean_up_idle_endpoints(ctx: StageContext) -> list[str]:
    """Delete managed endpoints older than the idle window with no request in it; return their names.

    Managed online endpoints bill for at least one instance around the clock, used or not. An
    endpoint that a run is deploying to (or bringing back) is kept whatever its requests, and so is
    one whose requests cannot be read: deleting a busy endpoint is worse than paying for an idle one
    until the next pass. A failure with one endpoint is logged and the pass goes on with the others.
    """
    now = ctx.clock()
    window = timedelta(minutes=ctx.settings.idle_endpoint_minutes)
    deleted = []
    for endpoint in ctx.backend.list_endpoints():
        if endpoint.tags.get(MANAGED_BY_TAG) != MANAGED_BY_VALUE:
            continue
        if endpoint.created_at is not None and now - endpoint.created_at < window:
            continue
        try:
            idle = _is_idle(ctx, endpoint.name, now - window)
        except Exception as error:
            log.warning("keeping endpoint %s: could not tell whether it is idle: %s", endpoint.name, error)
            continue
        if not idle:
            continue
        log.warning(
            "deleting endpoint %s: no requests in the last %.0f min (setting AUTOPILOT_IDLE_ENDPOINT_MINUTES)",
            endpoint.name,
            ctx.settings.idle_endpoint_minutes,
        )
        try:
            ctx.backend.delete_endpoint(endpoint.name)
        except Exception as error:
            log.error("could not delete idle endpoint %s (the next pass tries again): %s", endpoint.name, error)
            continue
        deleted.append(endpoint.name)
        mark_live_runs(ctx, endpoint.name, f"{DELETED_IDLE} {iso(now)}")
    return deleted


def _is_idle(ctx: StageContext, endpoint_name: str, since: datetime) -> bool:
    """No run is deploying to the endpoint or bringing it back, and it had no request since `since`."""
    for run in ctx.ledger.runs_of_endpoint(endpoint_name):
        if not run.finished or run.endpoint_state.startswith(RESTORING):
            log.info("keeping endpoint %s: run %s is deploying to it", endpoint_name, run.run_id)
            return False
    per_deployment = ctx.backend.requests_per_minute(endpoint_name, since)
    return not any(sum(minutes) for minutes in per_deployment.values())
