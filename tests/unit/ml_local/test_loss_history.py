"""The local backend's loss history: what a job's process logged to MLflow, read back by step."""

from __future__ import annotations

from pathlib import Path

from shared.ml.local.backend import LocalMLBackend
from shared.ml.local.registry import ensure_experiment
from tests.unit.ml_local.fakes import FakePublisher, FakeSpawn


def backend_with_job(tmp_path: Path, record: dict[str, object]) -> LocalMLBackend:
    backend = LocalMLBackend(
        tmp_path / "state",
        storage_connection="UseDevelopmentStorage=true",
        publish_url="http://127.0.0.1:1/api/events",
        base_model=str(tmp_path),
        publisher=FakePublisher(),
        watch_seconds=None,
        spawn=FakeSpawn(),
    )
    backend.store.write_job({"name": "job-1", "status": "Completed", **record})
    return backend


def test_the_losses_a_job_logged_come_back_by_step(tmp_path: Path) -> None:
    # GIVEN a job whose process logged eval loss before and after training and train loss at each step,
    # as shared.ml.local.training does (out of order, as MLflow may hand them back)
    backend = backend_with_job(tmp_path, {})
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=backend.store.tracking_uri)
    run_id = client.create_run(ensure_experiment(backend.store, "chat_completion_tiny")).info.run_id
    for step, loss in ((2, 1.5), (1, 2.0), (3, 1.25)):
        client.log_metric(run_id, "train_loss", loss, step=step)
    client.log_metric(run_id, "eval_loss", 2.2, step=0)
    client.log_metric(run_id, "eval_loss", 1.4, step=3)
    backend.store.write_job({**(backend.store.read_job("job-1") or {}), "mlflow_run_id": run_id})
    # WHEN the dashboard asks for them THEN each loss comes back in step order
    assert backend.loss_history("job-1") == {
        "train_loss": [(1, 2.0), (2, 1.5), (3, 1.25)],
        "eval_loss": [(0, 2.2), (3, 1.4)],
    }


def test_a_job_without_an_mlflow_run_has_no_losses_yet(tmp_path: Path) -> None:
    backend = backend_with_job(tmp_path, {"status": "Queued"})
    assert backend.loss_history("job-1") == {}
    assert backend.loss_history("no-such-job") == {}
