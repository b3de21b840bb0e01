"""HTTP API over the run ledger: reading runs, and cancelling one that is under way.

In: `GET /api/runs` (newest first; `?limit=N`, `?status=...`), `GET /api/runs/{run_id}`, and
`POST /api/runs/{run_id}/cancel` (optional body `{"reason": "..."}`).
Out: JSON; 404 for an unknown run. A cancel answers 202 and puts `CancelRun` on `cancel-run`, or 409
saying why the run cannot be cancelled (it has ended, or its deployment is being given traffic).
"""

from __future__ import annotations

import json

import azure.functions as func

from shared.bootstrap import stage_context
from shared.errors import CannotCancelError
from shared.messages import CANCEL_QUEUE
from shared.settings import STORAGE_CONNECTION
from shared.stages.cancel import request_cancel

bp = func.Blueprint()


def _json(body: object, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body, indent=1), status_code=status, mimetype="application/json")


@bp.route(route="runs", methods=["GET"])
def list_runs(req: func.HttpRequest) -> func.HttpResponse:
    try:
        limit = int(req.params.get("limit", "100"))
    except ValueError:
        return _json({"error": "limit must be a whole number"}, 400)
    status = req.params.get("status")
    runs = [
        run.to_dict() for run in stage_context().ledger.list_runs(limit) if not status or run.status.value == status
    ]
    return _json({"runs": runs, "count": len(runs)})


@bp.route(route="runs/{run_id}/cancel", methods=["POST"])
@bp.queue_output(arg_name="command", queue_name=CANCEL_QUEUE, connection=STORAGE_CONNECTION)
def cancel_run_request(req: func.HttpRequest, command: func.Out[str]) -> func.HttpResponse:
    run_id = req.route_params.get("run_id", "")
    try:
        body = req.get_json() if req.get_body() else {}
    except ValueError:
        return _json({"error": 'the body must be JSON: {"reason": "..."}'}, 400)
    reason = str(body.get("reason", "")) if isinstance(body, dict) else ""
    ledger = stage_context().ledger
    if ledger.get(run_id) is None:
        return _json({"error": f"no run {run_id}"}, 404)
    try:
        cancel = request_cancel(ledger, run_id, reason or "canceled through the HTTP API")
    except CannotCancelError as exc:
        return _json({"error": str(exc)}, 409)
    command.set(cancel.to_json())
    return _json(
        {"run_id": run_id, "state": "canceling", "reason": cancel.reason, "run_url": f"/api/runs/{run_id}"}, 202
    )


@bp.route(route="runs/{run_id}", methods=["GET"])
def get_run(req: func.HttpRequest) -> func.HttpResponse:
    run_id = req.route_params.get("run_id", "")
    run = stage_context().ledger.get(run_id)
    if run is None:
        return _json({"error": f"no run {run_id}"}, 404)
    return _json(run.to_dict())
