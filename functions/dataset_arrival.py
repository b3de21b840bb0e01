"""Dataset arrival.

In: Event Grid `Microsoft.Storage.BlobCreated` for blobs in the training container.
Out: `SettleDatasetFolder` on queue `settle-dataset`, invisible for the quiet period
(at once when the blob is the folder's manifest `autopilot.json`).
An event that can never succeed (another event type, no subject or data, a folder or blob name a store of the
run cannot hold) is recorded in the rejected-inputs table and answered with success, so Event Grid does not
retry it; a transient failure is raised, so Event Grid does.
"""

from __future__ import annotations

import azure.functions as func

from functions.support import traced_stage
from shared.bootstrap import stage_context
from shared.events import BlobCreated
from shared.rejected import set_aside_if_malformed
from shared.stages.intake import note_blob_created
from shared.telemetry import note_handed_on

bp = func.Blueprint()


@bp.event_grid_trigger(arg_name="event")
def dataset_arrival(event: func.EventGridEvent) -> None:
    ctx = stage_context()
    with set_aside_if_malformed(ctx, "dataset_arrival", event):
        blob = BlobCreated.parse(event.id, event.event_type, event.subject, event.get_json())
        with traced_stage("dataset_arrival"):
            # The settle message (sent delayed, not through a binding) names the dataset for the span.
            note_handed_on(note_blob_created(blob, ctx))
