"""Idle endpoint cleanup.

In: a timer, schedule from setting AUTOPILOT_CLEANUP_SCHEDULE (six-field NCRONTAB, UTC).
Out: nothing; managed endpoints without requests in AUTOPILOT_IDLE_ENDPOINT_MINUTES are deleted
and their runs say so. Deployments of ended runs whose removal met a transient error (`removal_pending`)
are removed now.
"""

from __future__ import annotations

import azure.functions as func

from functions.support import traced_stage
from shared.bootstrap import stage_context
from shared.settings import CLEANUP_SCHEDULE
from shared.stages.cleanup import clean_up_idle_endpoints
from shared.stages.release import retry_pending_removals

bp = func.Blueprint()


@bp.timer_trigger(arg_name="timer", schedule=f"%{CLEANUP_SCHEDULE}%", run_on_startup=False, use_monitor=False)
def cleanup_idle_endpoints(timer: func.TimerRequest) -> None:
    ctx = stage_context()
    with traced_stage("cleanup_idle_endpoints"):
        retry_pending_removals(ctx)
        clean_up_idle_endpoints(ctx)
