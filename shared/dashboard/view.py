"""What the dashboard shows, read in one pass: runs, loss histories, endpoints, cleanup and inputs set aside."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypeVar, runtime_checkable

from shared.cleanup_log import CleanupDecision, Savings, savings
from shared.ledger import Run
from shared.rejected import PoisonQueues, SetAside, list_set_aside, safe_text
from shared.stages.context import StageContext
from shared.stages.endpoints import endpoint_overview

log = logging.getLogger("autopilot.dashboard")
T = TypeVar("T")

# Losses by step, per metric ("train_loss", "eval_loss"): [(step, loss), ...] in step order.
LossHistory = dict[str, list[tuple[int, float]]]


@runtime_checkable
class LossHistorySource(Protocol):
    """A backend that keeps a job's losses step by step (the local backend, from MLflow)."""

    def loss_history(self, job_name: str) -> LossHistory: ...


@dataclass(frozen=True)
class Dashboard:
    """Everything one page shows, as read at `generated_at`."""

    generated_at: datetime
    backend: str
    runs: list[Run]
    # endpoint_overview's records: live endpoints with their deployments, then those deleted as idle.
    endpoints: list[dict[str, Any]]
    set_aside: list[SetAside]
    # run id -> its losses by step, for the runs whose details are shown, where the backend keeps them.
    loss_histories: dict[str, LossHistory]
    # Runs shown in full (the newest first); the others are rows only.
    detailed_runs: int
    inference_instance_type: str
    inference_instance_count: int
    idle_endpoint_minutes: float
    smoke_min_similarity: float
    # Parts that could not be read, and why: the page shows the rest.
    problems: list[str] = field(default_factory=list)
    # The idle cleanup's recent decisions, newest first, and what its deletions saved (shared/cleanup_log.py).
    cleanup_decisions: list[CleanupDecision] = field(default_factory=list)
    cleanup_savings: Savings | None = None


def collect_dashboard(
    ctx: StageContext,
    poison: PoisonQueues,
    *,
    run_limit: int = 25,
    detailed_runs: int = 5,
    set_aside_limit: int = 50,
    cleanup_limit: int = 20,
) -> Dashboard:
    """Read what the page shows; a part that fails (storage or backend down) is reported, the rest still shown."""
    problems: list[str] = []
    runs: list[Run] = _part("runs", lambda: ctx.ledger.list_runs(run_limit), [], problems)
    endpoints: list[dict[str, Any]] = _part(
        "endpoints", lambda: endpoint_overview(ctx.backend, ctx.ledger), [], problems
    )
    set_aside: list[SetAside] = _part(
        "inputs set aside",
        lambda: list_set_aside(ctx.rejected, poison, set_aside_limit, ledger=ctx.ledger),
        [],
        problems,
    )
    decisions: list[CleanupDecision] = _part(
        "the cleanup decisions", lambda: ctx.cleanup.list_decisions(cleanup_limit), [], problems
    )
    total: Savings | None = _part(
        "the cleanup savings", lambda: savings(ctx.cleanup.deletions(), ctx.ledger, ctx.clock()), None, problems
    )
    histories: dict[str, LossHistory] = {}
    if isinstance(ctx.backend, LossHistorySource):
        source = ctx.backend
        for run in runs[:detailed_runs]:
            if run.job_name:
                read = functools.partial(source.loss_history, run.job_name)
                history: LossHistory = _part(f"the loss history of job {run.job_name}", read, {}, problems)
                if any(history.values()):
                    histories[run.run_id] = history
    settings = ctx.settings
    return Dashboard(
        generated_at=ctx.clock(),
        backend=ctx.backend.name,
        runs=runs,
        endpoints=endpoints,
        set_aside=set_aside,
        loss_histories=histories,
        detailed_runs=detailed_runs,
        inference_instance_type=settings.azureml_inference_instance_type,
        inference_instance_count=settings.azureml_inference_instance_count,
        idle_endpoint_minutes=settings.idle_endpoint_minutes,
        smoke_min_similarity=settings.smoke_min_similarity,
        problems=problems,
        cleanup_decisions=decisions,
        cleanup_savings=total,
    )


def _part(what: str, read: Callable[[], T], empty: T, problems: list[str]) -> T:
    # Any failure, not only the adapters' own errors: a page that shows nothing because one table or one
    # backend call failed would hide what it exists to show.
    try:
        return read()
    except Exception as error:
        log.warning("dashboard: could not read %s: %s", what, error)
        problems.append(safe_text(f"could not read {what}: {type(error).__name__}: {error}", 500))
        return empty
