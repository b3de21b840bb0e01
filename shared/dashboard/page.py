"""The dashboard as one HTML page: inline stylesheet and script, SVG charts, every value escaped.

The page refreshes itself: every few seconds its script fetches the same URL again with `part=main` (so a
function key given as `?code=` goes along) and swaps in the new `<main>`; it loads nothing else.
`page_headers` gives the Content-Security-Policy that lets only the page's own stylesheet and script (by
nonce) run, and lets it connect only to its own origin: text that got into a run (a dataset name, an error,
a model's reply) is escaped, and even markup that slipped through could neither run nor load anything.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.dashboard.charts import final_loss_chart, loss_history_chart, meter, traffic_chart
from shared.dashboard.formatting import (
    clock_time,
    day_and_time,
    duration,
    escaped,
    full_time,
    moment,
    money,
)
from shared.dashboard.runs import (
    STAGE_LABELS,
    other_moments,
    run_seconds,
    stage_cells,
    status_kind,
    traffic_steps,
)
from shared.dashboard.view import Dashboard
from shared.ledger import Run
from shared.pricing import PRICE_SOURCE, hourly_cost
from shared.rejected import SetAside
from shared.stages.cleanup import DELETED_IDLE
from shared.timestamps import iso

REFRESH_SECONDS = 5
# Long texts (error messages, replies) are cut in tables; the whole text is their tooltip.
SHORT_TEXT = 160


def page_headers(nonce: str) -> dict[str, str]:
    """The response headers: the page may run only its own script and stylesheet, and load nothing."""
    policy = (
        "default-src 'none'; "
        f"script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return {
        "Content-Security-Policy": policy,
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        # The page's URL may carry the function key (?code=): no other site learns it from a Referer.
        "Referrer-Policy": "no-referrer",
    }


def render_dashboard(dashboard: Dashboard, nonce: str, refresh_seconds: int = REFRESH_SECONDS) -> str:
    """The whole page; `nonce` must be the one `page_headers` was given for this response."""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # No favicon request (the policy would refuse its answer anyway).
        '<link rel="icon" href="data:,"><title>Finetune Autopilot dashboard</title>'
        f'<style nonce="{escaped(nonce)}">{_STYLE}</style></head><body>'
        '<header class="top"><h1>Finetune Autopilot</h1>'
        f'<span id="refresh-status" class="faint">refreshes every {refresh_seconds} s</span>'
        '<button id="pause" type="button">Pause</button></header>'
        f"{render_dashboard_main(dashboard)}"
        f'<script nonce="{escaped(nonce)}">{_SCRIPT.replace("REFRESH_MS", str(int(refresh_seconds * 1000)))}</script>'
        "</body></html>"
    )


def render_dashboard_main(dashboard: Dashboard) -> str:
    """The page's `<main>` alone: what its refreshes fetch (`?part=main`) and swap in.

    Only the fragment: parsing a whole page again in the browser would meet the new page's stylesheet, whose
    nonce the page's policy does not know.
    """
    body = "".join(
        (
            _summary(dashboard),
            _problems(dashboard.problems),
            _runs_section(dashboard),
            _details_section(dashboard),
            _endpoints_section(dashboard),
            _cleanup_section(dashboard),
            _set_aside_section(dashboard.set_aside),
            f'<footer class="sources"><p>{escaped(PRICE_SOURCE)}</p></footer>',
        )
    )
    return f'<main id="dashboard" data-generated="{escaped(iso(dashboard.generated_at))}">{body}</main>'


def _badge(kind: str, text: str) -> str:
    return f'<span class="badge badge-{escaped(kind)}">{escaped(text)}</span>'


def _cut(text: str, limit: int = SHORT_TEXT) -> str:
    """The text escaped, cut to `limit` characters with the whole of it as a tooltip."""
    if len(text) <= limit:
        return escaped(text)
    return f'<span title="{escaped(text)}">{escaped(text[:limit])}…</span>'


def _time(text: str, shown: str) -> str:
    return f'<time datetime="{escaped(text)}" title="{escaped(full_time(text))}">{escaped(shown)}</time>'


def _deployment_cost(dashboard: Dashboard) -> float | None:
    return hourly_cost(dashboard.inference_instance_type, dashboard.inference_instance_count)


def _live_endpoints(dashboard: Dashboard) -> list[dict[str, Any]]:
    return [endpoint for endpoint in dashboard.endpoints if endpoint.get("state") == "live"]


def _deleted_endpoints(dashboard: Dashboard) -> list[dict[str, Any]]:
    return [endpoint for endpoint in dashboard.endpoints if endpoint.get("state") != "live"]


def _saved(dashboard: Dashboard, endpoint: dict[str, Any]) -> tuple[float | None, float]:
    """What not running the deleted endpoint's one deployment has saved so far (USD, or None), and its hours."""
    deleted_at = moment(str(endpoint.get("since", ""))) if endpoint.get("state") == DELETED_IDLE else None
    if deleted_at is None:
        return None, 0.0
    hours = max(0.0, (dashboard.generated_at - deleted_at).total_seconds() / 3600)
    cost = _deployment_cost(dashboard)
    return (None if cost is None else cost * hours), hours


def _summary(dashboard: Dashboard) -> str:
    runs = dashboard.runs
    counts = {
        kind: sum(1 for run in runs if status_kind(run) == kind) for kind in ("running", "ok", "failed", "stopped")
    }
    live = _live_endpoints(dashboard)
    deployments = sum(len(endpoint.get("deployments", [])) for endpoint in live)
    cost = _deployment_cost(dashboard)
    per_hour = None if cost is None else cost * deployments
    saved = [_saved(dashboard, endpoint)[0] for endpoint in _deleted_endpoints(dashboard)]
    saved_total = None if cost is None else sum(amount for amount in saved if amount is not None)
    if dashboard.cleanup_savings is not None and dashboard.cleanup_savings.items:
        # The cleanup log prices each deletion as it was made and stops counting at a restore.
        saved_total = dashboard.cleanup_savings.saved
    poison = sum(1 for item in dashboard.set_aside if item.kind == "poison")
    where = "" if dashboard.backend == "azureml" else " if on Azure"
    tiles = [
        (
            "Runs",
            f"{len(runs)}",
            f"{counts['running']} under way · {counts['ok']} succeeded · {counts['failed']} failed · "
            f"{counts['stopped']} stopped",
        ),
        (
            "Live endpoints",
            f"{len(live)}",
            f"{deployments} deployment{'s' if deployments != 1 else ''} · {money(per_hour)}/h{where}",
        ),
        (
            "Idle cleanup",
            money(saved_total),
            f"saved so far{where} · {len(_deleted_endpoints(dashboard))} endpoint(s) deleted after "
            f"{dashboard.idle_endpoint_minutes:g} min idle",
        ),
        (
            "Set aside",
            f"{len(dashboard.set_aside)}",
            f"{poison} in poison queues · {len(dashboard.set_aside) - poison} rejected on arrival",
        ),
    ]
    cells = "".join(
        f'<div class="tile"><div class="tile-label">{escaped(label)}</div>'
        f'<div class="tile-value">{escaped(value)}</div><div class="tile-note">{escaped(note)}</div></div>'
        for label, value, note in tiles
    )
    stamp = _time(iso(dashboard.generated_at), clock_time(iso(dashboard.generated_at)) + " UTC")
    return (
        f'<p class="meta">{escaped(dashboard.backend)} backend · updated {stamp}</p>'
        f'<section class="tiles" aria-label="summary">{cells}</section>'
    )


def _problems(problems: list[str]) -> str:
    if not problems:
        return ""
    items = "".join(f"<li>{escaped(problem)}</li>" for problem in problems)
    return (
        '<section class="problems" role="alert"><strong>Part of the page could not be read</strong>'
        f"<ul>{items}</ul></section>"
    )


def _runs_section(dashboard: Dashboard) -> str:
    if not dashboard.runs:
        rows = (
            '<tr><td colspan="7" class="empty">No runs yet: upload a dataset folder to the training container.'
            "</td></tr>"
        )
    else:
        rows = "".join(_run_row(run, dashboard.generated_at) for run in dashboard.runs)
    return (
        '<section id="runs"><h2>Runs</h2><table class="runs"><thead><tr><th>Run</th><th>Dataset</th><th>Status</th>'
        f"<th>Stages</th><th>Started</th><th>Took</th><th>Notes</th></tr></thead><tbody>{rows}</tbody></table></section>"
    )


def _run_row(run: Run, now: datetime) -> str:
    cells = []
    for cell in stage_cells(run, now):
        took = "" if cell.seconds is None else duration(cell.seconds)
        title = f"{cell.stage.value}: {cell.state}"
        if cell.started:
            title += f", from {full_time(cell.started)}"
        if took:
            title += f", {took}"
        cells.append(
            f'<li class="stage stage-{escaped(cell.state)}" data-stage="{escaped(cell.stage.value)}" '
            f'title="{escaped(title)}"><span class="stage-name">{escaped(STAGE_LABELS[cell.stage])}</span>'
            f'<span class="stage-time">{escaped(took or clock_time(cell.started))}</span></li>'
        )
    notes = []
    if run.error_message:
        notes.append(
            f'<div class="error-note">{escaped(run.error_category or "error")} in {escaped(run.error_stage)}: '
            f"{_cut(run.error_message)}</div>"
        )
    if run.retries:
        counts = ", ".join(f"{step} {count}" for step, count in sorted(run.retries.items()))
        notes.append(f'<div class="faint">retried: {escaped(counts)}</div>')
    if run.removed:
        notes.append(f'<div class="faint">removed: {escaped(", ".join(run.removed))}</div>')
    for name, at in other_moments(run):
        notes.append(f'<div class="faint">{escaped(name.replace("_", " "))} {_time(at, day_and_time(at))}</div>')
    total = run_seconds(run, now)
    return (
        f'<tr class="run-row" data-run-id="{escaped(run.run_id)}" data-status="{escaped(run.status.value)}">'
        f'<td><a href="#run-{escaped(run.run_id)}" class="mono">{escaped(run.run_id)}</a></td>'
        f"<td>{escaped(run.dataset)}/{escaped(run.version)}</td>"
        f"<td>{_badge(status_kind(run), run.status.value.replace('_', ' '))}</td>"
        f'<td><ol class="stages">{"".join(cells)}</ol></td>'
        f"<td>{_time(run.created_at, day_and_time(run.created_at))}</td>"
        f"<td>{escaped('' if total is None else duration(total))}</td>"
        f'<td class="notes">{"".join(notes)}</td></tr>'
    )


def _details_section(dashboard: Dashboard) -> str:
    shown = dashboard.runs[: dashboard.detailed_runs]
    if not shown:
        return ""
    cards = "".join(_run_card(run, dashboard, opened=index == 0) for index, run in enumerate(shown))
    return f'<section id="run-details"><h2>Newest runs in detail</h2>{cards}</section>'


def _run_card(run: Run, dashboard: Dashboard, *, opened: bool) -> str:
    model = f" · model {run.model_name}:{run.model_version}" if run.model_name else ""
    panels = [
        _validation_panel(run),
        _training_panel(run, dashboard),
        _rollout_panel(run),
        _smoke_panel(run, dashboard),
    ]
    if run.error_message:
        panels.insert(
            0,
            f'<section class="panel wide error-panel"><h3>Why it ended</h3><p><strong>'
            f"{escaped(run.error_category or 'error')}</strong> in {escaped(run.error_stage or run.stage.value)}</p>"
            f'<pre class="wrap">{escaped(run.error_message)}</pre></section>',
        )
    return (
        f'<details class="run-card" id="run-{escaped(run.run_id)}"{" open" if opened else ""}>'
        f'<summary><span class="mono">{escaped(run.run_id)}</span> · {escaped(run.dataset)}/{escaped(run.version)} '
        f"{_badge(status_kind(run), run.status.value.replace('_', ' '))}"
        f'<span class="faint">{escaped(model)} · {escaped(run.ml_backend)} backend</span></summary>'
        f'<div class="panels">{"".join(panels)}</div></details>'
    )


def _validation_panel(run: Run) -> str:
    validation = run.validation
    if not validation:
        return '<section class="panel"><h3>Validation</h3><p class="faint">Not validated yet.</p></section>'
    verdict = _badge("ok", "valid") if validation.get("valid") else _badge("failed", "rejected")
    rows = "".join(
        f"<tr><td>{escaped(item.get('name', ''))}</td><td>{escaped(item.get('split', ''))}</td>"
        f"<td class='num'>{escaped(item.get('rows', ''))}</td><td class='num'>{escaped(item.get('kept_rows', ''))}</td>"
        f"<td class='num'>{escaped(item.get('bad_rows', ''))}</td></tr>"
        for item in validation.get("files", [])
        if isinstance(item, dict)
    )
    table = (
        '<table class="small"><thead><tr><th>File</th><th>Split</th><th>Rows</th><th>Kept</th><th>Dropped</th></tr>'
        f"</thead><tbody>{rows}</tbody></table>"
        if rows
        else ""
    )
    findings = []
    for key, label in (("errors_by_code", "errors"), ("warnings_by_code", "warnings")):
        counts = validation.get(key) or {}
        if isinstance(counts, dict) and counts:
            shown = ", ".join(f"{count} x {code}" for code, count in sorted(counts.items(), key=lambda item: -item[1]))
            findings.append(f'<p class="faint">{escaped(label)}: {escaped(shown)}</p>')
    return (
        f'<section class="panel validation"><h3>Validation {verdict}</h3>'
        f'<p class="summary-line">{escaped(validation.get("summary", ""))}</p>{table}{"".join(findings)}</section>'
    )


def _training_panel(run: Run, dashboard: Dashboard) -> str:
    if not run.job_name:
        return '<section class="panel"><h3>Training</h3><p class="faint">No job yet.</p></section>'
    history = dashboard.loss_histories.get(run.run_id)
    losses = {key: value for key, value in run.metrics.items() if "loss" in key}
    if history:
        chart = loss_history_chart(history)
        note = "Loss at each logged step, as the job recorded it."
    elif losses:
        chart = final_loss_chart(losses)
        note = f"The {run.ml_backend} backend reports the job's losses at its end only; no per-step history is kept."
    else:
        chart, note = "", "No loss reported yet."
    base = run.base_model_info.get("name") or run.base_model
    based = f' <span class="faint">base model {escaped(base)}</span>' if base else ""
    job_kind = "ok" if run.job_status == "Completed" else "running" if not run.finished else "stopped"
    return (
        f'<section class="panel training"><h3>Training</h3><p><span class="mono">{escaped(run.job_name)}</span> '
        f"{_badge(job_kind, run.job_status or '?')}{based}</p>"
        f'{chart}<p class="faint">{escaped(note)}</p></section>'
    )


def _rollout_panel(run: Run) -> str:
    steps = traffic_steps(run)
    if not steps:
        return '<section class="panel"><h3>Rollout</h3><p class="faint">Nothing deployed yet.</p></section>'
    facts = [f"endpoint <span class='mono'>{escaped(run.endpoint_name)}</span>"]
    if run.endpoint_state:
        facts.append(f"now {escaped(run.endpoint_state)}")
    return (
        f'<section class="panel rollout"><h3>Rollout</h3>'
        f"{traffic_chart(steps, run.deployment_name, run.previous_deployment)}"
        f'<p class="faint">{" · ".join(facts)}</p></section>'
    )


def _smoke_panel(run: Run, dashboard: Dashboard) -> str:
    smoke = run.smoke
    if not smoke:
        return '<section class="panel wide"><h3>Smoke test</h3><p class="faint">Not smoke-tested yet.</p></section>'
    minimum = dashboard.smoke_min_similarity
    line = "passed" if smoke.get("passed") else "failed"
    if "similarity" in smoke:
        line += f": mean similarity to the test answers {float(smoke['similarity']):.2f} (at least {minimum:.2f})"
    if "live_similarity" in smoke:
        line += f"; the live deployment's {float(smoke['live_similarity']):.2f}"
    if smoke.get("quality_problem"):
        line += f"; {smoke['quality_problem']}"
    results = [result for result in smoke.get("results", []) if isinstance(result, dict)]
    # A first model has no live deployment to be compared with: no column for it then.
    compared = any(isinstance(result.get("live"), dict) for result in results)
    rows = []
    for result in results:
        similarity = result.get("similarity")
        score = (
            f"{meter(float(similarity), 'similarity', marker=minimum, label=f'similarity {float(similarity):.2f}')}"
            f" {float(similarity):.2f}"
            if similarity is not None
            else ""
        )
        live = result.get("live") or {}
        live_score = f"{float(live['similarity']):.2f}" if isinstance(live, dict) and "similarity" in live else ""
        live_cell = f'<td class="num">{escaped(live_score)}</td>' if compared else ""
        reply = (
            _cut(str(result.get("answer", "")))
            if result.get("ok")
            else (f'<span class="error-note">{_cut(str(result.get("error", "")))}</span>')
        )
        rows.append(
            f'<tr class="smoke-row"><td>{_cut(str(result.get("prompt", "")))}</td><td class="reply">{reply}</td>'
            f'<td class="faint">{_cut(str(result.get("reference", "")))}</td><td class="score">{score}</td>'
            f"{live_cell}"
            f'<td class="num">{escaped(result.get("latency_ms", ""))}</td></tr>'
        )
    verdict = "passed" if smoke.get("passed") else "failed"
    return (
        f'<section class="panel wide smoke"><h3>Smoke test {_badge("ok" if smoke.get("passed") else "failed", verdict)}'
        f'</h3><p class="summary-line">{escaped(line)}</p><table class="small"><thead><tr><th>Prompt</th><th>Reply</th>'
        f"<th>Expected (test answer)</th><th>Similarity</th>{'<th>Live deployment</th>' if compared else ''}<th>ms</th>"
        "</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></section>"
    )


def _endpoints_section(dashboard: Dashboard) -> str:
    live = _live_endpoints(dashboard)
    cost = _deployment_cost(dashboard)
    size = f"{dashboard.inference_instance_type} x {dashboard.inference_instance_count}"
    where = (
        ""
        if dashboard.backend == "azureml"
        else f" These endpoints run on the {dashboard.backend} backend and cost nothing; the figures say what "
        "they would cost on Azure."
    )
    if not live:
        rows = '<tr><td colspan="6" class="empty">No endpoint is serving.</td></tr>'
    else:
        rows = "".join(_endpoint_row(endpoint, dashboard, cost) for endpoint in live)
    return (
        '<section id="endpoints"><h2>Endpoints</h2><table class="endpoints"><thead><tr><th>Endpoint</th>'
        "<th>Deployments (model, state, traffic)</th><th>Live run</th><th>Idle</th><th>Cost per hour</th></tr></thead>"
        f'<tbody>{rows}</tbody></table><p class="faint">Cost: each deployment at {escaped(size)} '
        f"({escaped(money(cost))}/h each, AUTOPILOT_AZUREML_INFERENCE_INSTANCE_TYPE and _COUNT).{escaped(where)}</p>"
        "</section>"
    )


def _endpoint_row(endpoint: dict[str, Any], dashboard: Dashboard, cost: float | None) -> str:
    deployments = []
    for deployment in endpoint.get("deployments", []):
        traffic = int(deployment.get("traffic", 0) or 0)
        deployments.append(
            f'<div class="deployment"><span class="mono">{escaped(deployment.get("name", ""))}</span> '
            f'<span class="faint">{escaped(deployment.get("model", ""))}</span> '
            f"{_badge('ok' if deployment.get('state') == 'Succeeded' else 'running', str(deployment.get('state')))} "
            f"{meter(traffic / 100, 'traffic', label=f'{traffic} % of requests')} {traffic} %</div>"
        )
    last = str(endpoint.get("last_request_at") or "")
    since = last or str(endpoint.get("created_at") or "")
    started = moment(since)
    window = dashboard.idle_endpoint_minutes
    if started is None:
        idle = '<span class="faint">unknown</span>'
    else:
        minutes = max(0.0, (dashboard.generated_at - started).total_seconds() / 60)
        basis = "since its last request" if last else "no request since it was made"
        idle = (
            f"{meter(minutes / window if window else 1.0, 'idle', label=f'deleted after {window:g} min idle')} "
            f'{escaped(duration(minutes * 60))} <span class="faint">{escaped(basis)}</span>'
        )
    count = len(endpoint.get("deployments", []))
    per_hour = None if cost is None else cost * count
    return (
        f'<tr class="endpoint-row" data-endpoint="{escaped(endpoint.get("name", ""))}">'
        f'<td><span class="mono">{escaped(endpoint.get("name", ""))}</span><div class="faint mono small-text">'
        f"{escaped(endpoint.get('scoring_uri', ''))}</div></td><td>{''.join(deployments)}</td>"
        f'<td class="mono">{escaped(endpoint.get("run_id", ""))}</td><td>{idle}</td>'
        f'<td class="num">{escaped(money(per_hour))}<div class="faint">{count} deployment(s)</div></td></tr>'
    )


def _cleanup_section(dashboard: Dashboard) -> str:
    deleted = _deleted_endpoints(dashboard)
    rows = []
    for endpoint in deleted:
        saved, hours = _saved(dashboard, endpoint)
        state = str(endpoint.get("state", ""))
        since = str(endpoint.get("since", ""))
        when = _time(since, day_and_time(since)) if moment(since) else escaped(since)
        decision = {
            DELETED_IDLE: f"deleted: no request for {dashboard.idle_endpoint_minutes:g} min",
            "restoring": "being restored",
            "restore_failed": "restore failed",
        }.get(state, state)
        rows.append(
            f'<tr class="cleanup-row"><td class="mono">{escaped(endpoint.get("name", ""))}</td>'
            f"<td>{escaped(decision)}</td><td>{when}</td><td>{escaped(endpoint.get('model', ''))}</td>"
            f'<td class="mono">{escaped(endpoint.get("run_id", ""))}</td>'
            f'<td class="num">{escaped(money(saved) if saved is not None else "")}'
            f'<div class="faint">{escaped(duration(hours * 3600) if hours else "")}</div></td></tr>'
        )
    body = "".join(rows) or '<tr><td colspan="6" class="empty">The idle cleanup has deleted no endpoint.</td></tr>'
    return (
        '<section id="cleanup"><h2>Idle cleanup</h2><table class="cleanup"><thead><tr><th>Endpoint</th>'
        "<th>Decision</th><th>When</th><th>Model</th><th>Run</th><th>Saved so far</th></tr></thead>"
        f'<tbody>{body}</tbody></table><p class="faint">Endpoints this app made are deleted after '
        f"{dashboard.idle_endpoint_minutes:g} min without a request (AUTOPILOT_IDLE_ENDPOINT_MINUTES); "
        "<code>autopilot restore ENDPOINT</code> or <code>POST /api/endpoints/ENDPOINT/restore</code> brings one "
        "back with the model it served. Saved: one deployment's price for each hour since.</p>"
        f"{_cleanup_decisions(dashboard)}</section>"
    )


def _cleanup_decisions(dashboard: Dashboard) -> str:
    """The cleanup log: each pass's decision per endpoint, and the savings total."""
    rows = []
    for item in dashboard.cleanup_decisions:
        requests = "" if item.requests < 0 else f"{item.requests}"
        smoke = f' <span class="faint">(+{item.smoke_requests} smoke)</span>' if item.smoke_requests else ""
        rows.append(
            f'<tr class="cleanup-decision"><td>{_time(item.decided_at, day_and_time(item.decided_at))}</td>'
            f'<td class="mono">{escaped(item.endpoint)}</td><td>{escaped(item.reason)}</td>'
            f'<td class="num">{escaped(requests)}{smoke}</td>'
            f"<td>{escaped(day_and_time(item.idle_since) if moment(item.idle_since) else item.idle_since)}</td>"
            f'<td class="num">{escaped(money(item.cost_per_hour))}/h</td><td>{escaped(item.detail)}</td></tr>'
        )
    body = "".join(rows) or '<tr><td colspan="7" class="empty">No cleanup pass recorded yet.</td></tr>'
    total = dashboard.cleanup_savings
    saved = (
        f"Saved so far by {len(total.items)} deletion(s): {total.hours:.1f} endpoint-hours, {money(total.saved)} "
        "(each deletion's cost per hour until the endpoint was restored, or now)."
        if total is not None
        else "Savings unknown: the cleanup log could not be read."
    )
    return (
        '<h3>Decisions</h3><table class="cleanup-decisions"><thead><tr><th>When</th><th>Endpoint</th>'
        "<th>Decision</th><th>Requests in window</th><th>Idle since</th><th>Cost</th><th>Why</th></tr></thead>"
        f'<tbody>{body}</tbody></table><p class="faint">{escaped(saved)} Tag an endpoint '
        "<code>autopilot-keep=true</code> to keep it; smoke-test requests are not counted as use.</p>"
    )


def _set_aside_section(items: list[SetAside]) -> str:
    rows = []
    for item in items:
        kind = "poison message" if item.kind == "poison" else f"rejected {item.kind}"
        rows.append(
            f'<tr class="set-aside-row"><td>{_badge("failed" if item.kind == "poison" else "stopped", kind)}</td>'
            f"<td>{_time(item.at, day_and_time(item.at))}</td><td class='mono'>{escaped(item.source)}</td>"
            f"<td>{escaped(item.input_type)}</td><td>{_cut(item.reason)}</td>"
            f"<td class='mono'>{escaped(item.run_id)}</td><td><details><summary class='mono'>{escaped(item.item_id)}"
            f'</summary><pre class="wrap">{escaped(item.body)}</pre></details></td></tr>'
        )
    body = "".join(rows) or '<tr><td colspan="7" class="empty">Nothing set aside.</td></tr>'
    return (
        '<section id="set-aside"><h2>Poison messages and rejected inputs</h2><table class="set-aside"><thead><tr>'
        "<th>Kind</th><th>When</th><th>From</th><th>Type</th><th>Why</th><th>Run</th><th>Body</th></tr></thead>"
        f'<tbody>{body}</tbody></table><p class="faint"><code>autopilot rejected</code> lists them too; '
        "<code>autopilot replay ID</code> puts a poison message back on its queue once its cause is fixed.</p>"
        "</section>"
    )


_STYLE = """
:root { --ok: #1a7f37; --run: #0969da; --bad: #cf222e; --stop: #8250df; --todo: #d8dee4; --ink: #1f2328;
  --faint: #656d76; --line: #d0d7de; --panel: #f6f8fa; --wait: #9a6700; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink);
  background: #fff; }
header.top { display: flex; align-items: center; gap: 16px; padding: 12px 24px; background: #24292f; color: #fff; }
header.top h1 { font-size: 18px; margin: 0; flex: 1; }
header.top .faint { color: #c9d1d9; }
header.top button { background: #32383f; color: #fff; border: 1px solid #57606a; border-radius: 6px; padding: 4px 12px;
  cursor: pointer; }
main { padding: 8px 24px 32px; max-width: 1500px; }
h2 { font-size: 16px; margin: 28px 0 8px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 14px; margin: 0 0 8px; }
.meta { color: var(--faint); margin: 4px 0 12px; }
.faint { color: var(--faint); }
.mono, code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px; }
.small-text { font-size: 11.5px; }
.tiles { display: grid; grid-template-columns: repeat(4, minmax(0, 1fr)); gap: 12px; }
.tile { border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; background: var(--panel); }
.tile-label { color: var(--faint); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.tile-value { font-size: 26px; font-weight: 600; }
.tile-note { color: var(--faint); font-size: 12.5px; }
.problems { border: 1px solid var(--bad); background: #ffebe9; border-radius: 8px; padding: 8px 14px;
  margin-top: 12px; }
table { border-collapse: collapse; width: 100%; }
th { text-align: left; font-weight: 600; color: var(--faint); font-size: 12px; border-bottom: 1px solid var(--line);
  padding: 6px 8px; }
td { border-bottom: 1px solid #eaeef2; padding: 6px 8px; vertical-align: top; }
td.num { text-align: right; white-space: nowrap; }
tr.run-row td:nth-child(-n+3), tr.run-row td:nth-child(5) { white-space: nowrap; }
td.empty { color: var(--faint); text-align: center; padding: 16px; }
td.notes { max-width: 360px; font-size: 12.5px; }
table.small td, table.small th { padding: 4px 6px; font-size: 12.5px; }
.badge { display: inline-block; border-radius: 10px; padding: 0 8px; font-size: 12px; font-weight: 600; color: #fff;
  white-space: nowrap; }
.badge-ok { background: var(--ok); } .badge-running { background: var(--run); }
.badge-failed { background: var(--bad); } .badge-stopped { background: var(--stop); }
ol.stages { display: flex; list-style: none; margin: 0; padding: 0; gap: 2px; }
.stage { width: 74px; padding: 2px 4px; border-radius: 4px; background: var(--todo); color: var(--faint);
  font-size: 11px; line-height: 1.25; }
.stage-name { display: block; font-weight: 600; white-space: nowrap; }
.stage-time { display: block; white-space: nowrap; min-height: 1.25em; }
.stage-done { background: #dafbe1; color: #116329; } .stage-running { background: #ddf4ff; color: #0550ae; }
.stage-waiting { background: #fff8c5; color: var(--wait); }
.stage-failed { background: #ffebe9; color: #a40e26; outline: 1px solid var(--bad); }
.stage-stopped { background: #fbefff; color: #6639ba; outline: 1px solid var(--stop); }
.error-note { color: #a40e26; }
.run-card { border: 1px solid var(--line); border-radius: 8px; margin: 10px 0; background: #fff; }
.run-card > summary { cursor: pointer; padding: 8px 12px; background: var(--panel); border-radius: 8px; }
.run-card > summary .badge { margin: 0 8px; }
.panels { display: grid; grid-template-columns: repeat(auto-fit, minmax(400px, 1fr)); gap: 12px; padding: 12px; }
.panel { border: 1px solid #eaeef2; border-radius: 6px; padding: 10px 12px; min-width: 0; }
.panel.wide { grid-column: 1 / -1; }
.error-panel { border-color: var(--bad); }
.summary-line { margin: 0 0 6px; }
pre.wrap { white-space: pre-wrap; word-break: break-word; margin: 4px 0; font-size: 12px; max-height: 240px;
  overflow: auto; background: var(--panel); padding: 6px; border-radius: 4px; }
td.reply { max-width: 420px; }
td.score, time { white-space: nowrap; }
.chart { max-width: 100%; height: auto; display: block; }
.chart .grid { stroke: #eaeef2; stroke-width: 1; }
.chart .tick, .chart .axis-label, .chart .legend, .chart .bar-label, .chart .bar-value { font-size: 12px;
  fill: var(--faint); }
.chart .legend { fill: var(--ink); }
.chart .line { fill: none; stroke-width: 2; }
.chart .line-train, .chart .line-new { stroke: var(--run); }
.chart .line-eval { stroke: #bc4c00; }
.chart .line-old { stroke: #8c959f; stroke-dasharray: 5 4; }
.chart .dot-train, .chart .dot-new { fill: var(--run); } .chart .dot-eval { fill: #bc4c00; }
.chart .swatch-train, .chart .swatch-new { fill: var(--run); } .chart .swatch-eval { fill: #bc4c00; }
.chart .swatch-old { fill: #8c959f; }
.chart .bar-train { fill: var(--run); } .chart .bar-train-first { fill: #9cd1ff; }
.chart .bar-eval { fill: #bc4c00; } .chart .bar-eval-first { fill: #ffb77c; }
.chart .tick.faint { fill: #8c959f; }
.meter { vertical-align: middle; }
.meter-back { fill: #eaeef2; } .meter-fill { fill: var(--run); } .meter-similarity { fill: var(--ok); }
.meter-idle { fill: var(--wait); } .meter-mark { stroke: var(--bad); stroke-width: 2; }
.deployment { margin: 2px 0; white-space: nowrap; }
footer.sources { margin-top: 28px; color: var(--faint); font-size: 12px; border-top: 1px solid var(--line); }
"""

_SCRIPT = """
(function () {
  "use strict";
  var every = REFRESH_MS, paused = false, status = document.getElementById("refresh-status");
  var button = document.getElementById("pause");
  function say(text) { status.textContent = text; }
  button.addEventListener("click", function () {
    paused = !paused;
    button.textContent = paused ? "Resume" : "Pause";
    say(paused ? "paused" : "refreshes every " + every / 1000 + " s");
  });
  function refresh() {
    if (paused) { return schedule(); }
    // The page's own URL, its key (?code=) included, asking for the <main> part only.
    var address = new URL(window.location.href);
    address.searchParams.set("part", "main");
    address.hash = "";
    fetch(address.toString(), { cache: "no-store", headers: { "Accept": "text/html" } })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.text();
      })
      .then(function (text) {
        var fresh = new DOMParser().parseFromString(text, "text/html").getElementById("dashboard");
        var current = document.getElementById("dashboard");
        if (!fresh || !current) { throw new Error("the answer holds no dashboard"); }
        var open = {};
        current.querySelectorAll("details[id]").forEach(function (d) { open[d.id] = d.open; });
        fresh = document.adoptNode(fresh);
        fresh.querySelectorAll("details[id]").forEach(function (d) {
          if (Object.prototype.hasOwnProperty.call(open, d.id)) { d.open = open[d.id]; }
        });
        current.replaceWith(fresh);
        say("refreshes every " + every / 1000 + " s");
      })
      .catch(function (error) {
        say("refresh failed (" + error.message + "); showing what was read before");
      })
      .then(schedule);
  }
  function schedule() { window.setTimeout(refresh, every); }
  schedule();
})();
"""
