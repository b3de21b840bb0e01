"""Runs that sat in a stage too long: looked at again, moved on or ended.

In: a timer, schedule from setting AUTOPILOT_RECONCILE_SCHEDULE (six-field NCRONTAB, UTC; every 5 minutes by default).
Out: for a run in `training` with no job event for AUTOPILOT_TRAINING_CHECK_MINUTES whose job has ended,
`register-model` (or the run ends with the job's reason); for a run showing no sign of life in another stage for
AUTOPILOT_STALLED_STAGE_MINUTES, the message that moves it on again (`validate-dataset`, `submit-finetune`,
`register-model`, `deploy-model`, `smoke-test` or `promote-deployment`), and after three such re-sends in one
stage the run ends `failed` (`stalled`). Messages go out through the sender, not output bindings: one firing
sends to several queues. See `shared.stages.reconcile`.
"""

from __future__ import annotations

import azure.functions as func

from functions.support import traced_stage
from shared.bootstrap import stage_context
from shared.settings import RECONCILE_SCHEDULE
from shared.stages.reconcile import reconcile_runs as reconcile

bp = func.Blueprint()


# A failed firing is not retried; the next one looks at the same runs
# (https://learn.microsoft.com/azure/azure-functions/functions-bindings-timer#retry-behavior), and one instance
# fires however far the app scales out (#scale-out), so firings seldom overlap; when they do, each run is acted on once.
@bp.timer_trigger(arg_name="timer", schedule=f"%{RECONCILE_SCHEDULE}%", run_on_startup=False, use_monitor=False)
def reconcile_runs(timer: func.TimerRequest) -> None:
    with traced_stage("reconcile_runs"):
        reconcile(stage_context())
