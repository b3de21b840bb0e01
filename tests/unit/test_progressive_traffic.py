"""Progressive traffic on the simulated backend: GIVEN a live model and a new one that passed its smoke test,
WHEN the promote stage moves traffic in steps and bakes each one, THEN a bad model is rolled back in the
canary step while the live deployment keeps serving, and a good one reaches 100 %."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from shared.errors import ConfigurationError, TransientError
from shared.ledger import Run, RunStage, RunStatus
from shared.messages import PromoteDeployment
from shared.ml.port import DeploymentHealth
from shared.ml.scoring import chat_request
from shared.ml.simulated import SimulatedMLBackend
from shared.settings import Settings
from shared.stages.context import StageContext
from shared.stages.rollout import canary_breach
from tests.fakes import FakeClock, FakeMessageSender, fake_context
from tests.unit.test_stages import dispatch, start, upload_folder

BAKE_MINUTES = 10


def live_then_new(failure: str | None = None, **settings: object) -> tuple[StageContext, Run, Run]:
    """A first model live at 100 %, then a second one taken through its smoke test into the first bake step."""
    ctx = fake_context()
    start(ctx, upload_folder(ctx, "chat/v1"))
    assert isinstance(ctx.clock, FakeClock)
    ctx.clock.advance(60)
    ctx.settings = replace(ctx.settings, traffic_steps=(10, 100), bake_minutes=BAKE_MINUTES, **settings)  # type: ignore[arg-type]
    parameters = {"simulate_failure": failure} if failure else {}
    start(ctx, upload_folder(ctx, "chat/v2", manifest={"parameters": parameters}))
    new, live = ctx.ledger.list_runs()
    return ctx, new, live


def clients_send(ctx: StageContext, endpoint: str, count: int) -> list[str]:
    """`count` requests without a deployment header, as the endpoint's clients send them; the errors they met."""
    errors = []
    for i in range(count):
        try:
            ctx.backend.score(endpoint, chat_request([{"role": "user", "content": f"question {i}"}]))
        except TransientError as error:
            errors.append(str(error))
    return errors


def after_the_bake(ctx: StageContext, run_id: str) -> Run:
    assert isinstance(ctx.clock, FakeClock)
    ctx.clock.advance(BAKE_MINUTES * 60)
    dispatch(ctx, PromoteDeployment(run_id))
    run = ctx.ledger.get(run_id)
    assert run is not None
    return run


@pytest.fixture(autouse=True)
def seeded_routing() -> None:
    # The simulated endpoint splits traffic at random by the weights: the same split on every test run.
    random.seed(12)


def test_the_first_step_gives_the_new_deployment_its_share_and_schedules_the_judgement() -> None:
    ctx, new, live = live_then_new()
    assert (new.stage, new.status, new.stage_done) == (RunStage.PROMOTING, RunStatus.IN_PROGRESS, False)
    endpoint = ctx.backend.get_endpoint(new.endpoint_name)
    assert endpoint is not None and endpoint.traffic == {live.deployment_name: 90, new.deployment_name: 10}
    assert [(step["step"], step["mode"], step["percent"]) for step in new.traffic_steps] == [(1, "split", 10)]
    assert new.deploy_check_due  # the delayed promote message, deduplicated like the deployment checks


def test_a_delivery_before_the_bake_ends_changes_nothing_and_sends_nothing() -> None:
    ctx, new, _ = live_then_new()
    sender = ctx.sender
    assert isinstance(sender, FakeMessageSender)
    sender.sent.clear()
    dispatch(ctx, PromoteDeployment(new.run_id))
    again = ctx.ledger.get(new.run_id)
    assert again is not None and again.traffic_steps == new.traffic_steps and sender.sent == []


def test_a_model_failing_live_requests_is_rolled_back_in_the_canary_step_and_the_live_one_keeps_serving() -> None:
    ctx, new, live = live_then_new("canary")
    errors = clients_send(ctx, new.endpoint_name, 400)
    assert errors and all(new.deployment_name in error for error in errors)  # the live deployment never failed

    ended = after_the_bake(ctx, new.run_id)

    assert (ended.status, ended.error_category) == (RunStatus.ROLLED_BACK, "canary")
    assert "5xx rate" in ended.error_message and f"back on {live.deployment_name}" in ended.error_message
    step = ended.traffic_steps[-1]
    assert step["verdict"] == "breach" and step["new"]["errors_5xx"] == len(errors)
    assert step["live"]["errors_5xx"] == 0 and step["live"]["requests"] == 400 - step["new"]["requests"]
    endpoint = ctx.backend.get_endpoint(new.endpoint_name)
    assert endpoint is not None
    assert endpoint.traffic == {live.deployment_name: 100} and endpoint.deployments == (live.deployment_name,)
    assert clients_send(ctx, new.endpoint_name, 50) == []


def test_a_good_model_reaches_all_traffic_through_the_steps() -> None:
    ctx, new, _ = live_then_new()
    assert clients_send(ctx, new.endpoint_name, 400) == []

    done = after_the_bake(ctx, new.run_id)

    assert (done.stage, done.status) == (RunStage.LIVE, RunStatus.SUCCEEDED)
    assert [(step["percent"], step.get("verdict")) for step in done.traffic_steps] == [(10, "passed"), (100, None)]
    assert done.traffic_steps[0]["new"]["requests"] >= 20
    endpoint = ctx.backend.get_endpoint(new.endpoint_name)
    assert endpoint is not None
    assert endpoint.traffic == {new.deployment_name: 100} and endpoint.deployments == (new.deployment_name,)


def test_too_few_requests_to_judge_pass_the_step_with_that_verdict() -> None:
    ctx, new, _ = live_then_new("canary")
    done = after_the_bake(ctx, new.run_id)
    assert done.status is RunStatus.SUCCEEDED and done.traffic_steps[0]["verdict"] == "too_few_requests"


def test_mirror_mode_copies_live_traffic_and_rolls_back_on_the_mirrors_errors() -> None:
    ctx, new, live = live_then_new("canary", mirror_percent=20)
    backend = ctx.backend
    assert isinstance(backend, SimulatedMLBackend)
    state = backend.state["endpoints"][new.endpoint_name]
    assert state["traffic"] == {live.deployment_name: 100, new.deployment_name: 0}
    assert state["mirror_traffic"] == {new.deployment_name: 20}
    assert clients_send(ctx, new.endpoint_name, 200) == []  # clients get the live answers only

    ended = after_the_bake(ctx, new.run_id)

    step = ended.traffic_steps[0]
    assert (step["mode"], step["percent"], step["verdict"]) == ("mirror", 20, "breach")
    assert step["new"]["requests"] == 40 and step["new"]["errors_5xx"] == 20
    assert (ended.status, ended.error_category) == (RunStatus.ROLLED_BACK, "canary")
    assert backend.state["endpoints"][new.endpoint_name]["mirror_traffic"] == {}


def test_a_good_model_in_mirror_mode_goes_live_and_the_mirror_is_cleared() -> None:
    ctx, new, _ = live_then_new(mirror_percent=50)
    clients_send(ctx, new.endpoint_name, 100)
    done = after_the_bake(ctx, new.run_id)
    assert done.status is RunStatus.SUCCEEDED and done.traffic_steps[0]["verdict"] == "passed"
    backend = ctx.backend
    assert isinstance(backend, SimulatedMLBackend)
    assert backend.state["endpoints"][new.endpoint_name]["mirror_traffic"] == {}


def test_a_first_model_has_nothing_to_compare_with_and_takes_all_traffic_at_once() -> None:
    ctx = fake_context(traffic_steps=(10, 100))
    start(ctx, upload_folder(ctx))
    (run,) = ctx.ledger.list_runs()
    assert run.status is RunStatus.SUCCEEDED and [step["percent"] for step in run.traffic_steps] == [100]


@pytest.mark.parametrize(
    ("new", "live", "breach"),
    [
        (DeploymentHealth(100, 2, 50.0), DeploymentHealth(900, 9, 50.0), ""),  # 2 % vs 1 %: within 1 point
        (DeploymentHealth(100, 3, 50.0), DeploymentHealth(900, 9, 50.0), "5xx rate"),
        (DeploymentHealth(100, 0, 80.0), DeploymentHealth(900, 0, 50.0), "p95 latency"),
        (DeploymentHealth(100, 0, 75.0), DeploymentHealth(900, 0, 50.0), ""),
        (DeploymentHealth(10, 10, 500.0), DeploymentHealth(900, 0, 50.0), ""),  # too few requests to judge
    ],
)
def test_the_breach_thresholds(new: DeploymentHealth, live: DeploymentHealth, breach: str) -> None:
    settings = Settings(storage_connection="fake")
    found = canary_breach(new, live, settings)
    assert (breach in found) if breach else found == ""


@pytest.mark.parametrize(
    ("raw", "steps"), [("10,100", (10, 100)), ("5, 25,100", (5, 25, 100)), ("100", (100,)), ("0", (100,))]
)
def test_traffic_steps_setting(raw: str, steps: tuple[int, ...]) -> None:
    assert Settings.from_env({"AzureWebJobsStorage": "x", "AUTOPILOT_TRAFFIC_STEPS": raw}).traffic_steps == steps


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AUTOPILOT_TRAFFIC_STEPS", "10,50"),
        ("AUTOPILOT_TRAFFIC_STEPS", "50,10,100"),
        ("AUTOPILOT_TRAFFIC_STEPS", "ten"),
        ("AUTOPILOT_MIRROR_PERCENT", "60"),
        ("AUTOPILOT_BAKE_MINUTES", "0"),
        ("AUTOPILOT_CANARY_LATENCY_RATIO", "0.5"),
    ],
)
def test_bad_progressive_traffic_settings_fail_naming_the_setting(name: str, value: str) -> None:
    with pytest.raises(ConfigurationError, match=name):
        Settings.from_env({"AzureWebJobsStorage": "x", name: value})


def test_each_step_is_baked_and_judged_in_turn() -> None:
    ctx, new, live = live_then_new()
    ctx.settings = replace(ctx.settings, traffic_steps=(10, 50, 100))
    clients_send(ctx, new.endpoint_name, 400)
    second = after_the_bake(ctx, new.run_id)
    assert [(step["percent"], step.get("verdict")) for step in second.traffic_steps] == [(10, "passed"), (50, None)]
    endpoint = ctx.backend.get_endpoint(new.endpoint_name)
    assert endpoint is not None and endpoint.traffic == {live.deployment_name: 50, new.deployment_name: 50}
    clients_send(ctx, new.endpoint_name, 100)
    done = after_the_bake(ctx, new.run_id)
    assert done.status is RunStatus.SUCCEEDED
    assert [step.get("verdict") for step in done.traffic_steps] == ["passed", "passed", None]
    assert done.traffic_steps[1]["new"]["requests"] > done.traffic_steps[0]["new"]["requests"] / 4


def test_a_run_ended_during_a_bake_gives_the_live_deployment_all_traffic_back_and_removes_its_own() -> None:
    from shared.errors import PermanentError
    from shared.stages.context import fail_run

    ctx, new, live = live_then_new()
    # e.g. the queue's last try of the promote message failed
    ended = fail_run(ctx, new.run_id, PermanentError("gave up after 5 tries", category="retries_exhausted"))
    endpoint = ctx.backend.get_endpoint(new.endpoint_name)
    assert endpoint is not None and endpoint.traffic == {live.deployment_name: 100}
    assert endpoint.deployments == (live.deployment_name,)
    assert ended.removed == [f"deployment {new.endpoint_name}/{new.deployment_name}"]
