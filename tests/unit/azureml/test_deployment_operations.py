"""GIVEN the SDK's own poller of a deployment PUT answered with an `Azure-AsyncOperation` header, WHEN the backend
reads where the operation can be followed and later reads its status, THEN it has the URL ARM gave and the
error code and message of a failed operation ("Track asynchronous Azure operations",
learn.microsoft.com/azure/azure-resource-manager/management/async-operations).
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest
from azure.ai.ml._utils._azureml_polling import AzureMLPolling
from azure.core.pipeline import PipelineResponse
from azure.core.rest import HttpRequest
from azure.core.utils import CaseInsensitiveDict

from shared.errors import TransientError
from shared.ml.azureml.operations import ArmOperationStatus, operation_error, operation_url

DEPLOYMENT = (
    "https://management.azure.com/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices"
    "/workspaces/ws/onlineEndpoints/ftap-chat/deployments/v1?api-version=2024-04-01"
)
OPERATION = (
    "https://management.azure.com/subscriptions/s/providers/Microsoft.MachineLearningServices/locations/eastus"
    "/mfeOperationsStatus/od:1234?api-version=2024-04-01"
)


class RawResponse:
    """An azure-core transport response: what the PUT of a deployment answers (201 and the operation header)."""

    def __init__(self, request: HttpRequest, status: int, headers: dict[str, str], body: dict[str, Any]) -> None:
        self.request = request
        self.status_code = status
        self.headers = CaseInsensitiveDict(headers)
        self.reason = "Created"
        self.content_type = "application/json"
        self._body = json.dumps(body).encode()

    @property
    def content(self) -> bytes:
        return self._body

    def body(self) -> bytes:
        return self._body

    def text(self, encoding: str | None = None) -> str:
        return self._body.decode()


def sdk_poller(headers: dict[str, str]) -> Any:
    request = HttpRequest("PUT", DEPLOYMENT)
    response = RawResponse(request, 201, headers, {"properties": {"provisioningState": "Creating"}})
    polling = AzureMLPolling(0)
    polling.initialize(SimpleNamespace(_pipeline=None), PipelineResponse(request, response, None), lambda raw: None)  # type: ignore[arg-type]
    return SimpleNamespace(polling_method=lambda: polling)


def test_the_operation_url_is_the_azure_asyncoperation_header_of_the_put() -> None:
    assert operation_url(sdk_poller({"Azure-AsyncOperation": OPERATION})) == OPERATION


def test_a_poller_without_that_shape_gives_no_url_rather_than_failing() -> None:
    assert operation_url(SimpleNamespace(polling_method=lambda: object())) == ""
    assert operation_url(object()) == ""


class FakeArm:
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status, self.body = status, body
        self.seen: list[tuple[str, dict[str, str]]] = []

    def get(self, url: str, *, headers: dict[str, str], timeout: float) -> Any:
        self.seen.append((url, headers))
        return SimpleNamespace(status_code=self.status, json=lambda: self.body, raise_for_status=lambda: None)


class Credential:
    def get_token(self, *scopes: str) -> Any:
        assert scopes == ("https://management.azure.com/.default",)
        return SimpleNamespace(token="t0ken")


def test_a_failed_operation_gives_its_code_and_message() -> None:
    arm = FakeArm(200, {"status": "Failed", "error": {"code": "OutOfQuota", "message": "Not enough  quota"}})
    failure = operation_error(ArmOperationStatus(Credential(), arm), OPERATION)
    assert failure is not None and (failure.code, failure.message) == ("OutOfQuota", "Not enough quota")
    assert arm.seen == [(OPERATION, {"Authorization": "Bearer t0ken"})]


def test_no_error_no_reader_or_no_url_gives_none() -> None:
    assert operation_error(ArmOperationStatus(Credential(), FakeArm(200, {"status": "Succeeded"})), OPERATION) is None
    assert operation_error(None, OPERATION) is None
    assert operation_error(ArmOperationStatus(Credential(), FakeArm(200, {})), "") is None


def test_throttled_status_reads_are_transient() -> None:
    with pytest.raises(TransientError):
        operation_error(ArmOperationStatus(Credential(), FakeArm(429, {})), OPERATION)
