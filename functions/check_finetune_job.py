"""Delayed checks of a fine-tuning job whose event said it ended before the backend read it so.

In: `CheckFinetuneJob` on `check-finetune-job` ({"type", "run_id", "job_name", "attempt"}), sent delayed by
`ml_job_events` (and by this function) when the event said the job ended but the backend still read it in progress.
Out: `RegisterModel` on `register-model` once the job reads Completed; a failed or canceled job ends its run;
still in progress, or not readable for a transient reason (throttling, 5xx), `CheckFinetuneJob` again on
`check-finetune-job`, delayed (30 s doubling, at most 10 minutes). Duplicates keep one chain of checks; a check
for a run that left `training` or ended does nothing.
"""

from __future__ import annotations

import azure.functions as func

from functions.support import hand_on, parse_message, recorded_on_last_try
from shared.bootstrap import stage_context
from shared.messages import CHECK_JOB_QUEUE, REGISTER_QUEUE, CheckFinetuneJob
from shared.settings import STORAGE_CONNECTION
from shared.stages import training

bp = func.Blueprint()


@bp.queue_trigger(arg_name="message", queue_name=CHECK_JOB_QUEUE, connection=STORAGE_CONNECTION)
@bp.queue_output(arg_name="next_message", queue_name=REGISTER_QUEUE, connection=STORAGE_CONNECTION)
def check_finetune_job(message: func.QueueMessage, next_message: func.Out[str]) -> None:
    command = parse_message(message, CheckFinetuneJob)
    with recorded_on_last_try(command.run_id, message.dequeue_count, stage="check_finetune_job"):
        hand_on(next_message, training.check_finetune_job(command, stage_context()))
