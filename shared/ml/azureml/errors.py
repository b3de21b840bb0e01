"""Azure SDK errors translated into this project's error types, at the adapter boundary.

Inside one call azure-core already retries throttling and 5xx with exponential backoff (honouring
Retry-After); what still fails becomes a `TransientError` carrying the service's Retry-After, so the
stage puts its message back with at least that delay.

HTTP 409 on an endpoint or deployment that exists means another operation on the endpoint is still
running (its provisioning state is `Updating` or `Creating`): "Troubleshoot online endpoint deployment and
scoring" (learn.microsoft.com/azure/machine-learning/how-to-troubleshoot-online-endpoints) tells to wait for
it and try again, so it is transient. The callers that create something handle their own 409 first: a name
taken elsewhere in the region is a real conflict (see `AzureMLBackend.ensure_endpoint`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

from shared.errors import (
    AuthorizationError,
    AutopilotError,
    BackendError,
    InvalidParameterError,
    NotFoundError,
    QuotaExceededError,
    TransientError,
)

WORKSPACE_ROLE = "the AzureML Data Scientist role on the workspace"
METRICS_ROLE = "the Monitoring Reader role on the workspace (or its resource group)"
REGISTRY_ROLE = (
    "read access to the registry (the public azureml registry needs no role: check AUTOPILOT_AZUREML_REGISTRY)"
)
QUOTA_MARKERS = ("not enough quota", "quotaexceeded", "quota exceeded", "insufficient quota", "outofquota")
MESSAGE_LIMIT = 1500


@contextmanager
def translated(
    action: str,
    *,
    role: str = WORKSPACE_ROLE,
    instance_type: str | None = None,
    region: str | None = None,
) -> Iterator[None]:
    """Run the body; an Azure SDK error leaves it as the matching `shared.errors` type, naming `action`."""
    try:
        yield
    except AutopilotError:
        raise
    except Exception as error:
        mapped = translate(error, action, role=role, instance_type=instance_type, region=region)
        if mapped is None:
            raise
        raise mapped from error


def translate(
    error: BaseException,
    action: str,
    *,
    role: str = WORKSPACE_ROLE,
    instance_type: str | None = None,
    region: str | None = None,
) -> AutopilotError | None:
    """The project's error for an Azure SDK error, or None for anything that is not one."""
    from azure.core.exceptions import (
        AzureError,
        ClientAuthenticationError,
        HttpResponseError,
        ResourceExistsError,
        ResourceNotFoundError,
        ServiceRequestError,
        ServiceResponseError,
    )

    if not isinstance(error, AzureError):
        return None
    message = _message(error)
    status = getattr(error, "status_code", None) if isinstance(error, HttpResponseError) else None
    if any(marker in message.lower() for marker in QUOTA_MARKERS):
        return QuotaExceededError(
            f"{action}: not enough quota for {instance_type or 'the requested instance type'} in "
            f"{region or 'the workspace region'} ({message}). Ask for more quota of that VM family in that region "
            "(Azure ML studio: Quota), or choose another instance type in the settings."
        )
    if isinstance(error, ClientAuthenticationError) or status == 401:
        return AuthorizationError(
            f"{action}: the app's identity could not authenticate ({message}). In Azure, turn on the Function App's "
            "managed identity; elsewhere sign in with `az login` or set AZURE_CLIENT_ID/AZURE_TENANT_ID/"
            "AZURE_CLIENT_SECRET for DefaultAzureCredential."
        )
    if status == 403:
        return AuthorizationError(f"{action}: permission denied; the app's identity needs {role} ({message})")
    if isinstance(error, ResourceNotFoundError) or status == 404:
        return NotFoundError(f"{action}: not found ({message})")
    wait = retry_after(error)
    if isinstance(error, ResourceExistsError) or status == 409:
        return TransientError(
            f"{action}: another operation on the endpoint is still in progress (409 Conflict: {message}); "
            "trying again later",
            retry_after=wait,
        )
    if isinstance(error, (ServiceRequestError, ServiceResponseError)) or status in (408, 429):
        return TransientError(
            f"{action}: Azure ML did not answer in time or throttled the request ({message})", retry_after=wait
        )
    if status is not None and status >= 500:
        return TransientError(f"{action}: Azure ML answered {status} ({message}); retrying later", retry_after=wait)
    if status in (400, 422):
        return InvalidParameterError(f"{action}: Azure ML refused the request ({message})")
    ml_exceptions = sys.modules.get("azure.ai.ml.exceptions")
    if ml_exceptions is not None and isinstance(error, ml_exceptions.ValidationException):
        return InvalidParameterError(f"{action}: {message}")
    return BackendError(f"{action}: {message}")


def retry_after(error: BaseException) -> float | None:
    """Seconds from the response's Retry-After header (delta-seconds or an HTTP date), None without one.

    Azure Resource Manager answers throttled requests with 429 and Retry-After ("Understand how Azure Resource
    Manager throttles requests",
    learn.microsoft.com/azure/azure-resource-manager/management/request-limits-and-throttling).
    """
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None) or {}
    raw = headers.get("Retry-After") or headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(str(raw))
    except (TypeError, ValueError):
        return None
    return max(0.0, (moment - datetime.now(timezone.utc)).total_seconds())


def _message(error: BaseException) -> str:
    text = str(getattr(error, "message", None) or error or type(error).__name__)
    code = getattr(getattr(error, "error", None), "code", None)
    if code and code not in text:
        text = f"{code}: {text}"
    return " ".join(text.split())[:MESSAGE_LIMIT]
