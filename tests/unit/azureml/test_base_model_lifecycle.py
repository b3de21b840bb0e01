"""GIVEN catalog models at every stage of their lifecycle, WHEN the backend reads the base model before a job,
THEN it refuses a retired or archived one (naming the date and Microsoft's replacement) before any compute is
asked for, warns of a coming deprecation, and checks compute against allow lists wherever the registry keeps them,
refusing when it keeps none.

Relies on azure-facts.md, "Added 2026-12-01" (Phi-3-mini-4k-instruct retired 2025-08-30 and archived; lifecycle
dates and compute allow lists moved from tags to system metadata; the SDK's Model drops both; fail closed).
The fake registry serves REST bodies the way azure-ai-ml 1.35.2 reads them (see FakeRegistryClient).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import date
from typing import Any

import pytest

from shared.errors import InvalidParameterError
from shared.ml.azureml.catalog import BaseModel, check_usable, offline_base_models
from shared.ml.azureml.config import AzureMLConfig
from shared.ml.azureml.offline import plan_offline
from shared.ml.port import RUN_TAG, DeploymentSpec, ModelRegistration
from shared.settings import ML_BACKEND, STORAGE_CONNECTION, Settings
from tests.unit.azureml.conftest import AzureWorld, azure_world, job_spec

JOB = "autopilot-chat-0123456789ab"
TODAY = date(2026, 11, 20)  # tests.fakes.FakeClock's day
PHI3 = "Phi-3-mini-4k-instruct"


def refusal(world: AzureWorld, **spec: Any) -> str:
    with pytest.raises(InvalidParameterError) as raised:
        world.backend.submit_finetune_job(job_spec(**spec))
    assert world.workspace.jobs.submitted == {}
    return str(raised.value)


def test_the_default_base_model_is_a_current_catalog_model_that_fine_tunes_on_managed_compute() -> None:
    default = BaseModel.from_json()
    settings = Settings.from_env({STORAGE_CONNECTION: "UseDevelopmentStorage=true", ML_BACKEND: "azureml"})
    assert settings.base_model == default.name == "Phi-4"
    assert check_usable(default, TODAY) == [] and not default.archived
    assert default.system_metadata["tasks"]["fineTuningTasks"] == ["chat-completion"]


def test_the_archived_model_pinned_by_version_is_refused_naming_its_retirement_and_replacement(
    component: Any, base_model: BaseModel
) -> None:
    world = azure_world(component, base_model, base_model_version="15")
    message = refusal(world, base_model=PHI3)
    assert f"{PHI3}:15 was retired for fine-tuning on 2025-08-30, retired for inference on 2025-08-30" in message
    assert "archived in the registry (isArchived)" in message
    assert "Microsoft names Phi-4-mini-instruct as its replacement" in message


def test_the_archived_model_is_not_found_by_label_latest_and_the_error_says_why(world: AzureWorld) -> None:
    message = refusal(world, base_model=PHI3)
    assert "does not exist in registry azureml" in message
    assert "retired for fine-tuning on 2025-08-30" in message and "Phi-4-mini-instruct" in message


@pytest.mark.parametrize(
    ("retired", "expected"),
    [
        (BaseModel("Old", "3", "azureml://x", archived=True), "Old:3 was archived in the registry (isArchived)"),
        (
            BaseModel("Old", "3", "azureml://x", tags={"FinetuneRetirementDate": "2026-11-20"}),
            "retired for fine-tuning on 2026-11-20",
        ),
        (
            BaseModel(
                "Old",
                "3",
                "azureml://x",
                system_metadata={"deprecation": {"inferenceRetirementDate": "2026-01-31T00:00:00.000000Z"}},
            ),
            "retired for inference on 2026-01-31",
        ),
    ],
    ids=["archived flag", "retirement tag today", "inference retirement in system metadata"],
)
def test_a_retired_or_archived_model_is_refused_before_the_job(
    retired: BaseModel, expected: str, component: Any
) -> None:
    message = refusal(azure_world(component, retired, base_model_version="3"), base_model="Old")
    assert expected in message and "AUTOPILOT_BASE_MODEL" in message
    assert "replacement" not in message  # Microsoft names none for this model


def test_a_future_deprecation_is_allowed_logged_and_kept_in_the_plan(
    component: Any, base_model: BaseModel, caplog: pytest.LogCaptureFixture
) -> None:
    deprecation = {"finetuneDeprecationDate": "2027-02-01T00:00:00.000000Z", "finetuneRetirementDate": "2027-05-01"}
    model = replace(base_model, system_metadata={**base_model.system_metadata, "deprecation": deprecation})
    world = azure_world(component, model)
    with caplog.at_level(logging.WARNING):
        plan, _ = world.backend.plan_finetune(job_spec())
        world.backend.submit_finetune_job(job_spec())
    assert plan.to_dict()["base_model"]["lifecycle"] == {
        "finetuneDeprecationDate": "2027-02-01",
        "finetuneRetirementDate": "2027-05-01",
    }
    assert "Phi-4:8 will be deprecated for fine-tuning on 2027-02-01" in caplog.text
    assert "will be retired for fine-tuning on 2027-05-01" in caplog.text
    assert list(world.workspace.jobs.submitted) == [JOB]


def test_a_model_retired_while_it_trained_is_still_registered_with_its_inference_allow_list(
    component: Any, base_model: BaseModel
) -> None:
    model = replace(
        base_model,
        system_metadata={**base_model.system_metadata, "deprecation": {"finetuneRetirementDate": "2026-11-21"}},
    )
    world = azure_world(component, model)
    world.backend.submit_finetune_job(job_spec())
    world.clock.advance(2 * 86400)
    world.workspace.jobs.finish(JOB)
    registered = world.backend.register_model(ModelRegistration(JOB, "Phi-4-chat", "1763629200000"))
    assert "Standard_NC24ads_A100_v4" in registered.tags["inference_compute_allow_list"]


def test_allow_lists_only_in_system_metadata_check_fine_tuning_and_reach_the_deployment(
    world: AzureWorld, component: Any
) -> None:
    phi4 = offline_base_models()["Phi-4"]
    assert "finetune_compute_allow_list" not in phi4.tags and "inference_compute_allow_list" not in phi4.tags
    world.backend.submit_finetune_job(job_spec())
    world.workspace.jobs.finish(JOB)
    registered = world.backend.register_model(
        ModelRegistration(JOB, "Phi-4-chat", "1763629200000", tags={RUN_TAG: "r"})
    )
    assert registered.tags["inference_compute_allow_list"] == repr(
        phi4.system_metadata["supportedComputes"]["inferenceComputes"]
    )
    world.backend.ensure_endpoint("ftap-chat", {})
    world.clock.advance(31)
    world.backend.begin_deployment(DeploymentSpec("ftap-chat", "blue", "Phi-4-chat", "1763629200000"))
    assert list(world.workspace.online_endpoints.deployments["ftap-chat"]) == ["blue"]
    outside = azure_world(component, phi4, finetune_instance_type="Standard_NC6")
    with pytest.raises(InvalidParameterError, match="Standard_NC6 is not in Phi-4:8's fine-tuning allow list"):
        outside.backend.plan_finetune(job_spec())


def test_without_any_allow_list_fine_tuning_fails_closed(component: Any, base_model: BaseModel) -> None:
    bare = replace(base_model, system_metadata={})
    message = refusal(azure_world(component, bare))
    assert "declares no fine-tuning computes" in message
    assert "finetune_compute_allow_list" in message and "supportedComputes.finetuneComputes" in message


def test_without_any_inference_allow_list_deployment_fails_closed(component: Any, base_model: BaseModel) -> None:
    computes = {"finetuneComputes": base_model.system_metadata["supportedComputes"]["finetuneComputes"]}
    trains_only = replace(base_model, system_metadata={"supportedComputes": computes})
    world = azure_world(component, trains_only)
    world.backend.submit_finetune_job(job_spec())
    world.workspace.jobs.finish(JOB)
    registered = world.backend.register_model(ModelRegistration(JOB, "Phi-4-chat", "1763629200000"))
    assert "inference_compute_allow_list" not in registered.tags
    world.backend.ensure_endpoint("ftap-chat", {})
    world.clock.advance(31)
    with pytest.raises(InvalidParameterError, match="has no inference_compute_allow_list tag"):
        world.backend.begin_deployment(DeploymentSpec("ftap-chat", "blue", "Phi-4-chat", "1763629200000"))
    assert world.workspace.online_endpoints.deployments["ftap-chat"] == {}


def test_the_offline_plan_refuses_the_retired_model_as_the_backend_does() -> None:
    with pytest.raises(InvalidParameterError, match="retired for fine-tuning on 2025-08-30") as raised:
        plan_offline(job_spec(base_model=PHI3), AzureMLConfig(), today=TODAY)
    assert "Phi-4-mini-instruct" in str(raised.value)
    with pytest.raises(InvalidParameterError, match="covers Phi-4:8, Phi-3-mini-4k-instruct:15 only"):
        plan_offline(job_spec(base_model="Phi-4-mini-instruct"), AzureMLConfig(), today=TODAY)
