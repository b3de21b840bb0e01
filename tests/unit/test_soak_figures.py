"""The soak script's figures, counted from a ledger and a simulated backend's state (no stack started here)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from shared.ledger import Run, RunStage, RunStatus
from shared.ml.port import RUN_TAG

ROOT = Path(__file__).resolve().parents[2]


def soak_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("soak", ROOT / "benchmarks" / "soak.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("soak", module)
    spec.loader.exec_module(module)
    return module


soak = soak_module()


def run(run_id: str, status: RunStatus, *, version: str = "v1", created_at: str = "2026-12-01T10:00:00Z") -> Run:
    return Run(
        run_id=run_id,
        dataset=run_id.split("-")[0],
        version=version,
        content_hash="h",
        ml_backend="simulated",
        created_at=created_at,
        stage=RunStage.LIVE if status is RunStatus.SUCCEEDED else RunStage.DEPLOYING,
        status=status,
        endpoint_state="live" if status is RunStatus.SUCCEEDED else "",
    )


def backend(*deployments: tuple[str, str, str, int]) -> dict[str, Any]:
    """State holding (endpoint, deployment, run id, traffic) deployments, a job and a model version per run."""
    state: dict[str, Any] = {"jobs": {}, "models": {}, "endpoints": {}}
    for endpoint, name, owner, traffic in deployments:
        place = state["endpoints"].setdefault(endpoint, {"deployments": {}, "traffic": {}})
        place["deployments"][name] = {"tags": {RUN_TAG: owner}}
        place["traffic"][name] = traffic
        state["jobs"][f"job-{owner}"] = {"tags": {RUN_TAG: owner}}
        state["models"].setdefault(f"model-{endpoint}", {})[name] = {"tags": {RUN_TAG: owner}}
    return state


def test_a_deployment_of_an_ended_run_that_is_not_live_is_left_behind() -> None:
    runs = [run("a-1", RunStatus.SUCCEEDED), run("b-1", RunStatus.FAILED), run("c-1", RunStatus.IN_PROGRESS)]
    state = backend(("e-a", "d1", "a-1", 100), ("e-b", "d1", "b-1", 0), ("e-c", "d1", "c-1", 0))
    assert soak.left_behind(runs, state) == ["e-b/d1"]


def test_more_than_one_job_model_or_deployment_per_run_is_duplicated_and_so_is_a_run_nobody_uploaded() -> None:
    runs = [run("a-1", RunStatus.SUCCEEDED), run("x-1", RunStatus.SUCCEEDED)]
    state = backend(("e-a", "d1", "a-1", 100), ("e-a", "d2", "a-1", 0))
    found = soak.duplicates(runs, state, expected={"a-1"})
    assert "deployment x2 for run a-1" in found and "model version x2 for run a-1" in found
    assert "unexpected run x-1" in found


def test_the_newest_run_of_a_dataset_must_take_the_traffic() -> None:
    older = run("p-1", RunStatus.SUPERSEDED, version="v1", created_at="2026-12-01T10:00:00Z")
    newer = run("p-2", RunStatus.SUCCEEDED, version="v2", created_at="2026-12-01T10:00:01Z")
    assert soak.newest_live([older, newer], backend(("e-p", "d2", "p-2", 100))) == 1
    assert soak.newest_live([older, newer], backend(("e-p", "d1", "p-1", 100))) == 0


def test_each_figure_is_shown_beside_its_target_and_a_miss_is_named() -> None:
    figures = soak.Figures(runs=4, completed=3, lost=1, rejected=None)
    line, missed = soak.compare(figures, soak.Target(completed=4, rejected=2))
    assert "completed 3 (target 4) MISSED" in line and "rejected n/a (target 2) MISSED" in line
    assert "lost 1 (target 0) MISSED" in line and "failed 0 (target 0)," in line
    assert missed == ["completed", "lost", "rejected"]
