"""Smoke-score the new deployment alone with real test conversations.

In: `SmokeTestDeployment` on `smoke-test` ({"type", "run_id"}).
Out: `PromoteDeployment` on `promote-deployment` when every answer came back; otherwise the
deployment is removed and the run ends rolled_back.
"""

from __future__ import annotations

import azure.functions as func

from functions.support import hand_on, parse_message, recorded_on_last_try
from shared.bootstrap import stage_context
from shared.messages import PROMOTE_QUEUE, SMOKE_TEST_QUEUE, SmokeTestDeployment
from shared.settings import STORAGE_CONNECTION
from shared.stages.rollout import smoke_test_deployment

bp = func.Blueprint()


@bp.queue_trigger(arg_name="message", queue_name=SMOKE_TEST_QUEUE, connection=STORAGE_CONNECTION)
@bp.queue_output(arg_name="next_message", queue_name=PROMOTE_QUEUE, connection=STORAGE_CONNECTION)
def smoke_test(message: func.QueueMessage, next_message: func.Out[str]) -> None:
    command = parse_message(message, SmokeTestDeployment)
    with recorded_on_last_try(command.run_id, message.dequeue_count, stage="smoke_test"):
        hand_on(next_message, smoke_test_deployment(command, stage_context()))
