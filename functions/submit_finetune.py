"""Submit the fine-tuning job for a validated dataset.

In: `SubmitFinetuneJob` on `submit-finetune` ({"type", "run_id"}).
Out: nothing on a queue; the run waits in `training` until the ML job's events arrive (ml_job_events).
"""

from __future__ import annotations

import azure.functions as func

from functions.support import parse_message, recorded_on_last_try
from shared.bootstrap import stage_context
from shared.messages import SUBMIT_QUEUE, SubmitFinetuneJob
from shared.settings import STORAGE_CONNECTION
from shared.stages import training

bp = func.Blueprint()


@bp.queue_trigger(arg_name="message", queue_name=SUBMIT_QUEUE, connection=STORAGE_CONNECTION)
def submit_finetune(message: func.QueueMessage) -> None:
    command = parse_message(message, SubmitFinetuneJob)
    with recorded_on_last_try(command.run_id, message.dequeue_count, stage="submit_finetune"):
        training.submit_finetune_job(command, stage_context())
