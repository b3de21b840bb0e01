"""The dashboard: one HTML page of runs, endpoints, the idle cleanup and inputs set aside, refreshing itself.

In: `GET /api/dashboard` (the page); `GET /api/dashboard?part=main` (its `<main>` alone, what the page's
refreshes fetch). Like every HTTP function of the app it needs a function key in Azure, as
`?code=KEY` in the URL (the page's own refreshes reuse its URL, key included) or an `x-functions-key`
header (https://learn.microsoft.com/azure/azure-functions/functions-bindings-http-webhook-trigger#api-key-authorization).
Out: `text/html`, self-contained (inline stylesheet, script and SVG), under a Content-Security-Policy that
lets only its own script run; a part that cannot be read is named on the page, the rest still shown.
"""

from __future__ import annotations

import secrets

import azure.functions as func

from shared.bootstrap import poison_queues, stage_context
from shared.dashboard.page import page_headers, render_dashboard, render_dashboard_main
from shared.dashboard.view import collect_dashboard

bp = func.Blueprint()


@bp.route(route="dashboard", methods=["GET"])
def show_dashboard(req: func.HttpRequest) -> func.HttpResponse:
    page = collect_dashboard(stage_context(), poison_queues())
    nonce = secrets.token_urlsafe(18)
    body = render_dashboard_main(page) if req.params.get("part") == "main" else render_dashboard(page, nonce)
    return func.HttpResponse(
        body,
        status_code=200,
        mimetype="text/html",
        charset="utf-8",
        headers=page_headers(nonce),
    )
