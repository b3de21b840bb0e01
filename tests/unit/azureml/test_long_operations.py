"""GIVEN a workspace where jobs run for hours and deployments take minutes, WHEN the backend starts them,
THEN it returns at once, never waits on the SDK's pollers (nor streams a job), and reports progress when asked.

Relies on azure-facts.md, "Azure ML": begin_create_or_update returns pollers, deployments take up to 15-20
minutes, jobs.stream blocks until the end, job statuses.
"""

from __future__ import annotations

import pytest

from shared.errors import DeploymentFailedError, InvalidParameterError, QuotaExceededError, TransientError
from shared.ml.azureml.backend import TRAFFIC_WAIT_SECONDS
from shared.ml.port import DeploymentSpec, ModelRegistration
from tests.unit.azureml.conftest import AzureWorld, job_spec
from tests.unit.azureml.fakes import http_error

JOB = "autopilot-chat-0123456789ab"
MODEL, VERSION = "Phi-3-mini-4k-instruct-chat", "1763629200000"
SPEC = DeploymentSpec("ftap-chat", "v1763629200000", MODEL, VERSION)


def trained_and_registered(world: AzureWorld) -> None:
    world.backend.submit_finetune_job(job_spec())
    world.workspace.jobs.finish(JOB)
    world.backend.register_model(ModelRegistration(JOB, MODEL, VERSION))
    world.backend.ensure_endpoint("ftap-chat", {"dataset": "chat"})
    world.clock.advance(31)


def test_a_submitted_job_is_polled_by_status_until_it_completes(world: AzureWorld) -> None:
    submitted = world.backend.submit_finetune_job(job_spec())
    assert (submitted.status, submitted.finished) == ("Running", False)
    assert submitted.details["base_model"] == {
        "name": "Phi-4",
        "version": "8",
        "id": "azureml://registries/azureml/models/Phi-4/versions/8",
    }
    world.workspace.jobs.finish(JOB)
    done = world.backend.get_job(JOB)
    assert (done.status, done.metrics["train_loss"]) == ("Completed", 1.31)
    assert not hasattr(world.workspace.jobs, "stream")


def test_submitting_the_same_job_again_returns_it_without_a_second_submission(world: AzureWorld) -> None:
    first = world.backend.submit_finetune_job(job_spec())
    again = world.backend.submit_finetune_job(job_spec(parameters={"num_train_epochs": 9}))
    assert again.name == first.name and list(world.workspace.jobs.submitted) == [JOB]
    assert again.details["base_model"] == first.details["base_model"]


def test_a_failed_job_reports_the_run_history_error_and_where_to_look(world: AzureWorld) -> None:
    world.backend.submit_finetune_job(job_spec())
    world.workspace.jobs.finish(JOB, "Failed", "UserError: chat template of the model failed on row 3")
    failed = world.backend.get_job(JOB)
    assert (
        failed.failure_reason
        == f"UserError: chat template of the model failed on row 3; see https://ml.azure.com/{JOB}"
    )
    assert failed.metrics == {}


def test_cancelling_starts_the_cancellation_and_returns(world: AzureWorld) -> None:
    world.backend.submit_finetune_job(job_spec())
    world.backend.cancel_job(JOB)
    assert world.workspace.jobs.cancelled == [JOB]


def test_begin_deployment_returns_while_the_deployment_is_created_and_never_waits(world: AzureWorld) -> None:
    trained_and_registered(world)
    started = world.backend.begin_deployment(SPEC)
    record = world.workspace.online_endpoints.deployments["ftap-chat"][SPEC.deployment_name]
    assert started.state == "Creating" and not started.ready
    assert record.poller.waited == []
    world.clock.advance(61)
    ready = world.backend.get_deployment("ftap-chat", SPEC.deployment_name)
    assert ready is not None and ready.ready and (ready.model_name, ready.model_version) == (MODEL, VERSION)


def test_a_deployment_waits_for_its_endpoint_without_blocking(world: AzureWorld) -> None:
    world.backend.submit_finetune_job(job_spec())
    world.workspace.jobs.finish(JOB)
    world.backend.register_model(ModelRegistration(JOB, MODEL, VERSION))
    world.backend.ensure_endpoint("ftap-chat", {})
    waiting = world.backend.begin_deployment(SPEC)
    assert waiting.state == "Creating"
    assert world.backend.get_deployment("ftap-chat", SPEC.deployment_name) is None  # nothing started yet
    world.clock.advance(31)
    assert world.backend.begin_deployment(SPEC).state == "Creating"
    assert SPEC.deployment_name in world.workspace.online_endpoints.deployments["ftap-chat"]


def test_a_failed_deployment_brings_its_container_logs(world: AzureWorld) -> None:
    trained_and_registered(world)
    world.workspace.online_deployments.fail_next = True
    world.backend.begin_deployment(SPEC)
    world.clock.advance(61)
    failed = world.backend.get_deployment("ftap-chat", SPEC.deployment_name)
    assert failed is not None and failed.failed
    assert "CUDA out of memory" in str(failed.error) and "model download finished" in str(failed.error)
    assert world.workspace.online_deployments.logs_requested == ["inference-server", "storage-initializer"]


def test_an_instance_type_outside_the_models_inference_allow_list_is_refused_before_creating(world: AzureWorld) -> None:
    trained_and_registered(world)
    spec = DeploymentSpec("ftap-chat", "v1", MODEL, VERSION, instance_type="Standard_NC4as_T4_v3")
    with pytest.raises(InvalidParameterError, match="inference_compute_allow_list"):
        world.backend.begin_deployment(spec)
    assert world.workspace.online_endpoints.deployments["ftap-chat"] == {}


def test_not_enough_quota_for_the_deployment_names_instance_type_and_region(world: AzureWorld) -> None:
    trained_and_registered(world)

    def no_quota(deployment: object) -> None:
        raise http_error(400, "Not enough quota available for Standard_NC24ads_A100_v4 in SubscriptionId s")

    world.workspace.online_deployments.begin_create_or_update = no_quota  # type: ignore[method-assign,assignment]
    with pytest.raises(QuotaExceededError, match="Standard_NC24ads_A100_v4 in eastus"):
        world.backend.begin_deployment(SPEC)


def test_an_endpoint_in_failed_state_fails_the_deployment(world: AzureWorld) -> None:
    trained_and_registered(world)
    world.workspace.online_endpoints._view = lambda name: _failed_endpoint(name)  # type: ignore[method-assign]
    with pytest.raises(DeploymentFailedError, match="failed provisioning state"):
        world.backend.begin_deployment(SPEC)


def _failed_endpoint(name: str) -> object:
    from azure.ai.ml.entities import ManagedOnlineEndpoint

    return ManagedOnlineEndpoint(name=name, provisioning_state="Failed")


def test_traffic_changes_wait_a_bounded_time_and_retry_later_when_slow(world: AzureWorld) -> None:
    trained_and_registered(world)
    world.backend.begin_deployment(SPEC)
    world.clock.advance(61)
    world.backend.set_traffic("ftap-chat", {SPEC.deployment_name: 100})
    put = world.workspace.online_endpoints.endpoints["ftap-chat"]
    assert world.workspace.online_endpoints.pollers[-1].waited == [TRAFFIC_WAIT_SECONDS]
    assert put.traffic == {SPEC.deployment_name: 100} and not put.properties  # no systemData sent back
    world.workspace.online_endpoints.traffic_done = False
    with pytest.raises(TransientError, match="still running"):
        world.backend.set_traffic("ftap-chat", {SPEC.deployment_name: 100}, {})
