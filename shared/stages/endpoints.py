"""What endpoints this app serves, and which ones the idle cleanup deleted and can bring back."""

from __future__ import annotations

from typing import Any

from shared.ledger import RunLedger
from shared.ml.port import MLBackend
from shared.stages.restore import RESTORABLE_STATES


def endpoint_overview(backend: MLBackend, ledger: RunLedger) -> list[dict[str, Any]]:
    """Every endpoint as plain JSON values: those that exist, with their deployments (model, traffic,
    state) and the run live on each; then those deleted as idle, with the run whose model comes back."""
    runs = ledger.runs_in_endpoint_state("live", *RESTORABLE_STATES)
    live = {run.endpoint_name: run.run_id for run in runs if run.endpoint_state == "live"}
    out = []
    for endpoint in backend.list_endpoints():
        deployments = []
        for name in endpoint.deployments:
            info = backend.get_deployment(endpoint.name, name)
            deployments.append(
                {
                    "name": name,
                    "traffic": endpoint.traffic.get(name, 0),
                    "model": f"{info.model_name}:{info.model_version}" if info else "",
                    "state": info.state if info else "missing",
                }
            )
        out.append(
            {
                "name": endpoint.name,
                "state": "live",
                "scoring_uri": endpoint.scoring_uri,
                "deployments": deployments,
                "run_id": live.get(endpoint.name, ""),
                "created_at": endpoint.created_at.isoformat() if endpoint.created_at else None,
                "last_request_at": endpoint.last_request_at.isoformat() if endpoint.last_request_at else None,
            }
        )
    existing = {item["name"] for item in out}
    deleted: dict[str, Any] = {}
    for run in sorted(runs, key=lambda run: run.finished_at or run.created_at):
        if run.endpoint_name and run.endpoint_name not in existing and run.endpoint_state.startswith(RESTORABLE_STATES):
            deleted[run.endpoint_name] = {
                "name": run.endpoint_name,
                "state": run.endpoint_state.split(" ", 1)[0],
                "since": run.endpoint_state.split(" ", 1)[-1],
                "model": f"{run.model_name}:{run.model_version}",
                "run_id": run.run_id,
            }
    return out + [deleted[name] for name in sorted(deleted)]
