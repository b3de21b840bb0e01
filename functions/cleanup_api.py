"""HTTP API over the idle cleanup's decisions.

In: `GET /api/cleanup` (`?limit=N`, default 200).
Out: JSON `{"decisions": [...], "count": N, "savings": {"hours", "saved", "items"}, "price_source": "..."}`: each
decision, newest first, with its endpoint, reason (protected, grace, busy, metrics_unreadable, cap_reached, dry_run,
delete_failed, deleted), requests counted in the idle window, idle since and estimated cost per hour; the savings
total every deletion's cost per hour over the hours until the endpoint was restored, or now.
"""

from __future__ import annotations

import json

import azure.functions as func

from shared.bootstrap import stage_context
from shared.stages.cleanup import cleanup_overview

bp = func.Blueprint()


def _json(body: object, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body, indent=1), status_code=status, mimetype="application/json")


@bp.route(route="cleanup", methods=["GET"])
def cleanup_api(req: func.HttpRequest) -> func.HttpResponse:
    try:
        limit = int(req.params.get("limit", "200"))
    except ValueError:
        return _json({"error": "limit must be a whole number"}, 400)
    if limit < 1:
        return _json({"error": "limit must be at least 1"}, 400)
    return _json(cleanup_overview(stage_context(), limit))
