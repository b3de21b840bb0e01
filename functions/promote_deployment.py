"""Promote a smoke-tested deployment.

In: `PromoteDeployment` on `promote-deployment` ({"type", "run_id"}).
Out: nothing; the new deployment takes all traffic, the ones it replaced are deleted, the run is live.
"""

from __future__ import annotations

import azure.functions as func

from functions.support import parse_message, recorded_on_last_try
from shared.bootstrap import stage_context
from shared.messages import PROMOTE_QUEUE, PromoteDeployment
from shared.settings import STORAGE_CONNECTION
from shared.stages import rollout

bp = func.Blueprint()


@bp.queue_trigger(arg_name="message", queue_name=PROMOTE_QUEUE, connection=STORAGE_CONNECTION)
def promote_deployment(message: func.QueueMessage) -> None:
    command = parse_message(message, PromoteDeployment)
    with recorded_on_last_try(command.run_id, message.dequeue_count, stage="promote_deployment"):
        rollout.promote_deployment(command, stage_context())
