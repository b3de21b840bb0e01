"""HTTP API over what was set aside: rejected events and messages, and the poison queues.

In: `GET /api/rejected` (newest first; `?limit=N`, default 100) and `GET /api/rejected/{rejected_id}`.
Out: JSON. The list holds rejected events and malformed messages with their reasons (kinds `event`, `message`)
and the messages of the `<queue>-poison` queues, peeked, not taken (kind `poison`; at most 32 per queue);
one record shows a rejected event or message in full, 404 for an unknown id.
"""

from __future__ import annotations

import json

import azure.functions as func

from shared.bootstrap import poison_queues, stage_context
from shared.rejected import list_set_aside

bp = func.Blueprint()


def _json(body: object, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body, indent=1), status_code=status, mimetype="application/json")


@bp.route(route="rejected", methods=["GET"])
def list_rejected(req: func.HttpRequest) -> func.HttpResponse:
    try:
        limit = int(req.params.get("limit", "100"))
    except ValueError:
        return _json({"error": "limit must be a whole number"}, 400)
    ctx = stage_context()
    items = [item.to_dict() for item in list_set_aside(ctx.rejected, poison_queues(), limit, ledger=ctx.ledger)]
    return _json({"items": items, "count": len(items)})


@bp.route(route="rejected/{rejected_id}", methods=["GET"])
def get_rejected(req: func.HttpRequest) -> func.HttpResponse:
    rejected_id = req.route_params.get("rejected_id", "")
    item = stage_context().rejected.get(rejected_id)
    if item is None:
        return _json({"error": f"no rejected event or message {rejected_id}"}, 404)
    return _json(item.to_dict())
