"""Register the trained model of a finished job, with lineage tags.

In: `RegisterModel` on `register-model` ({"type", "run_id", "job_name"}).
Out: `DeployModel` on `deploy-model`.
"""

from __future__ import annotations

import azure.functions as func

from functions.support import hand_on, parse_message, recorded_on_last_try
from shared.bootstrap import stage_context
from shared.messages import DEPLOY_QUEUE, REGISTER_QUEUE, RegisterModel
from shared.settings import STORAGE_CONNECTION
from shared.stages import rollout

bp = func.Blueprint()


@bp.queue_trigger(arg_name="message", queue_name=REGISTER_QUEUE, connection=STORAGE_CONNECTION)
@bp.queue_output(arg_name="next_message", queue_name=DEPLOY_QUEUE, connection=STORAGE_CONNECTION)
def register_model(message: func.QueueMessage, next_message: func.Out[str]) -> None:
    command = parse_message(message, RegisterModel)
    with recorded_on_last_try(command.run_id, message.dequeue_count, stage="register_model"):
        hand_on(next_message, rollout.register_model(command, stage_context()))
