"""GIVEN a local dataset folder, WHEN `autopilot plan --offline` runs, THEN it prints the pipeline job the app would
submit (inputs with values and sources, compute, names, tags) without Azure, and refuses what the backend refuses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from autopilot.cli import main
from autopilot.commands.upload import dataset_files, expected_run_id
from shared.ml.azureml.config import AzureMLConfig
from shared.ml.azureml.offline import plan_offline
from shared.settings import azurite_connection_string
from tests.unit.azureml.conftest import AzureWorld, job_spec

SAMPLE = Path(__file__).resolve().parents[3] / "samples" / "ahoy-chat" / "v1"


@pytest.fixture(autouse=True)
def azure_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AzureWebJobsStorage", azurite_connection_string())
    monkeypatch.setenv("AUTOPILOT_ML_BACKEND", "local")  # plan is about Azure ML whichever backend runs
    for name in ("AUTOPILOT_BASE_MODEL", "AUTOPILOT_BASE_MODEL_VERSION", "AUTOPILOT_AZUREML_COMPUTE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AUTOPILOT_AZUREML_DATASTORE", "autopilot_training")


def plan_json(capsys: pytest.CaptureFixture[str], folder: Path) -> dict[str, Any]:
    assert main(["plan", "--offline", "--json", str(folder)]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_dataset_without_parameters_plans_the_walkthrough_job(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = copy_sample(tmp_path, {"description": "no parameters"})
    plan = plan_json(capsys, folder)
    run_id = expected_run_id("ahoy-chat", dataset_files(folder))
    assert (plan["run_id"], plan["job_name"], plan["submitted"]) == (run_id, f"autopilot-{run_id}", False)
    assert plan["display_name"] == "Phi-4-ahoy-chat-bs1-cosine-ds3-lora-save_limit1-seqlen-1"
    assert plan["experiment_name"] == "chat_completion_Phi-4"
    assert plan["base_model"] == {
        "name": "Phi-4",
        "version": "8",
        "id": "azureml://registries/azureml/models/Phi-4/versions/8",
    }
    assert plan["settings"] == {"force_rerun": True, "continue_on_step_failure": False}
    assert plan["compute"] == {"cluster": None, "size": "Standard_NC24ads_A100_v4", "gpus_per_node": 1}
    inputs = plan["inputs"]
    assert inputs["train_file_path"] == {
        "value": "azureml://datastores/autopilot_training/paths/ahoy-chat/v1/validated/train.jsonl",
        "source": "app",
        "type": "uri_file",
    }
    assert inputs["num_train_epochs"] == {
        "value": 1,
        "source": "model tag",
        "replaced": [{"source": "default", "value": 3}],
    }
    assert plan["files"]["test"]["uploaded_to"] == "training-data/ahoy-chat/v1/validated/test.jsonl"
    assert plan["ignored"] == {}
    assert plan["tags"]["autopilot_run_id"] == run_id


def test_the_sample_folder_plans_with_its_manifest_parameters(capsys: pytest.CaptureFixture[str]) -> None:
    plan = plan_json(capsys, SAMPLE)
    manifest = json.loads((SAMPLE / "autopilot.json").read_text())
    assert {name: plan["inputs"][name]["source"] for name in manifest.get("parameters", {})} == dict.fromkeys(
        manifest.get("parameters", {}), "manifest"
    )


def test_manifest_parameters_show_as_the_manifests(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    folder = copy_sample(tmp_path, {"parameters": {"num_train_epochs": 2, "apply_early_stopping": True}})
    inputs = plan_json(capsys, folder)["inputs"]
    assert (inputs["num_train_epochs"]["value"], inputs["num_train_epochs"]["source"]) == (2, "manifest")
    assert inputs["apply_early_stopping"] == {"value": "true", "source": "manifest"}


def test_a_parameter_the_pipeline_lacks_is_refused_with_the_list_it_accepts(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    folder = copy_sample(tmp_path, {"parameters": {"epochs": 2}})
    assert main(["plan", "--offline", str(folder)]) == 1
    error = capsys.readouterr().err
    assert "'epochs'" in error and "num_train_epochs" in error


def test_the_text_plan_names_every_input_with_its_source(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["plan", "--offline", str(copy_sample(tmp_path, {}))]) == 0
    text = capsys.readouterr().out
    assert "experiment    chat_completion_Phi-4" in text
    assert "num_train_epochs                 model tag  1 (over default 3)" in text


@pytest.mark.parametrize("named_by", ["setting", "manifest"])
def test_a_retired_base_model_is_refused_naming_its_retirement_and_replacement(
    named_by: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    manifest = {"base_model": "Phi-3-mini-4k-instruct"} if named_by == "manifest" else {}
    if named_by == "setting":
        monkeypatch.setenv("AUTOPILOT_BASE_MODEL", "Phi-3-mini-4k-instruct")
    assert main(["plan", "--offline", str(copy_sample(tmp_path, manifest))]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Phi-3-mini-4k-instruct:15 was retired for fine-tuning on 2025-08-30" in captured.err
    assert "archived in the registry" in captured.err
    assert "Microsoft names Phi-4-mini-instruct as its replacement" in captured.err


def test_a_folder_without_a_train_file_is_a_usage_error(tmp_path: Path) -> None:
    assert main(["plan", "--offline", str(tmp_path)]) == 2


def test_the_offline_plan_is_the_plan_the_backend_makes_against_the_registry(world: AzureWorld) -> None:
    online, _ = world.backend.plan_finetune(job_spec())
    assert plan_offline(job_spec(), AzureMLConfig()).to_dict() == online.to_dict()


def copy_sample(tmp_path: Path, manifest: dict[str, Any]) -> Path:
    folder = tmp_path / "ahoy-chat" / "v1"
    folder.mkdir(parents=True)
    for path in dataset_files(SAMPLE):
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "autopilot.json").write_text(json.dumps(manifest))
    return folder
