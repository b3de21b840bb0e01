"""Idle endpoint cleanup: endpoints this app made that nobody called for a while are deleted."""

from __future__ import annotations

from datetime import timedelta

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
    endpoint that a run is deploying to (or bringing back) is kept whatever its requests.
    """
    now = ctx.clock()
    window = timedelta(minutes=ctx.settings.idle_endpoint_minutes)
    busy = _endpoints_being_changed(ctx)
    deleted = []
    for endpoint in ctx.backend.list_endpoints():
        if endpoint.tags.get(MANAGED_BY_TAG) != MANAGED_BY_VALUE:
            continue
        if endpoint.name in busy:
            log.info("keeping endpoint %s: run %s is deploying to it", endpoint.name, busy[endpoint.name])
            continue
        if endpoint.created_at is not None and now - endpoint.created_at < window:
            continue
        per_deployment = ctx.backend.requests_per_minute(endpoint.name, now - window)
        requests = sum(sum(minutes) for minutes in per_deployment.values())
        if requests:
            continue
        log.warning(
            "deleting endpoint %s: no requests in the last %.0f min (setting AUTOPILOT_IDLE_ENDPOINT_MINUTES)",
            endpoint.name,
            ctx.settings.idle_endpoint_minutes,
        )
        ctx.backend.delete_endpoint(endpoint.name)
        deleted.append(endpoint.name)
        mark_live_runs(ctx, endpoint.name, f"{DELETED_IDLE} {iso(now)}")
    return deleted


def _endpoints_being_changed(ctx: StageContext) -> dict[str, str]:
    """Endpoint name -> the run that is deploying to it or bringing it back: no requests yet, but not idle."""
    busy = {}
    for run in ctx.ledger.list_runs(limit=1000):
        if run.endpoint_name and (not run.finished or run.endpoint_state.startswith(RESTORING)):
            busy[run.endpoint_name] = run.run_id
    return busy
