"""A simulated ML backend: the whole port, with state, and no training or serving behind it.

It stands in for Azure ML in unit tests and in a demo of the event chain on a machine that
cannot train. Jobs finish after `job_seconds` and publish the same events Azure ML would;
deployments become ready after `deploy_seconds`; scoring answers with a canned text that names
the model. State can live in a JSON file so that a restarted runner, the CLI and tests share it (under a file
lock: see `SharedStateLock`); `register_model_folder` registers a model from outside the app, and every new
registration publishes ModelRegistered, as Azure ML does.

A job parameter `simulate_failure` makes a run fail on purpose at "training", "deployment",
"scoring" (the answer comes back empty) or "quality" (the answer says nothing of the question, so
the smoke test finds the model worse than the live one), so failure paths can be shown and tested;
"event" lets the job complete but never publishes its event, as when Event Grid dead-letters it;
"canary" passes the smoke test (requests that name the deployment) but answers every other live
request (routed or mirrored to it) with a 5xx, so the progressive-traffic gate has something to catch.
Every live request (routed or mirrored, not one naming its deployment) is logged with its status for
`deployment_health`.

`TransientFaults` makes a share of the port's calls fail with a `TransientError`, half of them before
the call does anything (throttling, a 5xx) and half after it took effect (the answer was lost), so that
retries and idempotence can be tried under the faults Azure ML's clients meet.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import random
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Concatenate, ParamSpec, TypeVar

from shared.errors import BackendError, ConfigurationError, InvalidParameterError, NotFoundError, TransientError
from shared.events import ml_job_event_payload
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
from shared.ml.scoring import chat_messages
from shared.timestamps import iso, parse_iso

log = logging.getLogger(__name__)

SIMULATED_TOPIC = (
    "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/local"
    "/providers/Microsoft.MachineLearningServices/workspaces/simulated"
)
FAILURE_POINTS = ("training", "deployment", "scoring", "quality", "event", "canary")
# Every how many-th live request a `canary` model answers with a 5xx, and how long any simulated request takes.
CANARY_FAILURE_EVERY = 2
SIMULATED_LATENCY_MS = 20.0
LIVE_LOG_LIMIT = 10_000
BEFORE_EFFECT = "before"
AFTER_EFFECT = "after"

P = ParamSpec("P")
R = TypeVar("R")


class TransientFaults:
    """Decides which backend calls fail: a share `rate` of them, half before their effect and half after it.

    `seed` makes the sequence of decisions repeatable. `injected` counts the faults by (operation, when).
    """

    def __init__(self, rate: float = 0.0, seed: int | None = None) -> None:
        if not 0 <= rate <= 1:
            raise ConfigurationError(f"the simulated fault rate must lie between 0 and 1, not {rate}.")
        self.rate = rate
        self.injected: Counter[tuple[str, str]] = Counter()
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        # Calls the backend makes to itself (submit reads the job back) are part of the outer call: one
        # decision per call from outside, as a client's request meets one fault or none.
        self._nesting = threading.local()

    def draw(self, operation: str) -> str | None:
        """`BEFORE_EFFECT`, `AFTER_EFFECT`, or None (no fault) for one call of `operation`."""
        if self.rate == 0:
            return None
        with self._lock:
            if self._random.random() >= self.rate:
                return None
            when = BEFORE_EFFECT if self._random.random() < 0.5 else AFTER_EFFECT
            self.injected[(operation, when)] += 1
        return when

    def call(self, operation: str, effect: Callable[[], R]) -> R:
        """Run `effect`, failing before or after it as `draw` decides."""
        depth = getattr(self._nesting, "depth", 0)
        when = self.draw(operation) if depth == 0 else None
        if when == BEFORE_EFFECT:
            log.warning("simulated fault: %s refused before its effect", operation)
            raise TransientError(
                f"simulated fault: {operation} was refused with 503 Service Unavailable before it did anything; "
                "try again"
            )
        self._nesting.depth = depth + 1
        try:
            result = effect()
        finally:
            self._nesting.depth = depth
        if when == AFTER_EFFECT:
            log.warning("simulated fault: %s took effect but its answer was lost", operation)
            raise TransientError(
                f"simulated fault: {operation} took effect but its answer was lost (connection reset); "
                "try again, and find by name what it made"
            )
        return result


class SharedStateLock:
    """The simulated backend's lock: this process's threads, and with a state file every process using it.

    The function host, the CLI (`autopilot register-model`, `autopilot chat`) and tests share one state file,
    so the outermost holder reads the file again when another process wrote it since, and writes go out
    before the lock is let go. Reentrant, as the backend's calls call each other.
    """

    def __init__(self, backend: SimulatedMLBackend) -> None:
        self._backend = backend
        self._threads = threading.RLock()
        self._depth = 0
        self._file: IO[str] | None = None

    def __enter__(self) -> None:
        self._threads.acquire()
        self._depth += 1
        if self._depth > 1 or self._backend.state_path is None:
            return
        try:
            self._backend.state_path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self._backend.state_path.with_suffix(".lock").open("a")
            fcntl.flock(self._file, fcntl.LOCK_EX)
            self._backend.reload_if_changed()
        except BaseException:
            self._let_go()
            raise

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._let_go()

    def _let_go(self) -> None:
        if self._depth == 1 and self._file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
        self._depth -= 1
        self._threads.release()


def _faulty(
    method: Callable[Concatenate[SimulatedMLBackend, P], R],
) -> Callable[Concatenate[SimulatedMLBackend, P], R]:
    """A port call of the simulated backend that `TransientFaults` may make fail."""

    @functools.wraps(method)
    def call(self: SimulatedMLBackend, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.faults.call(method.__name__, lambda: method(self, *args, **kwargs))

    return call


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
        faults: TransientFaults | None = None,
    ) -> None:
        """`job_seconds=None` leaves jobs running until `finish_job` is called (for tests); `faults`: none by
        default."""
        self._job_seconds = job_seconds
        self._deploy_seconds = deploy_seconds
        self.state_path = state_path
        self._publisher = publisher
        self._clock = clock
        self.faults = faults or TransientFaults()
        self.state: dict[str, Any] = {"jobs": {}, "models": {}, "endpoints": {}}
        self._seen: tuple[int, int, int] | None = None
        self._lock = SharedStateLock(self)
        with self._lock:
            jobs = list(self.state["jobs"].values())
        for job in jobs:
            if job["status"] not in ("Completed", "Failed", "Canceled"):
                self._schedule_finish(job["name"])

    # jobs
    @_faulty
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
        if job["failure"] == "event" and status == "Completed":
            log.warning("simulated job %s completed; its event is lost on purpose (simulate_failure=event)", job_name)
            return
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

    @_faulty
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

    @_faulty
    def cancel_job(self, job_name: str) -> None:
        with self._lock:
            if self.get_job(job_name).finished:
                return
        self.finish_job(job_name, "Canceled")

    # registry
    @_faulty
    def register_model(self, registration: ModelRegistration) -> RegisteredModel:
        created = False
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
                created = True
            record = versions[registration.version]
        if created:
            # Azure ML raises ModelRegistered for every registration, this app's own too (its handler ignores
            # those by their run tag); here a lost event fails no run.
            self._announce_registration(registration.model_name, registration.version, record["tags"], required=False)
        # As the Azure ML adapter does: a version another run registered is that run's, not this one's.
        owner, asking = record["tags"].get(RUN_TAG), registration.tags.get(RUN_TAG)
        if owner and asking and owner != asking:
            raise BackendError(
                f"model {registration.model_name}:{registration.version} already belongs to run {owner}, not {asking}",
                category="conflict",
            )
        return RegisteredModel(
            name=registration.model_name,
            version=registration.version,
            uri=f"simulated://models/{registration.model_name}/{registration.version}",
            tags=dict(record["tags"]),
        )

    def next_model_version(self, name: str) -> str:
        """The version `register_model_folder` gives `name` next: one above its highest numbered version."""
        with self._lock:
            versions = self.state["models"].get(name, {})
            return str(max((int(v) for v in versions if v.isdigit()), default=0) + 1)

    def register_model_folder(self, folder: Path, name: str, tags: dict[str, str]) -> RegisteredModel:
        """Register `folder` from outside this app (no run tag) as the next version of `name` (1, 2, ...), and
        publish its ModelRegistered event; a `TransientError` if that event could not be published.

        Nothing is read from the folder: a simulated deployment of the version answers with canned text.
        """
        if not folder.exists():
            raise NotFoundError(f"{folder} does not exist")
        with self._lock:
            version = self.next_model_version(name)
            self.state["models"].setdefault(name, {})[version] = {
                "job": "",
                "source": str(folder.resolve()),
                "tags": dict(tags),
                "description": f"registered from {folder} with `autopilot register-model`",
                "failure": None,
            }
            self._save()
        self._announce_registration(name, version, tags, required=True)
        return RegisteredModel(name, version, f"simulated://models/{name}/{version}", dict(tags))

    def _announce_registration(self, name: str, version: str, tags: dict[str, str], *, required: bool) -> None:
        from shared.stages.redeploy import announce_registration

        announce_registration(
            self._publisher, name, version, tags, SIMULATED_TOPIC, iso(self._clock()), required=required
        )

    # endpoints
    @_faulty
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

    @_faulty
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

    @_faulty
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

    @_faulty
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

    @_faulty
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

    @_faulty
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

    @_faulty
    def score(self, endpoint_name: str, request: dict[str, Any], deployment_name: str | None = None) -> Any:
        messages = chat_messages(request)
        with self._lock:
            endpoint = self._endpoint(endpoint_name)
            # Requests that name a deployment (smoke tests) are neither mirrored nor failed by `canary`, as on
            # Azure, where a call with the deployment header is not mirrored (azure-facts.md, safe rollout).
            routed = deployment_name is None
            if deployment_name is None:
                weighted = [(name, weight) for name, weight in endpoint["traffic"].items() if weight > 0]
                if not weighted:
                    raise BackendError(f"endpoint {endpoint_name} has no deployment taking traffic")
                deployment_name = random.choices([n for n, _ in weighted], [w for _, w in weighted])[0]
                mirrored = self._mirror_target(endpoint)
                if mirrored and mirrored != deployment_name:
                    self._record_request(endpoint, mirrored, live=True)
            info = self.get_deployment(endpoint_name, deployment_name)
            if info is None or not info.ready:
                raise NotFoundError(f"deployment {deployment_name} of {endpoint_name} is not ready")
            failed = self._record_request(endpoint, deployment_name, live=routed)
            self._save()
            if failed:
                raise TransientError(
                    f"simulated 503 from {endpoint_name}/{deployment_name} (simulate_failure=canary): "
                    "upstream request failed"
                )
            failure = endpoint["deployments"][deployment_name]["failure"]
            if failure == "scoring":
                return {"output": ""}
            if failure == "quality":
                return {"output": f"[simulated {info.model_name}:{info.model_version}] Sorry, no idea."}
        question = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        return {"output": f"[simulated {info.model_name}:{info.model_version}] You asked: {question[:160]}"}

    def _mirror_target(self, endpoint: dict[str, Any]) -> str:
        """The deployment this routed request is mirrored to ("" when none): every request whose running
        count crosses the next multiple of 100 / percent, so a share of exactly `percent` is mirrored."""
        mirror = {name: share for name, share in endpoint.get("mirror_traffic", {}).items() if share > 0}
        if not mirror:
            return ""
        name, percent = next(iter(mirror.items()))
        endpoint["routed_requests"] = count = endpoint.get("routed_requests", 0) + 1
        return name if count * percent // 100 > (count - 1) * percent // 100 else ""

    def _record_request(self, endpoint: dict[str, Any], deployment_name: str, *, live: bool) -> bool:
        """Count one request of the deployment in this minute and log a live one with its status; whether it
        fails (a `canary` model's live 5xx)."""
        minute = iso(self._clock().replace(second=0, microsecond=0))
        per_minute = endpoint["requests"].setdefault(deployment_name, {})
        per_minute[minute] = per_minute.get(minute, 0) + 1
        if not live:
            return False
        deployment = endpoint["deployments"].get(deployment_name, {})
        failed = False
        if deployment.get("failure") == "canary":
            deployment["live_requests"] = deployment.get("live_requests", 0) + 1
            failed = deployment["live_requests"] % CANARY_FAILURE_EVERY == 0
        logged = endpoint.setdefault("live_log", {}).setdefault(deployment_name, [])
        logged.append([iso(self._clock()), 503 if failed else 200])
        del logged[:-LIVE_LOG_LIMIT]  # the state file stays small on a long demo; a bake needs far fewer
        return failed

    @_faulty
    def deployment_health(self, endpoint_name: str, deployment_name: str, since: datetime) -> DeploymentHealth:
        with self._lock:
            endpoint = self._endpoint(endpoint_name)
            answered = [
                (status, SIMULATED_LATENCY_MS)
                for at, status in endpoint.get("live_log", {}).get(deployment_name, [])
                if parse_iso(at) >= since
            ]
            return DeploymentHealth.of_requests(answered)

    @_faulty
    def list_endpoints(self) -> list[EndpointInfo]:
        with self._lock:
            return [info for name in sorted(self.state["endpoints"]) if (info := self.get_endpoint(name))]

    @_faulty
    def delete_endpoint(self, name: str) -> None:
        with self._lock:
            self.state["endpoints"].pop(name, None)
            self._save()

    @_faulty
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

    def reload_if_changed(self) -> None:
        """Read the state file again if another process wrote it since this one last read or wrote it."""
        if self.state_path is None:
            return
        seen = _signature(self.state_path)
        if seen is not None and seen != self._seen:
            self.state = json.loads(self.state_path.read_text())
        self._seen = seen

    def _save(self) -> None:
        if self.state_path is None:
            return
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.state_path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(self.state, indent=1, sort_keys=True))
        temporary.replace(self.state_path)
        self._seen = _signature(self.state_path)


def _signature(path: Path) -> tuple[int, int, int] | None:
    """What tells one write of the file from another (None: no file yet)."""
    try:
        found = path.stat()
    except FileNotFoundError:
        return None
    return (found.st_ino, found.st_mtime_ns, found.st_size)
