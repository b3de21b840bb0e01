"""The stage chain on fakes: GIVEN a dataset folder, WHEN its events and messages flow, THEN one run goes live."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.events import BlobCreated, MLJobEvent, ml_job_event_payload
from shared.ledger import RunStage, RunStatus
from shared.messages import (
    DeployModel,
    PromoteDeployment,
    QueueMessage,
    RegisterModel,
    SettleDatasetFolder,
    SmokeTestDeployment,
    SubmitFinetuneJob,
    ValidateDataset,
)
from shared.ml.simulated import SimulatedMLBackend
from shared.stages import intake, rollout, training, validation
from shared.stages.cleanup import clean_up_idle_endpoints
from shared.stages.context import StageContext
from tests.fakes import FakeBlobStore, FakeClock, FakeMessageSender, fake_context

CONTAINER = "training-data"


def conversation(i: int) -> dict[str, Any]:
    return {
        "prompt": f"question {i}",
        "prompt_id": f"{i:08x}",
        "messages": [
            {"role": "user", "content": f"What is {i} plus {i}?"},
            {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."},
        ],
    }


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def upload(ctx: StageContext, name: str, content: bytes) -> BlobCreated:
    assert isinstance(ctx.blobs, FakeBlobStore)
    blob = ctx.blobs.upload(CONTAINER, name, content)
    return BlobCreated("evt-" + name, CONTAINER, name, blob.url, blob.etag, blob.size, "1")


def upload_folder(
    ctx: StageContext, folder: str = "chat/v1", manifest: dict[str, Any] | None = None
) -> list[BlobCreated]:
    events = [
        upload(ctx, f"{folder}/train_sft.jsonl", jsonl([conversation(i) for i in range(30)])),
        upload(ctx, f"{folder}/test_sft.jsonl", jsonl([conversation(i) for i in range(100, 105)])),
    ]
    if manifest is not None:
        events.append(upload(ctx, f"{folder}/autopilot.json", json.dumps(manifest).encode()))
    return events


def dispatch(ctx: StageContext, message: QueueMessage) -> QueueMessage | None:
    handlers = {
        SettleDatasetFolder: intake.settle_dataset_folder,
        ValidateDataset: validation.validate_run,
        SubmitFinetuneJob: training.submit_finetune_job,
        RegisterModel: rollout.register_model,
        DeployModel: rollout.deploy_model,
        SmokeTestDeployment: rollout.smoke_test_deployment,
        PromoteDeployment: rollout.promote_deployment,
    }
    return handlers[type(message)](message, ctx)  # type: ignore[operator]


def drain(ctx: StageContext, pending: list[QueueMessage], *, twice: bool = False) -> None:
    """Deliver messages (each twice when asked) until none are left, finishing jobs as they appear."""
    sender = ctx.sender
    assert isinstance(sender, FakeMessageSender) and isinstance(ctx.clock, FakeClock)
    backend = ctx.backend
    assert isinstance(backend, SimulatedMLBackend)
    for _ in range(200):
        if not pending:
            pending = [message for message, _ in sender.sent]
            sender.sent.clear()
            ctx.clock.advance(31)
            for job in list(backend.state["jobs"].values()):
                if job["status"] == "Running":
                    backend.finish_job(job["name"], "Failed" if job["failure"] == "training" else "Completed")
                    events = ml_job_event_payload(
                        job_name=job["name"],
                        experiment_name="e",
                        status=backend.get_job(job["name"]).status,
                        tags=job["tags"],
                        topic="t",
                        event_time="now",
                        event_id=job["name"],
                    )
                    for raw in events * (2 if twice else 1):
                        event = MLJobEvent.parse(raw["id"], raw["eventType"], raw["subject"], raw["data"])
                        produced = training.handle_ml_job_event(event, ctx)
                        if produced:
                            pending.append(produced)
            if not pending:
                return
        message = pending.pop(0)
        for _ in range(2 if twice else 1):
            produced = dispatch(ctx, message)
            if produced is not None:
                pending.append(produced)
    raise AssertionError("the chain did not settle")


def start(ctx: StageContext, events: list[BlobCreated], *, twice: bool = False) -> None:
    for event in events * (2 if twice else 1):
        intake.note_blob_created(event, ctx)
    drain(ctx, [], twice=twice)


def only_run(ctx: StageContext):  # type: ignore[no-untyped-def]
    runs = ctx.ledger.list_runs()
    assert len(runs) == 1, [r.run_id for r in runs]
    return runs[0]


def test_a_folder_uploaded_file_by_file_becomes_one_live_run() -> None:
    ctx = fake_context()
    start(ctx, upload_folder(ctx))
    run = only_run(ctx)
    assert (run.stage, run.status) == (RunStage.LIVE, RunStatus.SUCCEEDED)
    assert run.job_name == f"autopilot-{run.run_id}" and run.model_version and run.deployment_name
    assert run.smoke["passed"] and run.smoke["requests"] == 3
    assert set(run.stage_times) == {stage.value for stage in RunStage}
    assert [i["name"] for i in run.inputs] == ["test_sft.jsonl", "train_sft.jsonl"]
    endpoint = ctx.backend.get_endpoint(run.endpoint_name)
    assert endpoint is not None and endpoint.traffic == {run.deployment_name: 100}


def test_the_quiet_period_delays_settling_and_the_manifest_does_not() -> None:
    ctx = fake_context()
    sent = ctx.sender.sent  # type: ignore[attr-defined]
    for event in upload_folder(ctx, manifest={"description": "x"}):
        intake.note_blob_created(event, ctx)
    assert [delay for _, delay in sent] == [30, 30, 0]


def test_a_settle_message_overtaken_by_a_later_file_does_nothing() -> None:
    ctx = fake_context()
    first, second = upload_folder(ctx)
    early = intake.note_blob_created(first, ctx)
    ctx.clock.advance(5)  # type: ignore[attr-defined]
    intake.note_blob_created(second, ctx)
    assert early is not None and intake.settle_dataset_folder(early, ctx) is None
    assert ctx.ledger.list_runs() == []


def test_every_event_and_message_twice_gives_one_run_one_job_one_model_version() -> None:
    ctx = fake_context()
    start(ctx, upload_folder(ctx), twice=True)
    run = only_run(ctx)
    assert run.status is RunStatus.SUCCEEDED
    state = ctx.backend.state  # type: ignore[attr-defined]
    assert list(state["jobs"]) == [run.job_name]
    assert {name: list(versions) for name, versions in state["models"].items()} == {run.model_name: [run.model_version]}
    assert list(state["endpoints"][run.endpoint_name]["deployments"]) == [run.deployment_name]


def test_the_same_content_in_another_version_folder_is_the_same_run() -> None:
    ctx = fake_context()
    start(ctx, upload_folder(ctx, "chat/v1"))
    start(ctx, upload_folder(ctx, "chat/v2"))
    assert only_run(ctx).version == "v1"


def test_a_new_dataset_version_replaces_the_live_deployment() -> None:
    ctx = fake_context()
    start(ctx, upload_folder(ctx, "chat/v1"))
    ctx.clock.advance(60)  # type: ignore[attr-defined]
    start(ctx, upload_folder(ctx, "chat/v2", manifest={"description": "second"}))
    second, first = ctx.ledger.list_runs()
    assert second.previous_deployment == first.deployment_name
    endpoint = ctx.backend.get_endpoint(second.endpoint_name)
    assert endpoint is not None and endpoint.deployments == (second.deployment_name,)
    assert first.endpoint_state == f"replaced by {second.run_id}"


def test_a_bad_dataset_is_rejected_with_its_reason_and_nothing_is_submitted() -> None:
    ctx = fake_context()
    start(ctx, [upload(ctx, "chat/v1/train.jsonl", b'{"messages": "nope"}\n' * 20)])
    run = only_run(ctx)
    assert run.status is RunStatus.REJECTED and run.error_category == "validation"
    assert run.error_message and run.job_name == ""
    assert ctx.backend.state["jobs"] == {}  # type: ignore[attr-defined]


def test_an_unknown_manifest_key_rejects_the_dataset_and_names_the_key() -> None:
    ctx = fake_context()
    start(ctx, upload_folder(ctx, manifest={"base_modle": "x"}))
    run = only_run(ctx)
    assert run.status is RunStatus.REJECTED and "base_modle" in run.error_message


@pytest.mark.parametrize(
    ("failure", "status", "category", "stage"),
    [
        ("training", RunStatus.FAILED, "training", RunStage.TRAINING),
        ("deployment", RunStatus.FAILED, "deployment", RunStage.DEPLOYING),
        ("scoring", RunStatus.ROLLED_BACK, "smoke_test", RunStage.SMOKE_TESTING),
    ],
)
def test_failures_end_the_run_with_their_category(
    failure: str, status: RunStatus, category: str, stage: RunStage
) -> None:
    ctx = fake_context()
    start(ctx, upload_folder(ctx, manifest={"parameters": {"simulate_failure": failure}}))
    run = only_run(ctx)
    assert (run.status, run.error_category, run.error_stage) == (status, category, stage.value)


def test_a_bad_model_is_rolled_back_and_the_live_one_keeps_its_traffic() -> None:
    ctx = fake_context()
    start(ctx, upload_folder(ctx, "chat/v1"))
    ctx.clock.advance(60)  # type: ignore[attr-defined]
    start(ctx, upload_folder(ctx, "chat/v2", manifest={"parameters": {"simulate_failure": "scoring"}}))
    bad, good = ctx.ledger.list_runs()
    assert bad.status is RunStatus.ROLLED_BACK and "traffic stays on" in bad.error_message
    endpoint = ctx.backend.get_endpoint(good.endpoint_name)
    assert endpoint is not None and endpoint.traffic == {good.deployment_name: 100}


def test_the_smoke_test_compares_answers_with_the_test_answers_on_the_new_and_the_live_deployment() -> None:
    # GIVEN a live model WHEN a new version's model answers as well THEN it is promoted, with both similarities
    ctx = fake_context()
    start(ctx, upload_folder(ctx, "chat/v1"))
    first = only_run(ctx)
    assert first.smoke_prompts[0][-1] == {"role": "assistant", "content": "100 plus 100 is 200."}
    result = first.smoke["results"][0]
    assert result["reference"] == "100 plus 100 is 200." and 0 < result["similarity"] < 1
    assert "live" not in result and "live_similarity" not in first.smoke
    ctx.clock.advance(60)  # type: ignore[attr-defined]
    start(ctx, upload_folder(ctx, "chat/v2", manifest={"description": "same data, new version"}))
    second = next(run for run in ctx.ledger.list_runs() if run.version == "v2")
    assert second.status is RunStatus.SUCCEEDED
    assert second.smoke["similarity"] == second.smoke["live_similarity"] == first.smoke["similarity"]
    assert second.smoke["results"][0]["live"]["ok"]


def test_a_model_that_answers_worse_than_the_live_one_is_rolled_back_for_quality() -> None:
    ctx = fake_context()
    start(ctx, upload_folder(ctx, "chat/v1"))
    ctx.clock.advance(60)  # type: ignore[attr-defined]
    start(ctx, upload_folder(ctx, "chat/v2", manifest={"parameters": {"simulate_failure": "quality"}}))
    worse = next(run for run in ctx.ledger.list_runs() if run.version == "v2")
    live = next(run for run in ctx.ledger.list_runs() if run.version == "v1")
    assert (worse.status, worse.error_category) == (RunStatus.ROLLED_BACK, "quality")
    assert "less like the test answers than those of the live deployment" in worse.error_message
    assert worse.smoke["similarity"] < worse.smoke["live_similarity"] and not worse.smoke["passed"]
    endpoint = ctx.backend.get_endpoint(live.endpoint_name)
    assert endpoint is not None and endpoint.traffic == {live.deployment_name: 100}


def test_a_first_model_below_the_minimum_similarity_is_rolled_back() -> None:
    ctx = fake_context(smoke_min_similarity=0.9)
    start(ctx, upload_folder(ctx))
    run = only_run(ctx)
    assert (run.status, run.error_category) == (RunStatus.ROLLED_BACK, "quality")
    assert "too unlike the test answers" in run.error_message and "AUTOPILOT_SMOKE_MIN_SIMILARITY" in run.error_message


def test_ml_events_of_jobs_this_app_did_not_submit_are_ignored() -> None:
    ctx = fake_context()
    raw = ml_job_event_payload(
        job_name="other", experiment_name="e", status="Completed", tags={}, topic="t", event_time="now", event_id="x"
    )[1]
    event = MLJobEvent.parse(raw["id"], raw["eventType"], raw["subject"], raw["data"])
    assert training.handle_ml_job_event(event, ctx) is None


def test_idle_endpoints_are_deleted_and_busy_ones_kept() -> None:
    ctx = fake_context(idle_endpoint_minutes=60)
    start(ctx, upload_folder(ctx, "chat/v1"))
    start(ctx, upload_folder(ctx, "other/v1"))
    busy, idle = sorted(ctx.ledger.list_runs(), key=lambda r: r.dataset)
    ctx.clock.advance(2 * 3600)  # type: ignore[attr-defined]
    ctx.backend.score(busy.endpoint_name, {"input_data": {"input_string": [{"role": "user", "content": "hi"}]}})
    assert clean_up_idle_endpoints(ctx) == [idle.endpoint_name]
    assert ctx.backend.get_endpoint(idle.endpoint_name) is None
    assert ctx.ledger.get(idle.run_id).endpoint_state.startswith("deleted_idle")  # type: ignore[union-attr]


def test_duplicate_deployment_checks_keep_a_single_chain_of_delayed_checks() -> None:
    # GIVEN a run whose deployment is still being created
    ctx = fake_context()
    for event in upload_folder(ctx):
        intake.note_blob_created(event, ctx)
    sender = ctx.sender
    assert isinstance(sender, FakeMessageSender) and isinstance(ctx.clock, FakeClock)
    pending = [message for message, _ in sender.sent]
    sender.sent.clear()
    ctx.clock.advance(31)
    while pending and not isinstance(pending[0], DeployModel):
        produced = dispatch(ctx, pending.pop(0))
        if produced is None and not pending:
            backend = ctx.backend
            assert isinstance(backend, SimulatedMLBackend)
            job = next(iter(backend.state["jobs"].values()))
            backend.finish_job(job["name"])
            raw = ml_job_event_payload(job_name=job["name"], experiment_name="e", status="Completed", tags=job["tags"],
                                       topic="t", event_time="now", event_id="x")[1]  # fmt: skip
            produced = training.handle_ml_job_event(
                MLJobEvent.parse(raw["id"], raw["eventType"], raw["subject"], raw["data"]), ctx
            )
        if produced is not None:
            pending.append(produced)
    deploy = pending[0]
    # WHEN the same check is delivered three times while the deployment is Creating
    for _ in range(3):
        assert dispatch(ctx, deploy) is None
    # THEN only one delayed check was scheduled
    assert [type(message) for message, _ in sender.sent] == [DeployModel]
