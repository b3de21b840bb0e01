"""The idle cleanup's policy: protection, grace, dry run, the cap, smoke requests, decisions and savings."""

from __future__ import annotations

from typing import Any

import pytest

from shared.cleanup_log import CleanupReason, savings
from shared.dashboard.page import render_dashboard
from shared.dashboard.view import collect_dashboard
from shared.errors import ConfigurationError
from shared.ledger import Run, update_run
from shared.pricing import hourly_cost
from shared.settings import Settings
from shared.stages.cleanup import DELETED_IDLE, KEEP_TAG, cleanup_overview, run_cleanup_pass
from shared.stages.context import StageContext
from shared.timestamps import iso
from tests.fakes import FakeCleanupLog, FakeClock, FakePoisonQueues, fake_context
from tests.unit.test_stages import start, upload_folder

HOUR = 3600
CHAT = {"input_data": {"input_string": [{"role": "user", "content": "hi"}]}}


def live_endpoints(count: int, **settings: Any) -> tuple[StageContext, list[Run]]:
    """`count` datasets gone live, each on its own endpoint, then two hours without a request."""
    ctx = fake_context(**{"idle_endpoint_minutes": 60, **settings})
    for index in range(count):
        start(ctx, upload_folder(ctx, f"set{index}/v1"))
    clock(ctx).advance(2 * HOUR)
    return ctx, sorted(ctx.ledger.list_runs(), key=lambda run: run.dataset)


def clock(ctx: StageContext) -> FakeClock:
    assert isinstance(ctx.clock, FakeClock)
    return ctx.clock


def recorded(ctx: StageContext) -> FakeCleanupLog:
    assert isinstance(ctx.cleanup, FakeCleanupLog)
    return ctx.cleanup


def reasons(ctx: StageContext) -> dict[str, str]:
    return {decision.endpoint: decision.reason for decision in recorded(ctx).list_decisions()}


def test_a_dry_run_deletes_nothing_and_records_a_decision_per_managed_endpoint() -> None:
    # GIVEN two idle managed endpoints, and one endpoint the app did not make
    ctx, runs = live_endpoints(2)
    ctx.backend.ensure_endpoint("someone-elses", {})
    # WHEN a dry run passes
    report = run_cleanup_pass(ctx, dry_run=True)
    # THEN nothing is deleted, and each managed endpoint has a decision with its figures
    assert report.deleted == [] and len(ctx.backend.list_endpoints()) == 3
    assert reasons(ctx) == {run.endpoint_name: CleanupReason.DRY_RUN.value for run in runs}
    decision = recorded(ctx).list_decisions()[0]
    assert decision.requests == 0 and decision.idle_since and "no request in the last 60 min" in decision.detail
    assert decision.cost_per_hour == hourly_cost(ctx.settings.azureml_inference_instance_type)
    assert all(run.endpoint_state == "live" for run in ctx.ledger.list_runs())


def test_the_dry_run_setting_holds_for_the_timer() -> None:
    ctx, _ = live_endpoints(1, cleanup_dry_run=True)
    assert run_cleanup_pass(ctx).dry_run and ctx.backend.list_endpoints()


def test_an_endpoint_tagged_autopilot_keep_is_kept() -> None:
    ctx, (kept, idle) = live_endpoints(2)
    ctx.backend.state["endpoints"][kept.endpoint_name]["tags"][KEEP_TAG] = "true"  # type: ignore[attr-defined]
    assert run_cleanup_pass(ctx).deleted == [idle.endpoint_name]
    assert reasons(ctx)[kept.endpoint_name] == CleanupReason.PROTECTED.value
    assert ctx.backend.get_endpoint(kept.endpoint_name) is not None


def test_an_endpoint_is_kept_within_its_grace_period_after_creation_and_after_a_restore() -> None:
    # GIVEN an idle endpoint made 2 h ago with a 3 h grace period
    ctx, (run,) = live_endpoints(1, cleanup_grace_minutes=180)
    # THEN it is kept, saying until when
    assert run_cleanup_pass(ctx).deleted == []
    decision = recorded(ctx).list_decisions()[0]
    assert decision.reason == CleanupReason.GRACE.value and "grace period until" in decision.detail
    # AND a restore recorded now keeps it 3 h more, past the creation's grace period
    restored = iso(ctx.clock())
    update_run(ctx.ledger, run.run_id, lambda current: current.stage_times.update(restored=restored))
    clock(ctx).advance(int(1.5 * HOUR))
    assert run_cleanup_pass(ctx).deleted == []
    clock(ctx).advance(2 * HOUR)
    assert run_cleanup_pass(ctx).deleted == [run.endpoint_name]


def test_the_cap_holds_and_the_oldest_idle_go_first() -> None:
    # GIVEN three idle endpoints and a cap of two deletions per pass
    ctx, runs = live_endpoints(3, cleanup_max_deletions=2)
    # WHEN a pass runs THEN two are deleted and the third is kept for the cap, until the next pass
    report = run_cleanup_pass(ctx)
    assert len(report.deleted) == 2
    capped = [d for d in report.decisions if d.reason == CleanupReason.CAP_REACHED.value]
    assert len(capped) == 1 and "AUTOPILOT_CLEANUP_MAX_DELETIONS" in capped[0].detail
    assert len(ctx.backend.list_endpoints()) == 1
    clock(ctx).advance(60)
    assert run_cleanup_pass(ctx).deleted == [capped[0].endpoint]
    deleted = [run for run in ctx.ledger.list_runs() if run.endpoint_state.startswith(DELETED_IDLE)]
    assert len(deleted) == len(runs)


def test_smoke_requests_do_not_count_as_use_but_other_requests_do() -> None:
    # GIVEN an endpoint made 2 h ago whose second model went live (with its smoke test) 1 min ago
    ctx, (first,) = live_endpoints(1, idle_endpoint_minutes=30)
    start(ctx, upload_folder(ctx, "set0/v2", manifest={"description": "second"}))
    second = next(run for run in ctx.ledger.list_runs() if run.run_id != first.run_id)
    assert second.endpoint_name == first.endpoint_name and second.smoke["requests"]
    clock(ctx).advance(60)
    # WHEN a dry run looks THEN the smoke requests are set apart and the endpoint is idle
    decision = run_cleanup_pass(ctx, dry_run=True).decisions[0]
    assert decision.reason == CleanupReason.DRY_RUN.value
    # (those to the replaced deployment went with it: only the new one's are in the metrics)
    assert decision.requests == 0 and decision.smoke_requests == second.smoke["requests"]
    # AND one real request keeps it
    ctx.backend.score(first.endpoint_name, CHAT)
    decision = run_cleanup_pass(ctx).decisions[0]
    assert (decision.reason, decision.requests) == (CleanupReason.BUSY.value, 1)


def test_unreadable_metrics_keep_the_endpoint() -> None:
    ctx, _ = live_endpoints(1)

    def broken(endpoint_name: str, since: Any) -> dict[str, list[int]]:
        raise RuntimeError("metrics are down")

    ctx.backend.requests_per_minute = broken  # type: ignore[method-assign]
    assert run_cleanup_pass(ctx).deleted == []
    decision = recorded(ctx).list_decisions()[0]
    assert decision.reason == CleanupReason.METRICS_UNREADABLE.value and "metrics are down" in decision.detail


def test_savings_count_each_deletion_until_its_restore_or_now() -> None:
    # GIVEN two endpoints deleted as idle, one brought back 1 h later
    ctx, (restored, gone) = live_endpoints(2)
    deleted_at = ctx.clock()
    run_cleanup_pass(ctx)
    clock(ctx).advance(HOUR)
    back = iso(ctx.clock())
    update_run(ctx.ledger, restored.run_id, lambda current: current.stage_times.update(restored=back))
    clock(ctx).advance(2 * HOUR)
    # WHEN the savings are read
    total = savings(recorded(ctx).deletions(), ctx.ledger, ctx.clock())
    # THEN the restored one counts 1 h and the other 3 h, each at its cost per hour
    price = hourly_cost(ctx.settings.azureml_inference_instance_type)
    assert price is not None and deleted_at
    assert {item.endpoint: item.hours for item in total.items} == {restored.endpoint_name: 1.0, gone.endpoint_name: 3.0}
    assert round(total.saved, 2) == round(4 * price, 2) and total.hours == 4.0
    overview = cleanup_overview(ctx)
    assert overview["count"] == 2 and overview["savings"]["hours"] == 4.0


def test_the_dashboard_shows_the_decisions_and_the_savings() -> None:
    ctx, (kept, _) = live_endpoints(2)
    ctx.backend.state["endpoints"][kept.endpoint_name]["tags"][KEEP_TAG] = "true"  # type: ignore[attr-defined]
    run_cleanup_pass(ctx)
    clock(ctx).advance(HOUR)
    page = collect_dashboard(ctx, FakePoisonQueues())
    assert page.problems == [] and page.cleanup_savings is not None and page.cleanup_savings.hours == 1.0
    html = render_dashboard(page, "nonce")
    assert "cleanup-decision" in html and "protected" in html and "Saved so far by 1 deletion(s): 1.0" in html


def test_the_cleanup_settings_are_checked() -> None:
    env = {"AzureWebJobsStorage": "UseDevelopmentStorage=true"}
    settings = Settings.from_env(env)
    assert (settings.cleanup_grace_minutes, settings.cleanup_dry_run, settings.cleanup_max_deletions) == (60, False, 5)
    assert settings.cleanup_table == "autopilotcleanup"
    assert Settings.from_env({**env, "AUTOPILOT_CLEANUP_DRY_RUN": "true"}).cleanup_dry_run
    with pytest.raises(ConfigurationError, match="AUTOPILOT_CLEANUP_MAX_DELETIONS"):
        Settings.from_env({**env, "AUTOPILOT_CLEANUP_MAX_DELETIONS": "-1"})
