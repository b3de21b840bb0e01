"""The dashboard page: what it reads, how it shows a run, and that nothing in the data becomes markup."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from typing import Any

import pytest

from shared.dashboard.charts import TrafficStep
from shared.dashboard.page import page_headers, render_dashboard, render_dashboard_main
from shared.dashboard.runs import stage_cells, traffic_steps
from shared.dashboard.view import Dashboard, LossHistory, collect_dashboard
from shared.errors import TransientError
from shared.ledger import Run, RunStage, RunStatus
from shared.ml.port import EndpointInfo
from shared.ml.simulated import SimulatedMLBackend
from shared.pricing import hourly_cost
from shared.rejected import SetAside
from shared.stages.cleanup import clean_up_idle_endpoints
from tests.fakes import FakePoisonQueues, fake_context
from tests.unit.test_stages import start, upload_folder

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
NONCE = "n0nce-for-tests"
HOSTILE = '<img src=x onerror="alert(1)">"\'><script>alert(2)</script>&amp;'
# What the page may contain: its own structure, and inline SVG; no image, frame, link, form or object.
ALLOWED_TAGS = {
    "html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "h3", "span", "button", "main", "p",
    "section", "div", "strong", "ul", "li", "table", "thead", "tbody", "tr", "th", "td", "a", "ol", "time",
    "details", "summary", "pre", "code", "footer", "script", "link", "svg", "line", "text", "polyline", "circle",
    "rect",
}  # fmt: skip


def at(seconds_before: float) -> str:
    return (NOW - timedelta(seconds=seconds_before)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def live_run(**changes: Any) -> Run:
    run = Run(
        run_id="run-live",
        dataset="ahoy",
        version="v1",
        content_hash="c",
        ml_backend="simulated",
        created_at=at(600),
        stage=RunStage.LIVE,
        status=RunStatus.SUCCEEDED,
        finished_at=at(500),
        stage_times={
            "received": at(600),
            "validating": at(598),
            "submitting": at(596),
            "training": at(590),
            "registering": at(560),
            "deploying": at(550),
            "smoke_testing": at(530),
            "promoting": at(520),
            "live": at(500),
        },
        validation={"valid": True, "summary": "valid: 40 train rows in 1 file", "files": []},
        job_name="job-live",
        job_status="Completed",
        metrics={"train_loss": 1.2, "eval_loss": 1.5},
        model_name="ahoy",
        model_version="7",
        endpoint_name="ahoy-ep",
        deployment_name="d-new",
        previous_deployment="d-old",
        endpoint_state="live",
        smoke={
            "passed": True,
            "requests": 1,
            "similarity": 0.8,
            "results": [
                {"prompt": "hi", "answer": "ahoy", "reference": "ahoy!", "similarity": 0.8, "ok": True, "error": ""}
            ],
        },
    )
    return replace(run, **changes)


def dashboard(**changes: Any) -> Dashboard:
    page = Dashboard(
        generated_at=NOW,
        backend="simulated",
        runs=[live_run()],
        endpoints=[
            {
                "name": "ahoy-ep",
                "state": "live",
                "scoring_uri": "simulated://endpoints/ahoy-ep/score",
                "deployments": [{"name": "d-new", "traffic": 100, "model": "ahoy:7", "state": "Succeeded"}],
                "run_id": "run-live",
                "created_at": at(550),
                "last_request_at": at(60),
            }
        ],
        set_aside=[],
        loss_histories={},
        detailed_runs=5,
        inference_instance_type="Standard_NC24ads_A100_v4",
        inference_instance_count=1,
        idle_endpoint_minutes=120,
        smoke_min_similarity=0.2,
    )
    return replace(page, **changes)


class Markup(HTMLParser):
    """The tags, attributes and text of a page, as a browser's parser sees them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {name: value or "" for name, value in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parsed(page: str) -> Markup:
    markup = Markup()
    markup.feed(page)
    return markup


def test_text_from_datasets_errors_replies_and_rejected_inputs_never_becomes_markup() -> None:
    # GIVEN hostile text everywhere a run, an endpoint and a rejected input can carry text
    run = live_run(
        run_id="run-" + HOSTILE,
        dataset="data" + HOSTILE,
        version="v" + HOSTILE,
        status=RunStatus.FAILED,
        error_category="smoke" + HOSTILE,
        error_stage="smoke_testing",
        error_message="failed: " + HOSTILE,
        removed=["deployment " + HOSTILE],
        retries={"training" + HOSTILE: 2},
        validation={"valid": True, "summary": HOSTILE, "files": [{"name": HOSTILE, "split": "train", "rows": 1}]},
        smoke={
            "passed": False,
            "quality_problem": HOSTILE,
            "results": [{"prompt": HOSTILE, "answer": HOSTILE, "reference": HOSTILE, "similarity": 0.1, "ok": True}],
        },
        endpoint_state="replaced by " + HOSTILE,
        deployment_name="d" + HOSTILE,
        previous_deployment="p" + HOSTILE,
    )
    endpoint = {
        "name": "ep" + HOSTILE,
        "state": "live",
        "scoring_uri": HOSTILE,
        "deployments": [{"name": HOSTILE, "traffic": 100, "model": HOSTILE, "state": HOSTILE}],
        "run_id": HOSTILE,
        "created_at": HOSTILE,
        "last_request_at": None,
    }
    deleted = {"name": HOSTILE, "state": "deleted_idle", "since": HOSTILE, "model": HOSTILE, "run_id": HOSTILE}
    rejected = SetAside("poison", HOSTILE, HOSTILE, HOSTILE, HOSTILE, HOSTILE, HOSTILE, run_id=HOSTILE)
    page = dashboard(
        runs=[run],
        endpoints=[endpoint, deleted],
        set_aside=[rejected],
        loss_histories={run.run_id: {"train_loss" + HOSTILE: [(1, 1.0)], "train_loss": [(1, 2.0), (2, 1.0)]}},
        backend=HOSTILE,
        problems=[HOSTILE],
    )
    # WHEN the page is rendered
    markup = parsed(render_dashboard(page, NONCE))
    # THEN a browser finds only the page's own elements: no image, no second script, no event handler
    assert {tag for tag, _ in markup.tags} <= ALLOWED_TAGS
    assert [tag for tag, _ in markup.tags].count("script") == 1
    assert not [(tag, name) for tag, attrs in markup.tags for name in attrs if name.startswith("on")]
    # AND the hostile text is shown as text, whole, where it came in
    assert "".join(markup.text).count(HOSTILE) >= 10


def test_the_page_loads_nothing_and_runs_only_its_own_script() -> None:
    page = render_dashboard(dashboard(), NONCE)
    markup = parsed(page)
    links = [attrs.get("href", "") for tag, attrs in markup.tags if "href" in attrs and tag == "a"]
    assert links and all(link.startswith("#run-") for link in links)
    assert [attrs for tag, attrs in markup.tags if tag == "link"] == [{"rel": "icon", "href": "data:,"}]
    assert not [attrs for _, attrs in markup.tags if "src" in attrs or "style" in attrs]
    scripts = [attrs for tag, attrs in markup.tags if tag in ("script", "style")]
    assert scripts == [{"nonce": NONCE}, {"nonce": NONCE}]
    policy = page_headers(NONCE)["Content-Security-Policy"]
    assert "default-src 'none'" in policy and f"script-src 'nonce-{NONCE}'" in policy
    assert "connect-src 'self'" in policy and "unsafe-inline" not in policy
    # The script fetches the page's own URL (with its ?code= key), asking for the <main> part, and nothing else.
    assert re.findall(r"fetch\(([^,]+),", page) == ["address.toString()"]
    assert "new URL(window.location.href)" in page and 'searchParams.set("part", "main")' in page
    fragment = render_dashboard_main(dashboard())
    assert fragment.startswith('<main id="dashboard"') and "<style" not in fragment and "<script" not in fragment


def test_a_run_row_shows_each_stage_with_its_state_and_time() -> None:
    failed = live_run(
        run_id="run-failed",
        stage=RunStage.TRAINING,
        stage_done=False,
        status=RunStatus.FAILED,
        finished_at=at(500),
        stage_times={"received": at(600), "validating": at(598), "submitting": at(596), "training": at(590)},
    )
    cells = stage_cells(failed, NOW)
    assert [cell.state for cell in cells] == ["done"] * 3 + ["failed"] + ["todo"] * 5
    assert [cell.seconds for cell in cells[:4]] == [2.0, 2.0, 6.0, 90.0]
    markup = parsed(render_dashboard(dashboard(runs=[failed]), NONCE))
    row = [attrs for tag, attrs in markup.tags if tag == "tr" and attrs.get("data-run-id") == "run-failed"]
    assert row and row[0]["data-status"] == "failed"
    states = [attrs["class"] for tag, attrs in markup.tags if tag == "li" and "stage" in attrs.get("class", "")]
    assert states[3] == "stage stage-failed" and states[8] == "stage stage-todo"


def test_a_stage_done_with_its_next_message_on_the_way_shows_the_next_one_waiting() -> None:
    waiting = live_run(stage=RunStage.VALIDATING, stage_done=True, status=RunStatus.IN_PROGRESS, finished_at="")
    states = [cell.state for cell in stage_cells(waiting, NOW)]
    assert states[:3] == ["done", "done", "waiting"] and set(states[3:]) == {"todo"}
    assert [cell.state for cell in stage_cells(live_run(), NOW)] == ["done"] * 9


def test_the_loss_chart_draws_the_history_where_the_backend_keeps_one_else_the_final_losses() -> None:
    history: LossHistory = {
        "train_loss": [(step, 2.0 / step) for step in range(1, 50)],
        "eval_loss": [(0, 2.2), (49, 1.1)],
    }
    with_history = parsed(render_dashboard(dashboard(loss_histories={"run-live": history}), NONCE))
    charts = [attrs for tag, attrs in with_history.tags if tag == "svg" and "loss-chart" in attrs.get("class", "")]
    assert [chart["data-kind"] for chart in charts] == ["history"]
    lines = [attrs["class"] for tag, attrs in with_history.tags if tag == "polyline"]
    assert "line line-train" in lines and "line line-eval" in lines
    final_only = parsed(render_dashboard(dashboard(), NONCE))
    charts = [attrs for tag, attrs in final_only.tags if tag == "svg" and "loss-chart" in attrs.get("class", "")]
    assert [chart["data-kind"] for chart in charts] == ["final"]
    assert "1.200" in final_only.text and "1.500" in final_only.text


def test_traffic_steps_show_the_new_deployment_taking_over_or_being_removed_without_traffic() -> None:
    assert traffic_steps(live_run()) == [
        TrafficStep("deployed", at(550), 0, 100),
        TrafficStep("smoke test", at(530), 0, 100),
        TrafficStep("promoted", at(500), 100, 0),
    ]
    rolled_back = live_run(
        stage=RunStage.SMOKE_TESTING,
        status=RunStatus.ROLLED_BACK,
        finished_at=at(525),
        stage_times={key: value for key, value in live_run().stage_times.items() if key not in ("promoting", "live")},
    )
    assert traffic_steps(rolled_back)[-1] == TrafficStep("rolled back", at(525), 0, 100)
    assert traffic_steps(live_run(deployment_name="")) == []


def test_endpoints_show_their_cost_per_hour_and_the_cleanup_what_it_saved() -> None:
    deleted = {"name": "old-ep", "state": "deleted_idle", "since": at(2 * 3600), "model": "old:3", "run_id": "r-old"}
    page = dashboard(endpoints=[*dashboard().endpoints, deleted])
    html = render_dashboard(page, NONCE)
    assert hourly_cost("Standard_NC24ads_A100_v4") == pytest.approx(3.673)
    assert '<td class="num">$3.67<' in html  # the live endpoint: one deployment of one A100 instance
    assert '<td class="num">$7.35<' in html  # two hours of it, not spent since the cleanup deleted old-ep
    unpriced = render_dashboard(replace(page, inference_instance_type="Standard_X"), NONCE)
    assert '<td class="num">unknown<' in unpriced and '<td class="num">$3.67<' not in unpriced


class UnreachableWorkspaceBackend(SimulatedMLBackend):
    """The simulated backend, except that its endpoints cannot be listed (the workspace throttles)."""

    def list_endpoints(self) -> list[EndpointInfo]:
        raise TransientError("the workspace answered 429 Too Many Requests")


class FakeLossHistoryBackend(SimulatedMLBackend):
    """The simulated backend, with losses by step per job kept in a dict (as the local backend has them)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.histories: dict[str, LossHistory] = {}
        self.reads: list[str] = []

    def loss_history(self, job_name: str) -> LossHistory:
        self.reads.append(job_name)
        return self.histories.get(job_name, {})


def test_the_dashboard_reads_runs_endpoints_cleanup_and_poison_messages_from_the_app() -> None:
    # GIVEN two runs gone live through the chain, one endpoint deleted as idle, and a poison message
    ctx = fake_context(idle_endpoint_minutes=60)
    start(ctx, upload_folder(ctx, "chat/v1"))
    start(ctx, upload_folder(ctx, "other/v1"))
    busy, idle = sorted(ctx.ledger.list_runs(), key=lambda r: r.dataset)
    ctx.clock.advance(2 * 3600)  # type: ignore[attr-defined]
    ctx.backend.score(busy.endpoint_name, {"input_data": {"input_string": [{"role": "user", "content": "hi"}]}})
    clean_up_idle_endpoints(ctx)
    poison = FakePoisonQueues()
    poison.add("smoke-test", "bm90IGpzb24=")
    # WHEN the dashboard is read
    page = collect_dashboard(ctx, poison)
    # THEN it holds both runs, the live endpoint with its deployment, the deleted one, and the poison message
    assert {run.run_id for run in page.runs} == {busy.run_id, idle.run_id} and page.problems == []
    assert [(e["name"], e["state"]) for e in page.endpoints] == [
        (busy.endpoint_name, "live"),
        (idle.endpoint_name, "deleted_idle"),
    ]
    assert [item.source for item in page.set_aside] == ["smoke-test-poison"]
    text = "".join(parsed(render_dashboard(page, NONCE)).text)
    assert busy.deployment_name in text and "smoke-test-poison" in text and "deleted: no request for 60 min" in text


def test_a_part_that_cannot_be_read_is_named_and_the_rest_is_still_shown() -> None:
    ctx = fake_context()
    start(ctx, upload_folder(ctx, "chat/v1"))
    ctx.backend = UnreachableWorkspaceBackend(job_seconds=None)
    page = collect_dashboard(ctx, FakePoisonQueues())
    assert len(page.runs) == 1 and page.endpoints == []
    assert page.problems == ["could not read endpoints: TransientError: the workspace answered 429 Too Many Requests"]
    markup = parsed(render_dashboard(page, NONCE))
    assert "the workspace answered 429" in "".join(markup.text)
    assert [attrs["data-run-id"] for tag, attrs in markup.tags if "data-run-id" in attrs] == [page.runs[0].run_id]


def test_loss_histories_are_read_for_the_runs_shown_in_detail_only() -> None:
    ctx = fake_context()
    backend = FakeLossHistoryBackend(job_seconds=None, deploy_seconds=2, clock=ctx.clock)
    ctx.backend = backend
    start(ctx, upload_folder(ctx, "chat/v1"))
    start(ctx, upload_folder(ctx, "other/v1"))
    newest, older = ctx.ledger.list_runs()
    backend.histories[newest.job_name] = {"train_loss": [(1, 2.0), (2, 1.5)], "eval_loss": []}
    page = collect_dashboard(ctx, FakePoisonQueues(), detailed_runs=1)
    assert backend.reads == [newest.job_name]
    assert page.loss_histories == {newest.run_id: backend.histories[newest.job_name]}
    assert older.job_name not in backend.reads


def test_the_dashboard_is_a_get_route_behind_a_function_key() -> None:
    import azure.functions as func

    import function_app
    from functions import dashboard_api

    # Its blueprint in an app of its own, with function_app's level (the host indexes an app's functions once).
    app = func.FunctionApp(http_auth_level=function_app.app.auth_level)
    app.register_functions(dashboard_api.bp)
    (function,) = app.get_functions()
    bindings = [json.loads(binding) for binding in function.get_raw_bindings()]
    trigger = next(binding for binding in bindings if binding["type"] == "httpTrigger")
    # As the host reads it: a function (or host) key is needed in Azure.
    assert function.get_function_name() == "show_dashboard"
    assert (trigger["route"], trigger["methods"], trigger["authLevel"]) == ("dashboard", ["GET"], "FUNCTION")
