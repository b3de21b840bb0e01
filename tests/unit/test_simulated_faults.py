"""Fault injection in the simulated ML backend: a share of port calls fail transiently, before or after their effect."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.bootstrap import build_backend
from shared.errors import BackendError, ConfigurationError, TransientError
from shared.ml.port import RUN_TAG, FinetuneJobSpec, ModelRegistration
from shared.ml.simulated import AFTER_EFFECT, BEFORE_EFFECT, SimulatedMLBackend, TransientFaults
from shared.settings import Settings
from tests.unit.ml_local.fakes import FakePublisher


def job(name: str, **parameters: object) -> FinetuneJobSpec:
    return FinetuneJobSpec(
        job_name=name, run_id=name, dataset="chat", base_model="Phi-4", train_file="train.jsonl", parameters=parameters
    )


def test_without_a_fault_rate_no_call_fails() -> None:
    backend = SimulatedMLBackend(job_seconds=None)
    for index in range(200):
        backend.submit_finetune_job(job(f"j{index}"))
        backend.ensure_endpoint(f"e{index}", {})
    assert sum(backend.faults.injected.values()) == 0


def test_a_fault_before_the_effect_changes_nothing_and_one_after_it_leaves_the_effect() -> None:
    # GIVEN every call failing, each before or after its effect
    backend = SimulatedMLBackend(job_seconds=None, faults=TransientFaults(1.0, seed=7))
    seen: dict[str, int] = {BEFORE_EFFECT: 0, AFTER_EFFECT: 0}
    for index in range(40):
        before = backend.faults.injected[("submit_finetune_job", BEFORE_EFFECT)]
        # WHEN a job is submitted THEN the caller always meets a transient error
        with pytest.raises(TransientError, match="simulated fault: submit_finetune_job"):
            backend.submit_finetune_job(job(f"j{index}"))
        when = (
            BEFORE_EFFECT if backend.faults.injected[("submit_finetune_job", BEFORE_EFFECT)] > before else AFTER_EFFECT
        )
        seen[when] += 1
        # AND the job exists only when the fault came after the effect (the answer was lost)
        assert (f"j{index}" in backend.state["jobs"]) is (when == AFTER_EFFECT)
    assert seen[BEFORE_EFFECT] > 0 and seen[AFTER_EFFECT] > 0


def test_the_share_of_failing_calls_is_the_rate_half_before_half_after() -> None:
    faults = TransientFaults(0.3, seed=1)
    decisions = [faults.draw("get_job") for _ in range(5000)]
    failed = [when for when in decisions if when is not None]
    assert 0.27 < len(failed) / len(decisions) < 0.33
    assert 0.45 < failed.count(BEFORE_EFFECT) / len(failed) < 0.55
    assert sum(faults.injected.values()) == len(failed)


def test_the_same_seed_gives_the_same_faults() -> None:
    first, second = TransientFaults(0.5, seed=42), TransientFaults(0.5, seed=42)
    assert [first.draw("x") for _ in range(100)] == [second.draw("x") for _ in range(100)]


def test_a_call_the_backend_makes_to_itself_is_not_a_second_chance_to_fail() -> None:
    # submit_finetune_job reads the job back through get_job: one call from outside, one decision
    backend = SimulatedMLBackend(job_seconds=None, faults=TransientFaults(1.0, seed=3))
    with pytest.raises(TransientError):
        backend.submit_finetune_job(job("j"))
    assert sum(backend.faults.injected.values()) == 1
    assert list(backend.faults.injected) in (
        [("submit_finetune_job", BEFORE_EFFECT)],
        [("submit_finetune_job", AFTER_EFFECT)],
    )


def test_a_retry_after_a_lost_answer_finds_what_the_call_made() -> None:
    backend = SimulatedMLBackend(job_seconds=None, faults=TransientFaults(1.0, seed=0))
    while not backend.state["endpoints"]:
        with pytest.raises(TransientError):
            backend.ensure_endpoint("ftap-chat", {"a": "b"})
    backend.faults.rate = 0.0
    assert backend.ensure_endpoint("ftap-chat", {"a": "b"}).name == "ftap-chat"
    assert list(backend.state["endpoints"]) == ["ftap-chat"]


def test_errors_of_the_call_itself_pass_through_unchanged() -> None:
    backend = SimulatedMLBackend(job_seconds=None, faults=TransientFaults(0.0))
    with pytest.raises(BackendError, match="does not exist"):
        backend.get_job("missing")


@pytest.mark.parametrize("rate", [-0.1, 1.5])
def test_a_rate_outside_0_to_1_is_refused(rate: float) -> None:
    with pytest.raises(ConfigurationError, match="between 0 and 1"):
        TransientFaults(rate)


def test_settings_wire_the_faults_into_the_simulated_backend(tmp_path: Path) -> None:
    env = {
        "AzureWebJobsStorage": "x",
        "AUTOPILOT_ML_BACKEND": "simulated",
        "AUTOPILOT_STATE_DIR": str(tmp_path),
        "AUTOPILOT_SIMULATED_FAULT_RATE": "0.3",
        "AUTOPILOT_SIMULATED_FAULT_SEED": "11",
    }
    settings = Settings.from_env(env)
    assert (settings.simulated_fault_rate, settings.simulated_fault_seed) == (0.3, 11)
    backend = build_backend(settings)
    assert isinstance(backend, SimulatedMLBackend) and backend.faults.rate == 0.3
    defaults = Settings.from_env({"AzureWebJobsStorage": "x"})
    assert (defaults.simulated_fault_rate, defaults.simulated_fault_seed) == (0.0, None)


@pytest.mark.parametrize(
    ("name", "value"), [("AUTOPILOT_SIMULATED_FAULT_RATE", "2"), ("AUTOPILOT_SIMULATED_FAULT_SEED", "seven")]
)
def test_bad_fault_settings_name_their_setting(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        Settings.from_env({"AzureWebJobsStorage": "x", name: value})


def test_a_lost_job_event_leaves_the_job_completed_and_publishes_nothing() -> None:
    publisher = FakePublisher()
    backend = SimulatedMLBackend(job_seconds=None, publisher=publisher)
    backend.submit_finetune_job(job("lost", simulate_failure="event"))
    backend.finish_job("lost")
    assert backend.get_job("lost").status == "Completed" and publisher.events == []


def test_a_model_version_another_run_registered_is_a_conflict() -> None:
    backend = SimulatedMLBackend(job_seconds=None)
    for name in ("a", "b"):
        backend.submit_finetune_job(job(name))
        backend.finish_job(name)
    backend.register_model(ModelRegistration("a", "Phi-4-chat", "100", tags={RUN_TAG: "a"}))
    assert backend.register_model(ModelRegistration("a", "Phi-4-chat", "100", tags={RUN_TAG: "a"})).version == "100"
    with pytest.raises(BackendError, match="already belongs to run a") as caught:
        backend.register_model(ModelRegistration("b", "Phi-4-chat", "100", tags={RUN_TAG: "b"}))
    assert caught.value.category == "conflict"
