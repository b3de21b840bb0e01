"""Deploy the registered model next to the live deployment, with no traffic yet.

In: `DeployModel` on `deploy-model` ({"type", "run_id"}).
Out: `SmokeTestDeployment` on `smoke-test` once the deployment is ready; while it is being created,
`DeployModel` again on `deploy-model`, delayed (at most AUTOPILOT_DEPLOYMENT_POLL_SECONDS).
"""

from __future__ import annotations

import azure.functions as func

from functions.support import hand_on, parse_message, recorded_on_last_try
from shared.bootstrap import stage_context
from shared.messages import DEPLOY_QUEUE, SMOKE_TEST_QUEUE, DeployModel
from shared.settings import STORAGE_CONNECTION
from shared.stages import rollout

bp = func.Blueprint()


@bp.queue_trigger(arg_name="message", queue_name=DEPLOY_QUEUE, connection=STORAGE_CONNECTION)
@bp.queue_output(arg_name="next_message", queue_name=SMOKE_TEST_QUEUE, connection=STORAGE_CONNECTION)
def deploy_model(message: func.QueueMessage, next_message: func.Out[str]) -> None:
    command = parse_message(message, DeployModel)
    with recorded_on_last_try(command.run_id, message.dequeue_count, stage="deploy_model"):
        hand_on(next_message, rollout.deploy_model(command, stage_context()))
