"""Queue names and the typed messages that stages hand to each other.

Messages carry only what identifies the work (the run id, sometimes a job name); every stage
reads the rest from the run ledger, so a message can never disagree with the recorded run.
Commands are imperative (`ValidateDataset`); the body on the wire is a JSON object with a
`type` field, base64-encoded as the Functions queue trigger expects (see `shared.queueing`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, TypeVar

from shared.errors import MalformedMessageError

SETTLE_QUEUE = "settle-dataset"
VALIDATE_QUEUE = "validate-dataset"
SUBMIT_QUEUE = "submit-finetune"
REGISTER_QUEUE = "register-model"
DEPLOY_QUEUE = "deploy-model"
SMOKE_TEST_QUEUE = "smoke-test"
PROMOTE_QUEUE = "promote-deployment"
RESTORE_QUEUE = "restore-endpoint"
CANCEL_QUEUE = "cancel-run"
CHECK_JOB_QUEUE = "check-finetune-job"

ALL_QUEUES = (
    SETTLE_QUEUE,
    VALIDATE_QUEUE,
    SUBMIT_QUEUE,
    REGISTER_QUEUE,
    DEPLOY_QUEUE,
    SMOKE_TEST_QUEUE,
    PROMOTE_QUEUE,
    RESTORE_QUEUE,
    CANCEL_QUEUE,
    CHECK_JOB_QUEUE,
)

M = TypeVar("M", bound="QueueMessage")


@dataclass(frozen=True)
class QueueMessage:
    """Base of every queue message: JSON with a `type` tag, fields checked on the way in."""

    queue: ClassVar[str]

    def to_json(self) -> str:
        return json.dumps({"type": type(self).__name__, **asdict(self)}, sort_keys=True)

    @classmethod
    def from_json(cls: type[M], body: str | bytes) -> M:
        """Parse a message body; anything unexpected raises `MalformedMessageError`."""
        try:
            raw = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise MalformedMessageError(f"{cls.queue}: message body is not JSON ({exc}).") from None
        if not isinstance(raw, dict):
            raise MalformedMessageError(f"{cls.queue}: message body is not a JSON object.")
        if raw.get("type") != cls.__name__:
            raise MalformedMessageError(
                f"{cls.queue}: expected a {cls.__name__} message, got type {raw.get('type')!r}."
            )
        values: dict[str, Any] = {}
        for spec in fields(cls):
            if spec.name not in raw:
                raise MalformedMessageError(f"{cls.queue}: {cls.__name__} message lacks field {spec.name!r}.")
            value = raw[spec.name]
            expected = _FIELD_TYPES.get(str(spec.type), object)
            if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
                raise MalformedMessageError(f"{cls.queue}: field {spec.name!r} of {cls.__name__} has the wrong type.")
            if isinstance(value, str) and not value.strip():
                raise MalformedMessageError(f"{cls.queue}: field {spec.name!r} of {cls.__name__} is empty.")
            values[spec.name] = value
        return cls(**values)


_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {"str": str, "float": (int, float), "int": int, "bool": bool}


@dataclass(frozen=True)
class SettleDatasetFolder(QueueMessage):
    """Start a run for a dataset folder once it has been quiet long enough (or its manifest came)."""

    queue: ClassVar[str] = SETTLE_QUEUE
    dataset: str
    version: str
    scheduled_at: float
    manifest_arrived: bool


@dataclass(frozen=True)
class ValidateDataset(QueueMessage):
    queue: ClassVar[str] = VALIDATE_QUEUE
    run_id: str


@dataclass(frozen=True)
class SubmitFinetuneJob(QueueMessage):
    queue: ClassVar[str] = SUBMIT_QUEUE
    run_id: str


@dataclass(frozen=True)
class CheckFinetuneJob(QueueMessage):
    """Read the job's status again: its event said it ended while the backend still read it in progress.

    `attempt` counts the checks of one chain (1 for the first), so that each waits longer than the last.
    """

    queue: ClassVar[str] = CHECK_JOB_QUEUE
    run_id: str
    job_name: str
    attempt: int = 1


@dataclass(frozen=True)
class RegisterModel(QueueMessage):
    queue: ClassVar[str] = REGISTER_QUEUE
    run_id: str
    job_name: str


@dataclass(frozen=True)
class DeployModel(QueueMessage):
    queue: ClassVar[str] = DEPLOY_QUEUE
    run_id: str


@dataclass(frozen=True)
class SmokeTestDeployment(QueueMessage):
    queue: ClassVar[str] = SMOKE_TEST_QUEUE
    run_id: str


@dataclass(frozen=True)
class PromoteDeployment(QueueMessage):
    queue: ClassVar[str] = PROMOTE_QUEUE
    run_id: str


@dataclass(frozen=True)
class CancelRun(QueueMessage):
    """Stop a run that is under way: cancel its training job, remove a deployment it made without traffic."""

    queue: ClassVar[str] = CANCEL_QUEUE
    run_id: str
    reason: str


@dataclass(frozen=True)
class RestoreEndpoint(QueueMessage):
    """Bring back the endpoint of this run, deleted as idle, with the run's model on it."""

    queue: ClassVar[str] = RESTORE_QUEUE
    run_id: str
