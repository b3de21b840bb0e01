"""`LocalMLBackend`: the ML backend port on this machine, with real training and serving.

Jobs are separate processes (`shared.ml.local.training`), at most `max_jobs` at once, the rest
Queued; the registry is MLflow's; an endpoint is a local HTTP server with key auth and its
deployments are model-serving processes (`shared.ml.local.serving`). All state lives under
`<state dir>/local-ml/` (see `LocalStore`), so every instance, in any process, sees the same jobs
and endpoints. A watcher thread fails jobs whose process died, republishes job endings that could
not be published, and starts queued jobs.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from shared.errors import (
    AuthorizationError,
    BackendError,
    InvalidParameterError,
    NotFoundError,
    TransientError,
)
from shared.ml.local import jobs
from shared.ml.local.parameters import resolve_parameters
from shared.ml.local.processes import pid_alive, spawn_module, stop_process
from shared.ml.local.registry import ModelVersionRecord
from shared.ml.local.serving import DEPLOYMENT_HEADER, HEALTH_PATH, SCORE_PATH, request_log_path
from shared.ml.local.store import LocalStore, log_tail, read_json
from shared.ml.local.weights import BaseModel
from shared.ml.port import (
    RUN_TAG,
    DeploymentHealth,
    DeploymentInfo,
    DeploymentSpec,
    EndpointInfo,
    FinetuneJobSpec,
    JobInfo,
    MLEventPublisher,
    ModelRegistration,
    RegisteredModel,
)
from shared.settings import LOCAL_MAX_JOBS, STATE_DIR, STORAGE_CONNECTION, Settings
from shared.timestamps import iso as utc_iso
from shared.timestamps import parse_iso

log = logging.getLogger(__name__)

SERVING_MODULE = "shared.ml.local.serving"
WATCH_SECONDS = 5.0
SCORE_TIMEOUT_SECONDS = 300.0
TRANSIENT_HTTP = frozenset({408, 429, 502, 503, 504})
# The metrics `shared.ml.local.training` logs by step.
LOSS_METRICS = ("train_loss", "eval_loss")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{HEALTH_PATH}", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


class LocalMLBackend:
    """`MLBackend` on this machine: subprocess jobs, MLflow registry, local HTTP endpoints."""

    name = "local"
    simulated = False
    endpoint_scope = ""

    def __init__(
        self,
        state_dir: Path,
        *,
        storage_connection: str,
        publish_url: str,
        base_model: str,
        max_jobs: int = 1,
        publisher: MLEventPublisher | None = None,
        env: Mapping[str, str] | None = None,
        watch_seconds: float | None = WATCH_SECONDS,
        spawn: Callable[[str, list[str], Path, Mapping[str, str]], int] = spawn_module,
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        """`publisher` sends the events of jobs ended here (cancel, dead process); `watch_seconds=None`: no watcher."""
        self.store = LocalStore(state_dir)
        self._state_dir = state_dir.resolve()
        self._storage_connection = storage_connection
        self._publish_url = publish_url
        self._base_model_setting = base_model
        self._max_jobs = max_jobs
        self._publisher = publisher
        self._env = dict(os.environ if env is None else env)
        self._clock = clock
        self._spawn = spawn
        jobs.reconcile_jobs(self.store, publisher)
        jobs.start_queued_jobs(self.store, max_jobs, self._child_env(), spawn)
        if watch_seconds is not None:
            threading.Thread(target=self._watch, args=(watch_seconds,), name="local-ml-watcher", daemon=True).start()

    @classmethod
    def from_settings(cls, settings: Settings, *, watch: bool = True) -> LocalMLBackend:
        """The backend as the function app uses it; `watch=False` for short-lived users such as the CLI."""
        from shared.ml.publisher import HttpEventPublisher

        return cls(
            settings.state_dir,
            storage_connection=settings.storage_connection.require_connection_string("the local ML backend"),
            publish_url=settings.eventgrid_publish_url,
            base_model=settings.local_base_model,
            max_jobs=settings.local_max_jobs,
            publisher=HttpEventPublisher(settings.eventgrid_publish_url),
            watch_seconds=WATCH_SECONDS if watch else None,
        )

    def _watch(self, interval: float) -> None:
        while True:
            time.sleep(interval)
            try:
                jobs.reconcile_jobs(self.store, self._publisher)
                jobs.start_queued_jobs(self.store, self._max_jobs, self._child_env(), self._spawn)
            except Exception:
                log.exception("local ML watcher: could not check the jobs")

    def _child_env(self) -> dict[str, str]:
        """What job and serving processes see; the connection string travels here, never in a file."""
        return {
            **self._env,
            STORAGE_CONNECTION: self._storage_connection,
            STATE_DIR: str(self._state_dir),
            LOCAL_MAX_JOBS: str(self._max_jobs),
            "MLFLOW_TRACKING_URI": self.store.tracking_uri,
        }

    # jobs
    def submit_finetune_job(self, spec: FinetuneJobSpec) -> JobInfo:
        given = dict(spec.parameters)
        if "simulate_failure" in given:
            raise InvalidParameterError(
                "parameter simulate_failure exists only on the simulated backend (AUTOPILOT_ML_BACKEND=simulated)"
            )
        parameters, no_effect = resolve_parameters(given)
        base = BaseModel.from_setting(self._base_model_setting)
        if spec.base_model != base.name:
            raise InvalidParameterError(
                f"the local backend fine-tunes {base.name} (setting AUTOPILOT_LOCAL_BASE_MODEL), but run "
                f"{spec.run_id} asks for base model {spec.base_model}: drop base_model from the manifest or name "
                f"{base.name}"
            )
        if spec.base_model_version not in (None, "latest", base.version):
            raise InvalidParameterError(
                f"the local backend has one version of {base.name} ({base.version}); run {spec.run_id} asks for "
                f"version {spec.base_model_version}: drop base_model_version from the manifest"
            )
        with self.store.lock():
            if self.store.read_job(spec.job_name) is None:
                self.store.write_job(
                    {
                        "name": spec.job_name,
                        "status": "Queued",
                        "submitted_at": utc_iso(self._clock()),
                        "experiment": f"chat_completion_{base.name}",
                        "run_id": spec.run_id,
                        "dataset": spec.dataset,
                        "tags": dict(spec.tags),
                        "given_parameters": given,
                        "parameters": parameters.to_dict(),
                        "parameters_without_local_effect": no_effect,
                        "train_file": spec.train_file,
                        "test_file": spec.test_file,
                        "validation_file": spec.validation_file,
                        "base_model": base.describe(),
                        "base_model_setting": self._base_model_setting,
                        "publish_url": self._publish_url,
                        "events_published": True,
                    }
                )
                log.info("local job %s queued for run %s", spec.job_name, spec.run_id)
        jobs.start_queued_jobs(self.store, self._max_jobs, self._child_env(), self._spawn)
        return self.get_job(spec.job_name)

    def job_progress(self, job_name: str) -> dict[str, Any] | None:
        """The job's latest {"step", "steps", "loss"} as its process reported it; None before the first step."""
        record = self.store.read_job(job_name)
        progress = None if record is None else record.get("progress")
        return dict(progress) if progress else None

    def loss_history(self, job_name: str) -> dict[str, list[tuple[int, float]]]:
        """The job's `train_loss` and `eval_loss` by step, as its process logged them to MLflow ([(step, loss)]).

        Empty before the job has an MLflow run. Read only: the dashboard draws its loss curve from it.
        """
        record = self.store.read_job(job_name)
        run_id = None if record is None else record.get("mlflow_run_id")
        if not run_id:
            return {}
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        try:
            client = MlflowClient(tracking_uri=self.store.tracking_uri)
            return {
                key: sorted(
                    (int(metric.step), float(metric.value)) for metric in client.get_metric_history(run_id, key)
                )
                for key in LOSS_METRICS
            }
        except MlflowException as exc:
            raise BackendError(f"could not read the losses of local job {job_name} from MLflow: {exc}") from exc

    def get_job(self, job_name: str) -> JobInfo:
        record = self.store.read_job(job_name)
        if record is None:
            raise NotFoundError(f"local job {job_name} does not exist")
        if record["status"] in jobs.ACTIVE and not pid_alive(record.get("pid")):
            jobs.reconcile_jobs(self.store, self._publisher)
            record = self.store.read_job(job_name) or record
        details: dict[str, Any] = {
            "base_model": record["base_model"],
            "parameters": record["parameters"],
            "log": str(self.store.job_dir(job_name) / "job.log"),
        }
        for key in ("progress", "mlflow_run_id", "outputs", "parameters_without_local_effect"):
            if record.get(key):
                details[key] = record[key]
        return JobInfo(
            name=job_name,
            status=record["status"],
            failure_reason=record.get("failure_reason"),
            metrics={k: float(v) for k, v in record.get("metrics", {}).items()},
            tags=dict(record["tags"]),
            details=details,
        )

    def cancel_job(self, job_name: str) -> None:
        record = self.store.read_job(job_name)
        if record is None:
            raise NotFoundError(f"local job {job_name} does not exist")
        if jobs.finish_job(self.store, job_name, "Canceled", failure_reason="canceled"):
            stop_process(record.get("pid"))
            if self._publisher is not None:
                jobs.publish_job_end(self.store, job_name, self._publisher)
            jobs.start_queued_jobs(self.store, self._max_jobs, self._child_env(), self._spawn)

    # registry
    def register_model(self, registration: ModelRegistration) -> RegisteredModel:
        from shared.ml.local import registry

        record = self.store.read_job(registration.job_name)
        if record is None or record["status"] != "Completed":
            raise NotFoundError(f"job {registration.job_name} has no trained_model output to register")
        tags = {
            RUN_TAG: str(record["tags"].get(RUN_TAG, "")),
            **registration.tags,
            "job": registration.job_name,
            "requested_version": registration.version,
            "base_model": record["base_model"]["name"],
        }
        version = registry.register_version(
            self.store,
            name=registration.model_name,
            source=record["outputs"]["trained_model"]["uri"],
            run_id=record["mlflow_run_id"],
            tags=tags,
            description=registration.description,
        )
        if version.created:
            # Azure ML raises ModelRegistered for every registration, this app's own too (its handler ignores
            # those by their run tag); the event is a courtesy here, so a stand-in that is down fails no run.
            self._announce_registration(version, required=False)
        return RegisteredModel(
            name=version.name,
            version=version.version,
            uri=f"models:/{version.name}/{version.version}",
            tags=version.tags,
        )

    def next_model_version(self, name: str) -> str:
        """The version MLflow gives `name` next (it numbers versions itself: 1, 2, ...)."""
        from shared.ml.local import registry

        return registry.next_version(self.store, name)

    def register_model_folder(self, folder: Path, name: str, tags: dict[str, str]) -> RegisteredModel:
        """Register an MLflow model folder from outside this app (no run tag) as the next version of `name`,
        and publish its ModelRegistered event; a `TransientError` if that event could not be published.

        The folder is copied under the state dir first, so the version outlives the folder it came from.
        """
        from shared.ml.local import registry

        if not (folder / "MLmodel").is_file():
            raise InvalidParameterError(
                f"{folder} is not an MLflow model folder (it has no MLmodel file): save the model with "
                "mlflow.transformers.save_model(..., task='text-generation') and give that folder"
            )
        copy = self.store.artifact_root / "registered" / name / uuid.uuid4().hex
        shutil.copytree(folder, copy)
        version = registry.register_version(
            self.store,
            name=name,
            source=str(copy),
            run_id=None,
            tags=dict(tags),
            description=f"registered from {folder} with `autopilot register-model`",
        )
        self._announce_registration(version, required=True)
        return RegisteredModel(version.name, version.version, f"models:/{version.name}/{version.version}", version.tags)

    def _announce_registration(self, version: ModelVersionRecord, *, required: bool) -> None:
        from shared.stages.redeploy import announce_registration

        announce_registration(
            self._publisher,
            version.name,
            version.version,
            version.tags,
            jobs.LOCAL_TOPIC,
            utc_iso(self._clock()),
            required=required,
        )

    # endpoints
    def ensure_endpoint(self, name: str, tags: dict[str, str]) -> EndpointInfo:
        with self.store.lock():
            if self.store.read_endpoint(name) is None:
                self.store.create_keys(name)
                self.store.write_endpoint(
                    {
                        "name": name,
                        "tags": dict(tags),
                        "created_at": utc_iso(self._clock()),
                        "port": _free_port(),
                        "traffic": {},
                        "mirror_traffic": {},
                        "deployments": {},
                    }
                )
        self._ensure_endpoint_server(name)
        info = self.get_endpoint(name)
        assert info is not None
        return info

    def _ensure_endpoint_server(self, name: str) -> None:
        with self.store.lock():
            record = self._endpoint(name)
            if pid_alive(record.get("pid")):
                return
            if _answers(record["port"]):
                log.warning("port %s of endpoint %s is taken: its scoring URI moves", record["port"], name)
                record["port"] = _free_port()
            directory = self.store.endpoint_dir(name)
            record["pid"] = self._spawn(
                SERVING_MODULE,
                ["endpoint", "--state-dir", str(self._state_dir), "--endpoint", name, "--port", str(record["port"])],
                directory / "endpoint.log",
                self._child_env(),
            )
            self.store.write_endpoint(record)

    def _endpoint(self, name: str) -> dict[str, Any]:
        record = self.store.read_endpoint(name)
        if record is None:
            raise NotFoundError(f"local endpoint {name} does not exist")
        return record  # type: ignore[no-any-return]

    def get_endpoint(self, name: str) -> EndpointInfo | None:
        record = self.store.read_endpoint(name)
        if record is None:
            return None
        last = (read_json(self.store.requests_path(name)) or {}).get("_last_request_at")
        return EndpointInfo(
            name=name,
            scoring_uri=f"http://127.0.0.1:{record['port']}{SCORE_PATH}",
            traffic={d: int(record["traffic"].get(d, 0)) for d in record["deployments"]},
            deployments=tuple(sorted(record["deployments"])),
            tags=dict(record["tags"]),
            created_at=parse_iso(record["created_at"]),
            last_request_at=parse_iso(last) if last else None,
        )

    def begin_deployment(self, spec: DeploymentSpec) -> DeploymentInfo:
        from shared.ml.local import registry

        registry.model_version(self.store, spec.model_name, spec.model_version)
        with self.store.lock():
            record = self._endpoint(spec.endpoint_name)
            if spec.deployment_name not in record["deployments"]:
                record["deployments"][spec.deployment_name] = {
                    "model_name": spec.model_name,
                    "model_version": spec.model_version,
                    "created_at": utc_iso(self._clock()),
                    "tags": dict(spec.tags),
                    "port": _free_port(),
                }
                record["traffic"].setdefault(spec.deployment_name, 0)
                self.store.write_endpoint(record)
        self._ensure_deployment_process(spec.endpoint_name, spec.deployment_name)
        info = self.get_deployment(spec.endpoint_name, spec.deployment_name)
        assert info is not None
        return info

    def _ensure_deployment_process(self, endpoint_name: str, deployment_name: str) -> None:
        with self.store.lock():
            record = self._endpoint(endpoint_name)
            deployment = record["deployments"][deployment_name]
            if pid_alive(deployment.get("pid")):
                return
            if _answers(deployment["port"]):
                deployment["port"] = _free_port()
            log_path = self.store.deployment_dir(endpoint_name, deployment_name) / "deployment.log"
            args = ["deployment", "--state-dir", str(self._state_dir), "--endpoint", endpoint_name]
            args += ["--deployment", deployment_name, "--port", str(deployment["port"])]
            deployment["pid"] = self._spawn(SERVING_MODULE, args, log_path, self._child_env())
            self.store.write_endpoint(record)

    def get_deployment(self, endpoint_name: str, deployment_name: str, operation: str = "") -> DeploymentInfo | None:
        record = self.store.read_endpoint(endpoint_name)
        deployment = None if record is None else record["deployments"].get(deployment_name)
        if deployment is None:
            return None
        state, error = "Creating", None
        if _answers(deployment["port"]):
            state = "Succeeded"
        elif not pid_alive(deployment.get("pid")):
            log_path = self.store.deployment_dir(endpoint_name, deployment_name) / "deployment.log"
            state, error = "Failed", f"the serving process exited; last lines of {log_path}:\n{log_tail(log_path)}"
        return DeploymentInfo(
            endpoint_name,
            deployment_name,
            deployment["model_name"],
            deployment["model_version"],
            state,
            error,
            tags=dict(deployment.get("tags", {})),
        )

    def delete_deployment(self, endpoint_name: str, deployment_name: str) -> None:
        with self.store.lock():
            record = self._endpoint(endpoint_name)
            if record["traffic"].get(deployment_name):
                raise BackendError(
                    f"deployment {deployment_name} still takes traffic on {endpoint_name}; move it first"
                )
            deployment = record["deployments"].pop(deployment_name, None)
            record["traffic"].pop(deployment_name, None)
            self.store.write_endpoint(record)
        if deployment is not None:
            stop_process(deployment.get("pid"))
            shutil.rmtree(self.store.deployment_dir(endpoint_name, deployment_name), ignore_errors=True)
            log.info("deleted deployment %s/%s", endpoint_name, deployment_name)

    def set_traffic(
        self, endpoint_name: str, traffic: dict[str, int], mirror_traffic: dict[str, int] | None = None
    ) -> None:
        with self.store.lock():
            record = self._endpoint(endpoint_name)
            unknown = set(traffic) - set(record["deployments"])
            if unknown:
                raise BackendError(f"traffic names unknown deployments {sorted(unknown)} on {endpoint_name}")
            if sum(traffic.values()) not in (0, 100):
                raise BackendError(f"traffic on {endpoint_name} must add up to 100, got {traffic}")
            record["traffic"] = {name: int(traffic.get(name, 0)) for name in record["deployments"]}
            record["mirror_traffic"] = dict(mirror_traffic or {})
            self.store.write_endpoint(record)

    def endpoint_key(self, endpoint_name: str) -> str:
        """The endpoint's primary key (read from its owner-only file)."""
        self._endpoint(endpoint_name)
        return self.store.endpoint_keys(endpoint_name)["primary"]

    def score(self, endpoint_name: str, request: dict[str, Any], deployment_name: str | None = None) -> Any:
        info = self.get_endpoint(endpoint_name)
        if info is None:
            raise NotFoundError(f"local endpoint {endpoint_name} does not exist")
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.endpoint_key(endpoint_name)}"}
        if deployment_name:
            headers[DEPLOYMENT_HEADER] = deployment_name
        call = urllib.request.Request(info.scoring_uri, data=json.dumps(request).encode(), headers=headers)
        try:
            with urllib.request.urlopen(call, timeout=SCORE_TIMEOUT_SECONDS) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:500]
            message = f"scoring {endpoint_name}/{deployment_name or '(by traffic)'} answered {error.code}: {detail}"
            if error.code in (401, 403):
                raise AuthorizationError(message) from None
            if error.code == 404:
                raise NotFoundError(message) from None
            if error.code in TRANSIENT_HTTP:
                raise TransientError(message) from None
            raise BackendError(message) from None
        except OSError as exc:
            raise TransientError(f"endpoint {endpoint_name} at {info.scoring_uri} is not answering: {exc}") from exc

    def list_endpoints(self) -> list[EndpointInfo]:
        return [info for name in self.store.endpoint_names() if (info := self.get_endpoint(name))]

    def delete_endpoint(self, name: str) -> None:
        with self.store.lock():
            record = self.store.read_endpoint(name)
            if record is None:
                return
            (self.store.endpoint_dir(name) / "endpoint.json").unlink()
        for deployment in record["deployments"].values():
            stop_process(deployment.get("pid"))
        stop_process(record.get("pid"))
        shutil.rmtree(self.store.endpoint_dir(name), ignore_errors=True)
        log.info("deleted endpoint %s", name)

    def requests_per_minute(self, endpoint_name: str, since: datetime) -> dict[str, list[int]]:
        record = self._endpoint(endpoint_name)
        seen = read_json(self.store.requests_path(endpoint_name)) or {}
        start = since.replace(second=0, microsecond=0)
        minutes = int((self._clock() - start).total_seconds() // 60) + 1
        return {
            deployment: [
                int(seen.get(deployment, {}).get(utc_iso(start + timedelta(minutes=i)), 0)) for i in range(minutes)
            ]
            for deployment in record["deployments"]
        }

    def deployment_health(self, endpoint_name: str, deployment_name: str, since: datetime) -> DeploymentHealth:
        """From the endpoint's request log; requests that named their deployment (smoke tests) do not count."""
        self._endpoint(endpoint_name)
        path = request_log_path(self.store, endpoint_name)
        answered = []
        with self.store.lock():
            lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line cut short by a crash mid-write
            if entry["deployment"] == deployment_name and not entry["pinned"] and parse_iso(entry["at"]) >= since:
                answered.append((int(entry["status"]), float(entry["latency_ms"])))
        return DeploymentHealth.of_requests(answered)

    # the local stack
    def restore_serving(self) -> list[str]:
        """Start the processes of every endpoint and deployment that exists but does not run; returns what started."""
        started = []
        for name in self.store.endpoint_names():
            record = self._endpoint(name)
            if not pid_alive(record.get("pid")):
                self._ensure_endpoint_server(name)
                started.append(name)
            for deployment_name, deployment in record["deployments"].items():
                if not pid_alive(deployment.get("pid")):
                    self._ensure_deployment_process(name, deployment_name)
                    started.append(f"{name}/{deployment_name}")
        return started


def stop_serving(store: LocalStore) -> list[str]:
    """Stop every endpoint and deployment process (the records stay: `restore_serving` brings them back)."""
    stopped = []
    for name in store.endpoint_names():
        record = store.read_endpoint(name) or {"deployments": {}}
        for deployment_name, deployment in record["deployments"].items():
            if stop_process(deployment.get("pid")):
                stopped.append(f"{name}/{deployment_name}")
        if stop_process(record.get("pid")):
            stopped.append(name)
    return stopped
