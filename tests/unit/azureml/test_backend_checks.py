"""GIVEN the workspace and registry as they are, WHEN the backend checks compute, resolves the base model,
registers, scores and counts requests, THEN it refuses what the walkthrough refuses and repeats nothing twice.

Relies on azure-facts.md, "Azure ML" (allow-list tags hold Python literals, registry models.get with
label="latest"), "Added 2026-12-01" (allow lists only in system metadata; fail closed without one),
"Scoring contract" and "Online endpoint metrics" (a quiet minute may be missing).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from shared.errors import BackendError, InvalidParameterError, NotFoundError
from shared.ml.azureml.catalog import BaseModel
from shared.ml.azureml.endpoints import DEPLOYMENT_HEADER
from shared.ml.port import RUN_TAG, DeploymentSpec, ModelRegistration
from shared.ml.scoring import chat_request
from tests.unit.azureml.conftest import AzureWorld, azure_world, job_spec

JOB = "autopilot-chat-0123456789ab"
MODEL, VERSION = "Phi-3-mini-4k-instruct-chat", "1763629200000"


def test_a_cluster_in_failed_state_is_refused_before_submitting(component: Any, base_model: BaseModel) -> None:
    world = azure_world(component, base_model, compute_cluster="gpu-cluster")
    world.workspace.compute.add_cluster("gpu-cluster", "Standard_NC24ads_A100_v4", state="Failed")
    with pytest.raises(InvalidParameterError, match="failed provisioning state"):
        world.backend.submit_finetune_job(job_spec())
    assert world.workspace.jobs.submitted == {}


def test_a_cluster_size_outside_the_models_allow_list_is_refused_case_insensitively(
    component: Any, base_model: BaseModel
) -> None:
    world = azure_world(component, base_model, compute_cluster="gpu-cluster")
    world.workspace.compute.add_cluster("gpu-cluster", "STANDARD_NC24ADS_A100_V4")
    plan, _ = world.backend.plan_finetune(job_spec())
    assert plan.compute.cluster == "gpu-cluster" and plan.compute.gpus_per_node == 1
    world.workspace.compute.add_cluster("gpu-cluster", "Standard_ND96asr_v4")
    world.workspace.compute.add_cluster("small", "Standard_NC48ads_A100_v4")
    small = azure_world(component, base_model, compute_cluster="small")
    small.workspace.compute.add_cluster("small", "Standard_D12_v2")
    with pytest.raises(InvalidParameterError, match="not in Phi-4:8's fine-tuning allow list"):
        small.backend.plan_finetune(job_spec())


def test_a_size_unknown_to_the_workspace_lists_the_available_ones(component: Any, base_model: BaseModel) -> None:
    t4 = replace(base_model, system_metadata={"supportedComputes": {"finetuneComputes": ["Standard_NC4as_T4_v3"]}})
    world = azure_world(component, t4, finetune_instance_type="Standard_NC4as_T4_v3")
    with pytest.raises(InvalidParameterError, match="available: Standard_D12_v2, Standard_NC24ads_A100_v4"):
        world.backend.plan_finetune(job_spec())


def test_a_missing_cluster_says_which_setting_names_it(component: Any, base_model: BaseModel) -> None:
    world = azure_world(component, base_model, compute_cluster="gone")
    with pytest.raises(NotFoundError, match="AUTOPILOT_AZUREML_COMPUTE"):
        world.backend.plan_finetune(job_spec())


def test_the_base_model_is_read_once_at_the_pinned_version_or_latest(component: Any, base_model: BaseModel) -> None:
    world = azure_world(component, base_model, base_model_version=base_model.version)
    world.backend.plan_finetune(job_spec())
    world.backend.plan_finetune(job_spec())
    assert world.registry.model_reads == 1
    with pytest.raises(NotFoundError, match="AUTOPILOT_BASE_MODEL"):
        world.backend.plan_finetune(job_spec(base_model="Phi-9"))


def test_registering_the_same_run_again_returns_the_existing_version(world: AzureWorld) -> None:
    world.backend.submit_finetune_job(job_spec())
    world.workspace.jobs.finish(JOB)
    registration = ModelRegistration(JOB, MODEL, VERSION, tags={RUN_TAG: "chat-0123456789ab"})
    first = world.backend.register_model(registration)
    again = world.backend.register_model(registration)
    assert first == again and list(world.workspace.models.models) == [(MODEL, VERSION)]
    tags = world.workspace.models.models[(MODEL, VERSION)].tags
    assert tags["base_model"] == "Phi-4" and "Standard_NC24ads_A100_v4" in tags["inference_compute_allow_list"]
    with pytest.raises(BackendError, match="belongs to run chat-0123456789ab") as raised:
        world.backend.register_model(ModelRegistration(JOB, MODEL, VERSION, tags={RUN_TAG: "other-run"}))
    assert raised.value.category == "conflict"


def test_a_job_that_did_not_complete_has_nothing_to_register(world: AzureWorld) -> None:
    world.backend.submit_finetune_job(job_spec())
    with pytest.raises(NotFoundError, match="is Running"):
        world.backend.register_model(ModelRegistration(JOB, MODEL, VERSION))


def live_deployment(world: AzureWorld, name: str = "blue") -> None:
    if not world.workspace.jobs.submitted:
        world.backend.submit_finetune_job(job_spec())
        world.workspace.jobs.finish(JOB)
        world.backend.register_model(ModelRegistration(JOB, MODEL, VERSION))
        world.backend.ensure_endpoint("ftap-chat", {})
        world.clock.advance(31)
    world.backend.begin_deployment(DeploymentSpec("ftap-chat", name, MODEL, VERSION))
    world.clock.advance(61)


def test_scoring_pins_a_deployment_only_when_asked_and_the_pin_does_not_stick(world: AzureWorld) -> None:
    live_deployment(world, "blue")
    live_deployment(world, "green")
    world.backend.set_traffic("ftap-chat", {"blue": 100})
    request = chat_request([{"role": "user", "content": "Capital of France?"}])
    assert world.backend.score("ftap-chat", request, "green") == {"output": "Arr, Paris it be."}
    world.backend.score("ftap-chat", request)
    pinned, by_traffic = world.http.requests
    assert (pinned["deployment"], pinned["headers"][DEPLOYMENT_HEADER]) == ("green", "green")
    assert DEPLOYMENT_HEADER not in by_traffic["headers"] and by_traffic["deployment"] == "blue"
    key = world.workspace.online_endpoints.get_keys("ftap-chat").primary_key
    assert pinned["headers"]["Authorization"] == f"Bearer {key}"


def test_a_scoring_error_is_a_backend_error_the_smoke_test_counts(world: AzureWorld) -> None:
    live_deployment(world)
    request = chat_request([{"role": "user", "content": "hi"}])
    with pytest.raises(NotFoundError):
        world.backend.score("ftap-chat", request, "v-missing")


def test_requests_per_minute_count_quiet_minutes_and_quiet_deployments_as_zero(world: AzureWorld) -> None:
    live_deployment(world, "blue")
    live_deployment(world, "green")
    world.backend.set_traffic("ftap-chat", {"blue": 100})
    since = world.clock().replace(second=0, microsecond=0)
    request = chat_request([{"role": "user", "content": "hi"}])
    world.backend.score("ftap-chat", request)
    world.clock.advance(120)
    world.backend.score("ftap-chat", request)
    world.backend.score("ftap-chat", request)
    counts = world.backend.requests_per_minute("ftap-chat", since)
    assert counts == {"blue": [1, 0, 2], "green": [0, 0, 0]}
    assert world.backend.requests_per_minute("ftap-chat", since - timedelta(minutes=1))["blue"] == [0, 1, 0, 2]
