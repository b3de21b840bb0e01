"""Runs a Python v2 function app locally, standing in for Azure Functions Core Tools (`func start`).

    python -m autopilot.local.runner --app-dir DIR [--host 127.0.0.1] [--port 7071]

It imports `DIR/function_app.py`, reads each function's bindings from the `FunctionApp` and serves them the
way the Functions host does: queue triggers (with host.json's `extensions.queues` settings, retries and
`<queue>-poison`), queue output bindings, NCRONTAB timer triggers, HTTP triggers under `/api/`, Event Grid
triggers at `/runtime/webhooks/EventGrid?functionName=NAME`, and `GET /admin/host/status` for readiness.

Environment it reads besides the app's own settings: `AUTOPILOT_RUNNER_MAX_POLL_MS` (idle queue polling
ceiling, default 500) and `AUTOPILOT_RUNNER_DUPLICATE_DELIVERIES` (1: hand every queue message and Event Grid
event to its function twice, concurrently, to prove the stages idempotent). A queue message stays leased for
host.json's `functionTimeout` (`AzureFunctionsJobHost__functionTimeout` overrides it, as in Azure): the message of
an invocation that crashed comes back after that long. Values from `DIR/local.settings.json`
fill in what the environment does not set. The working directory is left as the caller started it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import functools
import importlib
import inspect
import json
import logging
import os
import re
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import azure.functions as func
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.functions import _queue as functions_queue
from azure.functions.queue import QueueMessage as TriggerQueueMessage
from azure.functions.timer import TimerRequest
from azure.storage.queue import LinearRetry, QueueClient
from azure.storage.queue import QueueMessage as StorageQueueMessage

from autopilot.local.hostconfig import HostConfig, QueueSettings, parse_timespan
from autopilot.local.ncrontab import CronSchedule
from shared.errors import MalformedMessageError
from shared.queueing import decode_queue_body, encode_queue_body
from shared.settings import STORAGE_CONNECTION

log = logging.getLogger("autopilot.runner")

MAX_POLL_ENV = "AUTOPILOT_RUNNER_MAX_POLL_MS"
DUPLICATE_DELIVERIES_ENV = "AUTOPILOT_RUNNER_DUPLICATE_DELIVERIES"
DEFAULT_MAX_POLL_MS = 500
MIN_POLL_SECONDS = 0.05
# The Functions host takes a queue message for 10 minutes and renews that halfway for as long as the function
# runs, so a crashed host's message comes back 5 to 10 minutes after the crash (QueueListener's `_visibilityTimeout`
# and `CreateUpdateMessageVisibilityTimer` in Azure/azure-sdk-for-net,
# sdk/storage/Microsoft.Azure.WebJobs.Extensions.Storage.Queues). The runner does not renew: it takes a message
# once for functionTimeout, the longest an invocation may run, and for these 10 minutes when there is no limit.
DEFAULT_LEASE_SECONDS = 600
# Queue Storage refuses a visibility timeout over 7 days.
MAX_LEASE_SECONDS = 7 * 24 * 3600
# An app setting overrides a host.json value, `__` standing for each level
# (https://learn.microsoft.com/azure/azure-functions/functions-host-json#override-hostjson-values).
FUNCTION_TIMEOUT_OVERRIDE = "AzureFunctionsJobHost__functionTimeout"
STORAGE_RETRY_CEILING_SECONDS = 5.0
# The SDK's default (15 s, 3 retries) would stall a poll for a minute when Azurite is down; the poll loop backs off.
STORAGE_RETRY = LinearRetry(backoff=1, retry_total=2, random_jitter_range=0)
STORAGE_CONNECT_TIMEOUT_SECONDS = 5
SHUTDOWN_GRACE_SECONDS = 20.0
PAST_DUE_SECONDS = 1.0
BODY_PREVIEW_CHARS = 200

QUEUE_TRIGGER = "queuetrigger"
TIMER_TRIGGER = "timertrigger"
HTTP_TRIGGER = "httptrigger"
EVENT_GRID_TRIGGER = "eventgridtrigger"
SUPPORTED_TRIGGERS = (QUEUE_TRIGGER, TIMER_TRIGGER, HTTP_TRIGGER, EVENT_GRID_TRIGGER)
_SETTING_REFERENCE = re.compile(r"%([^%]+)%")


@dataclass(frozen=True)
class RunnerOptions:
    """The runner's own knobs, read from the environment."""

    max_poll_seconds: float = DEFAULT_MAX_POLL_MS / 1000
    duplicate_deliveries: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RunnerOptions:
        raw_poll = env.get(MAX_POLL_ENV, "").strip() or str(DEFAULT_MAX_POLL_MS)
        try:
            max_poll_ms = float(raw_poll)
        except ValueError:
            raise ValueError(f"{MAX_POLL_ENV}={raw_poll!r} is not a number of milliseconds.") from None
        if max_poll_ms <= 0:
            raise ValueError(f"{MAX_POLL_ENV} must be above 0 (it is {raw_poll}).")
        duplicates = env.get(DUPLICATE_DELIVERIES_ENV, "").strip().lower() in ("1", "true", "yes", "on")
        return cls(max_poll_seconds=max_poll_ms / 1000, duplicate_deliveries=duplicates)


def message_lease_seconds(config: HostConfig, env: Mapping[str, str]) -> int:
    """How long a queue message stays invisible while its function runs, and so how long the message of a
    crashed invocation takes to come back: host.json's functionTimeout, or its app-setting override."""
    timeout = config.function_timeout
    override = env.get(FUNCTION_TIMEOUT_OVERRIDE, "").strip()
    if override:
        try:
            timeout = None if override == "-1" else parse_timespan(override)
        except ValueError as exc:
            raise ValueError(f"App setting {FUNCTION_TIMEOUT_OVERRIDE}: {exc}") from None
    return max(1, int(min(timeout or DEFAULT_LEASE_SECONDS, MAX_LEASE_SECONDS)))


# ---------------------------------------------------------------------------------------------------------------
# Loading the app


def load_local_settings(app_dir: Path, environ: MutableMapping[str, str]) -> list[str]:
    """Copy `local.settings.json` "Values" into `environ` where not already set; returns the names applied."""
    path = app_dir / "local.settings.json"
    if not path.exists():
        return []
    try:
        values = json.loads(path.read_text(encoding="utf-8")).get("Values") or {}
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    applied = []
    for name, value in values.items():
        if name not in environ:
            environ[name] = "" if value is None else str(value)
            applied.append(name)
    return applied


def load_function_app(app_dir: Path) -> func.FunctionApp:
    """Import `app_dir/function_app.py` (app_dir first on sys.path) and return its `FunctionApp`."""
    if not (app_dir / "function_app.py").exists():
        raise FileNotFoundError(
            f"{app_dir / 'function_app.py'} does not exist; pass the function app's folder as --app-dir."
        )
    sys.path.insert(0, str(app_dir))
    # A module of that name imported earlier (another app, in tests) must not stand in for this one.
    sys.modules.pop("function_app", None)
    module = importlib.import_module("function_app")
    return _find_function_app(module)


def _find_function_app(module: ModuleType) -> func.FunctionApp:
    candidate = getattr(module, "app", None)
    if isinstance(candidate, func.FunctionApp):
        return candidate
    apps = [value for value in vars(module).values() if isinstance(value, func.FunctionApp)]
    if len(apps) != 1:
        raise ValueError(f"{module.__file__} must define exactly one azure.functions.FunctionApp (found {len(apps)}).")
    return apps[0]


def resolve_setting_references(value: str, env: Mapping[str, str], where: str) -> str:
    """Replace `%NAME%` with the app setting NAME, as the Functions host does in binding values."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            raise ValueError(
                f"{where} refers to app setting %{name}%, which is not set; add it to local.settings.json."
            )
        return env[name]

    return _SETTING_REFERENCE.sub(substitute, value)


@dataclass(frozen=True)
class FunctionSpec:
    """One function of the app as the runner serves it: handler, trigger binding, queue outputs."""

    name: str
    handler: Callable[..., Any]
    trigger: dict[str, Any]
    queue_outputs: tuple[dict[str, Any], ...] = ()
    wants_context: bool = False

    @property
    def trigger_type(self) -> str:
        return str(self.trigger.get("type", "")).lower()

    @property
    def trigger_arg(self) -> str:
        return str(self.trigger["name"])

    def describe(self, base_url: str, route_prefix: str) -> str:
        if self.trigger_type == QUEUE_TRIGGER:
            return f"queueTrigger on {self.trigger['queueName']}"
        if self.trigger_type == TIMER_TRIGGER:
            return f"timerTrigger '{self.trigger['schedule']}'"
        if self.trigger_type == HTTP_TRIGGER:
            methods = ",".join(self.trigger.get("methods") or ["*"])
            prefix = f"/{route_prefix}" if route_prefix else ""
            return f"[{methods}] {base_url}{prefix}/{self.trigger.get('route') or self.name}"
        return f"eventGridTrigger at {base_url}/runtime/webhooks/EventGrid?functionName={self.name}"


def describe_functions(app: func.FunctionApp, env: Mapping[str, str]) -> list[FunctionSpec]:
    """The app's functions with `%SETTING%` references resolved; unsupported triggers are logged and skipped."""
    specs = []
    for function in app.get_functions():
        name = function.get_function_name() or function.get_user_function().__name__
        bindings = [json.loads(raw) for raw in function.get_raw_bindings()]
        triggers = [b for b in bindings if str(b.get("type", "")).lower().endswith("trigger")]
        if len(triggers) != 1 or str(triggers[0]["type"]).lower() not in SUPPORTED_TRIGGERS:
            kinds = ", ".join(str(b.get("type")) for b in triggers) or "none"
            log.warning("Function %s is skipped: the local runner does not serve its trigger (%s).", name, kinds)
            continue
        trigger = _resolve_binding(triggers[0], env, name)
        outputs = []
        for binding in bindings:
            if binding is triggers[0] or str(binding.get("direction", "")).lower() != "out":
                continue
            kind = str(binding.get("type", "")).lower()
            if kind == "queue":
                outputs.append(_resolve_binding(binding, env, name))
            elif kind != "http":
                log.warning(
                    "Function %s: its %s output binding %r is not served locally.", name, kind, binding.get("name")
                )
        for binding in bindings:
            if str(binding.get("direction", "")).lower() == "in" and binding is not triggers[0]:
                log.warning(
                    "Function %s: its %s input binding %r is not served locally.",
                    name,
                    binding.get("type"),
                    binding.get("name"),
                )
        handler = function.get_user_function()
        bound = {str(b.get("name")) for b in bindings}
        wants_context = "context" in inspect.signature(handler).parameters and "context" not in bound
        spec = FunctionSpec(name, handler, trigger, tuple(outputs), wants_context)
        if spec.trigger_type == TIMER_TRIGGER:
            try:
                CronSchedule.parse(str(spec.trigger["schedule"]))
            except ValueError as exc:
                raise ValueError(f"Function {name}: {exc}") from None
        specs.append(spec)
    return specs


def storage_connection_string(setting: str | None, env: Mapping[str, str]) -> str:
    """The connection string a binding's `connection` names; like the host, `X` may be set as `AzureWebJobsX`."""
    name = setting or STORAGE_CONNECTION
    value = env.get(name) or env.get(f"AzureWebJobs{name}")
    if not value:
        identity = any(key.lower().startswith(f"{name.lower()}__") for key in env)
        hint = (
            " Identity settings (__accountName, __serviceUri) are for the app running in Azure: the local runner "
            "needs a connection string (Azurite's, from `autopilot up`)."
            if identity
            else ""
        )
        raise ValueError(
            f"App setting {name} (a storage connection string) is not set; add it to local.settings.json.{hint}"
        )
    return value


def _check_connections(specs: list[FunctionSpec], env: Mapping[str, str]) -> None:
    """Fail at startup, naming the function, when a queue binding's connection setting is missing."""
    for spec in specs:
        queue_bindings = [spec.trigger] if spec.trigger_type == QUEUE_TRIGGER else []
        for binding in [*queue_bindings, *spec.queue_outputs]:
            try:
                storage_connection_string(binding.get("connection"), env)
            except ValueError as exc:
                raise ValueError(f"Function {spec.name}, queue {binding.get('queueName')}: {exc}") from None


def _resolve_binding(binding: dict[str, Any], env: Mapping[str, str], function_name: str) -> dict[str, Any]:
    resolved = dict(binding)
    for key in ("queueName", "schedule", "route"):
        if isinstance(resolved.get(key), str):
            where = f"function {function_name} binding {binding.get('name')!r} {key}"
            resolved[key] = resolve_setting_references(resolved[key], env, where)
    return resolved


# ---------------------------------------------------------------------------------------------------------------
# Invoking functions


class QueueOutput(func.Out[Any]):
    """What a function sets on a queue output binding; sent only after the function succeeds."""

    def __init__(self) -> None:
        self._value: Any = None

    def set(self, val: Any) -> None:
        self._value = val

    def get(self) -> Any:
        return self._value


@dataclass(frozen=True)
class InvocationContext:
    """The `context` argument a function may declare, like the worker's `func.Context`."""

    invocation_id: str
    function_name: str
    function_directory: str
    trace_context: None = None
    retry_context: None = None


class ActivityCounter:
    """Counts work in progress so that shutdown (and batch fetching) can wait for it to drain."""

    def __init__(self) -> None:
        self._count = 0
        self._changed = threading.Condition()

    @property
    def count(self) -> int:
        with self._changed:
            return self._count

    def enter(self) -> None:
        with self._changed:
            self._count += 1

    def leave(self) -> None:
        with self._changed:
            self._count -= 1
            self._changed.notify_all()

    @contextlib.contextmanager
    def tracking(self) -> Iterator[None]:
        self.enter()
        try:
            yield
        finally:
            self.leave()

    def wait_at_most(self, limit: int, timeout: float) -> bool:
        """Wait until no more than `limit` are in progress; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self._count <= limit, timeout)


def queue_output_bodies(value: Any, where: str) -> list[str]:
    """The messages a queue output value stands for: str, bytes, a QueueMessage, or a list of str/QueueMessage."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, bytes):
        return [value.decode("utf-8")]
    if isinstance(value, functions_queue.QueueMessage):
        return [value.get_body().decode("utf-8")]
    if isinstance(value, (list, tuple)) and not any(isinstance(item, (list, tuple)) for item in value):
        return [body for item in value for body in queue_output_bodies(item, where)]
    raise TypeError(
        f"{where} accepts str, bytes, a QueueMessage or a list of str; the function set {type(value).__name__}."
    )


class QueueGateway:
    """Queue clients by (connection setting, queue name); queues are created on first use."""

    def __init__(self, env: Mapping[str, str], message_encoding: str) -> None:
        self._env = env
        self._base64 = message_encoding == "base64"
        self._clients: dict[tuple[str, str], QueueClient] = {}
        self._lock = threading.Lock()

    def client(self, connection_setting: str | None, queue: str, *, create: bool = True) -> QueueClient:
        setting = connection_setting or STORAGE_CONNECTION
        key = (setting, queue)
        with self._lock:
            found = self._clients.get(key)
        if found is not None:
            return found
        client = QueueClient.from_connection_string(
            storage_connection_string(setting, self._env),
            queue,
            retry_policy=STORAGE_RETRY,
            connection_timeout=STORAGE_CONNECT_TIMEOUT_SECONDS,
        )
        if create:
            ensure_queue(client)
        with self._lock:
            return self._clients.setdefault(key, client)

    def encode(self, text: str) -> str:
        return encode_queue_body(text) if self._base64 else text

    def decode(self, body: str) -> str:
        return decode_queue_body(body) if self._base64 else body

    def send(self, connection_setting: str | None, queue: str, texts: list[str]) -> None:
        client = self.client(connection_setting, queue)
        for text in texts:
            client.send_message(self.encode(text))


def ensure_queue(client: QueueClient) -> None:
    with contextlib.suppress(ResourceExistsError):
        client.create_queue()


class Invoker:
    """Calls a function with its trigger value and output bindings, logs the invocation, then sends its outputs."""

    def __init__(self, gateway: QueueGateway, app_dir: Path, activity: ActivityCounter, duplicates: bool) -> None:
        self._gateway = gateway
        self._app_dir = str(app_dir)
        self._activity = activity
        self._duplicates = duplicates

    def invoke(self, spec: FunctionSpec, trigger_value: Any, reason: str) -> Any:
        """One invocation; raises what the function (or sending its outputs) raised."""
        invocation_id = str(uuid.uuid4())
        outputs = {str(b["name"]): QueueOutput() for b in spec.queue_outputs if b["name"] != "$return"}
        arguments: dict[str, Any] = {spec.trigger_arg: trigger_value, **outputs}
        if spec.wants_context:
            arguments["context"] = InvocationContext(invocation_id, spec.name, self._app_dir)
        log.info("Executing 'Functions.%s' (Reason='%s', Id=%s)", spec.name, reason, invocation_id)
        started = time.monotonic()
        with self._activity.tracking():
            try:
                result = spec.handler(**arguments)
                if inspect.iscoroutine(result):
                    result = asyncio.run(result)
                self._send_outputs(spec, outputs, result)
            except Exception as exc:
                elapsed_ms = (time.monotonic() - started) * 1000
                log.error(
                    "Executed 'Functions.%s' (Failed, Id=%s, Duration=%.0fms) %s: %s",
                    spec.name,
                    invocation_id,
                    elapsed_ms,
                    type(exc).__name__,
                    exc,
                    exc_info=exc,
                )
                raise
        elapsed_ms = (time.monotonic() - started) * 1000
        log.info("Executed 'Functions.%s' (Succeeded, Id=%s, Duration=%.0fms)", spec.name, invocation_id, elapsed_ms)
        return result

    def deliver(self, spec: FunctionSpec, make_trigger: Callable[[], Any], reason: str) -> None:
        """Invoke for one message or event; twice at once in duplicate-delivery mode. Raises if any failed."""
        if not self._duplicates:
            self.invoke(spec, make_trigger(), reason)
            return
        errors: list[Exception] = []
        start_together = threading.Barrier(2)

        def run_copy(copy: int) -> None:
            with contextlib.suppress(threading.BrokenBarrierError):
                start_together.wait(timeout=1.0)
            try:
                self.invoke(spec, make_trigger(), f"{reason}; duplicate delivery {copy}/2")
            except Exception as exc:
                errors.append(exc)

        twin = threading.Thread(target=run_copy, args=(2,), name=f"{threading.current_thread().name}-twin")
        twin.start()
        run_copy(1)
        twin.join()
        if errors:
            raise errors[0]

    def _send_outputs(self, spec: FunctionSpec, outputs: dict[str, QueueOutput], result: Any) -> None:
        # Every value is checked before anything is sent, so a bad one sends nothing at all.
        batches = []
        for binding in spec.queue_outputs:
            name = str(binding["name"])
            value = result if name == "$return" else outputs[name].get()
            batches.append((binding, queue_output_bodies(value, f"queue output {name!r} of function {spec.name}")))
        for binding, texts in batches:
            if texts:
                self._gateway.send(binding.get("connection"), str(binding["queueName"]), texts)


# ---------------------------------------------------------------------------------------------------------------
# Queue triggers


class QueueListener:
    """Polls one function's queue like the host's queue listener: batches, retries, poison queue, backoff."""

    def __init__(
        self,
        spec: FunctionSpec,
        gateway: QueueGateway,
        invoker: Invoker,
        settings: QueueSettings,
        *,
        max_poll_seconds: float,
        lease_seconds: int,
        stopping: threading.Event,
        activity: ActivityCounter,
    ) -> None:
        self.spec = spec
        self.queue = str(spec.trigger["queueName"])
        self._connection = spec.trigger.get("connection")
        self._gateway = gateway
        self._invoker = invoker
        self._settings = settings
        self._max_poll = max(min(settings.max_polling_interval, max_poll_seconds), MIN_POLL_SECONDS)
        self._lease = lease_seconds
        self._stopping = stopping
        self._activity = activity
        self._in_flight = ActivityCounter()
        self._executor = ThreadPoolExecutor(
            max_workers=settings.batch_size + settings.new_batch_threshold, thread_name_prefix=spec.name
        )
        self._thread = threading.Thread(target=self._poll, name=f"poll-{self.queue}", daemon=True)

    def create_queue(self) -> bool:
        """Create the trigger queue now so that senders find it; False (logged) when storage does not answer."""
        try:
            self._gateway.client(self._connection, self.queue)
        except AzureError as exc:
            log.warning("Could not create queue %s (%s); polling creates it once storage answers.", self.queue, exc)
            return False
        return True

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def close(self) -> None:
        self._executor.shutdown(wait=False)

    def _poll(self) -> None:
        idle_delay = MIN_POLL_SECONDS
        storage_failures = 0
        while not self._stopping.is_set():
            # The host fetches a new batch only once the running ones drop to newBatchThreshold.
            if not self._in_flight.wait_at_most(self._settings.new_batch_threshold, timeout=0.2):
                continue
            try:
                messages = self._receive()
            except Exception as exc:
                storage_failures += 1
                backoff = min(0.5 * 2**storage_failures, STORAGE_RETRY_CEILING_SECONDS)
                log.warning(
                    "Polling queue %s failed (%s: %s); retrying in %.1f s.",
                    self.queue,
                    type(exc).__name__,
                    exc,
                    backoff,
                )
                self._stopping.wait(backoff)
                continue
            if storage_failures:
                log.info("Polling queue %s works again.", self.queue)
                storage_failures = 0
            if not messages:
                self._stopping.wait(idle_delay)
                idle_delay = min(idle_delay * 2, self._max_poll)
                continue
            idle_delay = MIN_POLL_SECONDS
            for message in messages:
                self._dispatch(message)

    def _dispatch(self, message: StorageQueueMessage) -> None:
        if self._stopping.is_set():
            self._release(message)
            return
        self._in_flight.enter()
        self._activity.enter()
        try:
            self._executor.submit(self._handle, message)
        except RuntimeError:  # the executor closed while this batch arrived
            self._in_flight.leave()
            self._activity.leave()
            self._release(message)

    def _release(self, message: StorageQueueMessage) -> None:
        """Make a message taken but not started visible again at once, instead of after its lease."""
        try:
            self._gateway.client(self._connection, self.queue, create=False).update_message(
                message, visibility_timeout=0
            )
        except AzureError as exc:
            log.warning(
                "Could not release message %s on %s (%s); it returns when its lease ends.", message.id, self.queue, exc
            )

    def _receive(self) -> list[StorageQueueMessage]:
        client = self._gateway.client(self._connection, self.queue, create=False)
        batch = self._settings.batch_size
        try:
            return list(
                client.receive_messages(messages_per_page=batch, max_messages=batch, visibility_timeout=self._lease)
            )
        except ResourceNotFoundError:
            ensure_queue(client)
            return []

    def _handle(self, message: StorageQueueMessage) -> None:
        try:
            self._process(message)
        except Exception:
            log.exception(
                "Finishing message %s from queue %s failed; it becomes visible again when its lease ends.",
                message.id,
                self.queue,
            )
        finally:
            self._in_flight.leave()
            self._activity.leave()

    def _process(self, message: StorageQueueMessage) -> None:
        client = self._gateway.client(self._connection, self.queue, create=False)
        dequeue_count = int(message.dequeue_count or 1)
        if dequeue_count > self._settings.max_dequeue_count:
            self._move_to_poison(client, message, f"it was dequeued {dequeue_count} times")
            return
        try:
            text = self._gateway.decode(message.content or "")
        except MalformedMessageError as exc:
            self._move_to_poison(client, message, f"{exc} Body starts {str(message.content)[:BODY_PREVIEW_CHARS]!r}")
            return

        def make_trigger() -> TriggerQueueMessage:
            return TriggerQueueMessage(
                id=message.id,
                body=text.encode("utf-8"),
                dequeue_count=dequeue_count,
                expiration_time=message.expires_on,
                insertion_time=message.inserted_on,
                time_next_visible=message.next_visible_on,
                pop_receipt=message.pop_receipt,
            )

        reason = f"New queue message detected on '{self.queue}' (message {message.id}, dequeue count {dequeue_count})"
        try:
            self._invoker.deliver(self.spec, make_trigger, reason)
        except Exception:
            if dequeue_count >= self._settings.max_dequeue_count:
                self._move_to_poison(client, message, f"it failed {dequeue_count} times (maxDequeueCount)")
            else:
                client.update_message(message, visibility_timeout=int(self._settings.visibility_timeout))
            return
        client.delete_message(message)

    def _move_to_poison(self, client: QueueClient, message: StorageQueueMessage, why: str) -> None:
        poison_queue = f"{self.queue}-poison"
        # The original body, not re-encoded: what the host copies to the poison queue.
        self._gateway.client(self._connection, poison_queue).send_message(message.content)
        client.delete_message(message)
        log.warning("Message %s moved from %s to %s: %s", message.id, self.queue, poison_queue, why)


# ---------------------------------------------------------------------------------------------------------------
# Timer triggers


class TimerScheduler:
    """Fires one timer-triggered function on its NCRONTAB schedule (UTC); runs never overlap, as in the host."""

    def __init__(self, spec: FunctionSpec, invoker: Invoker, stopping: threading.Event) -> None:
        self.spec = spec
        self._schedule = CronSchedule.parse(str(spec.trigger["schedule"]))
        self._run_on_startup = bool(spec.trigger.get("runOnStartup"))
        self._invoker = invoker
        self._stopping = stopping
        self._last: datetime | None = None
        self._thread = threading.Thread(target=self._run, name=f"timer-{spec.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        now = datetime.now(timezone.utc)
        if self._run_on_startup:
            self._fire(now, now, "Timer fired on startup (runOnStartup)")
        base = now
        while not self._stopping.is_set():
            due = self._schedule.next_after(base)
            wait = (due - datetime.now(timezone.utc)).total_seconds()
            if self._stopping.wait(max(wait, 0.0)):
                return
            self._fire(due, datetime.now(timezone.utc), f"Timer fired at {due.isoformat()}")
            # Occurrences missed while the function ran are skipped, not queued up.
            base = max(due, datetime.now(timezone.utc) - timedelta(seconds=PAST_DUE_SECONDS))

    def _fire(self, due: datetime, now: datetime, reason: str) -> None:
        past_due = (now - due).total_seconds() > PAST_DUE_SECONDS
        status = {
            "Last": self._last.isoformat() if self._last else None,
            "Next": self._schedule.next_after(due).isoformat(),
            "LastUpdated": now.isoformat(),
        }
        request = TimerRequest(past_due=past_due, schedule_status=status, schedule={"AdjustForDST": False})
        # A failure is logged by the invoker; the next occurrence runs regardless, as in the host.
        with contextlib.suppress(Exception):
            self._invoker.invoke(self.spec, request, reason)
        self._last = due


# ---------------------------------------------------------------------------------------------------------------
# HTTP: routes, Event Grid webhook, admin status

_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")
_CONSTRAINTS = {
    "alpha": "[A-Za-z]+",
    "int": "-?[0-9]+",
    "long": "-?[0-9]+",
    "bool": "(?:true|false)",
    "guid": "[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{12}",
}


@dataclass(frozen=True)
class HttpRoute:
    """A function's route template compiled to a regular expression over the path after the prefix."""

    spec: FunctionSpec
    template: str
    pattern: re.Pattern[str]
    parameters: tuple[str, ...]
    defaults: dict[str, str] = field(default_factory=dict)
    methods: frozenset[str] | None = None
    literal_segments: int = 0

    @classmethod
    def compile(cls, spec: FunctionSpec) -> HttpRoute:
        template = str(spec.trigger.get("route") or spec.name).strip("/")
        pieces: list[str] = []
        parameters: list[str] = []
        defaults: dict[str, str] = {}
        literal_segments = 0
        for segment in template.split("/") if template else []:
            segment_pattern, optional, literal = _segment_pattern(segment, parameters, defaults)
            literal_segments += literal
            pieces.append(f"(?:/{segment_pattern})?" if optional else f"/{segment_pattern}")
        pattern = re.compile("".join(pieces) + "/?", re.IGNORECASE)
        methods = spec.trigger.get("methods")
        allowed = frozenset(str(m).upper() for m in methods) if methods else None
        return cls(spec, template, pattern, tuple(parameters), defaults, allowed, literal_segments)

    def match(self, path: str) -> dict[str, str] | None:
        found = self.pattern.fullmatch(path)
        if found is None:
            return None
        values = dict(self.defaults)
        for index, name in enumerate(self.parameters):
            value = found.group(f"p{index}")
            if value is not None:
                values[name] = unquote(value)
        return values


def _segment_pattern(segment: str, parameters: list[str], defaults: dict[str, str]) -> tuple[str, bool, bool]:
    """(regex, whole segment optional, is literal) for one route segment such as `runs`, `{id}`, `{*rest}`."""
    optional = False
    pattern = ""
    position = 0
    for found in _PLACEHOLDER.finditer(segment):
        pattern += re.escape(segment[position : found.start()])
        position = found.end()
        spec = found.group(1)
        catch_all = spec.startswith("*")
        spec = spec.lstrip("*")
        name_part, _, default = spec.partition("=")
        if name_part.endswith("?"):
            name_part = name_part[:-1]
            optional = True
        name, *constraints = name_part.split(":")
        if default:
            defaults[name] = default
            optional = True
        value_pattern = ".*" if catch_all else "[^/]+"
        for constraint in constraints:
            value_pattern = _CONSTRAINTS.get(constraint.split("(")[0].lower(), value_pattern)
        pattern += f"(?P<p{len(parameters)}>{value_pattern})"
        parameters.append(name)
        optional = optional or catch_all
    pattern += re.escape(segment[position:])
    return pattern, optional and _PLACEHOLDER.fullmatch(segment) is not None, position == 0


def parse_event_time(text: Any) -> datetime | None:
    """An Event Grid `eventTime` (ISO 8601, up to 7 fraction digits, `Z`) as an aware datetime."""
    if not text:
        return None
    value = str(text).strip().replace("Z", "+00:00").replace("z", "+00:00")
    # Python 3.10 reads only 3 or 6 fraction digits; Event Grid writes up to 7.
    value = re.sub(r"\.(\d+)", lambda digits: "." + (digits.group(1) + "000000")[:6], value)
    return datetime.fromisoformat(value)


def event_grid_event(event: dict[str, Any]) -> func.EventGridEvent:
    """The trigger argument for one event (Event Grid schema; CloudEvents field names accepted too)."""
    return func.EventGridEvent(
        id=str(event.get("id", "")),
        data=event.get("data"),  # type: ignore[arg-type]
        topic=str(event.get("topic", event.get("source", ""))),
        subject=str(event.get("subject", "")),
        event_type=str(event.get("eventType", event.get("type", ""))),
        event_time=parse_event_time(event.get("eventTime", event.get("time"))),
        data_version=str(event.get("dataVersion", event.get("dataschema", "")) or ""),
    )


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, document: Any) -> Reply:
        return cls(status, json.dumps(document).encode("utf-8"), {"Content-Type": "application/json; charset=utf-8"})


class HttpFront:
    """Turns HTTP requests into invocations: `/api/...` routes, the Event Grid webhook and the status page."""

    def __init__(
        self, specs: list[FunctionSpec], invoker: Invoker, route_prefix: str, activity: ActivityCounter
    ) -> None:
        self._invoker = invoker
        self._activity = activity
        self._prefix = f"/{route_prefix}" if route_prefix else ""
        self._names = [spec.name for spec in specs]
        self._routes = sorted(
            (HttpRoute.compile(spec) for spec in specs if spec.trigger_type == HTTP_TRIGGER),
            key=lambda route: (-route.literal_segments, ".*" in route.pattern.pattern, -len(route.template)),
        )
        self._event_grid = {spec.name.lower(): spec for spec in specs if spec.trigger_type == EVENT_GRID_TRIGGER}
        self.state = "Running"

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes, base_url: str) -> Reply:
        parts = urlsplit(target)
        path = parts.path
        if path.rstrip("/") == "/admin/host/status" and method in ("GET", "HEAD"):
            return Reply.json(200, {"state": self.state, "functions": self._names})
        if path.rstrip("/").lower() == "/runtime/webhooks/eventgrid":
            if method != "POST":
                return Reply.json(405, {"error": "The Event Grid webhook takes POST only."})
            return self._event_grid_delivery(dict(parse_qsl(parts.query)), headers, body)
        if self._prefix == "" or path.lower() == self._prefix or path.lower().startswith(self._prefix + "/"):
            return self._http_function(method, path[len(self._prefix) :], parts.query, headers, body, base_url + target)
        return Reply.json(404, {"error": f"No function serves {method} {path}."})

    def _http_function(
        self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes, url: str
    ) -> Reply:
        allowed: set[str] = set()
        for route in self._routes:
            route_params = route.match(path)
            if route_params is None:
                continue
            if route.methods is not None and method not in route.methods:
                allowed |= route.methods
                continue
            request = func.HttpRequest(
                method,
                url,
                headers=dict(headers),
                params=dict(parse_qsl(query, keep_blank_values=True)),
                route_params=route_params,
                body=body,
            )
            try:
                result = self._invoker.invoke(route.spec, request, f"HTTP {method} {self._prefix}{path}")
            except Exception as exc:
                return Reply.json(500, {"error": f"Function {route.spec.name} failed: {type(exc).__name__}."})
            return _http_reply(result)
        if allowed:
            return Reply.json(405, {"error": f"{method} is not allowed here.", "allowed": sorted(allowed)})
        return Reply.json(404, {"error": f"No function serves {method} {self._prefix}{path}."})

    def _event_grid_delivery(self, query: dict[str, str], headers: Mapping[str, str], body: bytes) -> Reply:
        name = query.get("functionName", "")
        if not name:
            return Reply.json(400, {"error": "Add ?functionName=NAME to the Event Grid webhook address."})
        spec = self._event_grid.get(name.lower())
        if spec is None:
            return Reply.json(404, {"error": f"No Event Grid triggered function is named {name}."})
        delivery_type = next((value for key, value in headers.items() if key.lower() == "aeg-event-type"), "")
        if delivery_type not in ("SubscriptionValidation", "Notification"):
            return Reply.json(400, {"error": "Header aeg-event-type must be SubscriptionValidation or Notification."})
        try:
            document = json.loads(body or b"null")
        except ValueError:
            return Reply.json(400, {"error": "The body is not JSON; Event Grid sends a JSON array of events."})
        events = [document] if isinstance(document, dict) else document
        if not isinstance(events, list) or not events or not all(isinstance(event, dict) for event in events):
            return Reply.json(400, {"error": "The body must be a non-empty JSON array of event objects."})
        if delivery_type == "SubscriptionValidation":
            code = (events[0].get("data") or {}).get("validationCode")
            if code is None:
                return Reply.json(400, {"error": "A SubscriptionValidation event needs data.validationCode."})
            return Reply.json(200, {"validationResponse": code})
        try:
            for event in events:
                event_grid_event(event)
        except ValueError as exc:
            return Reply.json(400, {"error": f"An event has an unreadable eventTime: {exc}"})
        failures = 0
        for event in events:
            reason = f"EventGrid event {event.get('id')} ({event.get('eventType', event.get('type'))})"
            try:
                self._invoker.deliver(spec, functools.partial(event_grid_event, event), reason)
            except Exception:
                failures += 1
        if failures:
            return Reply.json(
                500, {"error": f"{failures} of {len(events)} events failed in {spec.name}; retry the delivery."}
            )
        return Reply(202)


def _http_reply(result: Any) -> Reply:
    if isinstance(result, func.HttpResponse):
        headers = {key: value for key, value in result.headers.items()}
        if not any(key.lower() == "content-type" for key in headers):
            headers["Content-Type"] = f"{result.mimetype}; charset={result.charset}"
        return Reply(result.status_code, result.get_body() or b"", headers)
    if result is None:
        return Reply(204)
    if isinstance(result, str):
        return Reply(200, result.encode("utf-8"), {"Content-Type": "text/plain; charset=utf-8"})
    if isinstance(result, bytes):
        return Reply(200, result, {"Content-Type": "application/octet-stream"})
    return Reply.json(500, {"error": f"The function returned {type(result).__name__}; return a func.HttpResponse."})


class _RequestHandler(BaseHTTPRequestHandler):
    server: _RunnerHttpServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = do_GET

    def _dispatch(self) -> None:
        body = self._read_body()
        base_url = f"http://{self.headers.get('Host') or self.server.authority}"
        with self.server.activity.tracking():
            reply = self.server.front.handle(self.command, self.path, dict(self.headers.items()), body, base_url)
        self.send_response(reply.status)
        for key, value in reply.headers.items():
            if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


class _RunnerHttpServer(ThreadingHTTPServer):
    daemon_threads = True

    # How long a start waits for its port while a killed runner's forked children (the validator's workers inherit
    # the listening socket) are still going away: `autopilot up` right after a crash must not fail for that.
    BIND_WAIT_SECONDS = 15.0

    def __init__(self, address: tuple[str, int], front: HttpFront, activity: ActivityCounter) -> None:
        super().__init__(address, _RequestHandler, bind_and_activate=False)
        self.front = front
        self.activity = activity
        deadline = time.monotonic() + self.BIND_WAIT_SECONDS
        while True:
            try:
                self.server_bind()
                self.server_activate()
                return
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or time.monotonic() >= deadline:
                    self.server_close()
                    raise
                log.info("Port %s is still in use; waiting for it.", address[1])
                time.sleep(0.25)

    @property
    def authority(self) -> str:
        host, port = self.server_address[:2]
        return f"{host.decode() if isinstance(host, bytes) else host}:{port}"


# ---------------------------------------------------------------------------------------------------------------
# The host


class LocalFunctionHost:
    """Serves one function app: queue listeners, timers and the HTTP front. `start()`, then `stop()`."""

    def __init__(
        self,
        app: func.FunctionApp,
        *,
        app_dir: Path,
        config: HostConfig,
        env: Mapping[str, str],
        host: str = "127.0.0.1",
        port: int = 7071,
        options: RunnerOptions | None = None,
    ) -> None:
        self._options = options or RunnerOptions.from_env(env)
        self._config = config
        self._stopping = threading.Event()
        self._activity = ActivityCounter()
        self.specs = describe_functions(app, env)
        _check_connections(self.specs, env)
        self._gateway = QueueGateway(env, config.queues.message_encoding)
        self._invoker = Invoker(self._gateway, app_dir, self._activity, self._options.duplicate_deliveries)
        self.lease_seconds = message_lease_seconds(config, env)
        self._listeners = [
            QueueListener(
                spec,
                self._gateway,
                self._invoker,
                config.queues,
                max_poll_seconds=self._options.max_poll_seconds,
                lease_seconds=self.lease_seconds,
                stopping=self._stopping,
                activity=self._activity,
            )
            for spec in self.specs
            if spec.trigger_type == QUEUE_TRIGGER
        ]
        self._timers = [
            TimerScheduler(spec, self._invoker, self._stopping)
            for spec in self.specs
            if spec.trigger_type == TIMER_TRIGGER
        ]
        self._front = HttpFront(self.specs, self._invoker, config.route_prefix, self._activity)
        self._server = _RunnerHttpServer((host, port), self._front, self._activity)
        self._server_thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://{self._server.authority}"

    def start(self) -> None:
        if self._options.duplicate_deliveries:
            log.warning(
                "%s is on: every queue message and Event Grid event is delivered TWICE.", DUPLICATE_DELIVERIES_ENV
            )
        log.info("Functions:")
        for spec in self.specs:
            log.info("  %s: %s", spec.name, spec.describe(self.base_url, self._config.route_prefix))
        for listener in self._listeners:
            if not listener.create_queue():
                break  # storage is down: do not wait on it once per queue
        for listener in self._listeners:
            listener.start()
        for timer in self._timers:
            timer.start()
        self._server_thread.start()
        log.info(
            "Host started on %s (queue polling at most every %.0f ms idle; a message stays leased %d s while its "
            "function runs).",
            self.base_url,
            self._max_poll_ms(),
            self.lease_seconds,
        )

    def stop(self, grace_seconds: float = SHUTDOWN_GRACE_SECONDS) -> bool:
        """Stop polling and serving, wait up to `grace_seconds` for running invocations; True if all finished."""
        self._front.state = "Stopping"
        self._stopping.set()
        if self._server_thread.is_alive():
            self._server.shutdown()
        deadline = time.monotonic() + grace_seconds
        for listener in self._listeners:
            listener.join(max(deadline - time.monotonic(), 0.0))
        drained = self._activity.wait_at_most(0, max(deadline - time.monotonic(), 0.0))
        if not drained:
            log.warning(
                "%d invocations still running after %.0f s; exiting anyway.", self._activity.count, grace_seconds
            )
        for listener in self._listeners:
            listener.close()
        self._server.server_close()
        log.info("Host stopped.")
        return drained

    def _max_poll_ms(self) -> float:
        return min(self._config.queues.max_polling_interval, self._options.max_poll_seconds) * 1000


def serve(
    app_dir: Path | str,
    host: str = "127.0.0.1",
    port: int = 7071,
    env: Mapping[str, str] | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Run the app in `app_dir` until SIGTERM/SIGINT (or `stop` is set); returns the exit status.

    `env` values are put into the process environment first (functions read os.environ); then
    local.settings.json fills in what is still unset.
    """
    app_dir = Path(app_dir).resolve()
    if env is not None:
        os.environ.update(env)
    applied = load_local_settings(app_dir, os.environ)
    if applied:
        log.info("Loaded %d settings from local.settings.json.", len(applied))
    config = HostConfig.load(app_dir, os.environ)
    app = load_function_app(app_dir)
    function_host = LocalFunctionHost(app, app_dir=app_dir, config=config, env=os.environ, host=host, port=port)
    stop = threading.Event() if stop is None else stop
    if threading.current_thread() is threading.main_thread():

        def on_signal(signum: int, frame: FrameType | None) -> None:
            log.info("Received %s; stopping.", signal.Signals(signum).name)
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    function_host.start()
    while not stop.wait(0.5):
        pass
    function_host.stop()
    return 0


def configure_logging() -> None:
    """Everything, functions' own `logging` calls included, to stderr; the storage SDK's request log muted."""
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s [%(threadName)s] %(name)s: %(message)s",
        force=True,
    )
    logging.getLogger("azure").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autopilot.local.runner", description=__doc__.splitlines()[0])
    parser.add_argument("--app-dir", type=Path, default=Path.cwd(), help="folder holding function_app.py and host.json")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7071)
    args = parser.parse_args(argv)
    configure_logging()
    try:
        return serve(args.app_dir, args.host, args.port)
    except (ValueError, FileNotFoundError, OSError) as exc:
        log.error("The runner could not start: %s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
