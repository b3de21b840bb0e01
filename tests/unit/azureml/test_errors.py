"""GIVEN an azure-core or azure-ai-ml exception, WHEN it leaves an Azure ML call, THEN it is this project's error type,
permanent or transient as the stages need, and says what to do.

Relies on azure-facts.md, "Azure ML", Errors: 401 ClientAuthenticationError, 404 ResourceNotFoundError,
409 ResourceExistsError, others HttpResponseError(.status_code), quota as "Not enough quota", client-side checks
as ValidationException.
"""

from __future__ import annotations

import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
)

from shared.errors import (
    AuthorizationError,
    BackendError,
    InvalidParameterError,
    NotFoundError,
    PermanentError,
    QuotaExceededError,
    TransientError,
)
from shared.ml.azureml.errors import METRICS_ROLE, WORKSPACE_ROLE, translate, translated
from tests.unit.azureml.fakes import http_error


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ClientAuthenticationError("no token"), AuthorizationError),
        (http_error(401, "expired"), AuthorizationError),
        (http_error(403, "AuthorizationFailed"), AuthorizationError),
        (ResourceNotFoundError("Job x not found"), NotFoundError),
        (http_error(404, "gone"), NotFoundError),
        (http_error(408, "timeout"), TransientError),
        (http_error(429, "TooManyRequests"), TransientError),
        (http_error(500, "InternalServerError"), TransientError),
        (http_error(503, "ServiceUnavailable"), TransientError),
        (ServiceRequestError("connection reset"), TransientError),
        (http_error(400, "BadRequest: instance count"), InvalidParameterError),
        (http_error(418, "teapot"), BackendError),
    ],
)
def test_sdk_errors_become_project_errors(error: Exception, expected: type[Exception]) -> None:
    translated_error = translate(error, "reading job x")
    assert type(translated_error) is expected
    assert str(translated_error).startswith("reading job x")


def test_a_conflict_on_an_existing_resource_is_an_operation_in_progress_and_transient() -> None:
    # how-to-troubleshoot-online-endpoints: 409 while another operation runs on the endpoint; wait and retry.
    error = translate(ResourceExistsError("Conflict: an operation is in progress on ftap-chat"), "updating traffic")
    assert isinstance(error, TransientError) and "in progress" in str(error)


def test_throttling_keeps_the_services_retry_after() -> None:
    error = translate(http_error(429, "TooManyRequests", retry_after="17"), "deleting deployment v1")
    assert isinstance(error, TransientError) and error.retry_after == 17.0
    conflict = translate(http_error(409, "Conflict", retry_after="40"), "updating traffic")
    assert isinstance(conflict, TransientError) and conflict.retry_after == 40.0
    assert translate(http_error(503, "busy"), "x").retry_after is None  # type: ignore[union-attr]


def test_missing_permission_names_the_role_to_assign() -> None:
    workspace = translate(http_error(403, "denied"), "submitting job j")
    metrics = translate(http_error(403, "denied"), "reading RequestsPerMinute", role=METRICS_ROLE)
    assert WORKSPACE_ROLE in str(workspace) and "AzureML Data Scientist" in str(workspace)
    assert "Monitoring Reader" in str(metrics)


def test_authentication_failures_say_how_the_identity_signs_in() -> None:
    error = translate(ClientAuthenticationError("DefaultAzureCredential failed"), "reading job j")
    assert "managed identity" in str(error) and "az login" in str(error)


def test_not_enough_quota_is_permanent_and_names_instance_type_and_region() -> None:
    raw = http_error(400, "Not enough quota available for Standard_NC24ads_A100_v4 in SubscriptionId s.")
    error = translate(raw, "starting deployment v1", instance_type="Standard_NC24ads_A100_v4", region="eastus")
    assert isinstance(error, QuotaExceededError) and isinstance(error, PermanentError)
    assert error.category == "quota"
    assert "Standard_NC24ads_A100_v4 in eastus" in str(error)


def test_client_side_validation_is_an_invalid_parameter() -> None:
    from azure.ai.ml.exceptions import ErrorTarget, ValidationException

    raw = ValidationException(message="bad name", no_personal_data_message="bad name", target=ErrorTarget.JOB)
    assert isinstance(translate(raw, "submitting job j"), InvalidParameterError)


def test_other_exceptions_pass_through_untouched() -> None:
    with pytest.raises(KeyError), translated("reading job j"):
        raise KeyError("not an SDK error")
    assert translate(ValueError("x"), "a") is None


def test_the_http_error_code_is_kept_in_the_message() -> None:
    raw = HttpResponseError(message="The request was throttled")
    raw.status_code = 429
    raw.error = type("Error", (), {"code": "TooManyRequests"})()  # type: ignore[assignment]
    assert "TooManyRequests: The request was throttled" in str(translate(raw, "listing endpoints"))
