"""GIVEN a dataset's job spec, WHEN the backend plans and builds the pipeline job with the real SDK against a
local component with chat_completion_pipeline's interface, THEN what the SDK would send is what the walkthrough
submits: inputs, their types, settings, compute, names and tags.

Relies on azure-facts.md, "Azure ML" (registry component wrapped in @pipeline returning mlflow_model_folder as
trained_model, force_rerun, continue_on_step_failure, experiment chat_completion_<model>) and
"chat_completion_pipeline" (inputs, types, booleans as "true"/"false").
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from shared.errors import InvalidParameterError
from shared.ml.azureml.catalog import MODEL_DEFAULTS_TAG, BaseModel, ComponentInterface
from shared.ml.azureml.compute import FinetuneCompute
from shared.ml.azureml.pipeline import FinetunePlan, build_pipeline_job, data_uri, plan_finetune_job
from shared.ml.port import MANAGED_BY_TAG, MANAGED_BY_VALUE, RUN_TAG
from tests.unit.azureml.conftest import TEST_URL, TRAIN_URL, job_spec

CLUSTER = FinetuneCompute(size="Standard_NC48ads_A100_v4", gpus_per_node=2, cluster="gpu-cluster")
SERVERLESS = FinetuneCompute(size="Standard_NC24ads_A100_v4", gpus_per_node=1)
MANIFEST = {"num_train_epochs": "2", "apply_early_stopping": True, "max_seq_length": 1024.0}


@pytest.fixture(scope="module")
def cluster_plan(base_model: BaseModel, interface: ComponentInterface) -> FinetunePlan:
    return plan_finetune_job(job_spec(parameters=MANIFEST), base_model, interface, CLUSTER)


@pytest.fixture(scope="module")
def built(cluster_plan: FinetunePlan, component: Any) -> dict[str, Any]:
    """The job as YAML (typed values) and as the REST body the SDK would PUT, built once."""
    job = build_pipeline_job(cluster_plan, component)
    assert job._validate().passed
    return {"job": job, "yaml": job._to_dict(), "rest": job._to_rest_object().as_dict()["properties"]}


def test_the_local_component_has_the_interface_kept_for_offline_plans(
    component: Any, interface: ComponentInterface
) -> None:
    assert ComponentInterface.of_component(component).to_dict() == interface.to_dict()


def test_the_pipeline_wraps_the_component_and_returns_its_mlflow_model_as_trained_model(
    built: dict[str, Any],
) -> None:
    rest = built["rest"]
    assert rest["jobType"] == "Pipeline"
    assert rest["outputs"] == {"trained_model": {"jobOutputType": "mlflow_model"}}
    (node,) = rest["jobs"].values()
    assert node["type"] == "pipeline"
    assert node["outputs"] == {"mlflow_model_folder": {"value": "${{parent.outputs.trained_model}}", "type": "literal"}}
    assert built["job"].jobs["node"].component.name == "chat_completion_pipeline"


def test_settings_force_a_rerun_and_stop_on_the_first_failed_step(built: dict[str, Any]) -> None:
    settings = built["rest"]["settings"]
    assert (settings["force_rerun"], settings["continue_on_step_failure"]) == (True, False)


def test_names_experiment_and_tags_identify_the_run(built: dict[str, Any], base_model: BaseModel) -> None:
    rest = built["rest"]
    assert built["job"].name == "autopilot-chat-0123456789ab"
    assert rest["experimentName"] == "chat_completion_Phi-4"
    # walkthrough pattern; effective batch = 1 per device x 1 accumulation x 2 GPUs x 1 node
    assert rest["displayName"] == "Phi-4-chat-bs2-cosine-ds3-lora-save_limit1-seqlen1024"
    assert rest["tags"] == {
        RUN_TAG: "chat-0123456789ab",
        "dataset": "chat",
        "dataset_version": "v1",
        "base_model": "Phi-4",
        "base_model_version": "8",
        "base_model_id": base_model.id,
        MANAGED_BY_TAG: MANAGED_BY_VALUE,
    }


def test_model_files_and_compute_inputs_are_set_by_the_app(built: dict[str, Any], base_model: BaseModel) -> None:
    (node,) = built["rest"]["jobs"].values()
    inputs = node["inputs"]
    assert inputs["mlflow_model_path"] == {"uri": base_model.id, "job_input_type": "mlflow_model"}
    assert inputs["train_file_path"] == {"uri": TRAIN_URL, "job_input_type": "uri_file"}
    assert inputs["test_file_path"] == {"uri": TEST_URL, "job_input_type": "uri_file"}
    assert "validation_file_path" not in inputs
    for name in ("compute_model_import", "compute_preprocess", "compute_finetune", "compute_model_evaluation"):
        assert inputs[name] == {"value": "gpu-cluster", "job_input_type": "literal"}
    assert inputs["number_of_gpu_to_use_finetuning"] == {"value": "2", "job_input_type": "literal"}
    assert not any(name.startswith("instance_type_") for name in inputs)


def test_parameter_values_have_the_component_types(built: dict[str, Any]) -> None:
    inputs = built["yaml"]["jobs"]["node"]["inputs"]
    typed = {name: inputs[name] for name in MANIFEST | {"apply_lora": 0, "learning_rate": 0, "deepspeed_stage": 0}}
    assert typed == {
        "num_train_epochs": 2,  # manifest "2" -> integer
        "apply_early_stopping": "true",  # manifest true -> the string the component takes
        "max_seq_length": 1024,  # manifest 1024.0 -> integer
        "apply_lora": "true",
        "learning_rate": 5e-06,  # model tag, number
        "deepspeed_stage": "3",  # model tag 3 -> string enum
    }


def test_model_tag_names_the_component_lacks_are_left_out_and_reported(
    base_model: BaseModel, interface: ComponentInterface
) -> None:
    # Phi-3-mini-4k-instruct's tag carried these; Phi-4's does not.
    defaults = "{'learning_rate': 5e-06, 'learning_rate_min': 5e-07, 'learning_rate_max': 5e-05}"
    tagged = replace(base_model, tags={MODEL_DEFAULTS_TAG: defaults})
    plan = plan_finetune_job(job_spec(), tagged, interface, SERVERLESS)
    assert set(plan.ignored) == {"learning_rate_min", "learning_rate_max"}
    assert "learning_rate_min" not in plan.input_values()


def test_sources_layer_default_then_model_tag_then_manifest(cluster_plan: FinetunePlan) -> None:
    inputs = {item.name: item for item in cluster_plan.inputs}
    epochs = inputs["num_train_epochs"]
    assert (epochs.value, epochs.source.value) == (2, "manifest")
    assert [(source.value, value) for source, value in epochs.replaced] == [("default", 3), ("model tag", 1)]
    assert inputs["precision"].source.value == "model tag"
    assert inputs["mlflow_model_path"].source.value == "app"


def test_serverless_compute_names_the_instance_type_for_the_gpu_steps(
    base_model: BaseModel, interface: ComponentInterface, component: Any
) -> None:
    job = build_pipeline_job(plan_finetune_job(job_spec(), base_model, interface, SERVERLESS), component)
    inputs = job._to_dict()["jobs"]["node"]["inputs"]
    assert {name: inputs[name] for name in inputs if name.startswith(("compute_", "instance_type_"))} == {
        "compute_model_import": "serverless",
        "compute_preprocess": "serverless",
        "compute_finetune": "serverless",
        "compute_model_evaluation": "serverless",
        "instance_type_finetune": "Standard_NC24ads_A100_v4",
        "instance_type_model_evaluation": "Standard_NC24ads_A100_v4",
    }


def test_with_a_datastore_the_job_reads_the_validated_files_through_it(
    base_model: BaseModel, interface: ComponentInterface
) -> None:
    plan = plan_finetune_job(job_spec(), base_model, interface, SERVERLESS, datastore="autopilot_training")
    assert (
        plan.input_values()["train_file_path"]
        == "azureml://datastores/autopilot_training/paths/chat/v1/validated/train.jsonl"
    )
    with pytest.raises(InvalidParameterError, match="not in container"):
        data_uri("https://acct.blob.core.windows.net/other/chat/v1/train.jsonl", "ds", "training-data")


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"learning_rate_min": 1e-6}, "a manifest may set: .*num_train_epochs"),
        ({"compute_finetune": "other"}, "is set by the app"),
        ({"train_file_path": "x.jsonl"}, "not a value input"),
        ({"lr_scheduler_type": "exponential"}, "must be one of linear, cosine"),
        ({"num_train_epochs": 0}, "at least 1"),
        ({"num_train_epochs": 1.5}, "whole number"),
        ({"learning_rate": True}, "got a boolean"),
        ({"apply_lora": "yes"}, "must be one of true, false"),
    ],
)
def test_manifest_parameters_the_component_cannot_take_are_refused(
    parameters: dict[str, Any], message: str, base_model: BaseModel, interface: ComponentInterface
) -> None:
    with pytest.raises(InvalidParameterError, match=message):
        plan_finetune_job(job_spec(parameters=parameters), base_model, interface, SERVERLESS)
