"""Shared fixtures: the local stand-in of chat_completion_pipeline (loaded once), the offline
descriptions, and a backend wired to the stateful fakes of the workspace and registry."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # importing azure-ai-ml builds schemas with marshmallow 3 calls marshmallow 4 drops
    import azure.ai.ml.entities  # noqa: F401

from shared.ml.azureml.backend import AzureMLBackend
from shared.ml.azureml.catalog import BaseModel, ComponentInterface
from shared.ml.azureml.config import AzureMLConfig
from shared.ml.azureml.metrics import AzureMonitorRequestMetrics
from shared.ml.port import RUN_TAG, FinetuneJobSpec
from tests.fakes import FakeClock
from tests.unit.azureml.fakes import FakeMLClient, FakeRegistryClient, FakeRequestMetrics, FakeScoringHttp, FakeTracking

COMPONENT_YAML = Path(__file__).parent / "component" / "chat_completion_pipeline.yaml"
TRAIN_URL = "https://acct.blob.core.windows.net/training-data/chat/v1/validated/train.jsonl"
TEST_URL = "https://acct.blob.core.windows.net/training-data/chat/v1/validated/test.jsonl"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # azure-ai-ml 1.35 warns about its own use of marshmallow 3 on every schema it builds.
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.filterwarnings("ignore::marshmallow.warnings.RemovedInMarshmallow4Warning"))
            item.add_marker(pytest.mark.filterwarnings("ignore::marshmallow.warnings.ChangedInMarshmallow4Warning"))


@pytest.fixture(scope="session")
def component() -> Any:
    """The local component with chat_completion_pipeline's interface, as the SDK loads it."""
    from azure.ai.ml import load_component

    return load_component(source=COMPONENT_YAML)


@pytest.fixture(scope="session")
def interface() -> ComponentInterface:
    return ComponentInterface.from_json()


@pytest.fixture(scope="session")
def base_model() -> BaseModel:
    return BaseModel.from_json()


def job_spec(**overrides: Any) -> FinetuneJobSpec:
    values: dict[str, Any] = {
        "job_name": "autopilot-chat-0123456789ab",
        "run_id": "chat-0123456789ab",
        "dataset": "chat",
        "base_model": "Phi-4",
        "train_file": TRAIN_URL,
        "test_file": TEST_URL,
        "tags": {RUN_TAG: "chat-0123456789ab", "dataset": "chat", "dataset_version": "v1"},
    }
    return FinetuneJobSpec(**{**values, **overrides})


@dataclass
class AzureWorld:
    """A backend and the fakes behind it."""

    backend: AzureMLBackend
    workspace: FakeMLClient
    registry: FakeRegistryClient
    http: FakeScoringHttp
    tracking: FakeTracking
    clock: FakeClock


def azure_world(component: Any, base_model: BaseModel, **config: Any) -> AzureWorld:
    clock = FakeClock()
    workspace = FakeMLClient(clock)
    registry = FakeRegistryClient(base_model, component)
    http = FakeScoringHttp(workspace, clock)
    tracking = FakeTracking()
    backend = AzureMLBackend(
        workspace,
        lambda: registry,
        AzureMLConfig(**config),
        metrics=AzureMonitorRequestMetrics(credential=None, client_factory=FakeRequestMetrics(http).client),
        tracking=tracking,
        http=http,
        operations=workspace.operations,
        clock=clock,
    )
    return AzureWorld(backend, workspace, registry, http, tracking, clock)


@pytest.fixture
def world(component: Any, base_model: BaseModel) -> AzureWorld:
    return azure_world(component, base_model)
