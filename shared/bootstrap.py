"""The one place that wires adapters from settings into a `StageContext`."""

from __future__ import annotations

import threading

from shared.cleanup_log import TableCleanupLog
from shared.errors import ConfigurationError
from shared.ledger import TableRunLedger
from shared.lifecycle import build_lifecycle_publisher
from shared.ml.port import MLBackend
from shared.queueing import StorageQueueSender
from shared.rejected import PoisonQueues, StoragePoisonQueues, TableRejectedInputs
from shared.settings import Settings
from shared.stages.context import StageContext
from shared.storage import AzureBlobStore, TableFolderTracker

_lock = threading.Lock()
_context: StageContext | None = None
_poison: PoisonQueues | None = None


def build_backend(settings: Settings, *, watch: bool = True) -> MLBackend:
    """The ML backend the settings name; its SDK is imported only here, only when chosen.

    `watch=False`: for short-lived clients (the CLI), which leave following jobs to the function host.
    """
    if settings.ml_backend == "simulated":
        from shared.ml.publisher import HttpEventPublisher
        from shared.ml.simulated import SimulatedMLBackend, TransientFaults

        return SimulatedMLBackend(
            # A client that does not watch (the CLI) leaves finishing jobs to the function host's backend.
            job_seconds=settings.simulated_job_seconds if watch else None,
            state_path=settings.state_dir / "simulated-backend.json",
            publisher=HttpEventPublisher(settings.eventgrid_publish_url),
            faults=TransientFaults(settings.simulated_fault_rate, settings.simulated_fault_seed),
        )
    if settings.ml_backend == "local":
        from shared.ml.local.backend import LocalMLBackend

        return LocalMLBackend.from_settings(settings, watch=watch)
    if settings.ml_backend == "azureml":
        from shared.ml.azureml.backend import AzureMLBackend

        return AzureMLBackend.from_settings(settings)
    raise ConfigurationError(
        f"ML backend {settings.ml_backend!r} is not available in this build; set AUTOPILOT_ML_BACKEND=simulated"
    )


def build_context(settings: Settings, backend: MLBackend | None = None) -> StageContext:
    """The stages' adapters; every storage client shares one connection (a connection string, or an identity).

    `backend`: one built by the caller (the CLI's, which watches no jobs), else the one the settings name.
    """
    connection = settings.storage_connection
    return StageContext(
        settings=settings,
        ledger=TableRunLedger(connection, settings.runs_table),
        blobs=AzureBlobStore(connection),
        folders=TableFolderTracker(connection, settings.folders_table),
        sender=StorageQueueSender(connection),
        backend=backend if backend is not None else build_backend(settings),
        rejected=TableRejectedInputs(connection, settings.rejected_table),
        lifecycle=build_lifecycle_publisher(settings),
        cleanup=TableCleanupLog(connection, settings.cleanup_table),
    )


def build_poison_queues(settings: Settings) -> PoisonQueues:
    """The poison queues of the app's storage account, read and replayed over the same connection."""
    return StoragePoisonQueues(settings.storage_connection)


def stage_context() -> StageContext:
    """The process-wide context, built on first use (not at import: the host indexes functions first)."""
    global _context
    with _lock:
        if _context is None:
            _context = build_context(Settings.from_env())
        return _context


def poison_queues() -> PoisonQueues:
    """The process-wide poison queues, built on first use with the context's settings."""
    global _poison
    settings = stage_context().settings
    with _lock:
        if _poison is None:
            _poison = build_poison_queues(settings)
        return _poison
