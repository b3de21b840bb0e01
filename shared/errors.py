"""The project's error types.

A `TransientError` is raised out of a trigger so the queue (or Event Grid) tries again.
A `PermanentError` is recorded on the run and the message is finished.
"""

from __future__ import annotations


class AutopilotError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigurationError(AutopilotError, ValueError):
    """A setting is missing or has a value that cannot be used."""


class MalformedMessageError(AutopilotError, ValueError):
    """A queue message or event could not be parsed into its typed form."""


class TransientError(AutopilotError):
    """Worth retrying: throttling, a 5xx, a resource still being created, another operation in progress.

    `retry_after`: seconds the service asked to wait (its Retry-After header), None when it said nothing.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class LedgerConflictError(TransientError):
    """The run row changed between read and write (its ETag moved on)."""


class ClaimLostError(AutopilotError):
    """This delivery no longer holds its stage of the run: another delivery took it over, or the run moved on.

    Its work is dropped (nothing it would write is written); it is neither retried nor recorded as a failure.
    """


class PermanentError(AutopilotError):
    """Retrying will not help; the run records it and stops."""

    category = "internal"

    def __init__(self, message: str, *, category: str | None = None) -> None:
        super().__init__(message)
        if category is not None:
            self.category = category


class BlobChangedError(PermanentError):
    """A dataset file was written again after its run started: the run it belongs to now is a newer one."""

    category = "dataset_changed"


class ContentMD5MismatchError(PermanentError):
    """A dataset file's Content-MD5 property does not match its content."""

    category = "dataset_changed"


class DatasetRejectedError(PermanentError):
    category = "validation"


class BackendError(PermanentError):
    category = "backend"


class NotFoundError(BackendError):
    category = "not_found"


class AuthorizationError(BackendError):
    category = "authorization"


class QuotaExceededError(BackendError):
    category = "quota"


class InvalidParameterError(PermanentError):
    """A fine-tuning parameter, compute or model choice the backend cannot accept."""

    category = "parameters"


class TrainingFailedError(PermanentError):
    category = "training"


class DeploymentFailedError(PermanentError):
    category = "deployment"


class SmokeTestFailedError(PermanentError):
    category = "smoke_test"


class QualityGateError(PermanentError):
    """The new model answers the test conversations worse than the live one, or than the set minimum."""

    category = "quality"


class CannotCancelError(PermanentError):
    """The run is unknown, has ended, or is going live: there is nothing to cancel."""

    category = "cancel"


class NothingToRestoreError(NotFoundError):
    """No run of this app served the endpoint when the idle cleanup deleted it."""

    category = "restore"


class RestoreFailedError(PermanentError):
    """An endpoint deleted as idle could not be brought back."""

    category = "restore"
