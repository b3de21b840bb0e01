"""Telemetry of the stages: a span and a duration for every stage run, and the run id on every log line of a stage.

`configure_telemetry()` (called by function_app.py) sets up the exporters the environment names, once per process:

- `APPLICATIONINSIGHTS_CONNECTION_STRING`: Application Insights, through Azure Monitor's OpenTelemetry distro
  (`configure_azure_monitor`): spans, metrics and `logging` records, Azure SDK calls as dependencies;
- `OTEL_EXPORTER_OTLP_ENDPOINT`: an OpenTelemetry collector, OTLP over HTTP (the exporters read the standard
  `OTEL_EXPORTER_OTLP_*` variables, headers included, themselves);
- `AUTOPILOT_TELEMETRY=console`: spans and metrics printed on stdout.

They add up. With none of them nothing is configured and OpenTelemetry is not imported: `stage_span` then only
runs its body. The triggers open the spans (`functions.support.traced_stage`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared.errors import ConfigurationError, TransientError
from shared.ledger import Run, RunStatus
from shared.messages import QueueMessage
from shared.settings import APPLICATIONINSIGHTS_CONNECTION_STRING, OTLP_ENDPOINT, TELEMETRY

if TYPE_CHECKING:
    from opentelemetry.metrics import Histogram, MeterProvider
    from opentelemetry.trace import Tracer, TracerProvider

log = logging.getLogger("autopilot.telemetry")

SCOPE = "autopilot.stages"
SERVICE_NAME = "finetune-autopilot"
DURATION_METRIC = "autopilot.stage.duration"
# Stages take from milliseconds (a duplicate delivery) to minutes (a large dataset's validation).
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
CONSOLE = "console"

# Outcomes of a stage run; a stage that ended its run reports the run's status instead (`rejected`,
# `rolled_back`, `canceled`, `superseded`, `failed`).
OK = "ok"
SKIPPED = "skipped"
RETRIED = "retried"
FAILED = "failed"


@dataclass(frozen=True)
class TelemetrySettings:
    """Where telemetry goes; all empty: nowhere."""

    connection_string: str = field(default="", repr=False)
    otlp_endpoint: str = ""
    console: bool = False

    @property
    def enabled(self) -> bool:
        return bool(self.connection_string or self.otlp_endpoint or self.console)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TelemetrySettings:
        """Read the telemetry settings from `env` (default: the process environment)."""
        env = os.environ if env is None else env
        mode = env.get(TELEMETRY, "").strip().lower()
        if mode not in ("", CONSOLE):
            raise ConfigurationError(f"Setting {TELEMETRY}={mode!r} is unknown; use {CONSOLE!r} or leave it empty.")
        return cls(
            connection_string=env.get(APPLICATIONINSIGHTS_CONNECTION_STRING, "").strip(),
            otlp_endpoint=env.get(OTLP_ENDPOINT, "").strip(),
            console=mode == CONSOLE,
        )


@dataclass(frozen=True)
class StageInstruments:
    """The tracer the stage spans come from and the histogram of their durations."""

    tracer: Tracer
    duration: Histogram

    @classmethod
    def from_providers(
        cls, tracer_provider: TracerProvider | None = None, meter_provider: MeterProvider | None = None
    ) -> StageInstruments:
        """The stages' instruments from these providers (the global ones when None)."""
        from opentelemetry import metrics, trace

        meter = metrics.get_meter(SCOPE, meter_provider=meter_provider)
        return cls(
            tracer=trace.get_tracer(SCOPE, tracer_provider=tracer_provider),
            duration=meter.create_histogram(
                DURATION_METRIC,
                unit="s",
                description="How long one stage run took, by stage and outcome",
                explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
            ),
        )


# None while telemetry is off: stage spans cost nothing then.
_instruments: StageInstruments | None = None
_run_id: ContextVar[str] = ContextVar("autopilot_run_id", default="")


@dataclass
class StageSpan:
    """One stage run as its span reports it: the run and dataset it was for, and how it ended."""

    stage: str
    run_id: str = ""
    dataset: str = ""
    # Set by the trigger (see `stage_outcome`); else from the exception raised, or `ok`.
    outcome: str = ""
    handed_on: bool = False
    # False while telemetry is off: nothing is recorded, so nothing need be found out for it.
    recording: bool = False

    def identify(self, run_id: str = "", dataset: str = "") -> None:
        """Name the run and dataset once the stage knows them; log lines from then on carry the run id."""
        if run_id and not self.run_id:
            self.run_id = run_id
            if self.recording:
                _run_id.set(run_id)
        if dataset and not self.dataset:
            self.dataset = dataset

    def attributes(self) -> dict[str, str]:
        """The span's attributes, empty ones left out."""
        named = {"stage": self.stage, "run_id": self.run_id, "dataset": self.dataset, "outcome": self.outcome}
        return {key: value for key, value in named.items() if value}


_current: ContextVar[StageSpan | None] = ContextVar("autopilot_stage", default=None)


def note_handed_on(message: QueueMessage | None) -> None:
    """The stage running now hands `message` on (None: nothing); its run and dataset name the span if unnamed."""
    span = _current.get()
    if span is None or message is None:
        return
    span.handed_on = True
    span.identify(str(getattr(message, "run_id", "")), str(getattr(message, "dataset", "")))


@contextmanager
def stage_span(stage: str, run_id: str = "", dataset: str = "") -> Iterator[StageSpan]:
    """Run a stage's work inside a span named `stage` and record its duration with its outcome.

    The span's attributes: `stage`, `run_id`, `dataset` and `outcome` (empty ones left out); the histogram
    `autopilot.stage.duration` (seconds) gets `stage` and `outcome`. An exception whose outcome the caller did
    not set is `retried` (a `TransientError`: the queue or Event Grid delivers again) or `failed`, and is raised
    on. Log records made inside carry the run id (`RunIdLogFilter`). With telemetry off the body just runs.
    """
    instruments = _instruments
    record = StageSpan(stage, recording=instruments is not None)
    if instruments is None:
        record.identify(run_id, dataset)
        yield record
        return
    stage_token = _current.set(record)
    run_token = _run_id.set("")
    record.identify(run_id, dataset)
    started = time.perf_counter()
    try:
        with instruments.tracer.start_as_current_span(stage) as span:
            try:
                yield record
            except Exception as error:
                record.outcome = record.outcome or outcome_of_error(error)
                raise
            finally:
                record.outcome = record.outcome or OK
                span.set_attributes(record.attributes())
                instruments.duration.record(time.perf_counter() - started, {"stage": stage, "outcome": record.outcome})
    finally:
        _run_id.reset(run_token)
        _current.reset(stage_token)


def outcome_of_error(error: BaseException) -> str:
    """`retried` for a transient error (it is delivered again), else `failed`."""
    return RETRIED if isinstance(error, TransientError) else FAILED


def stage_outcome(before: Run | None, after: Run | None, handed_on: bool, error: BaseException | None = None) -> str:
    """What a stage run did, from its run before and after it, whether it handed a message on, and its error.

    A run the stage ended gives its status (`ok` for succeeded); an error `retried` or `failed`; a transient
    error the stage put its message back for (the run's `retries` grew) `retried`; a stage that neither
    changed the run nor handed anything on (a duplicate, a run past it) `skipped`; anything else `ok`.
    """
    if after is not None and after.finished and not (before is not None and before.finished):
        return OK if after.status is RunStatus.SUCCEEDED else after.status.value
    if error is not None:
        return outcome_of_error(error)
    if before is not None and after is not None:
        if sum(after.retries.values()) > sum(before.retries.values()):
            return RETRIED
        if after.etag == before.etag and not handed_on:
            return SKIPPED
    return OK


class RunIdLogFilter(logging.Filter):
    """Gives every log record made inside a stage the attribute `run_id` (unless the call's `extra` set one).

    The OpenTelemetry logging handler exports a record's own attributes, as `extra={...}` sets them, as log
    attributes: Application Insights shows them in `customDimensions`
    (https://learn.microsoft.com/azure/azure-monitor/app/opentelemetry-add-modify?tabs=python: "You can attach
    custom dimensions to your logs by passing a dictionary into the extra argument of your logs").
    On a handler, unlike on a logger, the filter sees the records of every logger that reaches the handler.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        run_id = _run_id.get()
        if run_id and not hasattr(record, "run_id"):
            record.run_id = run_id
        return True


def attach_run_id_filter(logger: logging.Logger) -> None:
    """Put a `RunIdLogFilter` on each of `logger`'s handlers that has none."""
    for handler in logger.handlers:
        if not any(isinstance(existing, RunIdLogFilter) for existing in handler.filters):
            handler.addFilter(RunIdLogFilter())


def configure_telemetry(env: Mapping[str, str] | None = None) -> bool:
    """Set up the exporters `env` names (see the module docstring), once per process; True when telemetry is on.

    Where the Functions worker configured Azure Monitor itself (app setting
    `PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true`, before it loads function_app.py:
    https://learn.microsoft.com/azure/azure-functions/opentelemetry-howto?pivot=programming-language-python),
    that setup is used as it is: configuring again would export everything twice.
    """
    global _instruments
    settings = TelemetrySettings.from_env(env)
    if _instruments is not None or not settings.enabled:
        return _instruments is not None
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider

    span_processors, metric_readers, log_processors = _exporters(settings)
    if isinstance(trace.get_tracer_provider(), SdkTracerProvider):
        log.info("OpenTelemetry was set up before function_app (by the Functions worker); the stages use that setup")
    elif settings.connection_string:
        # https://learn.microsoft.com/azure/azure-functions/opentelemetry-howto?pivot=programming-language-python
        # ("Enable OpenTelemetry in your app": configure_azure_monitor() in function_app.py).
        from azure.monitor.opentelemetry import configure_azure_monitor

        configure_azure_monitor(
            connection_string=settings.connection_string,
            span_processors=span_processors,
            metric_readers=metric_readers,
            log_record_processors=log_processors,
        )
    else:
        _configure_sdk(span_processors, metric_readers, log_processors)
    _instruments = StageInstruments.from_providers()
    attach_run_id_filter(logging.getLogger())
    log.info(
        "telemetry on: %s",
        ", ".join(
            name
            for name, on in (
                ("Application Insights", settings.connection_string),
                ("OTLP", settings.otlp_endpoint),
                ("console", settings.console),
            )
            if on
        ),
    )
    return True


def _exporters(settings: TelemetrySettings) -> tuple[list[Any], list[Any], list[Any]]:
    """Span processors, metric readers and log record processors for OTLP and the console."""
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    spans: list[Any] = []
    readers: list[Any] = []
    logs: list[Any] = []
    if settings.otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

        spans.append(BatchSpanProcessor(OTLPSpanExporter()))
        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
        logs.append(BatchLogRecordProcessor(OTLPLogExporter()))
    if settings.console:
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

        # Each span printed as it ends, so the local log shows a stage as it happens.
        spans.append(SimpleSpanProcessor(ConsoleSpanExporter()))
        readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter()))
    return spans, readers, logs


def _configure_sdk(span_processors: list[Any], metric_readers: list[Any], log_processors: list[Any]) -> None:
    """Global OpenTelemetry SDK providers with these processors and readers (no Azure Monitor)."""
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    resource = Resource.create({} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": SERVICE_NAME})
    tracer_provider = TracerProvider(resource=resource)
    for processor in span_processors:
        tracer_provider.add_span_processor(processor)
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=metric_readers))
    if log_processors:
        from opentelemetry._logs import set_logger_provider
        from opentelemetry.instrumentation.logging.handler import LoggingHandler
        from opentelemetry.sdk._logs import LoggerProvider

        logger_provider = LoggerProvider(resource=resource)
        for log_processor in log_processors:
            logger_provider.add_log_record_processor(log_processor)
        set_logger_provider(logger_provider)
        logging.getLogger().addHandler(LoggingHandler(logger_provider=logger_provider))
