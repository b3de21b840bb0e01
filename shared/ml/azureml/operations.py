"""Why a deployment failed: the status of its ARM asynchronous operation.

`online_deployments.begin_create_or_update` returns a poller over the operation named in the PUT's
`Azure-AsyncOperation` header; when the deployment fails, that operation's status holds the reason
(`{"status": "Failed", "error": {"code": "OutOfQuota", "message": ...}}`, "Track asynchronous Azure operations",
learn.microsoft.com/azure/azure-resource-manager/management/async-operations), while the deployment's own
GET says only `Failed` and its container logs may be empty (a deployment that never got a VM has none). The
app keeps the operation's URL on the run, so any process can read it later.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

from shared.errors import TransientError

log = logging.getLogger(__name__)
ARM_SCOPE = "https://management.azure.com/.default"
TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class OperationError:
    code: str
    message: str


class OperationStatus(Protocol):
    def status(self, url: str) -> dict[str, Any]:
        """The operation's status body as ARM answers it."""
        ...


def operation_url(poller: Any) -> str:
    """The URL of the operation an azure-core LRO poller follows ("" when it cannot be told).

    azure-core's `LROBasePolling` (which the SDK's `AzureMLPolling` extends) keeps the operation it polls
    in `_operation`; its `get_polling_url()` is the `Azure-AsyncOperation` (or `Location`) URL.
    """
    try:
        operation = getattr(poller.polling_method(), "_operation", None)
        return str(operation.get_polling_url()) if operation is not None else ""
    except Exception as exc:  # an SDK without that shape: fall back to logs, never fail the deployment for it
        log.info("the deployment operation's URL could not be read: %s", exc)
        return ""


def operation_error(reader: OperationStatus | None, url: str) -> OperationError | None:
    """The error of a failed operation, None when there is none to read (no reader, no URL, no error)."""
    if reader is None or not url:
        return None
    try:
        body = reader.status(url)
    except TransientError:
        raise
    except Exception as exc:
        log.warning("could not read deployment operation %s: %s", url.split("?")[0], exc)
        return None
    error = body.get("error") or {}
    if not isinstance(error, dict) or not error.get("code"):
        return None
    return OperationError(str(error["code"]), " ".join(str(error.get("message", "")).split())[:1500])


class ArmOperationStatus:
    """`OperationStatus` over HTTPS with the app's credential (token scope: Azure Resource Manager)."""

    def __init__(self, credential: Any, session: Any = None) -> None:
        self._credential = credential
        self._session = session

    def status(self, url: str) -> dict[str, Any]:
        import requests

        token = self._credential.get_token(ARM_SCOPE).token
        try:
            response = (self._session or requests).get(
                url, headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT_SECONDS
            )
        except requests.RequestException as exc:
            raise TransientError(f"reading deployment operation status did not answer: {exc}") from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientError(f"reading deployment operation status: {response.status_code}")
        response.raise_for_status()
        body = response.json()
        return body if isinstance(body, dict) else {}
