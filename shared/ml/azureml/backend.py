"""`AzureMLBackend`: the ML backend port on an Azure ML workspace, with azure-ai-ml.

Every call returns without waiting on a long operation: jobs are polled by status, deployments are
started and then read back by the deploy stage's delayed checks. The SDK's pollers keep a daemon
thread that polls on its own; nothing here waits for it, except a traffic change, which is short.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any, Protocol

from shared.errors import (
    AuthorizationError,
    BackendError,
    DeploymentFailedError,
    InvalidParameterError,
    NotFoundError,
    PermanentError,
    TransientError,
)
from shared.ml.azureml.catalog import INFERENCE_ALLOW_LIST_TAG, PIPELINE_COMPONENT, BaseModel, ComponentInterface
from shared.ml.azureml.clients import LazyRegistryClient, default_credential, workspace_client
from shared.ml.azureml.compute import check_inference_instance_type, resolve_finetune_compute
from shared.ml.azureml.config import LATEST, AzureMLConfig
from shared.ml.azureml.endpoints import (
    REQUEST_TIMEOUT_MS,
    build_deployment,
    build_endpoint,
    check_endpoint_name,
    check_traffic,
    deployment_info,
    deployment_state,
    endpoint_info,
    model_reference,
    post_score,
    traffic_update,
)
from shared.ml.azureml.errors import REGISTRY_ROLE, translated
from shared.ml.azureml.metrics import AzureMonitorRequestMetrics, minute_span
from shared.ml.azureml.operations import ArmOperationStatus, OperationStatus, operation_error, operation_url
from shared.ml.azureml.pipeline import (
    BASE_MODEL_ID_TAG,
    BASE_MODEL_TAG,
    BASE_MODEL_VERSION_TAG,
    TRAINED_MODEL_OUTPUT,
    FinetunePlan,
    build_pipeline_job,
    plan_finetune_job,
)
from shared.ml.azureml.states import state_text
from shared.ml.azureml.tracking import MlflowRestTracking, workspace_tracking_uri
from shared.ml.port import (
    MANAGED_BY_TAG,
    MANAGED_BY_VALUE,
    QUOTA_DEPLOYMENT_ERRORS,
    RUN_TAG,
    TERMINAL_JOB_STATUSES,
    DeploymentHealth,
    DeploymentInfo,
    DeploymentSpec,
    EndpointInfo,
    FinetuneJobSpec,
    JobInfo,
    ModelRegistration,
    RegisteredModel,
)
from shared.settings import Settings

log = logging.getLogger(__name__)

LOG_LINES = 60
TRAFFIC_WAIT_SECONDS = 120
SCORING_TIMEOUT_SECONDS = REQUEST_TIMEOUT_MS / 1000 + 10


class RequestMetrics(Protocol):
    def requests_per_minute(
        self, endpoint_id: str, region: str, start: datetime, end: datetime
    ) -> dict[str, list[int]]: ...

    def deployment_health(
        self, endpoint_id: str, region: str, deployment: str, start: datetime, end: datetime
    ) -> DeploymentHealth: ...


class JobTracking(Protocol):
    def job_metrics(self, job_name: str, experiment_name: str) -> dict[str, float]: ...


class AzureMLBackend:
    """`MLBackend` on an Azure ML workspace; every client is handed in, so tests pass fakes."""

    name = "azureml"
    simulated = False
    # Deployment operation errors that mean the instance type cannot be had in the region.
    QUOTA_CODES = QUOTA_DEPLOYMENT_ERRORS

    def __init__(
        self,
        workspace: Any,
        registry: Callable[[], Any],
        config: AzureMLConfig,
        *,
        metrics: RequestMetrics,
        tracking: JobTracking,
        http: Any = None,
        operations: OperationStatus | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        """`workspace`: the workspace's `MLClient`; `registry`: returns the registry's, made on first use."""
        self._workspace = workspace
        self._registry = registry
        self._config = config
        self._metrics = metrics
        self._tracking = tracking
        self._http = http
        self._operations = operations
        self._operation_urls: dict[tuple[str, str], str] = {}
        self._clock = clock
        self._lock = threading.Lock()
        self._base_models: dict[tuple[str, str], BaseModel] = {}
        self._scoring: dict[str, tuple[str, str]] = {}
        self._region: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> AzureMLBackend:
        """The backend on the real clients: DefaultAzureCredential, the workspace, the registry made on first use."""
        config = AzureMLConfig.from_settings(settings)
        credential = default_credential()
        workspace = workspace_client(config, credential)
        return cls(
            workspace,
            LazyRegistryClient(credential, config.registry),
            config,
            metrics=AzureMonitorRequestMetrics(credential),
            tracking=MlflowRestTracking(workspace_tracking_uri(workspace), credential),
            operations=ArmOperationStatus(credential),
        )

    @property
    def endpoint_scope(self) -> str:
        """The workspace (subscription, resource group, name): endpoint names must be unique in its region."""
        parts = (
            getattr(self._workspace, "subscription_id", ""),
            getattr(self._workspace, "resource_group_name", ""),
            getattr(self._workspace, "workspace_name", ""),
        )
        return "/".join(str(part or "") for part in parts)

    # fine-tuning jobs
    def plan_finetune(self, spec: FinetuneJobSpec, base_model_version: str | None = None) -> tuple[FinetunePlan, Any]:
        """The plan for `spec` against the live registry and workspace, and the component it calls."""
        base = self.base_model(
            spec.base_model, base_model_version or spec.base_model_version or self._config.base_model_version
        )
        with translated(f"reading {PIPELINE_COMPONENT} from registry {self._config.registry}", role=REGISTRY_ROLE):
            component = self._registry().components.get(name=PIPELINE_COMPONENT, label=LATEST)
        compute = resolve_finetune_compute(
            self._workspace, self._config.compute_cluster, self._config.finetune_instance_type, base
        )
        plan = plan_finetune_job(
            spec,
            base,
            ComponentInterface.of_component(component),
            compute,
            datastore=self._config.datastore,
            container=self._config.training_container,
        )
        return plan, component

    def submit_finetune_job(self, spec: FinetuneJobSpec) -> JobInfo:
        from azure.core.exceptions import ResourceExistsError

        existing = self._find_job(spec.job_name)
        if existing is not None:
            return self._job_info(existing)
        plan, component = self.plan_finetune(spec)
        job = build_pipeline_job(plan, component)
        with translated(
            f"submitting job {spec.job_name}", instance_type=plan.compute.size, region=self._workspace_region()
        ):
            try:
                created = self._workspace.jobs.create_or_update(
                    job, experiment_name=plan.experiment_name, tags=plan.tags
                )
            except ResourceExistsError:
                created = self._workspace.jobs.get(spec.job_name)
        log.info("submitted %s (%s) on %s", spec.job_name, plan.display_name, plan.compute.describe())
        return self._job_info(created)

    def get_job(self, job_name: str) -> JobInfo:
        with translated(f"reading job {job_name}"):
            job = self._workspace.jobs.get(job_name)
        return self._job_info(job)

    def cancel_job(self, job_name: str) -> None:
        if self.get_job(job_name).finished:
            return
        with translated(f"cancelling job {job_name}"):
            self._workspace.jobs.begin_cancel(job_name)

    def _find_job(self, job_name: str) -> Any:
        from azure.core.exceptions import ResourceNotFoundError

        with translated(f"reading job {job_name}"):
            try:
                return self._workspace.jobs.get(job_name)
            except ResourceNotFoundError:
                return None

    def _job_info(self, job: Any) -> JobInfo:
        status = state_text(job.status) or "NotStarted"
        tags = {str(key): str(value) for key, value in (job.tags or {}).items()}
        details: dict[str, Any] = {"studio_url": getattr(job, "studio_url", None) or ""}
        if BASE_MODEL_TAG in tags:
            details["base_model"] = {
                "name": tags[BASE_MODEL_TAG],
                "version": tags.get(BASE_MODEL_VERSION_TAG, ""),
                "id": tags.get(BASE_MODEL_ID_TAG, ""),
            }
        metrics = self._job_metrics(job) if status == "Completed" else {}
        failed = status in TERMINAL_JOB_STATUSES and status != "Completed"
        failure_reason = self._failure_reason(job) if failed else None
        return JobInfo(str(job.name), status, failure_reason, metrics, tags, details)

    def _job_metrics(self, job: Any) -> dict[str, float]:
        try:
            return self._tracking.job_metrics(str(job.name), str(job.experiment_name or ""))
        except TransientError:
            raise
        except PermanentError as exc:
            log.warning("metrics of job %s not recorded: %s", job.name, exc)
            return {}

    def _failure_reason(self, job: Any) -> str:
        where = f"see {job.studio_url}" if getattr(job, "studio_url", None) else "see the job in Azure ML studio"
        try:
            # Job entities carry no error; run history does (what `jobs.stream` prints on failure).
            details = self._workspace.jobs._runs_operations.get_run_details(job.name)
            root = getattr(getattr(details, "error", None), "error", None)
            message = getattr(root, "message", None)
        except Exception as exc:
            log.warning("could not read the error of job %s: %s", job.name, exc)
            message = None
        return f"{message}; {where}" if message else f"job ended {job.status} without an error message; {where}"

    # registry
    def base_model(self, name: str, version: str = LATEST, *, refuse_retired: bool = True) -> BaseModel:
        """The registry model `name` at `version` (or label `latest`), read once per process.

        A model retired (on or before the backend's today) or archived is refused with
        `InvalidParameterError` before any compute is asked for; a coming deprecation is logged. Registering
        a model already trained on it passes `refuse_retired=False`.
        """
        from shared.ml.azureml.catalog import check_usable, registry_model_body, unresolved_hint

        key = (name, version)
        with self._lock:
            base = self._base_models.get(key)
        if base is None:
            registry = self._registry()
            what = f"base model {name} ({'label latest' if version == LATEST else 'version ' + version})"
            try:
                with translated(f"reading {what} from registry {self._config.registry}", role=REGISTRY_ROLE):
                    resolved = str(registry.models.get(name, label=LATEST).version) if version == LATEST else version
                    body = registry_model_body(registry, name, resolved)
            except (NotFoundError, InvalidParameterError) as exc:
                # The SDK reports a label it cannot resolve as a validation error, not a 404.
                raise type(exc)(f"{exc}. {unresolved_hint(name, self._clock().date())}") from exc
            base = BaseModel.from_rest(name, resolved, body)
            with self._lock:
                self._base_models[key] = base
        if refuse_retired:
            for warning in check_usable(base, self._clock().date()):
                log.warning("%s", warning)
        return base

    def register_model(self, registration: ModelRegistration) -> RegisteredModel:
        from azure.core.exceptions import ResourceExistsError

        name, version = registration.model_name, registration.version
        existing = self._find_model(name, version)
        if existing is None:
            job = self.get_job(registration.job_name)
            if job.status != "Completed":
                raise NotFoundError(
                    f"job {registration.job_name} is {job.status}: it has no {TRAINED_MODEL_OUTPUT} output to register"
                )
            entity = self._model_entity(registration, job)
            with translated(f"registering model {name}:{version}"):
                try:
                    existing = self._workspace.models.create_or_update(entity)
                except ResourceExistsError:
                    existing = self._workspace.models.get(name=name, version=version)
        owner = (existing.tags or {}).get(RUN_TAG)
        if owner and registration.tags.get(RUN_TAG) and owner != registration.tags[RUN_TAG]:
            raise BackendError(
                f"model {name}:{version} already belongs to run {owner}, not {registration.tags[RUN_TAG]}",
                category="conflict",
            )
        return RegisteredModel(name, version, model_reference(name, version), dict(existing.tags or {}))

    def _find_model(self, name: str, version: str) -> Any:
        from azure.core.exceptions import ResourceNotFoundError

        with translated(f"reading model {name}:{version}"):
            try:
                return self._workspace.models.get(name=name, version=version)
            except ResourceNotFoundError:
                return None

    def _model_entity(self, registration: ModelRegistration, job: JobInfo) -> Any:
        from azure.ai.ml.constants import AssetTypes
        from azure.ai.ml.entities import Model

        tags = dict(registration.tags)
        base = job.details.get("base_model")
        if base:
            tags.update({BASE_MODEL_TAG: base["name"], BASE_MODEL_VERSION_TAG: base["version"]})
            tags[BASE_MODEL_ID_TAG] = base["id"]
            # The tag or, in newer catalog models, system metadata: begin_deployment reads the tag only.
            allowed = self.base_model(base["name"], base["version"], refuse_retired=False).allow_list(
                INFERENCE_ALLOW_LIST_TAG
            )
            if allowed is not None:
                tags[INFERENCE_ALLOW_LIST_TAG] = repr(allowed)
        tags[MANAGED_BY_TAG] = MANAGED_BY_VALUE
        return Model(
            path=f"azureml://jobs/{registration.job_name}/outputs/{TRAINED_MODEL_OUTPUT}",
            type=AssetTypes.MLFLOW_MODEL,
            name=registration.model_name,
            version=registration.version,
            description=registration.description,
            tags={key: str(value) for key, value in tags.items()},
        )

    # endpoints
    def ensure_endpoint(self, name: str, tags: dict[str, str]) -> EndpointInfo:
        from azure.core.exceptions import ResourceExistsError

        check_endpoint_name(name)
        entity = self._find_endpoint(name)
        if entity is None:
            requested = build_endpoint(name, tags, f"Fine-tuned chat models of {tags.get('dataset', name)}")
            # Not waited on: begin_deployment starts the deployment once the endpoint is ready.
            try:
                with translated(f"creating endpoint {name}"):
                    try:
                        self._workspace.online_endpoints.begin_create_or_update(requested)
                    except ResourceExistsError as exc:
                        conflict: Exception | None = exc
                    else:
                        conflict = None
            finally:
                entity = self._find_endpoint(name)
            if entity is None and conflict is not None:
                # Names are unique per region across workspaces: 409 for a name this workspace does not have.
                raise BackendError(
                    f"endpoint name {name} is taken in the region by another workspace ({conflict}); endpoint names "
                    "must be unique per Azure region: set another endpoint_name in the dataset's autopilot.json",
                    category="conflict",
                )
            if entity is None:
                return endpoint_info(requested, [])
        return endpoint_info(entity, self._deployment_names(name))

    def get_endpoint(self, name: str) -> EndpointInfo | None:
        entity = self._find_endpoint(name)
        return None if entity is None else endpoint_info(entity, self._deployment_names(name))

    def list_endpoints(self) -> list[EndpointInfo]:
        with translated("listing endpoints"):
            entities = list(self._workspace.online_endpoints.list())
        return [endpoint_info(entity, self._deployment_names(entity.name)) for entity in entities]

    def delete_endpoint(self, name: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        with self._lock:
            for key in [key for key in self._operation_urls if key[0] == name]:
                del self._operation_urls[key]
        with translated(f"deleting endpoint {name}"), contextlib.suppress(ResourceNotFoundError):
            self._workspace.online_endpoints.begin_delete(name=name)
        with self._lock:
            self._scoring.pop(name, None)

    def _find_endpoint(self, name: str) -> Any:
        from azure.core.exceptions import ResourceNotFoundError

        with translated(f"reading endpoint {name}"):
            try:
                return self._workspace.online_endpoints.get(name=name)
            except ResourceNotFoundError:
                return None

    def _endpoint(self, name: str) -> Any:
        entity = self._find_endpoint(name)
        if entity is None:
            raise NotFoundError(f"endpoint {name} does not exist in the workspace")
        return entity

    def _deployment_names(self, endpoint_name: str) -> list[str]:
        """Deployments of the endpoint, leaving out those being deleted."""
        from azure.core.exceptions import ResourceNotFoundError

        with translated(f"listing deployments of {endpoint_name}"):
            try:
                deployments = list(self._workspace.online_deployments.list(endpoint_name=endpoint_name))
            except ResourceNotFoundError:
                return []
        return [str(item.name) for item in deployments if deployment_state(item) != "Deleting"]

    # deployments
    def begin_deployment(self, spec: DeploymentSpec) -> DeploymentInfo:
        from azure.core.exceptions import ResourceExistsError

        endpoint = self._endpoint(spec.endpoint_name)
        endpoint_state = state_text(endpoint.provisioning_state)
        if endpoint_state.lower() == "failed":
            raise DeploymentFailedError(
                f"endpoint {spec.endpoint_name} is in failed provisioning state; delete it and run again"
            )
        waiting = DeploymentInfo(
            spec.endpoint_name, spec.deployment_name, spec.model_name, spec.model_version, "Creating"
        )
        if endpoint_state.lower() != "succeeded":
            log.info("endpoint %s is %s; the deployment starts once it is ready", spec.endpoint_name, endpoint_state)
            return waiting
        # A spec naming its instance type brings its count; otherwise both come from the settings.
        instance_type = spec.instance_type or self._config.inference_instance_type
        count = spec.instance_count if spec.instance_type else self._config.inference_instance_count
        model = self._find_model(spec.model_name, spec.model_version)
        if model is None:
            raise NotFoundError(f"model {spec.model_name}:{spec.model_version} is not registered in the workspace")
        allowed = BaseModel(spec.model_name, spec.model_version, "", dict(model.tags or {})).allow_list(
            INFERENCE_ALLOW_LIST_TAG
        )
        base = (model.tags or {}).get(BASE_MODEL_TAG, spec.model_name)
        check_inference_instance_type(instance_type, allowed, base)
        deployment = build_deployment(spec, instance_type, count)
        starting = f"starting deployment {spec.deployment_name} on {spec.endpoint_name}"
        region = str(endpoint.location or "") or None
        with translated(starting, instance_type=instance_type, region=region):
            try:
                poller = self._workspace.online_deployments.begin_create_or_update(deployment)
            except ResourceExistsError:
                # 409: another operation on the endpoint is in progress; fine only if ours is the one.
                existing = self.get_deployment(spec.endpoint_name, spec.deployment_name)
                if existing is None:
                    raise
                return existing
        url = operation_url(poller)
        if url:
            with self._lock:
                self._operation_urls[(spec.endpoint_name, spec.deployment_name)] = url
        current = self.get_deployment(spec.endpoint_name, spec.deployment_name, url) or waiting
        return replace(current, operation=url or current.operation)

    def get_deployment(self, endpoint_name: str, deployment_name: str, operation: str = "") -> DeploymentInfo | None:
        from azure.core.exceptions import ResourceNotFoundError

        with translated(f"reading deployment {deployment_name} of {endpoint_name}"):
            try:
                entity = self._workspace.online_deployments.get(name=deployment_name, endpoint_name=endpoint_name)
            except ResourceNotFoundError:
                return None
        with self._lock:
            url = operation or self._operation_urls.get((endpoint_name, deployment_name), "")
        info = deployment_info(entity, endpoint_name)
        if info.failed:
            return self._failure(entity, info, url)
        return replace(info, operation=url)

    def _failure(self, entity: Any, info: DeploymentInfo, url: str) -> DeploymentInfo:
        """Why the deployment failed: the operation's error code and message first, then container logs."""
        failure = operation_error(self._operations, url)
        parts = []
        if failure is not None:
            parts.append(f"{failure.code}: {failure.message}")
            if failure.code in self.QUOTA_CODES:
                region = self._workspace_region() or "the workspace region"
                parts.append(
                    f"not enough quota for {entity.instance_type} x {entity.instance_count} in {region}: ask for more "
                    "quota of that VM family in that region (Azure ML studio: Quota), or set "
                    "AUTOPILOT_AZUREML_INFERENCE_INSTANCE_TYPE to another instance type"
                )
        logs = self._deployment_logs(info.endpoint_name, info.name, state_text(entity.provisioning_state))
        if logs:
            parts.append(logs)
        return replace(info, error="\n".join(parts), error_code=failure.code if failure else "", operation=url)

    def _deployment_logs(self, endpoint_name: str, deployment_name: str, state: str) -> str:
        """The tail of a failed deployment's container logs ("" when there are none)."""
        parts = []
        for container in ("inference-server", "storage-initializer"):
            try:
                with translated(f"reading {container} logs of {deployment_name}"):
                    text = self._workspace.online_deployments.get_logs(
                        name=deployment_name, endpoint_name=endpoint_name, lines=LOG_LINES, container_type=container
                    )
            except PermanentError as exc:
                text = f"(not available: {exc})"
            if text and text.strip():
                parts.append(f"{container} logs (last {LOG_LINES} lines):\n{text.strip()}")
        if not parts:
            return f"provisioning state {state}; the containers wrote no logs"
        return "\n".join([f"provisioning state {state}", *parts])

    def delete_deployment(self, endpoint_name: str, deployment_name: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        deleting = f"deleting deployment {deployment_name} of {endpoint_name}"
        with translated(deleting), contextlib.suppress(ResourceNotFoundError):
            self._workspace.online_deployments.begin_delete(name=deployment_name, endpoint_name=endpoint_name)

    def set_traffic(
        self, endpoint_name: str, traffic: dict[str, int], mirror_traffic: dict[str, int] | None = None
    ) -> None:
        check_traffic(traffic, mirror_traffic or {})
        endpoint = traffic_update(self._endpoint(endpoint_name), traffic, mirror_traffic or {})
        with translated(f"updating traffic of {endpoint_name} to {traffic}"):
            poller = self._workspace.online_endpoints.begin_create_or_update(endpoint)
            # A traffic change takes seconds; the promote stage deletes replaced deployments right after it.
            poller.wait(timeout=TRAFFIC_WAIT_SECONDS)
            if not poller.done():
                raise TransientError(f"traffic update of {endpoint_name} still running; trying again later")

    def score(self, endpoint_name: str, request: dict[str, Any], deployment_name: str | None = None) -> Any:
        import requests

        uri, key = self._scoring_target(endpoint_name)
        try:
            return post_score(self._http or requests, uri, key, request, deployment_name, SCORING_TIMEOUT_SECONDS)
        except AuthorizationError:
            # Keys change when an endpoint is made again or its keys are regenerated: read them anew, once.
            with self._lock:
                self._scoring.pop(endpoint_name, None)
            uri, key = self._scoring_target(endpoint_name)
        except BackendError:
            with self._lock:
                self._scoring.pop(endpoint_name, None)
            raise
        return post_score(self._http or requests, uri, key, request, deployment_name, SCORING_TIMEOUT_SECONDS)

    def _scoring_target(self, endpoint_name: str) -> tuple[str, str]:
        with self._lock:
            if endpoint_name in self._scoring:
                return self._scoring[endpoint_name]
        endpoint = self._endpoint(endpoint_name)
        if not endpoint.scoring_uri:
            raise TransientError(f"endpoint {endpoint_name} has no scoring URI yet")
        with translated(f"reading the keys of endpoint {endpoint_name}"):
            keys = self._workspace.online_endpoints.get_keys(name=endpoint_name)
        key = getattr(keys, "primary_key", None)
        if not key:
            raise InvalidParameterError(
                f"endpoint {endpoint_name} does not use key auth; the app scores key-auth endpoints only"
            )
        with self._lock:
            self._scoring[endpoint_name] = (str(endpoint.scoring_uri), str(key))
        return self._scoring[endpoint_name]

    # metrics
    def requests_per_minute(self, endpoint_name: str, since: datetime) -> dict[str, list[int]]:
        endpoint = self._endpoint(endpoint_name)
        now = self._clock()
        counts = self._metrics.requests_per_minute(str(endpoint.id), str(endpoint.location), since, now)
        for name in self._deployment_names(endpoint_name):
            counts.setdefault(name, [0] * minute_span(since, now))
        return counts

    def deployment_health(self, endpoint_name: str, deployment_name: str, since: datetime) -> DeploymentHealth:
        endpoint = self._endpoint(endpoint_name)
        return self._metrics.deployment_health(
            str(endpoint.id), str(endpoint.location), deployment_name, since, self._clock()
        )

    def _workspace_region(self) -> str | None:
        """The workspace's region, for quota messages (None when it cannot be read)."""
        if self._region is None:
            try:
                name = self._workspace.workspace_name
                self._region = str(self._workspace.workspaces.get(name).location)
            except Exception as exc:
                log.info("workspace region unknown: %s", exc)
                return None
        return self._region
