"""MLflow as the local tracking store and model registry (a sqlite file under the state dir).

MLflow numbers versions itself (1, 2, ...), so a registration is found again by the run-id tag
it carries, which is what makes `register_model` idempotent per run.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from shared.errors import BackendError, NotFoundError
from shared.ml.local.store import LocalStore
from shared.ml.port import RUN_TAG

log = logging.getLogger(__name__)

# What a served copy of a model needs; given explicitly, since inferring it imports torchvision.
MODEL_PIP_REQUIREMENTS = ["torch==2.13.0", "transformers==5.23.0", "mlflow-skinny==3.17.2"]


@dataclass(frozen=True)
class ModelVersionRecord:
    name: str
    version: str
    source: str
    tags: dict[str, str]
    created: bool = False


def use_store(store: LocalStore) -> None:
    """Point MLflow (tracking and registry) at the store's sqlite file, creating it on first use."""
    import mlflow

    store.mlflow_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.set_tracking_uri(store.tracking_uri)
    mlflow.set_registry_uri(store.tracking_uri)


def ensure_experiment(store: LocalStore, name: str) -> str:
    """The experiment's id; created with its artifacts under the state dir (not the working directory)."""
    import mlflow

    with store.lock():  # the first call creates the database tables: one process at a time
        use_store(store)
        experiment = mlflow.get_experiment_by_name(name)
        if experiment is not None:
            return str(experiment.experiment_id)
        return str(mlflow.create_experiment(name, artifact_location=(store.artifact_root / name).as_uri()))


def register_version(
    store: LocalStore, *, name: str, source: str, run_id: str | None, tags: dict[str, str], description: str
) -> ModelVersionRecord:
    """Register `source` as a new version of `name`, or return the version already registered for the run."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    run_tag = tags.get(RUN_TAG, "")
    with store.lock():
        use_store(store)
        client = MlflowClient()
        try:
            existing = find_version(client, name, run_tag) if run_tag else None
            if existing is not None:
                return existing
            try:
                client.get_registered_model(name)
            except MlflowException:
                client.create_registered_model(name, description=description)
            created = client.create_model_version(name, source, run_id=run_id, tags=tags, description=description)
        except MlflowException as exc:
            raise BackendError(f"MLflow could not register {name} from {source}: {exc.message}") from exc
    log.info("registered %s version %s (run %s)", name, created.version, run_tag or "none: from outside")
    return ModelVersionRecord(name, str(created.version), str(created.source), dict(created.tags or tags), True)


def find_version(client: Any, name: str, run_tag: str) -> ModelVersionRecord | None:
    """The version of `name` registered for the run `run_tag`, if any."""
    from mlflow.exceptions import MlflowException

    try:
        found = client.search_model_versions(f"name = '{_quoted(name)}' and tags.{RUN_TAG} = '{_quoted(run_tag)}'")
    except MlflowException:
        return None
    if not found:
        return None
    first = min(found, key=lambda version: int(version.version))
    return ModelVersionRecord(name, str(first.version), str(first.source), dict(first.tags or {}))


def model_version(store: LocalStore, name: str, version: str) -> ModelVersionRecord:
    """A registered version; `NotFoundError` if there is none."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    use_store(store)
    try:
        found = MlflowClient().get_model_version(name, version)
    except MlflowException:
        raise NotFoundError(f"model {name}:{version} is not registered in the local MLflow registry") from None
    return ModelVersionRecord(name, str(found.version), str(found.source), dict(found.tags or {}))


def next_version(store: LocalStore, name: str) -> str:
    """The version MLflow gives `name` at its next registration: one above its latest ("1" for a new name)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    use_store(store)
    try:
        found = MlflowClient().search_model_versions(f"name = '{_quoted(name)}'")
    except MlflowException as exc:
        raise BackendError(f"could not read the versions of {name} from the local MLflow registry: {exc}") from exc
    return str(max((int(version.version) for version in found), default=0) + 1)


def _quoted(text: str) -> str:
    return text.replace("'", "\\'")
