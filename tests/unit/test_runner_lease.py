"""How long the local runner keeps a queue message leased while its function runs: host.json's functionTimeout.

The Functions host takes a message for 10 minutes and renews that while the function runs (QueueListener in
Azure/azure-sdk-for-net, Microsoft.Azure.WebJobs.Extensions.Storage.Queues); the runner takes it once for
functionTimeout, which the project's host.json sets to the same 10 minutes.
"""

from __future__ import annotations

import json

import pytest

from autopilot.local.hostconfig import HostConfig, parse_timespan
from autopilot.local.processes import PROJECT_ROOT
from autopilot.local.runner import (
    DEFAULT_LEASE_SECONDS,
    FUNCTION_TIMEOUT_OVERRIDE,
    MAX_LEASE_SECONDS,
    message_lease_seconds,
)


def test_the_project_host_json_and_the_runner_agree_on_ten_minutes() -> None:
    function_timeout = json.loads((PROJECT_ROOT / "host.json").read_text())["functionTimeout"]
    lease = message_lease_seconds(HostConfig.load(PROJECT_ROOT), {})
    assert lease == parse_timespan(function_timeout) == 600


def test_the_lease_follows_function_timeout() -> None:
    assert message_lease_seconds(HostConfig.from_dict({"functionTimeout": "00:02:30"}), {}) == 150


@pytest.mark.parametrize("document", [{}, {"functionTimeout": "-1"}])
def test_without_a_limit_the_lease_is_the_hosts_ten_minutes(document: dict[str, str]) -> None:
    assert message_lease_seconds(HostConfig.from_dict(document), {}) == DEFAULT_LEASE_SECONDS == 600


def test_the_app_setting_overrides_host_json_as_in_azure() -> None:
    config = HostConfig.from_dict({"functionTimeout": "00:10:00"})
    assert message_lease_seconds(config, {FUNCTION_TIMEOUT_OVERRIDE: "00:00:20"}) == 20
    assert message_lease_seconds(config, {FUNCTION_TIMEOUT_OVERRIDE: "-1"}) == DEFAULT_LEASE_SECONDS
    assert message_lease_seconds(config, {FUNCTION_TIMEOUT_OVERRIDE: " "}) == 600


def test_a_bad_override_names_the_setting() -> None:
    with pytest.raises(ValueError, match=FUNCTION_TIMEOUT_OVERRIDE):
        message_lease_seconds(HostConfig(), {FUNCTION_TIMEOUT_OVERRIDE: "20s"})


def test_the_lease_is_at_least_a_second_and_at_most_queue_storages_seven_days() -> None:
    assert message_lease_seconds(HostConfig.from_dict({"functionTimeout": "00:00:00.2"}), {}) == 1
    assert message_lease_seconds(HostConfig.from_dict({"functionTimeout": "30.00:00:00"}), {}) == MAX_LEASE_SECONDS
