"""Redeploy on registration, on fakes: GIVEN a model registered outside this app, WHEN its ModelRegistered event
comes, THEN a run rolls it out through deploy, smoke test, quality gate and promotion when the setting names it."""

from __future__ import annotations

from shared.ledger import RunStage, RunStatus
from shared.messages import DeployModel
from shared.ml.port import RUN_TAG
from shared.ml.simulated import SimulatedMLBackend
from shared.settings import Settings
from shared.stages.context import StageContext
from shared.stages.redeploy import ModelRegistered, model_registered_payload, redeploy_model, redeploy_run_id
from shared.stages.rollout import DEFAULT_SMOKE_PROMPTS
from tests.conftest import load_event
from tests.fakes import FakeBlobStore, fake_context
from tests.unit.test_lifecycle import FakeLifecyclePublisher
from tests.unit.test_stages import conversation, drain, jsonl, only_run, start, upload_folder


def register_outside(ctx: StageContext, name: str, version: str, tags: dict[str, str] | None = None) -> ModelRegistered:
    """A model version registered by someone else (another pipeline, by hand), and its event."""
    backend = ctx.backend
    assert isinstance(backend, SimulatedMLBackend)
    backend.state["models"].setdefault(name, {})[version] = {
        "job": "",
        "tags": dict(tags or {}),
        "description": "registered by hand",
        "failure": "",
    }
    [raw] = model_registered_payload(name, version, dict(tags or {}), "t", "now")
    return ModelRegistered.parse(raw["id"], raw["eventType"], raw["subject"], raw["data"])


def test_the_documented_event_parses() -> None:
    [raw] = load_event("model-registered.json")
    event = ModelRegistered.parse(raw["id"], raw["eventType"], raw["subject"], raw["data"])
    assert (event.model_name, event.model_version, event.tags) == (
        "Phi-3-mini-4k-instruct-ultrachat-200k",
        "1763638937",
        {},
    )


def test_a_matching_model_registered_outside_is_rolled_out_to_the_endpoint_its_tag_names() -> None:
    # GIVEN the setting matches the model's name by a pattern, and the model names its endpoint in a tag
    published = FakeLifecyclePublisher()
    ctx = fake_context(redeploy_models=("support-*",))
    ctx.lifecycle = published
    event = register_outside(ctx, "support-bot", "3", {"autopilot_endpoint": "ep-support"})

    # WHEN its event comes, twice
    command = redeploy_model(event, ctx)
    assert command == DeployModel(redeploy_run_id("support-bot", "3"))
    assert redeploy_model(event, ctx) == command
    drain(ctx, [command])

    # THEN one run took it live there, through the smoke test, and said so
    run = only_run(ctx)
    assert (run.status, run.stage) == (RunStatus.SUCCEEDED, RunStage.LIVE), run.error_message
    assert (run.model_name, run.model_version, run.endpoint_name) == ("support-bot", "3", "ep-support")
    assert run.smoke["passed"] and run.smoke["requests"] == len(DEFAULT_SMOKE_PROMPTS)
    endpoint = ctx.backend.get_endpoint("ep-support")
    assert endpoint is not None and endpoint.traffic == {run.deployment_name: 100}
    assert published.types() == ["FinetuneAutopilot.RunSucceeded"]
    # AND the event again, after the run ended, changes nothing
    assert redeploy_model(event, ctx) is None


def test_models_this_app_registered_unmatched_names_and_the_setting_off_change_nothing() -> None:
    ctx = fake_context(redeploy_models=("support-bot",))
    own = register_outside(ctx, "support-bot", "4", {RUN_TAG: "chat-abc"})
    other = register_outside(ctx, "other-model", "1")
    assert redeploy_model(own, ctx) is None and redeploy_model(other, ctx) is None
    off = fake_context()
    assert redeploy_model(register_outside(off, "support-bot", "5"), off) is None
    assert ctx.ledger.list_runs() == [] and off.ledger.list_runs() == []


def test_the_endpoint_setting_and_the_test_conversations_setting_win() -> None:
    ctx = fake_context(
        redeploy_models=("bot",), redeploy_endpoint="ep-fixed", redeploy_test_conversations="tests/bot.jsonl"
    )
    assert isinstance(ctx.blobs, FakeBlobStore)
    ctx.blobs.upload("training-data", "tests/bot.jsonl", jsonl([conversation(i) for i in range(5)]))
    event = register_outside(ctx, "bot", "1", {"autopilot_endpoint": "ep-tag"})
    command = redeploy_model(event, ctx)
    assert command is not None
    drain(ctx, [command])
    run = only_run(ctx)
    assert run.status is RunStatus.SUCCEEDED and run.endpoint_name == "ep-fixed"
    assert run.smoke_prompts == [conversation(i)["messages"] for i in range(3)]


def test_without_settings_the_model_keeps_the_endpoint_and_test_conversations_of_its_last_run() -> None:
    # GIVEN a fine-tuned model live through this app
    ctx = fake_context()
    start(ctx, upload_folder(ctx))
    first = only_run(ctx)
    ctx.settings = Settings(storage_connection=ctx.settings.storage_connection, redeploy_models=(first.model_name,))
    ctx.clock.advance(60)  # type: ignore[attr-defined]

    # WHEN someone registers a new version of it by hand
    command = redeploy_model(register_outside(ctx, first.model_name, "99"), ctx)
    assert command is not None
    drain(ctx, [command])

    # THEN it replaces the live one on the same endpoint, tested with the same conversations
    second = ctx.ledger.get(command.run_id)
    assert second is not None and second.status is RunStatus.SUCCEEDED, second and second.error_message
    assert second.endpoint_name == first.endpoint_name and second.smoke_prompts == first.smoke_prompts
    assert second.previous_deployment == first.deployment_name
    assert second.smoke["live_similarity"] is not None
