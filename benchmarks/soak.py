"""Soak test: the event chain on the local stack under faults, bad input, lost events, duplicates and crashes.

    .venv/bin/python benchmarks/soak.py [--short | --long] [--faults] [--bad-events] [--odd-names]
                                        [--lost-event] [--burst] [--seed N] [--keep]

Each scenario chosen (all of them when none is named) starts a local stack of its own (Azurite, the Event Grid
stand-in, the function runner; free ports, a temporary state folder) with the simulated ML backend and short
timings, drives it, prints one line of figures, each beside its target, and stops the stack. The exit status
is 1 when a scenario misses a target, 2 when the stack cannot start.

  (a) --faults      AUTOPILOT_SIMULATED_FAULT_RATE=0.3: 30 % of backend calls fail transiently, half before their
                    effect and half after it; one run per dataset -> every run succeeds, nothing left behind.
  (b) --bad-events  ten kinds of malformed or misrouted Event Grid deliveries posted to the runner's webhook, as
                    Event Grid posts them -> each answered 2xx (Event Grid neither retries it nor redelivers the
                    good event of its batch) and recorded with a reason (`GET /api/rejected`).
  (c) --odd-names   BlobCreated events for a 600-character folder, a tab, a newline, a `#` and a 1,025-character
                    blob name -> each answered 2xx, rejected with a reason at arrival, no run started.
  (d) --lost-event  a job that completes but whose event is never published (simulate_failure=event) -> the
                    run completes through the reconcile timer.
  (e) --burst       every message and event delivered twice (AUTOPILOT_RUNNER_DUPLICATE_DELIVERIES), the runner
                    killed (SIGKILL) right after each kind of backend effect and at random moments, a burst of
                    folders plus datasets uploaded as two versions at once -> 0 lost, 0 duplicated, 0 failed or
                    rolled back, 0 left behind, the newest version live (the older one ends `superseded`).

Sizes: `--short` (CI: a 4 runs; e 10 folders + 2 pairs, up to 7 kills, one after each kind of effect) or
`--long` (the issue's: a 20 runs; e 150 folders + 10 pairs, 8 more kills at random moments, 15 in all). A killed
runner's messages come back after host.json's functionTimeout, which the burst shortens to 30 s with the app
setting `AzureFunctionsJobHost__functionTimeout`, as Azure allows.

Figures: `runs` expected, `completed` (succeeded; in the burst also `superseded` by newer data),
`failed` (failed, rolled back, rejected or canceled: ended without cause), `lost` (not ended in time),
`duplicated` (jobs, model versions or deployments beyond one per run, and runs nobody asked for),
`left behind` (a deployment of an ended run that is not live), `rejected` (inputs recorded with a reason),
`newest live` (datasets whose endpoint serves their newest run).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autopilot.local.processes import free_port  # noqa: E402
from autopilot.local.stack import LocalStack, StackPorts  # noqa: E402
from shared.datasets import content_hash, make_run_id  # noqa: E402
from shared.ledger import Run, RunStatus, TableRunLedger  # noqa: E402
from shared.ml.port import RUN_TAG  # noqa: E402
from shared.storage import AzureBlobStore  # noqa: E402

SAMPLE = ROOT / "samples" / "ahoy-chat" / "v1"
CONTAINER = "training-data"
STORAGE_TOPIC = "/subscriptions/0/resourceGroups/local/providers/Microsoft.Storage/storageAccounts/devstoreaccount1"
ML_TOPIC = "/subscriptions/0/resourceGroups/local/providers/Microsoft.MachineLearningServices/workspaces/simulated"
BLOB_CREATED = "Microsoft.Storage.BlobCreated"
RUN_STATUS_CHANGED = "Microsoft.MachineLearningServices.RunStatusChanged"
POLL_SECONDS = 2.0
# After the runs end, removals that met a fault are retried by the cleanup timer: wait this long for them.
SETTLE_SECONDS = 90.0
ENDED_WITHOUT_CAUSE = (RunStatus.FAILED, RunStatus.ROLLED_BACK, RunStatus.REJECTED, RunStatus.CANCELED)

# What every scenario's stack runs with: the simulated backend, and timings in seconds instead of minutes.
FAST_SETTINGS = {
    "AUTOPILOT_ML_BACKEND": "simulated",
    "AUTOPILOT_QUIET_PERIOD_SECONDS": "1",
    "AUTOPILOT_SIMULATED_JOB_SECONDS": "1",
    "AUTOPILOT_DEPLOYMENT_POLL_SECONDS": "1",
    "AUTOPILOT_CLEANUP_SCHEDULE": "*/10 * * * * *",
    "AUTOPILOT_RECONCILE_SCHEDULE": "*/5 * * * * *",
    "AUTOPILOT_TRAINING_CHECK_MINUTES": "0.25",
}


@dataclass(frozen=True)
class Sizes:
    fault_runs: int
    burst_folders: int
    burst_pairs: int
    random_kills: int
    # Minutes a scenario may take before the runs still under way count as lost.
    run_minutes: float


SHORT = Sizes(fault_runs=4, burst_folders=10, burst_pairs=2, random_kills=0, run_minutes=15)
LONG = Sizes(fault_runs=20, burst_folders=150, burst_pairs=10, random_kills=8, run_minutes=40)


# ---------------------------------------------------------------------------------------------------------------
# Figures and targets


@dataclass
class Figures:
    """What one scenario measured; None where it does not apply (or could not be read)."""

    runs: int = 0
    completed: int = 0
    failed: int = 0
    lost: int = 0
    duplicated: int = 0
    left_behind: int = 0
    rejected: int | None = None
    answered_2xx: int | None = None
    newest_live: int | None = None
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Target:
    """The figures a scenario must show; a None field is not checked."""

    completed: int | None = None
    failed: int | None = 0
    lost: int | None = 0
    duplicated: int | None = 0
    left_behind: int | None = 0
    rejected: int | None = None
    answered_2xx: int | None = None
    newest_live: int | None = None


FIGURE_NAMES = ("completed", "failed", "lost", "duplicated", "left_behind", "rejected", "answered_2xx", "newest_live")


def compare(figures: Figures, target: Target) -> tuple[str, list[str]]:
    """The line of figures with each target beside it, and the names of the figures that missed."""
    parts, missed = [f"runs {figures.runs}"], []
    for name in FIGURE_NAMES:
        wanted = getattr(target, name)
        value = getattr(figures, name)
        if wanted is None and value is None:
            continue
        shown = "n/a" if value is None else str(value)
        label = name.replace("_", " ")
        if wanted is None:
            parts.append(f"{label} {shown}")
            continue
        ok = value == wanted
        parts.append(f"{label} {shown} (target {wanted}){'' if ok else ' MISSED'}")
        if not ok:
            missed.append(label)
    return ", ".join(parts), missed


# ---------------------------------------------------------------------------------------------------------------
# The stack


class SoakStack:
    """A local stack of its own for one scenario: start it, upload, post events, read the ledger and the backend."""

    def __init__(self, root: Path, settings: dict[str, str]) -> None:
        self.state_dir = root
        ports = StackPorts(free_port(), free_port(), free_port(), free_port(), free_port())
        env = {**os.environ, **FAST_SETTINGS, **settings}
        # The stack points the runner at its own Azurite; a connection from the caller's shell must not win.
        env.pop("AzureWebJobsStorage", None)
        self.stack = LocalStack(state_dir=root, ports=ports, env=env)
        self._restart_lock = threading.Lock()

    def __enter__(self) -> SoakStack:
        self.stack.up(report=lambda line: None)
        state = self.stack.load()
        assert state is not None
        self.connection_string = state.connection_string
        self.functions_url = state.functions_url
        self.blob_port = state.ports.blob
        self.blobs = AzureBlobStore(state.connection_string)
        self.ledger = TableRunLedger(state.connection_string, "autopilotruns")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stack.down(report=lambda line: None)

    # uploads
    def upload_folder(self, dataset: str, version: str, files: dict[str, bytes]) -> str:
        """Upload a dataset folder as `autopilot upload` does (Content-MD5 set, manifest last); its run id."""
        md5s = {name: hashlib.md5(data, usedforsecurity=False).hexdigest() for name, data in files.items()}
        for name in sorted(files, key=lambda name: name == "autopilot.json"):
            self.blobs.upload(CONTAINER, f"{dataset}/{version}/{name}", files[name], "application/x-ndjson", md5s[name])
        return make_run_id(dataset, content_hash(md5s.items()))

    # events
    def post_events(self, function: str, events: list[dict[str, Any]]) -> int:
        """POST a delivery to the runner's Event Grid webhook, as Event Grid does; the HTTP status."""
        request = urllib.request.Request(
            f"{self.functions_url}/runtime/webhooks/EventGrid?functionName={function}",
            data=json.dumps(events).encode("utf-8"),
            headers={"Content-Type": "application/json", "aeg-event-type": "Notification"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return int(error.code)

    def blob_created(self, blob_name: str, event_id: str, **data: Any) -> dict[str, Any]:
        """A BlobCreated event in Event Grid's schema for a blob of the training container."""
        quoted = urllib.parse.quote(blob_name)
        return {
            "id": event_id,
            "topic": STORAGE_TOPIC,
            "subject": f"/blobServices/default/containers/{CONTAINER}/blobs/{blob_name}",
            "eventType": BLOB_CREATED,
            "eventTime": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "data": {
                "api": "PutBlob",
                "clientRequestId": str(uuid.uuid4()),
                "requestId": str(uuid.uuid4()),
                "eTag": '"0x8DE0A1B2C3D4E5F"',
                "contentType": "application/x-ndjson",
                "contentLength": 100,
                "blobType": "BlockBlob",
                "url": f"http://127.0.0.1:{self.blob_port}/devstoreaccount1/{CONTAINER}/{quoted}",
                "sequencer": f"{time.time_ns():048d}",
                **data,
            },
            "dataVersion": "",
            "metadataVersion": "1",
        }

    def rejected(self) -> list[dict[str, Any]] | None:
        """Inputs set aside with their reasons (`GET /api/rejected`); None when the app has no such API."""
        try:
            with urllib.request.urlopen(f"{self.functions_url}/api/rejected?limit=1000", timeout=30) as response:
                items = json.loads(response.read())["items"]
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None
            raise
        return [item for item in items if item.get("kind") in ("event", "message")]

    # what the stack holds
    def runs(self) -> list[Run]:
        return self.ledger.list_runs(limit=100_000)

    def backend(self) -> dict[str, Any]:
        path = self.state_dir / "simulated-backend.json"
        if not path.exists():
            return {"jobs": {}, "models": {}, "endpoints": {}}
        return json.loads(path.read_text())  # type: ignore[no-any-return]

    def log_tail(self, service: str, lines: int = 15) -> list[str]:
        """The last lines of a service's log in this stack's state folder."""
        path = self.stack.logs / f"{service}.log"
        if not path.exists():
            return []
        return path.read_text(errors="replace").splitlines()[-lines:]

    # crashes
    def kill_runner(self) -> None:
        """SIGKILL the runner this stack started (its process group: its own children too), then start it again."""
        with self._restart_lock:
            state = self.stack.load()
            assert state is not None
            pid = state.pids["runner"]
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            with contextlib.suppress(ChildProcessError):
                while time.monotonic() < deadline and os.waitpid(pid, os.WNOHANG) == (0, 0):
                    time.sleep(0.05)
            self.stack.up(report=lambda line: None)


# ---------------------------------------------------------------------------------------------------------------
# Measuring


def sample_files(variant: int = 0) -> dict[str, bytes]:
    """The sample dataset; another `variant` drops lines from the end of train, so that its content differs."""
    train = (SAMPLE / "train_sft.jsonl").read_bytes().splitlines(keepends=True)
    return {
        "train_sft.jsonl": b"".join(train[: len(train) - variant]),
        "test_sft.jsonl": (SAMPLE / "test_sft.jsonl").read_bytes(),
        "autopilot.json": b'{"description": "soak"}',
    }


def wait_for_runs(soak: SoakStack, run_ids: set[str], minutes: float) -> list[Run]:
    """Poll the ledger until every run in `run_ids` ended, or the time is up; the runs as they are then."""
    deadline = time.monotonic() + minutes * 60
    while True:
        runs = soak.runs()
        ended = {run.run_id for run in runs if run.finished}
        if run_ids <= ended or time.monotonic() > deadline:
            return runs
        time.sleep(POLL_SECONDS)


def deployments_by_run(backend: dict[str, Any]) -> dict[str, list[tuple[str, str, int]]]:
    """(endpoint, deployment, traffic) of every deployment the backend holds, by the run that made it."""
    found: dict[str, list[tuple[str, str, int]]] = {}
    for endpoint_name, endpoint in backend["endpoints"].items():
        for name, deployment in endpoint["deployments"].items():
            owner = deployment.get("tags", {}).get(RUN_TAG, "")
            found.setdefault(owner, []).append((endpoint_name, name, int(endpoint["traffic"].get(name, 0))))
    return found


def left_behind(runs: list[Run], backend: dict[str, Any]) -> list[str]:
    """Deployments of ended runs that are not live (a run still under way is counted as lost instead)."""
    by_id = {run.run_id: run for run in runs}
    leftovers = []
    for owner, deployments in deployments_by_run(backend).items():
        run = by_id.get(owner)
        if run is not None and not run.finished:
            continue
        live = run is not None and run.status is RunStatus.SUCCEEDED and run.endpoint_state == "live"
        leftovers += [f"{endpoint}/{name}" for endpoint, name, _ in deployments if not live]
    return leftovers


def duplicates(runs: list[Run], backend: dict[str, Any], expected: set[str]) -> list[str]:
    """Jobs, model versions and deployments beyond one per run, and runs that nobody uploaded."""
    jobs = Counter(job["tags"].get(RUN_TAG, "") for job in backend["jobs"].values())
    models = Counter(
        record["tags"].get(RUN_TAG, "") for versions in backend["models"].values() for record in versions.values()
    )
    deployments = Counter({owner: len(items) for owner, items in deployments_by_run(backend).items()})
    found = [
        f"{kind} x{count} for run {owner}"
        for kind, counter in (("job", jobs), ("model version", models), ("deployment", deployments))
        for owner, count in counter.items()
        if count > 1
    ]
    found += [f"unexpected run {run.run_id}" for run in runs if run.run_id not in expected]
    return found


def newest_live(runs: list[Run], backend: dict[str, Any]) -> int:
    """Datasets whose endpoint gives all its traffic to the deployment of the dataset's newest run."""
    newest: dict[str, Run] = {}
    for run in runs:
        # The app's own order of data (shared.stages.rollout): the run made later, then the version's name.
        if run.dataset not in newest or (run.created_at, run.version, run.run_id) > (
            newest[run.dataset].created_at,
            newest[run.dataset].version,
            newest[run.dataset].run_id,
        ):
            newest[run.dataset] = run
    serving = {
        owner
        for owner, deployments in deployments_by_run(backend).items()
        for _, _, traffic in deployments
        if traffic == 100
    }
    return sum(1 for run in newest.values() if run.run_id in serving)


def measure_runs(soak: SoakStack, expected: set[str], minutes: float, *, superseded_completes: bool) -> Figures:
    """Wait for the expected runs, let pending removals settle, and count."""
    runs = wait_for_runs(soak, expected, minutes)
    settle_until = time.monotonic() + SETTLE_SECONDS
    while left_behind(runs, soak.backend()) and time.monotonic() < settle_until:
        time.sleep(POLL_SECONDS)
        runs = soak.runs()
    backend = soak.backend()
    by_id = {run.run_id: run for run in runs}
    statuses = Counter(by_id[run_id].status for run_id in expected if run_id in by_id)
    completing = {RunStatus.SUCCEEDED, RunStatus.SUPERSEDED} if superseded_completes else {RunStatus.SUCCEEDED}
    figures = Figures(
        runs=len(expected),
        completed=sum(count for status, count in statuses.items() if status in completing),
        failed=sum(count for status, count in statuses.items() if status in ENDED_WITHOUT_CAUSE),
        lost=sum(1 for run_id in expected if run_id not in by_id or not by_id[run_id].finished),
    )
    leftovers, duplicated = left_behind(runs, backend), duplicates(runs, backend, expected)
    figures.left_behind, figures.duplicated = len(leftovers), len(duplicated)
    figures.newest_live = newest_live([by_id[run_id] for run_id in expected if run_id in by_id], backend)
    for run_id in sorted(expected):
        run = by_id.get(run_id)
        if run is None:
            figures.notes.append(f"run {run_id}: never started")
        elif run.status in ENDED_WITHOUT_CAUSE or not run.finished:
            figures.notes.append(f"run {run_id}: {run.status.value} in {run.stage.value}: {run.error_message[:300]}")
    figures.notes += [f"left behind: {item}" for item in leftovers] + [f"duplicated: {item}" for item in duplicated]
    if RunStatus.SUPERSEDED in statuses:
        figures.notes.append(f"{statuses[RunStatus.SUPERSEDED]} run(s) superseded by newer data of their dataset")
    return figures


# ---------------------------------------------------------------------------------------------------------------
# Scenarios


@dataclass(frozen=True)
class Scenario:
    key: str
    flag: str
    title: str
    settings: dict[str, str]
    run: Callable[[SoakStack, Sizes, random.Random], tuple[Figures, Target]]


def transient_faults(soak: SoakStack, sizes: Sizes, rng: random.Random) -> tuple[Figures, Target]:
    files = sample_files()
    with ThreadPoolExecutor(4) as pool:
        expected = set(pool.map(lambda i: soak.upload_folder(f"soak-a-{i:03d}", "v1", files), range(sizes.fault_runs)))
    figures = measure_runs(soak, expected, sizes.run_minutes, superseded_completes=False)
    target = Target(completed=len(expected), newest_live=len(expected))
    return figures, target


def bad_events(soak: SoakStack, sizes: Sizes, rng: random.Random) -> tuple[Figures, Target]:
    # A real dataset folder, so that the good event of the mixed batch stands for a real blob.
    good_run = soak.upload_folder("soak-b-good", "v1", sample_files())
    good = soak.blob_created("soak-b-good/v1/train_sft.jsonl", "soak-b-good-event")
    blob = soak.blob_created("soak-b/v1/train_sft.jsonl", "")
    ml_event = {
        "id": "",
        "topic": ML_TOPIC,
        "subject": "experiments/0/runs/",
        "eventType": RUN_STATUS_CHANGED,
        "eventTime": blob["eventTime"],
        "data": {"experimentName": "chat_completion_Phi-4", "runStatus": "Completed", "runTags": {RUN_TAG: "x"}},
        "dataVersion": "",
        "metadataVersion": "1",
    }
    without = {key: value for key, value in blob.items() if key != "subject"}
    blobs = f"/blobServices/default/containers/{CONTAINER}/blobs"
    deliveries: list[tuple[str, str, list[dict[str, Any]]]] = [
        (
            "type the function does not handle",
            "dataset_arrival",
            [{**blob, "id": "soak-b-1", "eventType": "Microsoft.Storage.BlobDeleted"}],
        ),
        ("BlobCreated without subject", "dataset_arrival", [{**without, "id": "soak-b-2"}]),
        ("BlobCreated without data", "dataset_arrival", [{**blob, "id": "soak-b-3", "data": None}]),
        ("empty event", "dataset_arrival", [{}]),
        (
            "control character in subject",
            "dataset_arrival",
            [{**blob, "id": "soak-b-5", "subject": f"{blobs}/soak-b/v1/train\x01.jsonl"}],
        ),
        ("# in subject", "dataset_arrival", [{**blob, "id": "soak-b-6", "subject": f"{blobs}/soak#b/v1/train.jsonl"}]),
        ("ML event without run id", "ml_job_events", [{**ml_event, "id": "soak-b-7"}]),
        ("ML event without data", "ml_job_events", [{**ml_event, "id": "soak-b-8", "data": None}]),
        ("BlobCreated sent to the ML function", "ml_job_events", [{**blob, "id": "soak-b-9"}]),
        ("batch of a good and a bad event", "dataset_arrival", [good, {**blob, "id": "soak-b-10", "data": None}]),
    ]
    figures = Figures(runs=1, answered_2xx=0)
    for what, function, events in deliveries:
        status = soak.post_events(function, events)
        if 200 <= status < 300:
            assert figures.answered_2xx is not None
            figures.answered_2xx += 1
        else:
            figures.notes.append(f"{what}: answered {status}")
    run_figures = measure_runs(soak, {good_run}, 3, superseded_completes=False)
    figures.completed, figures.failed, figures.lost = run_figures.completed, run_figures.failed, run_figures.lost
    figures.duplicated, figures.left_behind = run_figures.duplicated, run_figures.left_behind
    figures.notes += run_figures.notes
    records = soak.rejected()
    if records is not None:
        with_reason = [item for item in records if item.get("reason")]
        figures.rejected = len(with_reason)
        if any(item.get("input_id") == good["id"] for item in records):
            figures.notes.append("the good event of the mixed batch was rejected")
            figures.rejected = -1
        figures.notes += [f"recorded: {item['input_id'] or '(no id)'}: {item['reason'][:120]}" for item in with_reason]
    target = Target(completed=1, answered_2xx=len(deliveries), rejected=len(deliveries))
    return figures, target


ODD_NAMES = {
    "600-character folder": "d" * 600 + "/v1/train_sft.jsonl",
    "tab": "soak\tc/v1/train_sft.jsonl",
    "newline": "soak\nc/v1/train_sft.jsonl",
    "#": "soak#c/v1/train_sft.jsonl",
    "1,025-character blob name": "soak-c/v1/train_" + "x" * (1025 - len("soak-c/v1/train_.jsonl")) + ".jsonl",
}


def odd_names(soak: SoakStack, sizes: Sizes, rng: random.Random) -> tuple[Figures, Target]:
    assert len(ODD_NAMES["1,025-character blob name"]) == 1025
    figures = Figures(runs=0, answered_2xx=0)
    for index, (what, name) in enumerate(ODD_NAMES.items()):
        status = soak.post_events("dataset_arrival", [soak.blob_created(name, f"soak-c-{index}")])
        if 200 <= status < 300:
            assert figures.answered_2xx is not None
            figures.answered_2xx += 1
        else:
            figures.notes.append(f"{what}: answered {status}")
    # Enough for a quiet period and a settle to pass, had a run been started.
    time.sleep(10)
    runs = soak.runs()
    figures.duplicated = len(runs)
    figures.notes += [f"a run started: {run.run_id} ({run.dataset!r})" for run in runs]
    records = soak.rejected()
    if records is not None:
        ours = {f"soak-c-{index}" for index in range(len(ODD_NAMES))}
        recorded = [item for item in records if item.get("input_id") in ours and item.get("reason")]
        figures.rejected = len(recorded)
        figures.notes += [f"recorded: {item['input_id']}: {item['reason'][:120]}" for item in recorded]
    target = Target(failed=None, lost=None, left_behind=None, answered_2xx=len(ODD_NAMES), rejected=len(ODD_NAMES))
    return figures, target


def lost_event(soak: SoakStack, sizes: Sizes, rng: random.Random) -> tuple[Figures, Target]:
    files = sample_files()
    files["autopilot.json"] = b'{"parameters": {"simulate_failure": "event"}}'
    run_id = soak.upload_folder("soak-d", "v1", files)
    figures = measure_runs(soak, {run_id}, 5, superseded_completes=False)
    run = soak.ledger.get(run_id)
    if run is not None:
        reconciled = sorted(key for key in run.stage_times if key.startswith("reconciled_"))
        figures.notes.append(f"reconciled: {', '.join(reconciled) or 'never'}")
    return figures, Target(completed=1, newest_live=1)


# Backend effects after each of which the burst kills the runner once: (name, what changed in the state file).
EFFECTS: tuple[tuple[str, Callable[[dict[str, Any], dict[str, Any]], bool]], ...] = (
    ("job submitted", lambda old, new: len(new["jobs"]) > len(old["jobs"])),
    (
        "job ended",
        lambda old, new: any(
            job["status"] != old["jobs"].get(name, job)["status"] for name, job in new["jobs"].items()
        ),
    ),
    (
        "model registered",
        lambda old, new: sum(map(len, new["models"].values())) > sum(map(len, old["models"].values())),
    ),
    ("endpoint created", lambda old, new: bool(set(new["endpoints"]) - set(old["endpoints"]))),
    (
        "deployment created",
        lambda old, new: any(
            set(endpoint["deployments"]) - set(old["endpoints"].get(name, {"deployments": {}})["deployments"])
            for name, endpoint in new["endpoints"].items()
        ),
    ),
    (
        "traffic moved",
        lambda old, new: any(
            endpoint["traffic"] != old["endpoints"][name]["traffic"] and any(endpoint["traffic"].values())
            for name, endpoint in new["endpoints"].items()
            if name in old["endpoints"]
        ),
    ),
    (
        "deployment deleted",
        lambda old, new: any(
            set(endpoint["deployments"]) - set(new["endpoints"].get(name, {"deployments": {}})["deployments"])
            for name, endpoint in old["endpoints"].items()
            if name in new["endpoints"]
        ),
    ),
)


class RunnerKiller(threading.Thread):
    """Kills the runner right after the first backend effect of each kind, then at random moments."""

    def __init__(self, soak: SoakStack, random_kills: int, rng: random.Random) -> None:
        super().__init__(name="runner-killer", daemon=True)
        self._soak = soak
        self._random_kills = random_kills
        self._rng = rng
        self.stopping = threading.Event()
        self.kills: list[str] = []

    def run(self) -> None:
        path = self._soak.state_dir / "simulated-backend.json"
        pending = list(EFFECTS)
        random_left = self._random_kills
        next_random = time.monotonic() + self._rng.uniform(3, 15)
        old = self._soak.backend()
        seen_mtime = 0.0
        while (pending or random_left) and not self.stopping.is_set():
            mtime = path.stat().st_mtime if path.exists() else 0.0
            if mtime != seen_mtime:
                seen_mtime = mtime
                with contextlib.suppress(ValueError):
                    new = self._soak.backend()
                    happened = [(name, test) for name, test in pending if test(old, new)]
                    if happened:
                        self._kill(f"right after: {happened[0][0]}")
                        pending.remove(happened[0])
                    old = new
            if random_left and time.monotonic() >= next_random:
                self._kill("at a random moment")
                random_left -= 1
                next_random = time.monotonic() + self._rng.uniform(3, 15)
            self.stopping.wait(0.01)

    def _kill(self, why: str) -> None:
        started = time.monotonic()
        for attempt in range(3):
            try:
                self._soak.kill_runner()
                break
            except RuntimeError as exc:  # the runner did not come back: say why (its log) and start it again
                self.kills.append(f"{why}: the runner did not come back (try {attempt + 1}): {exc}")
                self.kills += [f"    | {line}" for line in self._soak.log_tail("runner")]
        self.kills.append(f"{why} (back in {time.monotonic() - started:.1f} s)")


def burst(soak: SoakStack, sizes: Sizes, rng: random.Random) -> tuple[Figures, Target]:
    killer = RunnerKiller(soak, sizes.random_kills, rng)
    killer.start()
    folders = [(f"soak-e-{index:03d}", "v1", 0) for index in range(sizes.burst_folders)]
    # The two versions of a pair, with different data, go up side by side at the same time.
    pairs = [
        [(f"soak-e-pair-{index:02d}", version, variant) for version, variant in (("v1", 1), ("v2", 2))]
        for index in range(sizes.burst_pairs)
    ]
    batches = [[folder] for folder in folders] + pairs
    rng.shuffle(batches)

    def upload_together(batch: list[tuple[str, str, int]]) -> list[str]:
        with ThreadPoolExecutor(len(batch)) as side_by_side:
            return list(
                side_by_side.map(lambda item: soak.upload_folder(item[0], item[1], sample_files(item[2])), batch)
            )

    with ThreadPoolExecutor(8) as pool:
        expected = {run_id for run_ids in pool.map(upload_together, batches) for run_id in run_ids}
    figures = measure_runs(soak, expected, sizes.run_minutes, superseded_completes=True)
    killer.stopping.set()
    killer.join(timeout=60)
    figures.notes += [f"runner killed {kill}" for kill in killer.kills]
    datasets = sizes.burst_folders + sizes.burst_pairs
    return figures, Target(completed=len(expected), newest_live=datasets)


SCENARIOS = (
    Scenario(
        "a",
        "faults",
        "30 % transient backend faults",
        {"AUTOPILOT_SIMULATED_FAULT_RATE": "0.3"},
        transient_faults,
    ),
    Scenario("b", "bad-events", "malformed Event Grid events", {}, bad_events),
    Scenario("c", "odd-names", "odd folder and blob names", {}, odd_names),
    Scenario("d", "lost-event", "a lost job event", {}, lost_event),
    Scenario(
        "e",
        "burst",
        "duplicates, runner kills, a burst and pairs of versions",
        {
            "AUTOPILOT_RUNNER_DUPLICATE_DELIVERIES": "1",
            "AzureFunctionsJobHost__functionTimeout": "00:00:30",
            "AUTOPILOT_STALLED_STAGE_MINUTES": "1",
        },
        burst,
    ),
)


@contextlib.contextmanager
def scenario_folder(keep: bool, key: str) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix=f"soak-{key}-"))
    try:
        yield folder
    finally:
        if keep:
            print(f"    state, logs: {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


def run_scenario(scenario: Scenario, sizes: Sizes, seed: int, keep: bool, verbose: bool) -> bool:
    """Run one scenario on a stack of its own; print its line (and notes); True when it met its targets."""
    rng = random.Random(seed)
    settings = dict(scenario.settings)
    if "AUTOPILOT_SIMULATED_FAULT_RATE" in settings:
        settings["AUTOPILOT_SIMULATED_FAULT_SEED"] = str(seed)
    started = time.monotonic()
    with scenario_folder(keep, scenario.key) as folder, SoakStack(folder, settings) as soak:
        figures, target = scenario.run(soak, sizes, rng)
    line, missed = compare(figures, target)
    verdict = "ok" if not missed else "MISSED: " + ", ".join(missed)
    print(f"({scenario.key}) {scenario.title}: {line}; {time.monotonic() - started:.0f} s; {verdict}", flush=True)
    for note in figures.notes if (verbose or missed) else ():
        print(f"    {note}", flush=True)
    return not missed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--short", action="store_true", help="CI sizes (the default)")
    size.add_argument("--long", action="store_true", help="the issue's sizes")
    for scenario in SCENARIOS:
        parser.add_argument(
            f"--{scenario.flag}", action="store_true", help=f"({scenario.key}) {scenario.title}".replace("%", "%%")
        )
    parser.add_argument("--seed", type=int, default=20261122, help="seed of the faults, kills and upload order")
    parser.add_argument("--keep", action="store_true", help="keep each scenario's state folder and logs")
    parser.add_argument("--verbose", action="store_true", help="print every scenario's notes, not only on a miss")
    args = parser.parse_args(argv)
    sizes = LONG if args.long else SHORT
    chosen = [s for s in SCENARIOS if getattr(args, s.flag.replace("-", "_"))] or list(SCENARIOS)
    print(
        f"soak ({'long' if args.long else 'short'}, seed {args.seed}): {', '.join(s.key for s in chosen)}", flush=True
    )
    results = []
    for scenario in chosen:
        try:
            results.append(run_scenario(scenario, sizes, args.seed, args.keep, args.verbose))
        except RuntimeError as exc:  # the stack did not start
            print(f"({scenario.key}) {scenario.title}: the local stack did not start: {exc}", file=sys.stderr)
            return 2
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
