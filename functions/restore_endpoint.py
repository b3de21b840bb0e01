"""Bring back an endpoint that the idle cleanup deleted, with the model its last live run served.

In: `RestoreEndpoint` on `restore-endpoint` ({"type", "run_id"}), sent by `POST /api/endpoints/{name}/restore`
or `autopilot restore NAME`.
Out: while the deployment is being created, `RestoreEndpoint` again on `restore-endpoint`, delayed (at
most AUTOPILOT_DEPLOYMENT_POLL_SECONDS); the run's `endpoint_state` says `live` once it serves again.
"""

from __future__ import annotations

import azure.functions as func

from functions.support import parse_message, recorded_on_last_try
from shared.bootstrap import stage_context
from shared.errors import PermanentError
from shared.messages import RESTORE_QUEUE, RestoreEndpoint
from shared.settings import STORAGE_CONNECTION
from shared.stages import restore

bp = func.Blueprint()


@bp.queue_trigger(arg_name="message", queue_name=RESTORE_QUEUE, connection=STORAGE_CONNECTION)
def restore_endpoint(message: func.QueueMessage) -> None:
    command = parse_message(message, RestoreEndpoint)
    with recorded_on_last_try(command.run_id, message.dequeue_count, _record_failure, stage="restore_endpoint"):
        restore.restore_endpoint(command, stage_context())


def _record_failure(run_id: str, error: PermanentError) -> None:
    restore.record_restore_failure(stage_context(), run_id, error)
