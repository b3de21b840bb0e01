"""A stage's writes belong to its claim, and runs that roll out to one endpoint are serialised.

GIVEN deliveries that overlap (a slow duplicate, a crashed one, two versions of a dataset uploaded together),
WHEN they work on the same run or the same endpoint, THEN only the delivery that holds the stage writes, a
crashed delivery's hold ends with its lease, and the newest data ends live while the older run ends
`superseded` with nothing left behind.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from shared.errors import ClaimLostError
from shared.ledger import CLAIM_LEASE, ClaimAction, Run, RunStage, RunStatus, claim_stage, update_claimed
from shared.messages import DeployModel, RegisterModel
from shared.ml.simulated import SimulatedMLBackend
from shared.stages import rollout
from tests.fakes import fake_context
from tests.unit.test_stages import drain, only_run, start, upload_folder


def run_at(stage: RunStage, done: bool = True) -> tuple[Any, Run]:
    ctx = fake_context()
    run = Run("chat-0123456789ab", "chat", "v1", "h", "simulated", "2026-11-20T09:00:00+00:00")
    run.stage, run.stage_done = stage, done
    assert ctx.ledger.create(run)
    return ctx, run


def test_a_held_stage_skips_another_delivery_until_its_lease_ends() -> None:
    ctx, run = run_at(RunStage.TRAINING)
    clock = ctx.clock
    first = claim_stage(ctx.ledger, run.run_id, RunStage.REGISTERING, clock(), owner="a")
    assert first.action is ClaimAction.PROCEED and first.run is not None and first.run.claim_owner == "a"
    second = claim_stage(ctx.ledger, run.run_id, RunStage.REGISTERING, clock(), owner="b")
    assert second.action is ClaimAction.SKIP and "another delivery" in second.reason
    # the first delivery crashed: once its lease is over, a redelivery takes the stage over
    after = clock() + CLAIM_LEASE + timedelta(seconds=1)
    third = claim_stage(ctx.ledger, run.run_id, RunStage.REGISTERING, after, owner="c")
    assert third.action is ClaimAction.PROCEED and third.run is not None and third.run.claim_owner == "c"


def test_a_write_of_a_delivery_that_lost_its_claim_changes_nothing() -> None:
    ctx, run = run_at(RunStage.TRAINING)
    claim = claim_stage(ctx.ledger, run.run_id, RunStage.REGISTERING, ctx.clock(), owner="slow")
    assert claim.run is not None
    # meanwhile the run moved on (another delivery registered it and deploying began)
    current = ctx.ledger.get(run.run_id)
    assert current is not None
    ctx.ledger.replace(replace(current, stage=RunStage.DEPLOYING, stage_done=False, claim_owner="deployer"))
    with pytest.raises(ClaimLostError):
        update_claimed(ctx.ledger, claim.run, lambda r: setattr(r, "stage_done", True))
    after = ctx.ledger.get(run.run_id)
    assert after is not None and (after.stage, after.stage_done) == (RunStage.DEPLOYING, False)


def test_a_slow_duplicate_register_message_does_nothing_while_the_first_works() -> None:
    ctx = fake_context()
    start(ctx, upload_folder(ctx))
    live = only_run(ctx)
    # a second run goes as far as training, then gets two RegisterModel messages (one per job event)
    ctx2 = fake_context()
    events = upload_folder(ctx2)
    backend = ctx2.backend
    assert isinstance(backend, SimulatedMLBackend)
    calls: list[str] = []
    original = backend.register_model

    def slow_register(registration: Any) -> Any:
        calls.append(registration.version)
        if len(calls) == 1:  # while the first delivery works, the duplicate comes
            (working,) = ctx2.ledger.list_runs()
            assert rollout.register_model(RegisterModel(working.run_id, working.job_name), ctx2) is None
        return original(registration)

    backend.register_model = slow_register  # type: ignore[method-assign]
    start(ctx2, events)
    run = only_run(ctx2)
    assert run.status is RunStatus.SUCCEEDED and len(calls) == 1
    assert live.status is RunStatus.SUCCEEDED


def test_every_stage_lets_go_of_its_claim_when_its_delivery_ends() -> None:
    ctx = fake_context()
    start(ctx, upload_folder(ctx))
    run = only_run(ctx)
    assert run.status is RunStatus.SUCCEEDED and (run.claim_owner, run.claim_expires) == ("", "")


def test_two_versions_uploaded_together_end_with_the_newest_live_and_the_older_superseded() -> None:
    ctx = fake_context()
    events = upload_folder(ctx, "chat/v1") + upload_folder(ctx, "chat/v2", {"description": "second"})
    for event in events:
        from shared.stages import intake

        intake.note_blob_created(event, ctx)
    drain(ctx, [])
    by_version = {run.version: run for run in ctx.ledger.list_runs()}
    newest, older = by_version["v2"], by_version["v1"]
    assert newest.status is RunStatus.SUCCEEDED and newest.endpoint_state == "live"
    assert older.status is RunStatus.SUPERSEDED and older.error_category == "superseded"
    assert newest.run_id in older.error_message
    endpoint = ctx.backend.get_endpoint(newest.endpoint_name)
    assert endpoint is not None and endpoint.deployments == (newest.deployment_name,)
    assert endpoint.traffic == {newest.deployment_name: 100}


def test_an_older_run_that_reaches_deploying_after_the_newer_went_live_is_superseded() -> None:
    ctx = fake_context()
    start(ctx, upload_folder(ctx, "chat/v2", {"description": "second"}))
    newer = only_run(ctx)
    # an older version's run, slower to train, is registered only now
    older = replace(
        newer,
        run_id="chat-000000000001",
        version="v1",
        created_at="2026-11-20T08:00:00+00:00",
        stage=RunStage.REGISTERING,
        stage_done=True,
        status=RunStatus.IN_PROGRESS,
        finished_at="",
        endpoint_name="",
        deployment_name="",
        endpoint_state="",
        etag="",
    )
    assert ctx.ledger.create(older)
    assert rollout.deploy_model(DeployModel(older.run_id), ctx) is None
    after = ctx.ledger.get(older.run_id)
    assert after is not None and after.status is RunStatus.SUPERSEDED and newer.run_id in after.error_message
    endpoint = ctx.backend.get_endpoint(newer.endpoint_name)
    assert endpoint is not None and endpoint.deployments == (newer.deployment_name,)
    assert endpoint.traffic == {newer.deployment_name: 100}


def test_the_claim_lease_is_host_jsons_function_timeout() -> None:
    import json
    from pathlib import Path

    hours, minutes, seconds = json.loads((Path(__file__).parents[2] / "host.json").read_text())[
        "functionTimeout"
    ].split(":")
    assert timedelta(hours=int(hours), minutes=int(minutes), seconds=int(seconds)) == CLAIM_LEASE


def test_the_claim_lease_follows_the_hosts_function_timeout_and_its_override(tmp_path: Any) -> None:
    from pathlib import Path

    from shared.settings import function_timeout_seconds

    host = Path(tmp_path) / "host.json"
    host.write_text('{"functionTimeout": "00:05:00"}')
    assert function_timeout_seconds({}, host) == 300
    assert function_timeout_seconds({"AzureFunctionsJobHost__functionTimeout": "00:00:30"}, host) == 30
    host.write_text('{"functionTimeout": "-1"}')
    assert function_timeout_seconds({}, host) == 600


def test_a_delivery_without_transient_errors_starts_the_delays_afresh() -> None:
    from shared.ledger import release_claim

    ctx, run = run_at(RunStage.TRAINING)
    claim = claim_stage(ctx.ledger, run.run_id, RunStage.REGISTERING, ctx.clock(), owner="a")
    assert claim.run is not None
    current = ctx.ledger.get(run.run_id)
    assert current is not None
    ctx.ledger.replace(replace(current, retry_streak=6, retries={"registering": 6}))
    release_claim(ctx.ledger, claim.run, clean=True)
    after = ctx.ledger.get(run.run_id)
    assert after is not None and after.retry_streak == 0 and after.retries == {"registering": 6}
