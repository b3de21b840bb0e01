"""Bring back an endpoint that the idle cleanup deleted: the same model deployed again, given all traffic.

The run whose deployment was live when the endpoint was deleted keeps its model, endpoint and
deployment names, so the endpoint comes back as it was (with new keys). Its `endpoint_state` goes
`deleted_idle ...` -> `restoring since ...` -> `live` (or `restore_failed ...`), and its
`stage_times` gain `restore_requested` and `restored`.
"""

from __future__ import annotations

from shared.errors import NothingToRestoreError, PermanentError, RestoreFailedError, TransientError
from shared.ledger import Run, RunLedger, iso, update_run
from shared.lifecycle import LifecycleEventType, announce
from shared.messages import RestoreEndpoint
from shared.ml.port import MANAGED_BY_TAG, MANAGED_BY_VALUE, RUN_TAG, DeploymentSpec
from shared.stages.cleanup import DELETED_IDLE, RESTORING
from shared.stages.context import StageContext, log, mark_live_runs, retry_step_later
from shared.stages.rollout import CHECK_SLACK, check_again_later
from shared.timestamps import parse_iso

RESTORE_FAILED = "restore_failed"
RESTORABLE_STATES = (DELETED_IDLE, RESTORING, RESTORE_FAILED)


def run_to_restore(ledger: RunLedger, endpoint_name: str) -> Run:
    """The newest run whose deployment served `endpoint_name` until the idle cleanup deleted it.

    Raises `NothingToRestoreError`, saying what the endpoint's runs say instead, when there is none.
    """
    runs = ledger.runs_of_endpoint(endpoint_name)
    restorable = [run for run in runs if run.endpoint_state.startswith(RESTORABLE_STATES)]
    if restorable:
        return max(restorable, key=lambda run: run.finished_at or run.created_at)
    if not runs:
        raise NothingToRestoreError(f"no run of this app has deployed to endpoint {endpoint_name}")
    newest = max(runs, key=lambda run: run.created_at)
    raise NothingToRestoreError(
        f"endpoint {endpoint_name} was not deleted by the idle cleanup: its newest run {newest.run_id} "
        f"says endpoint state {newest.endpoint_state or 'none'!r} (status {newest.status.value})"
    )


def request_restore(ledger: RunLedger, endpoint_name: str) -> tuple[Run, RestoreEndpoint | None]:
    """The run whose endpoint comes back, and the command that brings it back (None: it is live already).

    Raises `NothingToRestoreError` when no run of this app served the endpoint until the idle cleanup.
    """
    live = next((run for run in ledger.runs_of_endpoint(endpoint_name) if run.endpoint_state == "live"), None)
    if live is not None:
        return live, None
    run = run_to_restore(ledger, endpoint_name)
    return run, RestoreEndpoint(run.run_id)


def restore_endpoint(message: RestoreEndpoint, ctx: StageContext) -> None:
    """Deploy the run's model again on its endpoint; once ready, give it all traffic.

    While the deployment is being created a delayed `RestoreEndpoint` checks again; duplicates
    of the message share one chain of checks. A failure is recorded on the run's `endpoint_state`
    (the run itself stays succeeded: its model was fine).
    """
    run = ctx.ledger.get(message.run_id)
    if run is None:
        log.error("restore: no run %s in the ledger; nothing to do", message.run_id)
        return
    if run.endpoint_state == "live":
        log.info("restore: endpoint %s of run %s is live already", run.endpoint_name, run.run_id)
        return
    if not run.endpoint_state.startswith(RESTORABLE_STATES):
        log.warning(
            "restore: run %s's endpoint %s was not deleted by the idle cleanup (state %r); nothing to do",
            run.run_id,
            run.endpoint_name,
            run.endpoint_state,
        )
        return
    after_failure = run.endpoint_state.startswith(RESTORE_FAILED)
    if not run.endpoint_state.startswith(RESTORING):
        run = update_run(ctx.ledger, run.run_id, lambda current: _start_restoring(current, ctx))
    if run.deploy_check_due and ctx.clock() < parse_iso(run.deploy_check_due) - CHECK_SLACK:
        log.info("restore: a later check of run %s is already scheduled; this one is a duplicate", run.run_id)
        return
    try:
        _bring_back(run, ctx, after_failure)
    except PermanentError as error:
        record_restore_failure(ctx, run.run_id, error)
    except TransientError as error:
        # A busy endpoint (409) or throttling: the same message again later, within the retry time.
        if not retry_step_later(ctx, run.run_id, "restore_requested", message, error):
            raise


def _start_restoring(run: Run, ctx: StageContext) -> None:
    if run.endpoint_state.startswith(RESTORING):
        return
    now = iso(ctx.clock())
    run.endpoint_state = f"{RESTORING} since {now}"
    run.stage_times["restore_requested"] = now
    run.deploy_check_due = ""


def _bring_back(run: Run, ctx: StageContext, after_failure: bool) -> None:
    """One step: create what is missing, then give traffic once ready or check again later.

    `after_failure`: a new request after a failed restore, whose failed deployment is made anew.
    """
    name, deployment_name = run.endpoint_name, run.deployment_name
    if not (name and deployment_name and run.model_name and run.model_version):
        raise RestoreFailedError(
            f"run {run.run_id} lacks its endpoint, deployment or model name; it cannot be restored"
        )
    endpoint = ctx.backend.ensure_endpoint(name, {MANAGED_BY_TAG: MANAGED_BY_VALUE, "dataset": run.dataset})
    deployment = ctx.backend.get_deployment(name, deployment_name)
    if deployment is not None and deployment.failed and after_failure:
        ctx.backend.delete_deployment(name, deployment_name)
        deployment = None
    if deployment is None:
        spec = DeploymentSpec(
            name,
            deployment_name,
            run.model_name,
            run.model_version,
            tags={RUN_TAG: run.run_id, MANAGED_BY_TAG: MANAGED_BY_VALUE},
        )
        deployment = ctx.backend.begin_deployment(spec)
    if deployment.failed:
        raise RestoreFailedError(f"deployment {deployment_name} on {name} failed: {deployment.error}")
    if deployment.ready:
        ctx.backend.set_traffic(name, {deployment_name: 100})

        def record_live(current: Run) -> None:
            current.endpoint_state = "live"
            current.scoring_uri = endpoint.scoring_uri
            current.stage_times["restored"] = iso(ctx.clock())
            current.deploy_check_due = ""

        announce(ctx, update_run(ctx.ledger, run.run_id, record_live), LifecycleEventType.ENDPOINT_RESTORED)
        mark_live_runs(ctx, name, f"replaced by {run.run_id}", except_run_id=run.run_id)
        log.info(
            "restore: %s/%s of run %s is live again at %s", name, deployment_name, run.run_id, endpoint.scoring_uri
        )
        return
    started = parse_iso(run.stage_times.get("restore_requested") or iso(ctx.clock()))
    check_again_later(ctx, run.run_id, deployment, started, RestoreEndpoint(run.run_id), RestoreFailedError)


def record_restore_failure(ctx: StageContext, run_id: str, error: Exception) -> None:
    """Say on the run that its endpoint could not be brought back, and why (the run keeps its status)."""
    log.error("restore of run %s's endpoint failed: %s", run_id, error)

    def record(current: Run) -> None:
        current.endpoint_state = f"{RESTORE_FAILED} {iso(ctx.clock())}: {error}"[:1000]
        current.deploy_check_due = ""

    update_run(ctx.ledger, run_id, record)
