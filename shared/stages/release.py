"""What a run made and never gave traffic is removed when the run ends without going live.

A GPU deployment bills by the hour from the moment it is created, used or not. Every way a run ends
after its deployment was created (failed, timed out, smoke test failed or out of tries, rolled back,
cancelled, a last try that failed) comes through `release_run_resources`: the run's deployment goes
unless it takes traffic (the live deployment's traffic never changes), and so does its endpoint when
this run created it and nothing else is on it or on its way to it. The run lists what was removed;
a removal that meets a transient error is left `removal_pending` and tried again by the cleanup timer.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from shared.errors import TransientError
from shared.ledger import Run, RunStage, RunStatus, iso, update_run
from shared.ml.port import MANAGED_BY_TAG, MANAGED_BY_VALUE

if TYPE_CHECKING:
    from shared.stages.context import StageContext

log = logging.getLogger("autopilot.stages")
REMOVAL_PENDING = "removal_pending"
REMOVAL_FAILED = "removal_failed"
REMOVED = "removed"


def release_run_resources(ctx: StageContext, run_id: str, *, ending: bool = False) -> list[str]:
    """Remove the run's deployment (and endpoint it made) unless it serves; what was removed.

    For an ended run, or (`ending`) one about to end: removing first means that whoever sees the run
    ended sees what it made already gone.
    """
    run = ctx.ledger.get(run_id)
    if run is None or run.status is RunStatus.SUCCEEDED or not (run.finished or ending):
        return []
    if not (run.endpoint_name and run.deployment_name):
        return []
    try:
        removed = _remove(ctx, run)
    except TransientError as error:
        _record(ctx, run_id, f"{REMOVAL_PENDING} since {iso(ctx.clock())}: {error}", [])
        log.warning("run %s: removing its deployment must wait (%s); the cleanup timer tries again", run_id, error)
        return []
    except Exception as error:  # a PermanentError, or anything unexpected: the run still ends
        _record(ctx, run_id, f"{REMOVAL_FAILED} {iso(ctx.clock())}: {error}", [])
        log.error("run %s: its deployment could not be removed: %s", run_id, error)
        return []
    _record(ctx, run_id, f"{REMOVED} {iso(ctx.clock())}" if removed else "", removed)
    if removed:
        log.info("run %s ended %s: removed %s", run_id, run.status.value, ", ".join(removed))
    return removed


def retry_pending_removals(ctx: StageContext) -> list[str]:
    """Try again the removals that met a transient error; the run ids whose removal went through now."""
    done = []
    for run in ctx.ledger.runs_in_endpoint_state(REMOVAL_PENDING):
        try:
            removed = release_run_resources(ctx, run.run_id)
        except Exception as exc:  # one run's trouble must not stop the others
            log.warning("run %s: removal still pending: %s", run.run_id, exc)
            continue
        current = ctx.ledger.get(run.run_id)
        if current is not None and not current.endpoint_state.startswith(REMOVAL_PENDING):
            done.append(run.run_id)
            log.info("run %s: pending removal done (%s)", run.run_id, ", ".join(removed) or "nothing left")
    return done


def _remove(ctx: StageContext, run: Run) -> list[str]:
    endpoint = ctx.backend.get_endpoint(run.endpoint_name)
    if endpoint is None:
        return []
    removed = []
    if run.deployment_name in endpoint.deployments:
        previous = run.previous_deployment
        if (
            endpoint.traffic.get(run.deployment_name, 0) > 0
            and run.stage is RunStage.PROMOTING
            and previous
            and previous in endpoint.deployments
        ):
            # Ended in a bake step (a share of traffic on trial): the deployment that was live gets it all back.
            ctx.backend.set_traffic(run.endpoint_name, {previous: 100})
            endpoint = ctx.backend.get_endpoint(run.endpoint_name) or endpoint
        if endpoint.traffic.get(run.deployment_name, 0) > 0:
            log.warning(
                "run %s: deployment %s takes traffic on %s: left in place",
                run.run_id,
                run.deployment_name,
                run.endpoint_name,
            )
            return []
        ctx.backend.delete_deployment(run.endpoint_name, run.deployment_name)
        removed.append(f"deployment {run.endpoint_name}/{run.deployment_name}")
    others = [name for name in endpoint.deployments if name != run.deployment_name]
    if run.created_endpoint and not others and endpoint.tags.get(MANAGED_BY_TAG) == MANAGED_BY_VALUE:
        coming = [
            other.run_id
            for other in ctx.ledger.runs_of_endpoint(run.endpoint_name)
            if other.run_id != run.run_id and not other.finished
        ]
        if coming:
            log.info("run %s: endpoint %s kept: run %s deploys to it", run.run_id, run.endpoint_name, coming[0])
        else:
            ctx.backend.delete_endpoint(run.endpoint_name)
            removed.append(f"endpoint {run.endpoint_name}")
    return removed


def _record(ctx: StageContext, run_id: str, state: str, removed: list[str]) -> None:
    def change(current: Run) -> None:
        current.removed = sorted(set(current.removed) | set(removed))
        if state or current.endpoint_state.startswith(REMOVAL_PENDING):
            current.endpoint_state = state[:1000]

    update_run(ctx.ledger, run_id, change)
