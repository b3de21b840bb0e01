"""Models registered outside this app.

In: Event Grid `Microsoft.MachineLearningServices.ModelRegistered` ({"modelName", "modelVersion", "modelTags"}).
A model whose name AUTOPILOT_REDEPLOY_MODELS matches and that this app did not register (no `autopilot_run_id`
tag) starts a run at `registering`, done (see `shared.stages.redeploy`).
Out: `DeployModel` on `deploy-model` ({"type", "run_id"}); then the usual smoke test, quality gate and promotion.
An event it can never use is recorded in the rejected-inputs table and answered with success.
"""

from __future__ import annotations

import azure.functions as func

from functions.support import hand_on, traced_stage
from shared.bootstrap import stage_context
from shared.messages import DEPLOY_QUEUE
from shared.rejected import set_aside_if_malformed
from shared.settings import STORAGE_CONNECTION
from shared.stages.redeploy import ModelRegistered, redeploy_model

bp = func.Blueprint()


@bp.event_grid_trigger(arg_name="event")
@bp.queue_output(arg_name="next_message", queue_name=DEPLOY_QUEUE, connection=STORAGE_CONNECTION)
def model_registered(event: func.EventGridEvent, next_message: func.Out[str]) -> None:
    ctx = stage_context()
    with set_aside_if_malformed(ctx, "model_registered", event):
        registered = ModelRegistered.parse(event.id, event.event_type, event.subject, event.get_json())
        with traced_stage("model_registered", dataset=registered.model_name):
            hand_on(next_message, redeploy_model(registered, ctx))
