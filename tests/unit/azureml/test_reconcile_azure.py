"""The reconcile timer on `AzureMLBackend` over the fake workspace: GIVEN a run whose job's events never reached the
app (dead-lettered after Event Grid's day of retries), WHEN the timer fires past AUTOPILOT_TRAINING_CHECK_MINUTES,
THEN `jobs.get` tells the truth and the run goes live as if the event had come; a late event changes nothing.
"""

from __future__ import annotations

import copy
from typing import Any

from shared.events import RUN_COMPLETED
from shared.ledger import RunStage, RunStatus
from shared.messages import RegisterModel
from shared.ml.azureml.catalog import BaseModel
from shared.stages import training
from shared.stages.reconcile import Reconciled, reconcile_runs
from shared.timestamps import utc_now
from tests.fakes import FakeMessageSender
from tests.unit.azureml.conftest import azure_world
from tests.unit.azureml.test_chain import chain, drain, only_run
from tests.unit.azureml.test_job_checks import azure_ml_event, run_in_training


def test_a_job_whose_events_were_lost_is_found_completed_and_its_run_goes_live(
    component: Any, base_model: BaseModel
) -> None:
    world = azure_world(component, base_model)
    # `update_run` stamps `updated_at` with the real clock: the fake one starts now too
    world.clock.now = utc_now()
    ctx = chain(world)
    run = run_in_training(ctx, world)
    sender = ctx.sender
    assert isinstance(sender, FakeMessageSender)
    world.workspace.jobs.finish(run.job_name, "Completed")  # and no event arrives

    world.clock.advance(60 * (ctx.settings.training_check_minutes - 2))
    assert reconcile_runs(ctx) == []
    world.clock.advance(60 * 3)
    (done,) = reconcile_runs(ctx)

    assert (done.run_id, done.outcome) == (run.run_id, Reconciled.JOB_ENDED)
    assert [message for message, _ in sender.sent] == [RegisterModel(run.run_id, run.job_name)]
    drain(ctx, world)
    live = copy.deepcopy(only_run(ctx))
    assert (live.status, live.stage) == (RunStatus.SUCCEEDED, RunStage.LIVE)
    assert live.metrics == {"epoch": 1.0, "eval_loss": 1.42, "train_loss": 1.31}
    assert list(world.workspace.models.models) == [(live.model_name, live.model_version)]

    # the event Event Grid delivers at last changes nothing
    assert training.handle_ml_job_event(azure_ml_event(world, run.job_name, RUN_COMPLETED, "Completed"), ctx) is None
    assert only_run(ctx) == live and sender.sent == []
