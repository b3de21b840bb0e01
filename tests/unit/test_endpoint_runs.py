"""Finding an endpoint's runs, on fakes: GIVEN more than 1,000 runs newer than those of an endpoint, WHEN the idle
cleanup, a restore, the endpoint overview or a promotion looks for the endpoint's runs, THEN it still finds them
(the ledger is asked for the endpoint's runs, not for the newest runs of all).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from shared.ledger import Run, RunStage, RunStatus
from shared.stages.cleanup import clean_up_idle_endpoints
from shared.stages.context import StageContext
from shared.stages.endpoints import endpoint_overview
from shared.stages.restore import request_restore
from tests.fakes import FakeRunLedger, fake_context
from tests.unit.test_restore import idle_deleted
from tests.unit.test_stages import only_run, start, upload_folder

NEWER_RUNS = 1001


def crowd(ctx: StageContext, count: int = NEWER_RUNS) -> None:
    """`count` finished runs of another dataset, all newer than the test's own, none on an endpoint."""
    for index in range(count):
        created = f"2099-01-01T00:00:00.{index:06d}+00:00"
        run = Run(f"crowd-{index:04d}", "crowd", "v1", f"hash-{index}", "simulated", created, status=RunStatus.FAILED)
        assert ctx.ledger.create(run)


def current(ctx: StageContext, run: Run) -> Run:
    found = ctx.ledger.get(run.run_id)
    assert found is not None
    return found


def test_the_cleanup_keeps_an_endpoint_an_old_run_is_still_deploying_to() -> None:
    ctx = fake_context(idle_endpoint_minutes=60)
    start(ctx, upload_folder(ctx))
    live = only_run(ctx)
    deploying = replace(live, run_id="chat-deploying", status=RunStatus.IN_PROGRESS, stage=RunStage.DEPLOYING)
    deploying.endpoint_state = ""
    ctx.ledger.create(deploying)
    crowd(ctx)
    ctx.clock.advance(2 * 3600)  # type: ignore[attr-defined]

    assert clean_up_idle_endpoints(ctx) == []
    assert ctx.backend.get_endpoint(live.endpoint_name) is not None


def test_an_endpoint_deleted_as_idle_long_ago_is_still_restorable_and_listed() -> None:
    ctx, run = idle_deleted()
    crowd(ctx)

    found, command = request_restore(ctx.ledger, run.endpoint_name)

    assert found.run_id == run.run_id and command is not None
    (deleted,) = endpoint_overview(ctx.backend, ctx.ledger)
    assert (deleted["name"], deleted["state"], deleted["run_id"]) == (run.endpoint_name, "deleted_idle", run.run_id)


def test_a_promotion_marks_an_old_live_run_of_its_endpoint_as_replaced() -> None:
    ctx = fake_context()
    start(ctx, upload_folder(ctx, "chat/v1"))
    first = only_run(ctx)
    crowd(ctx)
    ctx.clock.advance(60)  # type: ignore[attr-defined]

    start(ctx, upload_folder(ctx, "chat/v2", manifest={"description": "same data, new version"}))

    (second,) = [run for run in ctx.ledger.runs_of_endpoint(first.endpoint_name) if run.version == "v2"]
    assert (second.status, second.endpoint_state) == (RunStatus.SUCCEEDED, "live")
    assert current(ctx, first).endpoint_state == f"replaced by {second.run_id}"


def test_the_fake_ledger_finds_runs_by_endpoint_and_by_endpoint_state_prefix() -> None:
    ledger = FakeRunLedger()
    states = {"a": ("ep-1", "live"), "b": ("ep-1", "replaced by a"), "c": ("ep-2", "deleted_idle 2026"), "d": ("", "")}
    for index, (run_id, (endpoint, state)) in enumerate(states.items()):
        run = Run(run_id, "d", "v1", run_id, "simulated", f"2026-01-0{index + 1}", endpoint_name=endpoint)
        run.endpoint_state = state
        ledger.create(run)

    assert [run.run_id for run in ledger.runs_of_endpoint("ep-1")] == ["b", "a"]
    assert [run.run_id for run in ledger.runs_in_endpoint_state("live", "deleted_idle")] == ["c", "a"]
    with pytest.raises(ValueError):
        ledger.runs_in_endpoint_state()
