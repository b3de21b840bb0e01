"""A simulated ML backend: the whole port, with state, and no training or serving behind it.

It stands in for Azure ML in unit tests and in a demo of the event chain on a machine that
cannot train. Jobs finish after `job_seconds` and publish the same events Azure ML would;
deployments become ready after `deploy_seconds`; scoring answers with a canned text that names
the model. State can live in a JSON file so that a restarted runner, and tests, can read it.

A job parameter `simulate_failure` makes a run fail on purpose at "training", "deployment",
"scoring" (the answer comes back empty) or "quality" (the answer says nothing of the question, so
the smoke test finds the model worse than the live one), so failure paths can be shown and tested.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from shared.errors import BackendError, InvalidParameterError, NotFoundError
from shared.events import ml_job_event_payload
from shared.ml.port import (
    DeploymentInfo,
    DeploymentSpec,
    EndpointInfo,
    FinetuneJobSpec,
    JobInfo,
    MLEventPublisher,
    ModelRegistration,
    RegisteredModel,
)
from shared.ml.scoring import chat_messages
from shared.timestamps import iso, parse_iso

log = logging.getLogger(__name__)

SIMULATED_TOPIC = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/local"
    "/providers/Microsoft.MachineLearningServices/workspaces/simulated"
)
FAILURE_POINTS = ("training", "deployment", "scoring", "quality")


class SimulatedMLBackend:
    """`MLBackend` kept in plain dicts (optionally mirrored to a JSON file)."""

    name = "simulated"
    simulated = True
    endpoint_scope = ""

    def __init__(
        self,
        *,
        job_seconds: float | None = 3.0,
        deploy_seconds: float = 1.0,
        state_path: Path | None = None,
        publisher: MLEventPublisher | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        """`job_seconds=None` leaves jobs running until `finish_job` is called (for tests)."""
        self._job_seconds = job_seconds
        self._deploy_seconds = deploy_seconds
        self._state_path = state_path
        self._publisher = publisher
        self._clock = clock
        self._lock = threading.RLock()
        self.state: dict[str, Any] = {"jobs": {}, "models": {}, "endpoints": {}}
        if state_path is not None and state_path.exists():
            self.state = json.loads(state_path.read_text())
        for job in self.state["jobs"].values():
            if job["status"] not in ("Completed", "Failed", "Canceled"):
                self._schedule_finish(job["name"])

    # jobs
    def submit_finetune_job(self, spec: FinetuneJobSpec) -> JobInfo:
        failure = spec.parameters.get("simulate_failure")
        if failure is not None and failure not in FAILURE_POINTS:
            raise InvalidParameterError(f"simulate_failure={failure!r}: use one of {', '.join(FAILURE_POINTS)}")
        with self._lock:
            if spec.job_name not in self.state["jobs"]:
                self.state["jobs"][spec.job_name] = {
                    "name": spec.job_name,
                    "status": "Running",
                    "submitted_at": iso(self._clock()),
                    "experiment": f"chat_completion_{spec.base_model}",
                    "tags": dict(spec.tags),
                    "parameters": dict(spec.parameters),
                    "train_file": spec.train_file,
                    "failure": failure,
                }
                self._save()
                self._schedule_finish(spec.job_name)
            return self.get_job(spec.job_name)

    def _schedule_finish(self, job_name: str) -> None:
        if self._job_seconds is None:
            return
        submitted = parse_iso(self.state["jobs"][job_name]["submitted_at"])
        delay = max(0.0, (submitted + timedelta(seconds=self._job_seconds) - self._clock()).total_seconds())
        timer = threading.Timer(delay, self._finish_on_schedule, args=(job_name,))
        timer.daemon = True
        timer.start()

    def _finish_on_schedule(self, job_name: str) -> None:
        job = self.state["jobs"][job_name]
        try:
            self.finish_job(job_name, "Failed" if job["failure"] == "training" else "Completed")
        except Exception:
            log.exception("simulated job %s could not finish", job_name)

    def finish_job(self, job_name: str, status: str = "Completed") -> None:
        """End a job and publish its events, as Azure ML would."""
        with self._lock:
            job = self.state["jobs"][job_name]
            job["status"] = status
            job["finished_at"] = iso(self._clock())
            if status == "Completed":
                job["metrics"] = {"train_loss": 1.234, "eval_loss": 1.456}
            else:
                job["failure_reason"] = "simulated training failure (simulate_failure=training)"
            self._save()
        if self._publisher is not None:
            self._publisher.publish(
                ml_job_event_payload(
                    job_name=job_name,
                    experiment_name=job["experiment"],
                    status=status,
                    tags=job["tags"],
                    topic=SIMULATED_TOPIC,
                    event_time=job["finished_at"],
                    event_id=str(uuid.uuid4()),
                )
            )

    def get_job(self, job_name: str) -> JobInfo:
        with self._lock:
            job = self.state["jobs"].get(job_name)
            if job is None:
                raise NotFoundError(f"simulated job {job_name} does not exist")
            return JobInfo(
                name=job_name,
                status=job["status"],
                failure_reason=job.get("failure_reason"),
                metrics=dict(job.get("metrics", {})),
                tags=dict(job["tags"]),
            )

    def cancel_job(self, job_name: str) -> None:
        with self._lock:
            if self.get_job(job_name).finished:
                return
        self.finish_job(job_name, "Canceled")

    # registry
    def register_model(self, registration: ModelRegistration) -> RegisteredModel:
        with self._lock:
            job = self.state["jobs"].get(registration.job_name)
            if job is None or job["status"] != "Completed":
                raise NotFoundError(f"job {registration.job_name} has no trained_model output to register")
            versions = self.state["models"].setdefault(registration.model_name, {})
            if registration.version not in versions:
                versions[registration.version] = {
                    "job": registration.job_name,
                    "tags": dict(registration.tags),
                    "description": registration.description,
                    "failure": job["failure"],
                }
                self._save()
            record = versions[registration.version]
            return RegisteredModel(
                name=registration.model_name,
                version=registration.version,
                uri=f"simulated://models/{registration.model_name}/{registration.version}",
                tags=dict(record["tags"]),
            )

    # endpoints
    def ensure_endpoint(self, name: str, tags: dict[str, str]) -> EndpointInfo:
        with self._lock:
            if name not in self.state["endpoints"]:
                self.state["endpoints"][name] = {
                    "tags": dict(tags),
                    "traffic": {},
                    "mirror_traffic": {},
                    "deployments": {},
                    "created_at": iso(self._clock()),
                    "requests": {},
                }
                self._save()
            info = self.get_endpoint(name)
            assert info is not None
            return info

    def get_endpoint(self, name: str) -> EndpointInfo | None:
        with self._lock:
            endpoint = self.state["endpoints"].get(name)
            if endpoint is None:
                return None
            last = max((m for per in endpoint["requests"].values() for m in per), default=None)
            return EndpointInfo(
                name=name,
                scoring_uri=f"simulated://endpoints/{name}/score",
                traffic=dict(endpoint["traffic"]),
                deployments=tuple(sorted(endpoint["deployments"])),
                tags=dict(endpoint["tags"]),
                created_at=parse_iso(endpoint["created_at"]),
                last_request_at=parse_iso(last) if last else None,
            )

    def _endpoint(self, name: str) -> dict[str, Any]:
        endpoint = self.state["endpoints"].get(name)
        if endpoint is None:
            raise NotFoundError(f"simulated endpoint {name} does not exist")
        return endpoint  # type: ignore[no-any-return]

    def begin_deployment(self, spec: DeploymentSpec) -> DeploymentInfo:
        with self._lock:
            endpoint = self._endpoint(spec.endpoint_name)
            model = self.state["models"].get(spec.model_name, {}).get(spec.model_version)
            if model is None:
                raise NotFoundError(f"model {spec.model_name}:{spec.model_version} is not registered")
            if spec.deployment_name not in endpoint["deployments"]:
                endpoint["deployments"][spec.deployment_name] = {
                    "model_name": spec.model_name,
                    "model_version": spec.model_version,
                    "created_at": iso(self._clock()),
                    "failure": model["failure"],
                    "tags": dict(spec.tags),
                }
                endpoint["traffic"].setdefault(spec.deployment_name, 0)
                self._save()
            info = self.get_deployment(spec.endpoint_name, spec.deployment_name)
            assert info is not None
            return info

    def get_deployment(self, endpoint_name: str, deployment_name: str, operation: str = "") -> DeploymentInfo | None:
        with self._lock:
            endpoint = self.state["endpoints"].get(endpoint_name)
            deployment = None if endpoint is None else endpoint["deployments"].get(deployment_name)
            if deployment is None:
                return None
            ready_at = parse_iso(deployment["created_at"]) + timedelta(seconds=self._deploy_seconds)
            state, error = "Creating", None
            if self._clock() >= ready_at:
                state = "Failed" if deployment["failure"] == "deployment" else "Succeeded"
                if state == "Failed":
                    error = "simulated deployment failure (simulate_failure=deployment): container exited with code 1"
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
        with self._lock:
            endpoint = self._endpoint(endpoint_name)
            if endpoint["traffic"].get(deployment_name):
                raise BackendError(
                    f"deployment {deployment_name} still takes traffic on {endpoint_name}; move it first"
                )
            endpoint["deployments"].pop(deployment_name, None)
            endpoint["traffic"].pop(deployment_name, None)
            self._save()

    def set_traffic(
        self, endpoint_name: str, traffic: dict[str, int], mirror_traffic: dict[str, int] | None = None
    ) -> None:
        with self._lock:
            endpoint = self._endpoint(endpoint_name)
            unknown = set(traffic) - set(endpoint["deployments"])
            if unknown:
                raise BackendError(f"traffic names unknown deployments {sorted(unknown)} on {endpoint_name}")
            if sum(traffic.values()) not in (0, 100):
                raise BackendError(f"traffic on {endpoint_name} must add up to 100, got {traffic}")
            endpoint["traffic"] = {name: traffic.get(name, 0) for name in endpoint["deployments"]}
            endpoint["mirror_traffic"] = dict(mirror_traffic or {})
            self._save()

    def score(self, endpoint_name: str, request: dict[str, Any], deployment_name: str | None = None) -> Any:
        messages = chat_messages(request)
        with self._lock:
            endpoint = self._endpoint(endpoint_name)
            if deployment_name is None:
                weighted = [(name, weight) for name, weight in endpoint["traffic"].items() if weight > 0]
                if not weighted:
                    raise BackendError(f"endpoint {endpoint_name} has no deployment taking traffic")
                deployment_name = random.choices([n for n, _ in weighted], [w for _, w in weighted])[0]
            info = self.get_deployment(endpoint_name, deployment_name)
            if info is None or not info.ready:
                raise NotFoundError(f"deployment {deployment_name} of {endpoint_name} is not ready")
            minute = iso(self._clock().replace(second=0, microsecond=0))
            per_minute = endpoint["requests"].setdefault(deployment_name, {})
            per_minute[minute] = per_minute.get(minute, 0) + 1
            self._save()
            failure = endpoint["deployments"][deployment_name]["failure"]
            if failure == "scoring":
                return {"output": ""}
            if failure == "quality":
                return {"output": f"[simulated {info.model_name}:{info.model_version}] Sorry, no idea."}
        question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        return {"output": f"[simulated {info.model_name}:{info.model_version}] You asked: {question[:160]}"}

    def list_endpoints(self) -> list[EndpointInfo]:
        with self._lock:
            return [info for name in sorted(self.state["endpoints"]) if (info := self.get_endpoint(name))]

    def delete_endpoint(self, name: str) -> None:
        with self._lock:
            self.state["endpoints"].pop(name, None)
            self._save()

    def requests_per_minute(self, endpoint_name: str, since: datetime) -> dict[str, list[int]]:
        with self._lock:
            endpoint = self._endpoint(endpoint_name)
            start = since.replace(second=0, microsecond=0)
            minutes = int((self._clock() - start).total_seconds() // 60) + 1
            counts: dict[str, list[int]] = {}
            for deployment in endpoint["deployments"]:
                seen = endpoint["requests"].get(deployment, {})
                counts[deployment] = [seen.get(iso(start + timedelta(minutes=i)), 0) for i in range(minutes)]
            return counts

    def _save(self) -> None:
        if self._state_path is None:
            return
        self._state_path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self._state_path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(self.state, indent=1, sort_keys=True))
        temporary.replace(self._state_path)
