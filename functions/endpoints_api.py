"""HTTP API over the endpoints: what is served, and bringing back an endpoint the idle cleanup deleted.

In: `GET /api/endpoints`; `POST /api/endpoints/{name}/restore`.
Out: the endpoints as JSON (live ones with their deployments, then those deleted as idle); for a restore,
202 with the run whose model comes back, and `RestoreEndpoint` on `restore-endpoint`, 200 when the
endpoint is live already, 404 when no run of this app served it until the idle cleanup.
"""

from __future__ import annotations

import json

import azure.functions as func

from shared.bootstrap import stage_context
from shared.errors import NothingToRestoreError
from shared.messages import RESTORE_QUEUE
from shared.settings import STORAGE_CONNECTION
from shared.stages.endpoints import endpoint_overview
from shared.stages.restore import request_restore

bp = func.Blueprint()


def _json(body: object, status: int) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body, indent=1), status_code=status, mimetype="application/json")


@bp.route(route="endpoints", methods=["GET"])
def list_endpoints(req: func.HttpRequest) -> func.HttpResponse:
    ctx = stage_context()
    endpoints = endpoint_overview(ctx.backend, ctx.ledger)
    return _json({"endpoints": endpoints, "count": len(endpoints)}, 200)


@bp.route(route="endpoints/{name}/restore", methods=["POST"])
@bp.queue_output(arg_name="command", queue_name=RESTORE_QUEUE, connection=STORAGE_CONNECTION)
def restore_endpoint_request(req: func.HttpRequest, command: func.Out[str]) -> func.HttpResponse:
    name = req.route_params.get("name", "")
    try:
        run, restore = request_restore(stage_context().ledger, name)
    except NothingToRestoreError as exc:
        return _json({"error": str(exc)}, 404)
    body = {
        "endpoint": name,
        "run_id": run.run_id,
        "model": f"{run.model_name}:{run.model_version}",
        "deployment": run.deployment_name,
        "run_url": f"/api/runs/{run.run_id}",
    }
    if restore is None:
        return _json({**body, "state": "live", "message": f"endpoint {name} is live already"}, 200)
    command.set(restore.to_json())
    return _json({**body, "state": "restoring", "message": f"restoring endpoint {name}; follow the run"}, 202)
