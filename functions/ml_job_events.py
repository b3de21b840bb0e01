"""ML job events.

In: Event Grid `Microsoft.MachineLearningServices.RunCompleted` and `RunStatusChanged`; only jobs
this app submitted (tag `autopilot_run_id`) are acted on, child steps and other jobs are ignored.
The backend's status of the job decides, not the event's.
Out: `RegisterModel` on `register-model` ({"type", "run_id", "job_name"}) when the job completed;
a failed or canceled job ends its run. When the event says the job ended but the backend still reads
it in progress, `CheckFinetuneJob` on `check-finetune-job` ({"type", "run_id", "job_name", "attempt"}),
delayed 30 s, reads it again (see `functions.check_finetune_job`); duplicate events keep one chain of checks.
An event it can never use (another event type, a malformed subject, no run id) is recorded in the
rejected-inputs table and answered with success, so Event Grid does not retry it; a transient failure is
raised, so Event Grid does.
"""

from __future__ import annotations

import azure.functions as func

from functions.support import hand_on, traced_stage
from shared.bootstrap import stage_context
from shared.events import MLJobEvent
from shared.messages import REGISTER_QUEUE
from shared.ml.port import RUN_TAG
from shared.rejected import set_aside_if_malformed
from shared.settings import STORAGE_CONNECTION
from shared.stages.training import handle_ml_job_event

bp = func.Blueprint()


@bp.event_grid_trigger(arg_name="event")
@bp.queue_output(arg_name="next_message", queue_name=REGISTER_QUEUE, connection=STORAGE_CONNECTION)
def ml_job_events(event: func.EventGridEvent, next_message: func.Out[str]) -> None:
    ctx = stage_context()
    with set_aside_if_malformed(ctx, "ml_job_events", event):
        job_event = MLJobEvent.parse(event.id, event.event_type, event.subject, event.get_json())
        with traced_stage("ml_job_events", job_event.tags.get(RUN_TAG, "")):
            hand_on(next_message, handle_ml_job_event(job_event, ctx))
