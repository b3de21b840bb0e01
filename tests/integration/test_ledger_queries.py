"""`TableRunLedger`'s server-side filters against a real Azurite: GIVEN runs on several endpoints in several
endpoint states, WHEN the ledger is asked for one endpoint's runs or for runs by endpoint state, THEN the Table
service returns exactly those, newest first, quotes in values included.
"""

from __future__ import annotations

import uuid

import pytest

from shared.ledger import Run, TableRunLedger

pytestmark = pytest.mark.integration

RUNS = [
    # run id, endpoint, endpoint state, created at
    ("a", "ftap-chat", "replaced by c", "2026-01-01T00:00:00+00:00"),
    ("b", "ftap-other", "deleted_idle 2026-02-01T00:00:00+00:00", "2026-01-02T00:00:00+00:00"),
    ("c", "ftap-chat", "live", "2026-01-03T00:00:00+00:00"),
    ("d", "ftap-chat-2", "live", "2026-01-04T00:00:00+00:00"),
    ("e", "it's", "restore_failed 2026-03-01: OutOfQuota", "2026-01-05T00:00:00+00:00"),
    ("f", "", "", "2026-01-06T00:00:00+00:00"),
    ("g", "ftap-lively", "lived", "2026-01-07T00:00:00+00:00"),
    ("h", "ftap-chat", "restoring since 2026-04-01", "2026-01-08T00:00:00+00:00"),
]


@pytest.fixture(scope="module")
def ledger(azurite: str) -> TableRunLedger:
    ledger = TableRunLedger(azurite, f"runs{uuid.uuid4().hex[:12]}")
    for run_id, endpoint, state, created in RUNS:
        run = Run(run_id, "chat", "v1", run_id, "simulated", created, endpoint_name=endpoint, endpoint_state=state)
        assert ledger.create(run)
    return ledger


def ids(runs: list[Run]) -> list[str]:
    return [run.run_id for run in runs]


def test_the_runs_of_one_endpoint_and_only_those_come_back_newest_first(ledger: TableRunLedger) -> None:
    assert ids(ledger.runs_of_endpoint("ftap-chat")) == ["h", "c", "a"]
    assert ids(ledger.runs_of_endpoint("it's")) == ["e"]
    assert ledger.runs_of_endpoint("ftap-chat' or endpoint_name ne '") == []
    assert ledger.runs_of_endpoint("nope") == []


def test_runs_by_endpoint_state_prefix_come_back_newest_first(ledger: TableRunLedger) -> None:
    assert ids(ledger.runs_in_endpoint_state("live")) == ["g", "d", "c"]
    assert ids(ledger.runs_in_endpoint_state("live ", "deleted_idle", "restor")) == ["h", "e", "b"]
    assert ids(ledger.runs_in_endpoint_state("restore_failed", "restoring")) == ["h", "e"]


def test_the_runs_read_back_are_whole_runs_with_their_etags(ledger: TableRunLedger) -> None:
    (run,) = ledger.runs_of_endpoint("ftap-other")
    assert run == ledger.get("b")
    assert ids(ledger.list_runs(limit=3)) == ["h", "g", "f"]
