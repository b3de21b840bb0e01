"""Telemetry: every stage run is a span with its run, dataset, stage and outcome, and a duration with its outcome.

GIVEN the function app's triggers wired to fakes and the OpenTelemetry SDK's in-memory span exporter and metric
reader, WHEN a dataset folder goes through them (as Event Grid and the queues would deliver it), THEN each
stage shows as a span named after it, with the run id, dataset, stage and outcome, and the stage duration
histogram has a point per stage and outcome; log lines of a stage carry the run id. Without a telemetry setting,
importing the app configures nothing and imports no OpenTelemetry or Azure Monitor module; with one, the
console, OTLP and Azure Monitor exporters send the same spans (checked in fresh interpreters against a local
HTTP server standing in for the collector and for Application Insights' ingestion endpoint).
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
from azure.functions.queue import QueueMessage as TriggerQueueMessage
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from functions.check_finetune_job import check_finetune_job
from functions.dataset_arrival import dataset_arrival
from functions.deploy_model import deploy_model
from functions.ml_job_events import ml_job_events
from functions.promote_deployment import promote_deployment
from functions.register_model import register_model
from functions.settle_dataset import settle_dataset
from functions.smoke_test import smoke_test
from functions.submit_finetune import submit_finetune
from functions.validate_dataset import validate_dataset
from shared import bootstrap, telemetry
from shared.errors import TransientError
from shared.events import BLOB_CREATED, ml_job_event_payload
from shared.ledger import Run, RunStatus
from shared.messages import (
    CHECK_JOB_QUEUE,
    DEPLOY_QUEUE,
    PROMOTE_QUEUE,
    REGISTER_QUEUE,
    SETTLE_QUEUE,
    SMOKE_TEST_QUEUE,
    SUBMIT_QUEUE,
    VALIDATE_QUEUE,
    QueueMessage,
    SubmitFinetuneJob,
    ValidateDataset,
)
from shared.ml.simulated import SimulatedMLBackend, TransientFaults
from shared.settings import APPLICATIONINSIGHTS_CONNECTION_STRING, OTLP_ENDPOINT, TELEMETRY
from shared.stages.context import StageContext
from shared.telemetry import DURATION_METRIC, RunIdLogFilter, StageInstruments, stage_outcome, stage_span
from tests.fakes import FakeBlobStore, FakeClock, FakeMessageSender, FakePoisonQueues, fake_context
from tests.unit.test_stages import conversation, jsonl

ROOT = Path(__file__).resolve().parents[2]
BLOBS = "/blobServices/default/containers/training-data/blobs/"
# Each queue's function, and whether it has a queue output binding (`next_message`), as function_app registers them.
QUEUE_FUNCTIONS: dict[str, tuple[Callable[..., None], bool]] = {
    SETTLE_QUEUE: (settle_dataset, True),
    VALIDATE_QUEUE: (validate_dataset, True),
    SUBMIT_QUEUE: (submit_finetune, False),
    CHECK_JOB_QUEUE: (check_finetune_job, True),
    REGISTER_QUEUE: (register_model, True),
    DEPLOY_QUEUE: (deploy_model, True),
    SMOKE_TEST_QUEUE: (smoke_test, True),
    PROMOTE_QUEUE: (promote_deployment, False),
}
MESSAGE_TYPES = {cls.__name__: cls for cls in QueueMessage.__subclasses__()}


@dataclass
class App:
    ctx: StageContext
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader

    def finished(self, stage: str | None = None) -> list[ReadableSpan]:
        return [span for span in self.spans.get_finished_spans() if stage is None or span.name == stage]

    def durations(self) -> dict[tuple[str, str], int]:
        """Data points of the stage duration histogram: (stage, outcome) -> count."""
        data = self.metrics.get_metrics_data()
        assert data is not None
        counts: dict[tuple[str, str], int] = {}
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == DURATION_METRIC:
                        assert metric.unit == "s"
                        for point in metric.data.data_points:
                            labels = dict(point.attributes or {})
                            counts[(str(labels["stage"]), str(labels["outcome"]))] = point.count  # type: ignore[attr-defined]
        return counts


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> Iterator[App]:
    """The triggers on fakes, their telemetry going to in-memory exporters."""
    ctx = fake_context()
    monkeypatch.setattr(bootstrap, "_context", ctx)
    monkeypatch.setattr(bootstrap, "_poison", FakePoisonQueues())
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    instruments = StageInstruments.from_providers(tracer_provider, MeterProvider(metric_readers=[reader]))
    monkeypatch.setattr(telemetry, "_instruments", instruments)
    yield App(ctx, spans, reader)


class Out(func.Out[str]):
    def __init__(self) -> None:
        self.value: str | None = None

    def set(self, val: str) -> None:
        self.value = val

    def get(self) -> str:
        return self.value or ""


def blob_event(ctx: StageContext, name: str, content: bytes) -> func.EventGridEvent:
    assert isinstance(ctx.blobs, FakeBlobStore)
    blob = ctx.blobs.upload("training-data", name, content)
    data = {"url": blob.url, "eTag": blob.etag, "contentLength": blob.size, "sequencer": "1"}
    return grid_event("evt-" + name, BLOB_CREATED, BLOBS + name, data)


def grid_event(event_id: str, event_type: str, subject: str, data: Any) -> func.EventGridEvent:
    return func.EventGridEvent(
        id=event_id, data=data, topic="t", subject=subject, event_type=event_type, event_time=None, data_version=""
    )


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def dataset_folder(ctx: StageContext, folder: str = "chat/v1") -> list[func.EventGridEvent]:
    return [
        blob_event(ctx, f"{folder}/train_sft.jsonl", jsonl([conversation(i) for i in range(30)])),
        blob_event(ctx, f"{folder}/test_sft.jsonl", jsonl([conversation(i) for i in range(100, 105)])),
    ]


def deliver(message: QueueMessage, dequeue_count: int = 1) -> QueueMessage | None:
    """Hand `message` to its queue's function, as the host does; returns what its output binding got."""
    function, has_output = QUEUE_FUNCTIONS[message.queue]
    trigger = TriggerQueueMessage(id="m", body=message.to_json().encode(), dequeue_count=dequeue_count)
    if not has_output:
        function(trigger)
        return None
    out = Out()
    function(trigger, out)
    if out.value is None:
        return None
    return MESSAGE_TYPES[json.loads(out.value)["type"]].from_json(out.value)


def job_events(backend: SimulatedMLBackend) -> list[func.EventGridEvent]:
    """Finish the running jobs; the Event Grid events Azure ML would raise for them."""
    events = []
    for job in list(backend.state["jobs"].values()):
        if job["status"] == "Running":
            backend.finish_job(job["name"], "Completed")
            payload = ml_job_event_payload(
                job_name=job["name"],
                experiment_name="e",
                status="Completed",
                tags=job["tags"],
                topic="t",
                event_time="now",
                event_id=job["name"],
            )
            events += [grid_event(raw["id"], raw["eventType"], raw["subject"], raw["data"]) for raw in payload]
    return events


def run_through_the_app(ctx: StageContext, events: list[func.EventGridEvent]) -> None:
    """Deliver the blob events, then every message and job event that follows, until nothing is left."""
    sender, backend, clock = ctx.sender, ctx.backend, ctx.clock
    assert isinstance(sender, FakeMessageSender) and isinstance(backend, SimulatedMLBackend)
    assert isinstance(clock, FakeClock)
    for event in events:
        dataset_arrival(event)
    pending: list[QueueMessage] = []
    for _ in range(200):
        if not pending:
            pending = [message for message, _ in sender.sent]
            sender.sent.clear()
            clock.advance(31)
            if not pending:
                for event in job_events(backend):
                    ml_job_events(event, out := Out())
                    if out.value is not None:
                        pending.append(MESSAGE_TYPES[json.loads(out.value)["type"]].from_json(out.value))
            if not pending:
                return
        produced = deliver(pending.pop(0))
        if produced is not None:
            pending.append(produced)
    raise AssertionError("the chain did not settle")


def only_run(ctx: StageContext) -> Run:
    (run,) = ctx.ledger.list_runs()
    return run


def test_every_stage_of_a_run_is_a_span_with_its_run_dataset_and_outcome(app: App) -> None:
    run_through_the_app(app.ctx, dataset_folder(app.ctx))
    run = only_run(app.ctx)
    assert run.status is RunStatus.SUCCEEDED
    run_stages = [
        "validate_dataset",
        "submit_finetune",
        "ml_job_events",
        "register_model",
        "deploy_model",
        "smoke_test",
        "promote_deployment",
    ]
    for stage in run_stages:
        found = [attributes(span) for span in app.finished(stage)]
        # Both files' settle messages go through, so some stages see a duplicate, which changes nothing.
        assert {"stage": stage, "run_id": run.run_id, "dataset": "chat", "outcome": "ok"} in found, stage
        assert all(
            each == {"stage": stage, "run_id": run.run_id, "dataset": "chat", "outcome": each["outcome"]}
            and each["outcome"] in ("ok", "skipped")
            for each in found
        ), found
    # Intake: one span per blob event and per settle message; the settle message that made the run names it.
    arrivals = {(attributes(span)["dataset"], attributes(span)["outcome"]) for span in app.finished("dataset_arrival")}
    assert arrivals == {("chat", "ok")}
    assert any(attributes(span).get("run_id") == run.run_id for span in app.finished("settle_dataset"))
    # One duration per span, by stage and outcome.
    spans_by_stage_and_outcome: dict[tuple[str, str], int] = {}
    for span in app.finished():
        key = (span.name, str(attributes(span)["outcome"]))
        spans_by_stage_and_outcome[key] = spans_by_stage_and_outcome.get(key, 0) + 1
    assert app.durations() == spans_by_stage_and_outcome
    assert all(span.status.status_code is StatusCode.UNSET for span in app.finished())


def test_a_duplicate_delivery_is_skipped_and_its_log_lines_carry_the_run_id(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    run_through_the_app(app.ctx, dataset_folder(app.ctx))
    run = only_run(app.ctx)
    caplog.handler.addFilter(RunIdLogFilter())
    caplog.set_level(logging.INFO)
    logging.getLogger("autopilot.tests").info("outside any stage")
    # WHEN the validate message comes again, long after the run went live
    deliver(ValidateDataset(run.run_id))
    # THEN its span says skipped, and the stage's log line says which run it was about
    assert attributes(app.finished("validate_dataset")[-1])["outcome"] == "skipped"
    (ended,) = [record for record in caplog.records if "already ended" in record.getMessage()]
    assert ended.name == "autopilot.stages" and ended.run_id == run.run_id  # type: ignore[attr-defined]
    (outside,) = [record for record in caplog.records if record.getMessage() == "outside any stage"]
    assert not hasattr(outside, "run_id")


def test_a_rejected_dataset_shows_as_the_outcome_of_validation(app: App) -> None:
    bad = blob_event(app.ctx, "chat/v1/train.jsonl", b'{"messages": "nope"}\n' * 20)
    run_through_the_app(app.ctx, [bad])
    run = only_run(app.ctx)
    assert run.status is RunStatus.REJECTED
    (validation,) = app.finished("validate_dataset")
    assert attributes(validation)["outcome"] == "rejected"
    assert app.durations()[("validate_dataset", "rejected")] == 1


def test_a_transient_error_the_stage_put_its_message_back_for_is_retried(app: App) -> None:
    # GIVEN a validated run whose submit message is due, and a backend that throttles every call
    sender, backend, clock = app.ctx.sender, app.ctx.backend, app.ctx.clock
    assert isinstance(sender, FakeMessageSender) and isinstance(backend, SimulatedMLBackend)
    assert isinstance(clock, FakeClock)
    dataset_arrival(blob_event(app.ctx, "chat/v1/train.jsonl", jsonl([conversation(i) for i in range(30)])))
    ((settle, _),) = sender.sent
    sender.sent.clear()
    clock.advance(31)
    validate = deliver(settle)
    assert validate is not None
    submit = deliver(validate)
    assert isinstance(submit, SubmitFinetuneJob)
    backend.faults = TransientFaults(rate=1.0, seed=3)
    # WHEN the submit message comes
    deliver(submit)
    # THEN the stage put it back, delayed, and its span says retried
    assert [message for message, _ in sender.sent] == [submit]
    (span,) = app.finished("submit_finetune")
    assert attributes(span)["outcome"] == "retried"
    assert app.durations()[("submit_finetune", "retried")] == 1


def test_an_exception_out_of_a_stage_is_retried_or_failed_and_raised_on(app: App) -> None:
    with pytest.raises(TransientError), stage_span("deploy_model", "run-1", "chat"):
        raise TransientError("throttled")
    with pytest.raises(ValueError), stage_span("deploy_model", "run-2", "chat"):
        raise ValueError("a bug")
    retried, failed = app.finished("deploy_model")
    assert attributes(retried)["outcome"] == "retried" and retried.status.status_code is StatusCode.ERROR
    assert attributes(failed)["outcome"] == "failed" and failed.events[0].name == "exception"
    assert app.durations() == {("deploy_model", "retried"): 1, ("deploy_model", "failed"): 1}


def _run(**changes: Any) -> Run:
    return replace(Run("r1", "chat", "v1", "h", "simulated", "2026-11-20T09:00:00Z", etag="e1"), **changes)


def _ended(status: RunStatus, etag: str = "e2") -> Run:
    return _run(etag=etag, status=status, finished_at="2026-11-20T09:01:00Z")


@pytest.mark.parametrize(
    ("before", "after", "handed_on", "error", "outcome"),
    [
        (_run(), _run(etag="e2"), True, None, "ok"),
        (_run(), _run(etag="e2"), False, None, "ok"),
        (_run(), _run(), False, None, "skipped"),
        (_run(), _run(), True, None, "ok"),
        (_run(), _run(etag="e2", retries={"deploying": 1}), False, None, "retried"),
        (_run(), _ended(RunStatus.ROLLED_BACK), False, None, "rolled_back"),
        (_run(), _ended(RunStatus.SUCCEEDED), False, None, "ok"),
        # The last try of a queue message: the run ended failed, the error raised on.
        (_run(), _ended(RunStatus.FAILED), False, TransientError("x"), "failed"),
        (_ended(RunStatus.FAILED, "e1"), _ended(RunStatus.FAILED, "e1"), False, None, "skipped"),
        (_run(), _run(), False, TransientError("x"), "retried"),
        (None, None, False, RuntimeError("x"), "failed"),
        (None, None, False, None, "ok"),
    ],
)
def test_the_outcome_comes_from_the_run_before_and_after_the_stage(
    before: Run | None, after: Run | None, handed_on: bool, error: BaseException | None, outcome: str
) -> None:
    assert stage_outcome(before, after, handed_on, error) == outcome


# --- In fresh interpreters: what function_app sets up from the environment ------------------------------------

TELEMETRY_SETTINGS = (APPLICATIONINSIGHTS_CONNECTION_STRING, OTLP_ENDPOINT, TELEMETRY)
STAGE_IN_A_FRESH_APP = """
import logging, function_app
from shared.telemetry import stage_span
with stage_span("validate_dataset", "run-7", "chat") as span:
    logging.getLogger("autopilot.stages").warning("validating run-7")
    span.outcome = "ok"
"""


def python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {name: value for name, value in os.environ.items() if name not in TELEMETRY_SETTINGS}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, timeout=120
    )


def test_without_a_setting_importing_the_app_configures_nothing_and_imports_no_exporter() -> None:
    code = (
        "import json, sys, function_app\nfrom shared import telemetry\n"
        "print(json.dumps([telemetry._instruments is not None,"
        " [m for m in sys.modules if m.startswith(('opentelemetry', 'azure.monitor'))]]))"
    )
    result = python(code)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [False, []]


def test_the_console_setting_prints_the_stage_spans() -> None:
    result = python(STAGE_IN_A_FRESH_APP, AUTOPILOT_TELEMETRY="console")
    assert result.returncode == 0, result.stderr
    assert '"name": "validate_dataset"' in result.stdout
    assert '"run_id": "run-7"' in result.stdout and '"outcome": "ok"' in result.stdout


def test_an_unknown_telemetry_setting_stops_the_app_naming_the_setting() -> None:
    result = python("import function_app", AUTOPILOT_TELEMETRY="consol")
    assert result.returncode != 0 and "AUTOPILOT_TELEMETRY='consol' is unknown" in result.stderr


class Collector:
    """A local HTTP server that answers every POST with 200 and keeps (path, body)."""

    def __init__(self, answer: bytes = b"{}") -> None:
        received: list[tuple[str, bytes]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                received.append((self.path, body))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.received = received
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector()
    yield server
    server.close()


def test_the_otlp_setting_sends_the_spans_metrics_and_logs_to_the_collector(collector: Collector) -> None:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    result = python(STAGE_IN_A_FRESH_APP, OTEL_EXPORTER_OTLP_ENDPOINT=collector.url)
    assert result.returncode == 0, result.stderr
    paths = {path for path, _ in collector.received}
    assert {"/v1/traces", "/v1/metrics", "/v1/logs"} <= paths
    traces = ExportTraceServiceRequest()
    traces.ParseFromString(next(body for path, body in collector.received if path == "/v1/traces"))
    (span,) = [s for r in traces.resource_spans for scope in r.scope_spans for s in scope.spans]
    attributes = {a.key: a.value.string_value for a in span.attributes}
    assert span.name == "validate_dataset"
    assert attributes == {"stage": "validate_dataset", "run_id": "run-7", "dataset": "chat", "outcome": "ok"}
    logs = ExportLogsServiceRequest()
    logs.ParseFromString(next(body for path, body in collector.received if path == "/v1/logs"))
    records = [r for rl in logs.resource_logs for scope in rl.scope_logs for r in scope.log_records]
    (line,) = [r for r in records if r.body.string_value == "validating run-7"]
    assert {a.key: a.value.string_value for a in line.attributes}["run_id"] == "run-7"


def test_the_connection_string_sends_spans_and_log_lines_with_the_run_id_to_application_insights() -> None:
    ingestion = Collector(answer=b'{"itemsReceived": 0, "itemsAccepted": 0, "errors": []}')
    try:
        connection = (
            "InstrumentationKey=00000000-0000-0000-0000-000000000000;"
            f"IngestionEndpoint={ingestion.url}/;LiveEndpoint={ingestion.url}/"
        )
        # Nothing but the stand-in is called: no usage statistics, no remote configuration (the exporter's own
        # switches, azure-monitor-opentelemetry-exporter's _constants.py).
        result = python(
            STAGE_IN_A_FRESH_APP,
            APPLICATIONINSIGHTS_CONNECTION_STRING=connection,
            APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL="true",
            APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED="true",
        )
    finally:
        ingestion.close()
    assert result.returncode == 0, result.stderr
    # Each POST to /v2.1/track carries a JSON list of telemetry items.
    data = [item["data"] for path, body in ingestion.received if path == "/v2.1/track" for item in json.loads(body)]
    (span,) = [d["baseData"] for d in data if d["baseData"].get("name") == "validate_dataset"]
    assert span["properties"]["run_id"] == "run-7" and span["properties"]["outcome"] == "ok"
    (line,) = [d["baseData"] for d in data if d["baseData"].get("message") == "validating run-7"]
    assert line["properties"]["run_id"] == "run-7"
