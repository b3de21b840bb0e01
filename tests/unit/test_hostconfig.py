"""host.json reading for the local runner (azure-facts.md: extensions.queues defaults)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autopilot.local.hostconfig import HostConfig, QueueSettings, parse_timespan
from autopilot.local.processes import PROJECT_ROOT


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("00:00:00", 0),
        ("00:00:05", 5),
        ("00:01:00", 60),
        ("01:00:00", 3600),
        ("1.00:00:30", 86430),
        ("00:00:00.5", 0.5),
    ],
)
def test_parse_timespan(text: str, seconds: float) -> None:
    assert parse_timespan(text) == seconds


@pytest.mark.parametrize("text", ["5", "5s", "00:05", "", "aa:bb:cc"])
def test_parse_timespan_rejects_other_forms(text: str) -> None:
    with pytest.raises(ValueError, match="is not a TimeSpan"):
        parse_timespan(text)


def test_silent_host_json_gets_the_host_defaults() -> None:
    config = HostConfig.from_dict({"version": "2.0"})

    assert config.queues == QueueSettings(
        max_polling_interval=60.0,
        visibility_timeout=0.0,
        batch_size=16,
        new_batch_threshold=8,
        max_dequeue_count=5,
        message_encoding="base64",
    )
    assert config.function_timeout is None
    assert config.route_prefix == "api"


def test_new_batch_threshold_defaults_to_half_the_batch_size() -> None:
    assert HostConfig.from_dict({"extensions": {"queues": {"batchSize": 10}}}).queues.new_batch_threshold == 5


def test_project_host_json_is_read() -> None:
    queues = json.loads((PROJECT_ROOT / "host.json").read_text())["extensions"]["queues"]

    config = HostConfig.load(PROJECT_ROOT)

    assert config.queues.batch_size == queues["batchSize"]
    assert config.queues.max_dequeue_count == queues["maxDequeueCount"]
    assert config.queues.visibility_timeout == parse_timespan(queues["visibilityTimeout"])


def test_route_prefix_and_unbounded_timeout() -> None:
    config = HostConfig.from_dict({"functionTimeout": "-1", "extensions": {"http": {"routePrefix": "/v1/"}}})

    assert config.function_timeout is None
    assert config.route_prefix == "v1"


def test_missing_host_json_means_defaults(tmp_path: Path) -> None:
    assert HostConfig.load(tmp_path) == HostConfig()


@pytest.mark.parametrize(
    ("queues", "message"),
    [
        ({"batchSize": 33}, "batchSize=33 must lie between 1 and 32"),
        ({"batchSize": 0}, "batchSize=0"),
        ({"messageEncoding": "utf8"}, "messageEncoding='utf8'"),
        ({"visibilityTimeout": "5"}, "visibilityTimeout: '5' is not a TimeSpan"),
    ],
)
def test_bad_queue_settings_are_named(queues: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        HostConfig.from_dict({"extensions": {"queues": queues}})


def test_invalid_json_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "host.json").write_text("{not json")

    with pytest.raises(ValueError, match=r"host\.json is not valid JSON"):
        HostConfig.load(tmp_path)


def test_app_settings_override_host_json_values_level_by_level() -> None:
    env = {
        "AzureFunctionsJobHost__extensions__queues__maxPollingInterval": "00:00:02",
        "azurefunctionsjobhost__Extensions__Queues__visibilityTimeout": "00:00:05",
        "AzureFunctionsJobHost__functionTimeout": "00:03:00",
        "OTHER": "x",
    }
    config = HostConfig.load(PROJECT_ROOT, env)
    assert config.queues.max_polling_interval == 2.0 and config.queues.visibility_timeout == 5.0
    assert config.function_timeout == 180.0
    # the file itself keeps Azure's values
    assert HostConfig.load(PROJECT_ROOT).queues.max_polling_interval >= 10


def test_the_deployed_host_json_does_not_poll_every_two_seconds() -> None:
    queues = json.loads((PROJECT_ROOT / "host.json").read_text())["extensions"]["queues"]
    assert parse_timespan(queues["maxPollingInterval"]) >= 10
