"""Stop a run that is under way: its training job is canceled, a deployment it made without traffic removed.

In: `CancelRun` on `cancel-run` ({"type", "run_id", "reason"}), sent by `POST /api/runs/{run_id}/cancel`
or `autopilot cancel RUN_ID`.
Out: nothing; the run ends `canceled` with the reason and what was stopped.
"""

from __future__ import annotations

import azure.functions as func

from functions.support import parse_message, traced_stage
from shared.bootstrap import stage_context
from shared.messages import CANCEL_QUEUE, CancelRun
from shared.settings import STORAGE_CONNECTION
from shared.stages import cancel

bp = func.Blueprint()


@bp.queue_trigger(arg_name="message", queue_name=CANCEL_QUEUE, connection=STORAGE_CONNECTION)
def cancel_run(message: func.QueueMessage) -> None:
    command = parse_message(message, CancelRun)
    with traced_stage("cancel_run", command.run_id):
        cancel.cancel_run(command, stage_context())
