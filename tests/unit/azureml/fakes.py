"""A stateful fake of the Azure ML workspace and registry clients, holding real SDK entities in dicts.

Only what `AzureMLBackend` calls is here. Missing things raise the azure-core errors the service
would; long operations return `FakePoller`s that remember whether anyone waited on them. Time comes
from the tests' `FakeClock`: endpoints are ready 30 s after creation, deployments 60 s after.

It behaves the way Microsoft's documentation says Azure behaves, not the way the app would like; each
behaviour names its page:
- An endpoint is `Updating` for a while after a traffic change, and a traffic change or a deployment delete
  meanwhile answers 409 Conflict ("Troubleshoot online endpoint deployment and scoring",
  learn.microsoft.com/azure/machine-learning/how-to-troubleshoot-online-endpoints: wait for the operation in
  progress, then retry). `conflict_rate` makes that share of traffic changes and deletes meet one.
- A failed deployment says why in its ARM asynchronous operation (`Azure-AsyncOperation` status body
  `{"status": "Failed", "error": {"code", "message"}}`, "Track asynchronous Azure operations",
  learn.microsoft.com/azure/azure-resource-manager/management/async-operations), with the troubleshooting
  page's codes (OutOfQuota, ImageBuildFailure, OperationCanceled, ResourceNotReady); the container logs of a
  deployment that never started are empty.
- Keys change when an endpoint is deleted and created again or its keys are regenerated ("Authenticate
  clients for online endpoints", learn.microsoft.com/azure/machine-learning/how-to-authenticate-online-endpoint).
- Endpoint names are unique per Azure region across workspaces (`FakeRegion`; "Online endpoints" limits,
  learn.microsoft.com/azure/machine-learning/how-to-manage-quotas#azure-machine-learning-online-endpoints-and-batch-endpoints):
  creating one taken elsewhere answers 409.
- Throttled calls answer 429 with Retry-After (`throttle`; "Understand how Azure Resource Manager throttles
  requests", learn.microsoft.com/azure/azure-resource-manager/management/request-limits-and-throttling).
- A PUT replaces the whole endpoint (ARM PUT semantics): what the body leaves out, such as
  `public_network_access`, is reset to its default.
"""

from __future__ import annotations

import math
import random
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

from azure.ai.ml.entities import EndpointAuthKeys, ManagedOnlineDeployment, ManagedOnlineEndpoint, Model
from azure.ai.ml.entities._compute._vm_size import VmSize
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.monitor.querymetrics import MetricsQueryResult

from shared.ml.azureml.catalog import BaseModel
from shared.ml.azureml.metrics import LATENCY_METRIC, METRIC, NAMESPACE
from tests.fakes import FakeClock

SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
WORKSPACE_ID = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws"
)
REGION = "eastus"
ENDPOINT_READY_SECONDS = 30
DEPLOYMENT_READY_SECONDS = 60
# How long an endpoint stays `Updating` after a traffic change (0: the change is done at once).
UPDATE_SECONDS = 0
WORKSPACE_SIZES = [
    ("Standard_D12_v2", 0),
    ("Standard_NC6", 1),
    ("Standard_NC24ads_A100_v4", 1),
    ("Standard_NC48ads_A100_v4", 2),
    ("Standard_ND96asr_v4", 8),
]
# Messages of the deployment operation's error, per code, as the troubleshooting page describes them.
OPERATION_ERRORS = {
    "OutOfQuota": "Not enough quota available for {instance_type} in SubscriptionId {subscription}. "
    "Current usage/limit: 0/0. Additional needed: 24",
    "ImageBuildFailure": "The image build failed; see the build log in the workspace's storage account",
    "OperationCanceled": "Operation is canceled by another operation that has a higher priority",
    "ResourceNotReady": "User container has crashed or terminated",
}


def http_error(status: int, message: str, *, retry_after: str | None = None) -> HttpResponseError:
    """The azure-core error of a failed ARM call (409: `ResourceExistsError`, as the SDK maps it)."""
    error = ResourceExistsError(message=message) if status == 409 else HttpResponseError(message=message)
    error.status_code = status
    error.response = SimpleNamespace(  # type: ignore[assignment]
        status_code=status, headers={"Retry-After": retry_after} if retry_after else {}
    )
    return error


def conflict(name: str) -> HttpResponseError:
    return http_error(
        409, f"Conflict: there is an operation in progress on endpoint {name}; wait for it to finish and try again"
    )


class FakePoller:
    def __init__(self, result: Any = None, done: bool = True, operation_url: str = "") -> None:
        self._result = result
        self._done = done
        self.waited: list[float | None] = []
        # azure-core's LROBasePolling keeps the operation it polls in `_operation` (`get_polling_url()`).
        self._polling = SimpleNamespace(_operation=SimpleNamespace(get_polling_url=lambda: operation_url))

    def wait(self, timeout: float | None = None) -> None:
        self.waited.append(timeout)

    def result(self, timeout: float | None = None) -> Any:
        self.waited.append(timeout)
        return self._result

    def done(self) -> bool:
        return self._done

    def polling_method(self) -> Any:
        return self._polling


class FakeRegion:
    """Endpoint names of one Azure region, across workspaces: who holds each."""

    def __init__(self) -> None:
        self.holders: dict[str, str] = {}


class FakeFaults:
    """Throttling and conflicts the tests ask for: `throttle[operation]` 429s to come, a random share of 409s."""

    def __init__(self, seed: int = 7) -> None:
        self.throttle: dict[str, int] = defaultdict(int)
        self.retry_after = "20"
        self.conflict_rate = 0.0
        self.conflicts_raised = 0
        self._random = random.Random(seed)

    def check(self, operation: str, endpoint: str = "") -> None:
        if self.throttle[operation] > 0:
            self.throttle[operation] -= 1
            raise http_error(429, f"TooManyRequests: {operation} throttled", retry_after=self.retry_after)
        if endpoint and self.conflict_rate and self._random.random() < self.conflict_rate:
            self.conflicts_raised += 1
            raise conflict(endpoint)


@dataclass
class FakeJob:
    """What `jobs.get` returns: the fields the backend reads."""

    name: str
    status: str
    tags: dict[str, str]
    experiment_name: str
    display_name: str
    studio_url: str


class FakeJobs:
    def __init__(self) -> None:
        self.submitted: dict[str, Any] = {}  # the SDK pipeline jobs as the backend built them
        self.rest: dict[str, dict[str, Any]] = {}  # what the SDK would send
        self.status: dict[str, str] = {}
        self.errors: dict[str, str] = {}
        self.cancelled: list[str] = []
        self._runs_operations = SimpleNamespace(get_run_details=self._run_details)

    def get(self, name: str) -> FakeJob:
        if name not in self.submitted:
            raise ResourceNotFoundError(f"Job {name} not found")
        job = self.submitted[name]
        return FakeJob(
            name,
            self.status[name],
            dict(job.tags),
            job.experiment_name,
            job.display_name,
            f"https://ml.azure.com/{name}",
        )

    def create_or_update(
        self, job: Any, *, experiment_name: str | None = None, tags: dict[str, str] | None = None
    ) -> FakeJob:
        if job.name in self.submitted:
            raise ResourceExistsError(f"Job {job.name} already exists")
        result = job._validate()
        if not result.passed:
            raise http_error(400, f"invalid job: {result}")
        job.experiment_name = experiment_name
        job.tags = dict(tags or {})
        self.rest[job.name] = job._to_rest_object().as_dict()
        self.submitted[job.name] = job
        self.status[job.name] = "Running"
        return self.get(job.name)

    def begin_cancel(self, name: str) -> FakePoller:
        self.cancelled.append(name)
        self.status[name] = "CancelRequested"
        return FakePoller(done=False)

    def finish(self, name: str, status: str = "Completed", error: str = "") -> None:
        self.status[name] = status
        if error:
            self.errors[name] = error

    def running(self) -> list[str]:
        return [name for name, status in self.status.items() if status == "Running"]

    def _run_details(self, name: str) -> Any:
        message = self.errors.get(name)
        return SimpleNamespace(error=SimpleNamespace(error=SimpleNamespace(message=message)) if message else None)


class FakeCompute:
    def __init__(self) -> None:
        self.clusters: dict[str, Any] = {}

    def add_cluster(self, name: str, size: str, state: str = "Succeeded") -> None:
        self.clusters[name] = SimpleNamespace(name=name, size=size, provisioning_state=state)

    def get(self, name: str) -> Any:
        if name not in self.clusters:
            raise ResourceNotFoundError(f"Compute {name} not found")
        return self.clusters[name]

    def list_sizes(self) -> list[VmSize]:
        return [VmSize(name=name, gpus=gpus) for name, gpus in WORKSPACE_SIZES]


class FakeModels:
    def __init__(self, jobs: FakeJobs) -> None:
        self._jobs = jobs
        self.models: dict[tuple[str, str], Model] = {}

    def get(self, name: str, version: str | None = None, label: str | None = None) -> Model:
        if (name, str(version)) not in self.models:
            raise ResourceNotFoundError(f"Model {name}:{version} not found")
        return self.models[(name, str(version))]

    def create_or_update(self, model: Model) -> Model:
        key = (str(model.name), str(model.version))
        if key in self.models:
            raise ResourceExistsError(f"Model {key} exists")
        job = str(model.path).split("/")[3]
        if self._jobs.status.get(job) != "Completed":
            raise http_error(400, f"job {job} has no output trained_model")
        self.models[key] = model
        return model


@dataclass
class FakeDeployment:
    entity: ManagedOnlineDeployment
    created_at: datetime
    fail: str = ""  # the operation's error code once "created", "" for success
    operation_url: str = ""
    poller: FakePoller = field(default_factory=lambda: FakePoller(done=False))


class FakeOperations:
    """ARM asynchronous operations by URL: what `Azure-AsyncOperation` answers."""

    def __init__(self) -> None:
        self.bodies: dict[str, dict[str, Any]] = {}
        self.reads: list[str] = []

    def status(self, url: str) -> dict[str, Any]:
        self.reads.append(url)
        if url not in self.bodies:
            raise ResourceNotFoundError(f"operation {url} not found")
        return dict(self.bodies[url])


class FakeOnlineEndpoints:
    def __init__(self, clock: FakeClock, faults: FakeFaults, region: FakeRegion, workspace: str) -> None:
        self._clock = clock
        self._faults = faults
        self._region = region
        self._workspace = workspace
        self.endpoints: dict[str, ManagedOnlineEndpoint] = {}
        self.created_at: dict[str, datetime] = {}
        self.updating_until: dict[str, datetime] = {}
        self.key_generation: dict[str, int] = defaultdict(int)
        self.deployments: dict[str, dict[str, FakeDeployment]] = defaultdict(dict)
        self.pollers: list[FakePoller] = []
        self.traffic_done = True
        self.ready_seconds = ENDPOINT_READY_SECONDS
        self.update_seconds = UPDATE_SECONDS
        self.puts: list[ManagedOnlineEndpoint] = []

    def state(self, name: str) -> str:
        now = self._clock()
        if now < self.created_at[name] + timedelta(seconds=self.ready_seconds):
            return "Creating"
        if name in self.updating_until and now < self.updating_until[name]:
            return "Updating"
        return "Succeeded"

    def _view(self, name: str) -> ManagedOnlineEndpoint:
        stored = self.endpoints[name]
        return ManagedOnlineEndpoint(
            name=name,
            auth_mode=stored.auth_mode,
            description=stored.description,
            tags=dict(stored.tags or {}),
            traffic=dict(stored.traffic or {}),
            mirror_traffic=dict(stored.mirror_traffic or {}),
            public_network_access=stored.public_network_access or "enabled",
            provisioning_state=self.state(name),
            scoring_uri=f"https://{name}.{REGION}.inference.ml.azure.com/score",
            id=f"{WORKSPACE_ID}/onlineEndpoints/{name}",
            location=REGION,
            properties={"createdAt": self.created_at[name].strftime("%Y-%m-%dT%H:%M:%S.%f%z")},
        )

    def get(self, name: str) -> ManagedOnlineEndpoint:
        self._faults.check("online_endpoints.get")
        if name not in self.endpoints:
            raise ResourceNotFoundError(f"Endpoint {name} not found")
        return self._view(name)

    def list(self) -> list[ManagedOnlineEndpoint]:
        return [self._view(name) for name in sorted(self.endpoints)]

    def begin_create_or_update(self, endpoint: ManagedOnlineEndpoint) -> FakePoller:
        name = str(endpoint.name)
        self._faults.check("online_endpoints.begin_create_or_update", name if name in self.endpoints else "")
        holder = self._region.holders.get(name)
        if holder is not None and holder != self._workspace:
            raise http_error(
                409,
                f"Conflict: an endpoint named {name} already exists in region {REGION}; endpoint names must be "
                "unique per region",
            )
        if name not in self.endpoints:
            self.created_at[name] = self._clock()
            self.key_generation[name] += 1  # a new endpoint gets new keys
            self._region.holders[name] = self._workspace
        else:
            if self.state(name) != "Succeeded":
                raise conflict(name)
            deployments = self.deployments[name]
            unknown = set(endpoint.traffic or {}) | set(endpoint.mirror_traffic or {})
            unknown -= set(deployments)
            if unknown:
                raise http_error(400, f"traffic names unknown deployments {sorted(unknown)}")
            if self.update_seconds:
                self.updating_until[name] = self._clock() + timedelta(seconds=self.update_seconds)
        self.endpoints[name] = endpoint
        self.puts.append(endpoint)
        poller = FakePoller(self._view(name), done=self.traffic_done or not endpoint.traffic)
        self.pollers.append(poller)
        return poller

    def begin_delete(self, name: str) -> FakePoller:
        self._faults.check("online_endpoints.begin_delete")
        if name not in self.endpoints:
            raise ResourceNotFoundError(f"Endpoint {name} not found")
        del self.endpoints[name]
        self.deployments.pop(name, None)
        self.updating_until.pop(name, None)
        self._region.holders.pop(name, None)
        return FakePoller(done=False)

    def get_keys(self, name: str) -> EndpointAuthKeys:
        self.get(name)
        generation = self.key_generation[name]
        return EndpointAuthKeys(primary_key=f"key-{name}-{generation}", secondary_key=f"second-{name}-{generation}")

    def regenerate_keys(self, name: str, *, key_type: str = "primary") -> FakePoller:
        self.get(name)
        self.key_generation[name] += 1
        return FakePoller()

    def current_key(self, name: str) -> str:
        return f"key-{name}-{self.key_generation[name]}"


class FakeOnlineDeployments:
    def __init__(
        self,
        clock: FakeClock,
        endpoints: FakeOnlineEndpoints,
        models: FakeModels,
        operations: FakeOperations,
        faults: FakeFaults,
    ) -> None:
        self._clock = clock
        self._endpoints = endpoints
        self._models = models
        self._operations = operations
        self._faults = faults
        # The next deployments' operation error codes, in order (True: a crashed container, ResourceNotReady).
        self.fail_next: bool | str = False
        self.fail_codes: list[str] = []
        self.ready_seconds = DEPLOYMENT_READY_SECONDS
        self.logs_requested: list[str | None] = []
        self.creations = 0

    def begin_create_or_update(self, deployment: ManagedOnlineDeployment) -> FakePoller:
        endpoint_name = str(deployment.endpoint_name)
        self._faults.check("online_deployments.begin_create_or_update", endpoint_name)
        endpoint = self._endpoints.get(endpoint_name)
        if endpoint.provisioning_state != "Succeeded":
            raise conflict(endpoint_name)
        _, name, version = str(deployment.model).split(":")
        self._models.get(name, version)
        fail = self.fail_codes.pop(0) if self.fail_codes else ""
        if self.fail_next:
            fail = "ResourceNotReady" if self.fail_next is True else str(self.fail_next)
        self.creations += 1
        url = (
            f"https://management.azure.com{WORKSPACE_ID}/locations/{REGION}/mfeOperationsStatus/"
            f"od:{endpoint_name}:{deployment.name}:{self.creations}?api-version=2024-04-01"
        )
        record = FakeDeployment(deployment, self._clock(), fail=fail, operation_url=url)
        record.poller = FakePoller(done=False, operation_url=url)
        self._operations.bodies[url] = {"status": "InProgress"}
        self._endpoints.deployments[endpoint_name][str(deployment.name)] = record
        return record.poller

    def _record(self, name: str, endpoint_name: str) -> FakeDeployment:
        record = self._endpoints.deployments.get(endpoint_name, {}).get(name)
        if record is None:
            raise ResourceNotFoundError(f"Deployment {endpoint_name}/{name} not found")
        return record

    def _view(self, record: FakeDeployment) -> ManagedOnlineDeployment:
        ready = self._clock() >= record.created_at + timedelta(seconds=self.ready_seconds)
        state = ("Failed" if record.fail else "Succeeded") if ready else "Creating"
        if ready:
            body: dict[str, Any] = {"status": state}
            if record.fail:
                message = OPERATION_ERRORS.get(record.fail, record.fail).format(
                    instance_type=record.entity.instance_type, subscription=SUBSCRIPTION
                )
                body["error"] = {"code": record.fail, "message": message}
            self._operations.bodies[record.operation_url] = body
        given = record.entity
        return ManagedOnlineDeployment(
            name=given.name,
            endpoint_name=given.endpoint_name,
            model=given.model,
            instance_type=given.instance_type,
            instance_count=given.instance_count,
            tags=dict(given.tags or {}),
            provisioning_state=state,
        )

    def get(self, name: str, endpoint_name: str) -> ManagedOnlineDeployment:
        self._faults.check("online_deployments.get")
        return self._view(self._record(name, endpoint_name))

    def list(self, endpoint_name: str) -> list[ManagedOnlineDeployment]:
        return [self._view(record) for record in self._endpoints.deployments.get(endpoint_name, {}).values()]

    def begin_delete(self, name: str, endpoint_name: str) -> FakePoller:
        self._faults.check("online_deployments.begin_delete", endpoint_name)
        self._record(name, endpoint_name)
        if self._endpoints.state(endpoint_name) == "Updating":
            raise conflict(endpoint_name)
        if (self._endpoints.endpoints[endpoint_name].traffic or {}).get(name):
            raise http_error(400, f"deployment {name} still takes traffic")
        del self._endpoints.deployments[endpoint_name][name]
        return FakePoller(done=False)

    def get_logs(self, name: str, endpoint_name: str, lines: int, *, container_type: str | None = None) -> str:
        self.logs_requested.append(container_type)
        record = self._record(name, endpoint_name)
        if record.fail != "ResourceNotReady":
            return ""  # no container ever started: nothing to log
        if container_type == "storage-initializer":
            return "model download finished"
        return "Traceback (most recent call last):\nRuntimeError: CUDA out of memory"


class FakeMLClient:
    """The workspace's `MLClient`, as far as the backend uses it."""

    workspace_name = "ws"
    subscription_id = SUBSCRIPTION
    resource_group_name = "rg"

    def __init__(self, clock: FakeClock, region: FakeRegion | None = None, workspace_name: str = "ws") -> None:
        self.workspace_name = workspace_name
        self.faults = FakeFaults()
        self.region = region or FakeRegion()
        self.operations = FakeOperations()
        self.jobs = FakeJobs()
        self.compute = FakeCompute()
        self.models = FakeModels(self.jobs)
        self.online_endpoints = FakeOnlineEndpoints(clock, self.faults, self.region, workspace_name)
        self.online_deployments = FakeOnlineDeployments(
            clock, self.online_endpoints, self.models, self.operations, self.faults
        )
        self.workspaces = SimpleNamespace(
            get=lambda name: SimpleNamespace(
                location=REGION, mlflow_tracking_uri=f"azureml://{REGION}.api.azureml.ms/mlflow/v1.0{WORKSPACE_ID}"
            )
        )


class FakeRegistryClient:
    """The `azureml` registry as azure-ai-ml 1.35.2 reads it: the pipeline component (a local stand-in), and
    model versions kept as the registry's REST bodies (camelCase), keyed by name and version.

    `models._get` returns a body as the SDK's `ModelVersion` mapping, `models.get` the `Model` the SDK makes
    of it, which drops `isArchived` and the system metadata. The models are the offline catalog's and `base`:
    Phi-3-mini-4k-instruct is archived as azureml-assets PR #5103 (June 2026) left it, and like Phi-4 keeps
    its lifecycle dates and compute allow lists only in system metadata since PRs #5150/#5190 removed the
    tags. Archived versions are hidden from list queries, which the SDK resolves label `latest` with; a
    version asked for by number is still served (https://learn.microsoft.com/cli/azure/ml/model#az-ml-model-archive).
    """

    def __init__(self, base: BaseModel, component: Any) -> None:
        from shared.ml.azureml.catalog import offline_base_models

        self.bodies: dict[tuple[str, str], dict[str, Any]] = {}
        for model in [*offline_base_models().values(), base]:
            self.add_model(model)
        self.models = SimpleNamespace(get=self._get_model, _get=self._read_version)
        self.components = SimpleNamespace(get=lambda name, label=None, version=None: component)
        self.model_reads = 0

    def add_model(self, model: BaseModel) -> None:
        properties: dict[str, Any] = {
            "description": "",
            "tags": dict(model.tags),
            "properties": {},
            "isArchived": model.archived,
            "isAnonymous": False,
            "flavors": {},
            "modelType": "mlflow_model",
        }
        if model.system_metadata:
            properties["systemMetadata"] = dict(model.system_metadata)
        self.bodies[(model.name, model.version)] = {"id": model.id, "name": model.version, "properties": properties}

    def _read_version(self, name: str, version: str) -> Any:
        from azure.ai.ml._restclient.arm_ml_service.models import ModelVersion as ArmModelVersion

        self.model_reads += 1
        if (name, version) not in self.bodies:
            raise ResourceNotFoundError(f"Model {name}:{version} not found in registry azureml")
        return ArmModelVersion._deserialize(self.bodies[(name, version)], [])

    def _get_model(self, name: str, version: str | None = None, label: str | None = None) -> Model:
        from azure.ai.ml._restclient.arm_ml_service.models import ModelVersion as ArmModelVersion
        from azure.ai.ml.exceptions import ErrorCategory, ErrorTarget, ValidationErrorType, ValidationException

        if label is not None:
            listed = [
                number
                for (model, number), body in self.bodies.items()
                if model == name and not body["properties"]["isArchived"]
            ]
            if not listed:
                message = f"Asset {name} does not exist in registry azureml."
                raise ValidationException(
                    message=message,
                    no_personal_data_message=message,
                    target=ErrorTarget.ASSET,
                    error_category=ErrorCategory.USER_ERROR,
                    error_type=ValidationErrorType.RESOURCE_NOT_FOUND,
                )
            version = max(listed, key=int)
        if (name, str(version)) not in self.bodies:
            raise ResourceNotFoundError(f"Model {name}:{version} not found in registry azureml")
        return Model._from_rest_object(ArmModelVersion._deserialize(self.bodies[(name, str(version))], []))


@dataclass
class FakeResponse:
    status_code: int
    body: Any

    @property
    def text(self) -> str:
        return str(self.body)

    def json(self) -> Any:
        return self.body


class FakeScoringHttp:
    """The scoring URIs of the fake endpoints: answers ready deployments, counts requests per minute."""

    def __init__(self, workspace: FakeMLClient, clock: FakeClock) -> None:
        self._workspace = workspace
        self._clock = clock
        self.answer: Any = {"output": "Arr, Paris it be."}
        self.requests: list[dict[str, Any]] = []

    def post(self, url: str, *, json: Any, headers: dict[str, str], timeout: float) -> FakeResponse:
        endpoint_name = url.split("//")[1].split(".")[0]
        endpoints = self._workspace.online_endpoints
        if endpoint_name not in endpoints.endpoints:
            return FakeResponse(404, {"message": f"endpoint {endpoint_name} not found"})
        if headers.get("Authorization") != f"Bearer {endpoints.current_key(endpoint_name)}":
            return FakeResponse(401, {"message": "bad key"})
        deployment = headers.get("azureml-model-deployment")
        if deployment is None:
            traffic = endpoints.get(endpoint_name).traffic or {}
            deployment = max(traffic, key=lambda name: traffic[name], default=None)
        if deployment is None or endpoints.deployments[endpoint_name].get(deployment) is None:
            return FakeResponse(404, {"message": "no such deployment"})
        if self._workspace.online_deployments.get(deployment, endpoint_name).provisioning_state != "Succeeded":
            return FakeResponse(503, {"message": "not ready"})
        self.requests.append(
            {"endpoint": endpoint_name, "deployment": deployment, "headers": dict(headers), "at": self._clock()}
        )
        return FakeResponse(200, self.answer)


class FakeRequestMetrics:
    """Azure Monitor's `MetricsClient` over the fake scoring log, answering `query_resources` with the SDK's own
    result objects, so the real `AzureMonitorRequestMetrics` reads it.

    As the service does (azure-facts.md, "Added 2026-12-01", RequestsPerMinute): values come only under the
    documented aggregation, Average; under any other every point is None. Split by `deployment eq '*'`, a
    deployment without requests in the timespan has no series, and a minute without requests is None.
    `failures`: endpoint name -> the error the service raises when asked about that endpoint.

    Requests the scoring log holds answered 2xx in `latency_ms`; `serve` adds requests the service saw from
    other clients (live traffic, mirrored copies) with their status and latency. A filter may pin a
    deployment (`deployment eq 'blue'`) and split by `statusCodeClass eq '*'`; `RequestLatency_P95`
    answers each minute's p95 (nearest rank) of the requests in it.
    """

    def __init__(self, http: FakeScoringHttp) -> None:
        self._http = http
        self.queries: list[dict[str, Any]] = []
        self.failures: dict[str, Exception] = {}
        self.served: list[dict[str, Any]] = []
        self.latency_ms = 50.0

    def serve(
        self, endpoint: str, deployment: str, at: datetime, *, status: int = 200, latency_ms: float = 50.0
    ) -> None:
        """Record one request the service answered (what clients other than the app's smoke test sent)."""
        self.served.append(
            {"endpoint": endpoint, "deployment": deployment, "at": at, "status": status, "latency_ms": latency_ms}
        )

    def client(self, region: str, credential: Any) -> FakeRequestMetrics:
        """What `AzureMonitorRequestMetrics` takes as `client_factory`: one fake service answers every region."""
        return self

    def query_resources(
        self,
        *,
        resource_ids: list[str],
        metric_namespace: str,
        metric_names: list[str],
        timespan: tuple[datetime, datetime],
        granularity: timedelta,
        aggregations: list[str],
        filter: str | None = None,
        max_results: int | None = None,
    ) -> list[MetricsQueryResult]:
        self.queries.append(
            {"resource_ids": resource_ids, "metric_names": metric_names, "aggregations": aggregations, "filter": filter}
        )
        if metric_namespace != NAMESPACE or len(metric_names) != 1 or metric_names[0] not in (METRIC, LATENCY_METRIC):
            raise http_error(400, f"metric {metric_names} not found in namespace {metric_namespace}")
        if granularity != timedelta(minutes=1):
            raise NotImplementedError("the fake answers PT1M only, the metric's one time grain")
        return [
            self._result(resource_id, *timespan, aggregations, filter or "", metric_names[0])
            for resource_id in resource_ids
        ]

    def _result(
        self, resource_id: str, start: datetime, end: datetime, aggregations: list[str], filter: str, metric_name: str
    ) -> MetricsQueryResult:
        name = resource_id.rsplit("/", 1)[-1]
        if name in self.failures:
            raise self.failures[name]
        first = start.replace(second=0, microsecond=0)
        minutes = [first + timedelta(minutes=offset) for offset in range(int((end - first) / timedelta(minutes=1)) + 1)]
        split = "deployment eq '*'" in filter
        split_class = "statusCodeClass eq '*'" in filter
        pinned = re.search(r"deployment eq '([^'*]+)'", filter)
        answered = [
            {**request, "status": 200, "latency_ms": self.latency_ms} for request in self._http.requests
        ] + self.served
        per_series: dict[tuple[str, str], dict[datetime, list[float]]] = defaultdict(lambda: defaultdict(list))
        for request in answered:
            if request["endpoint"] != name or not start <= request["at"] <= end:
                continue
            if pinned and request["deployment"] != pinned.group(1):
                continue
            series = (request["deployment"] if split else "", f"{request['status'] // 100}xx" if split_class else "")
            per_series[series][request["at"].replace(second=0, microsecond=0)].append(request["latency_ms"])

        def value(latencies: list[float]) -> float | None:
            if not latencies:
                return None
            if metric_name == METRIC:
                return float(len(latencies))
            return sorted(latencies)[max(1, math.ceil(0.95 * len(latencies))) - 1]

        timeseries = [
            {
                "metadatavalues": [{"name": {"value": "deployment"}, "value": deployment}] * split
                + [{"name": {"value": "statusCodeClass"}, "value": status_class}] * split_class,
                "data": [
                    {
                        "timeStamp": moment.isoformat().replace("+00:00", "Z"),
                        **{
                            aggregation.lower(): value(minute.get(moment, [])) if aggregation == "Average" else None
                            for aggregation in aggregations
                        },
                    }
                    for moment in minutes
                ],
            }
            for (deployment, status_class), minute in per_series.items()
        ]
        unit = "Count" if metric_name == METRIC else "Milliseconds"
        metric = {"id": f"{resource_id}/metrics", "type": "m", "name": {"value": metric_name}, "unit": unit}
        body = {
            "timespan": f"{minutes[0].isoformat()}/{end.isoformat()}",
            "interval": "PT1M",
            "value": [{**metric, "timeseries": timeseries}],
        }
        return MetricsQueryResult._from_generated(body)


class FakeTracking:
    def __init__(self) -> None:
        self.metrics = {"epoch": 1.0, "train_loss": 1.31, "eval_loss": 1.42}

    def job_metrics(self, job_name: str, experiment_name: str) -> dict[str, float]:
        return dict(self.metrics)
