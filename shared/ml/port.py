"""The ML backend port: everything the stages ask of Azure ML, the local backend or the simulation.

Adapters translate their SDK's errors into `shared.errors` types: `TransientError` for throttling
and 5xx, `NotFoundError`, `AuthorizationError`, `QuotaExceededError`, `BackendError` otherwise.
Every call that creates something is idempotent on the names it is given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

IN_PROGRESS_JOB_STATUSES = frozenset(
    {"NotStarted", "Queued", "Preparing", "Provisioning", "Starting", "Running", "CancelRequested", "Finalizing"}
)
TERMINAL_JOB_STATUSES = frozenset({"Completed", "Failed", "Canceled", "NotResponding", "Paused"})

# The tag that marks a job, model or endpoint as this app's; its value is the run id.
RUN_TAG = "autopilot_run_id"
MANAGED_BY_TAG = "managed_by"
MANAGED_BY_VALUE = "finetune-autopilot"


@dataclass(frozen=True)
class FinetuneJobSpec:
    """A fine-tuning job as the submit stage asks for it."""

    job_name: str
    run_id: str
    dataset: str
    base_model: str
    train_file: str
    base_model_version: str | None = None  # None: the backend's setting (e.g. the "latest" label)
    test_file: str | None = None
    validation_file: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class JobInfo:
    name: str
    status: str
    failure_reason: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    # Anything else worth recording on the run; "base_model" ({"name", "version", "id"}) is stored as is.
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_JOB_STATUSES


@dataclass(frozen=True)
class ModelRegistration:
    job_name: str
    model_name: str
    version: str
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    version: str
    uri: str
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DeploymentSpec:
    endpoint_name: str
    deployment_name: str
    model_name: str
    model_version: str
    instance_type: str | None = None
    instance_count: int = 1
    tags: dict[str, str] = field(default_factory=dict)


# Deployment operation errors worth starting the operation again for: "canceled by another operation that has a
# higher priority" (how-to-troubleshoot-online-endpoints, ERROR: OperationCanceled: "retry the operation").
RETRYABLE_DEPLOYMENT_ERRORS = frozenset({"OperationCanceled"})
QUOTA_DEPLOYMENT_ERRORS = frozenset({"OutOfQuota"})


@dataclass(frozen=True)
class DeploymentInfo:
    endpoint_name: str
    name: str
    model_name: str
    model_version: str
    state: str  # "Creating", "Updating", "Succeeded", "Failed", "Deleting"
    error: str | None = None
    # The failed operation's error code where the platform gives one (Azure ML: OutOfQuota, ImageBuildFailure, ...).
    error_code: str = ""
    # Where the creation can be followed from another process (Azure: the ARM asynchronous operation URL).
    operation: str = ""
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return self.state == "Succeeded"

    @property
    def failed(self) -> bool:
        return self.state == "Failed"

    @property
    def retryable(self) -> bool:
        """Failed only because another operation pre-empted it: creating it again may well succeed."""
        return self.failed and self.error_code in RETRYABLE_DEPLOYMENT_ERRORS

    @property
    def managed(self) -> bool:
        """Made by this app (its `managed_by` tag, or a run id tag from before it had one): the app may delete it."""
        return self.tags.get(MANAGED_BY_TAG) == MANAGED_BY_VALUE or bool(self.tags.get(RUN_TAG))


@dataclass(frozen=True)
class EndpointInfo:
    name: str
    scoring_uri: str
    traffic: dict[str, int] = field(default_factory=dict)
    deployments: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)
    created_at: datetime | None = None
    last_request_at: datetime | None = None


@dataclass(frozen=True)
class DeploymentHealth:
    """What one deployment's live requests showed since a moment: how many, how many answered 5xx, their p95."""

    requests: int
    errors_5xx: int
    p95_ms: float | None = None  # None: no request to measure

    @classmethod
    def of_requests(cls, answered: list[tuple[int, float]]) -> DeploymentHealth:
        """From (HTTP status, latency in ms) per request; p95 by nearest rank."""
        if not answered:
            return cls(0, 0, None)
        latencies = sorted(latency for _, latency in answered)
        rank = max(1, math.ceil(0.95 * len(latencies)))
        return cls(len(answered), sum(1 for status, _ in answered if status >= 500), latencies[rank - 1])

    @property
    def error_rate(self) -> float:
        """Share (0-1) of the requests that answered 5xx; 0 without requests."""
        return self.errors_5xx / self.requests if self.requests else 0.0

    def figures(self) -> dict[str, Any]:
        """The figures as the ledger records them."""
        return {
            "requests": self.requests,
            "errors_5xx": self.errors_5xx,
            "error_rate": round(self.error_rate, 4),
            "p95_ms": None if self.p95_ms is None else round(self.p95_ms, 1),
        }


class MLBackend(Protocol):
    """What the stages need from an ML platform."""

    name: str
    simulated: bool

    @property
    def endpoint_scope(self) -> str:
        """Unique to the workspace the backend deploys into ("" for a machine's own): endpoint names, unique
        per Azure region, carry a short hash of it."""
        ...

    def submit_finetune_job(self, spec: FinetuneJobSpec) -> JobInfo:
        """Submit (or, for a job name already known, return) a fine-tuning job."""
        ...

    def get_job(self, job_name: str) -> JobInfo: ...

    def cancel_job(self, job_name: str) -> None: ...

    def register_model(self, registration: ModelRegistration) -> RegisteredModel:
        """Register the job's `trained_model` output; the same name and version again returns the existing one."""
        ...

    def ensure_endpoint(self, name: str, tags: dict[str, str]) -> EndpointInfo:
        """Create the endpoint if missing (key auth), else return it."""
        ...

    def get_endpoint(self, name: str) -> EndpointInfo | None: ...

    def begin_deployment(self, spec: DeploymentSpec) -> DeploymentInfo:
        """Start creating or updating a deployment; returns at once, poll with `get_deployment`."""
        ...

    def get_deployment(self, endpoint_name: str, deployment_name: str, operation: str = "") -> DeploymentInfo | None:
        """The deployment as it is now; `operation` (from `begin_deployment`) tells why a failed one failed."""
        ...

    def delete_deployment(self, endpoint_name: str, deployment_name: str) -> None: ...

    def set_traffic(
        self, endpoint_name: str, traffic: dict[str, int], mirror_traffic: dict[str, int] | None = None
    ) -> None: ...

    def score(self, endpoint_name: str, request: dict[str, Any], deployment_name: str | None = None) -> Any:
        """Send one request in the chat-completion scoring format; `deployment_name` pins the deployment."""
        ...

    def list_endpoints(self) -> list[EndpointInfo]: ...

    def delete_endpoint(self, name: str) -> None: ...

    def requests_per_minute(self, endpoint_name: str, since: datetime) -> dict[str, list[int]]:
        """Requests per minute since `since`, per deployment; a minute without requests counts as 0."""
        ...

    def deployment_health(self, endpoint_name: str, deployment_name: str, since: datetime) -> DeploymentHealth:
        """The deployment's live requests since `since`, those mirrored to it included. Requests that name the
        deployment (smoke tests) are left out where the backend can tell (Azure Monitor cannot: read it from a
        moment after they were sent)."""
        ...


class MLEventPublisher(Protocol):
    """Where a backend that is not Azure ML sends its job events (Azure ML has Event Grid for that)."""

    def publish(self, events: list[dict[str, Any]]) -> None: ...
