"""Validate a run's dataset in one streaming pass; write the report and cleaned copies.

In: `ValidateDataset` on `validate-dataset` ({"type", "run_id"}).
Out: `SubmitFinetuneJob` on `submit-finetune` when the dataset is valid; a rejected dataset ends the run.
"""

from __future__ import annotations

import azure.functions as func

from functions.support import hand_on, parse_message, recorded_on_last_try
from shared.bootstrap import stage_context
from shared.messages import SUBMIT_QUEUE, VALIDATE_QUEUE, ValidateDataset
from shared.settings import STORAGE_CONNECTION
from shared.stages.validation import validate_run

bp = func.Blueprint()


@bp.queue_trigger(arg_name="message", queue_name=VALIDATE_QUEUE, connection=STORAGE_CONNECTION)
@bp.queue_output(arg_name="next_message", queue_name=SUBMIT_QUEUE, connection=STORAGE_CONNECTION)
def validate_dataset(message: func.QueueMessage, next_message: func.Out[str]) -> None:
    command = parse_message(message, ValidateDataset)
    with recorded_on_last_try(command.run_id, message.dequeue_count, stage="validate_dataset"):
        hand_on(next_message, validate_run(command, stage_context()))
