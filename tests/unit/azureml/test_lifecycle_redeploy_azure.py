"""Lifecycle events and redeploy on registration on `AzureMLBackend` over the fake workspace: GIVEN Azure ML's
behaviour, THEN a promoted run is announced, and a model registered outside this app is rolled out."""

from __future__ import annotations

from typing import Any

from azure.ai.ml.entities import Model

from shared.ledger import RunStage, RunStatus
from shared.ml.azureml.catalog import BaseModel
from shared.stages.redeploy import ModelRegistered, model_registered_payload, redeploy_model
from tests.unit.azureml.conftest import azure_world
from tests.unit.azureml.test_chain import chain, drain, only_run, start
from tests.unit.test_lifecycle import FakeLifecyclePublisher


def test_a_run_promoted_on_azure_ml_is_announced_with_its_losses(component: Any, base_model: BaseModel) -> None:
    world = azure_world(component, base_model)
    ctx = chain(world)
    published = FakeLifecyclePublisher()
    ctx.lifecycle = published
    start(ctx, world)
    run = only_run(ctx)
    assert run.status is RunStatus.SUCCEEDED
    [event] = published.events
    assert event.event_type == "FinetuneAutopilot.RunSucceeded" and event.subject == f"/runs/{run.run_id}"
    assert event.data["figures"]["losses"] == {"eval_loss": 1.42, "train_loss": 1.31}
    assert event.data["endpoint"]["name"] == run.endpoint_name


def test_a_model_registered_outside_is_rolled_out_on_azure_ml(component: Any, base_model: BaseModel) -> None:
    # GIVEN a model version registered in the workspace by another pipeline (with the inference computes it allows,
    # which the app checks before deploying anything), and the setting naming it
    world = azure_world(component, base_model)
    ctx = chain(world, redeploy_models=("support-bot",), redeploy_endpoint="ep-support")
    world.workspace.models.models[("support-bot", "1763638937")] = Model(
        name="support-bot",
        version="1763638937",
        path="azureml://jobs/other-pipeline/outputs/trained_model",
        tags={"inference_compute_allow_list": "['Standard_NC24ads_A100_v4']"},
    )
    [raw] = model_registered_payload("support-bot", "1763638937", {}, "t", "now")
    event = ModelRegistered.parse(raw["id"], raw["eventType"], raw["subject"], raw["data"])

    # WHEN its ModelRegistered event comes
    command = redeploy_model(event, ctx)
    assert command is not None
    ctx.sender.send(command)
    drain(ctx, world)

    # THEN it serves all traffic on the endpoint the setting names, after the smoke test
    run = only_run(ctx)
    assert (run.status, run.stage) == (RunStatus.SUCCEEDED, RunStage.LIVE), run.error_message
    endpoint = world.workspace.online_endpoints.endpoints["ep-support"]
    assert endpoint.traffic == {run.deployment_name: 100} and run.smoke["passed"]
    deployment = world.workspace.online_endpoints.deployments["ep-support"][run.deployment_name]
    assert "support-bot" in str(deployment.entity.model)
