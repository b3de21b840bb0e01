"""The parts of a function app's host.json that the local runner honours, with the Functions host's defaults."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# `[d.]hh:mm:ss[.fffffff]`, the .NET TimeSpan form host.json uses.
_TIMESPAN = re.compile(r"^(?:(?P<days>\d+)\.)?(?P<hours>\d+):(?P<minutes>\d{1,2}):(?P<seconds>\d{1,2}(?:\.\d+)?)$")
MAX_BATCH_SIZE = 32
# An app setting `AzureFunctionsJobHost__<path>` overrides the host.json value at that path, `__` standing
# for each level ("Override host.json values",
# https://learn.microsoft.com/azure/azure-functions/functions-host-json#override-hostjson-values). The
# deployed host.json carries Azure's values; the local stack sets its fast polling this way.
OVERRIDE_PREFIX = "AzureFunctionsJobHost__"


def parse_timespan(text: str) -> float:
    """Seconds in a host.json TimeSpan such as `00:00:05` or `1.00:00:00`; raises `ValueError` otherwise."""
    match = _TIMESPAN.match(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a TimeSpan; write it as hh:mm:ss, e.g. '00:00:05'.")
    days = int(match["days"] or 0)
    return days * 86400 + int(match["hours"]) * 3600 + int(match["minutes"]) * 60 + float(match["seconds"])


@dataclass(frozen=True)
class QueueSettings:
    """`extensions.queues` in host.json; defaults are the Functions host's."""

    max_polling_interval: float = 60.0
    visibility_timeout: float = 0.0
    batch_size: int = 16
    new_batch_threshold: int = 8
    max_dequeue_count: int = 5
    message_encoding: str = "base64"


@dataclass(frozen=True)
class HostConfig:
    """What the runner reads from host.json."""

    queues: QueueSettings = field(default_factory=QueueSettings)
    function_timeout: float | None = None
    route_prefix: str = "api"

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> HostConfig:
        """Build from the parsed host.json; a missing key keeps the host's default."""
        extensions = document.get("extensions") or {}
        queues = extensions.get("queues") or {}
        http = extensions.get("http") or {}
        batch_size = int(queues.get("batchSize", QueueSettings.batch_size))
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise ValueError(
                f"host.json extensions.queues.batchSize={batch_size} must lie between 1 and {MAX_BATCH_SIZE}."
            )
        encoding = str(queues.get("messageEncoding", "base64")).lower()
        if encoding not in ("base64", "none"):
            raise ValueError(f"host.json extensions.queues.messageEncoding={encoding!r} must be 'base64' or 'none'.")
        queue_settings = QueueSettings(
            max_polling_interval=_seconds(queues, "maxPollingInterval", QueueSettings.max_polling_interval),
            visibility_timeout=_seconds(queues, "visibilityTimeout", QueueSettings.visibility_timeout),
            batch_size=batch_size,
            new_batch_threshold=int(queues.get("newBatchThreshold", batch_size // 2)),
            max_dequeue_count=int(queues.get("maxDequeueCount", QueueSettings.max_dequeue_count)),
            message_encoding=encoding,
        )
        timeout = document.get("functionTimeout")
        # "-1" means unbounded, as does a missing value when run locally.
        function_timeout = None if timeout in (None, "-1", -1) else parse_timespan(str(timeout))
        route_prefix = str(http.get("routePrefix", "api")).strip("/")
        return cls(queues=queue_settings, function_timeout=function_timeout, route_prefix=route_prefix)

    @classmethod
    def load(cls, app_dir: Path, env: Mapping[str, str] | None = None) -> HostConfig:
        """Read `app_dir/host.json` (the defaults when there is none), with `env`'s overrides applied."""
        path = app_dir / "host.json"
        document: dict[str, Any] = {}
        if path.exists():
            try:
                document = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path} is not valid JSON: {exc}") from None
        return cls.from_dict(with_overrides(document, env or {}))


def with_overrides(document: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """`document` with every `AzureFunctionsJobHost__a__b` setting of `env` written at `a.b` (keys matched
    case-insensitively, as the host's configuration is)."""
    result = json.loads(json.dumps(document))
    for name, value in env.items():
        if not name.lower().startswith(OVERRIDE_PREFIX.lower()) or len(name) == len(OVERRIDE_PREFIX):
            continue
        *parents, leaf = name[len(OVERRIDE_PREFIX) :].split("__")
        section = result
        for part in parents:
            key = next((existing for existing in section if existing.lower() == part.lower()), part)
            if not isinstance(section.get(key), dict):
                section[key] = {}
            section = section[key]
        key = next((existing for existing in section if existing.lower() == leaf.lower()), leaf)
        section[key] = value
    return result


def _seconds(section: dict[str, Any], key: str, default: float) -> float:
    value = section.get(key)
    if value is None:
        return default
    try:
        return parse_timespan(str(value))
    except ValueError as exc:
        raise ValueError(f"host.json extensions.queues.{key}: {exc}") from None
