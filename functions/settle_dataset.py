"""Settle a dataset folder into a run.

In: `SettleDatasetFolder` on `settle-dataset` ({"type", "dataset", "version", "scheduled_at", "manifest_arrived"}).
Out: `ValidateDataset` on `validate-dataset` ({"type", "run_id"}) for a new run; nothing for a
folder that changed again since, or whose content already has a run.
"""

from __future__ import annotations

import azure.functions as func

from functions.support import hand_on, parse_message, traced_stage
from shared.bootstrap import stage_context
from shared.messages import SETTLE_QUEUE, VALIDATE_QUEUE, SettleDatasetFolder
from shared.settings import STORAGE_CONNECTION
from shared.stages.intake import settle_dataset_folder

bp = func.Blueprint()


@bp.queue_trigger(arg_name="message", queue_name=SETTLE_QUEUE, connection=STORAGE_CONNECTION)
@bp.queue_output(arg_name="next_message", queue_name=VALIDATE_QUEUE, connection=STORAGE_CONNECTION)
def settle_dataset(message: func.QueueMessage, next_message: func.Out[str]) -> None:
    command = parse_message(message, SettleDatasetFolder)
    with traced_stage("settle_dataset", dataset=command.dataset):
        hand_on(next_message, settle_dataset_folder(command, stage_context()))
