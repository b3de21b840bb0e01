"""Managed online endpoints and deployments: the SDK entities the app creates, and what it reads back."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

from shared.errors import AuthorizationError, BackendError, InvalidParameterError, NotFoundError, TransientError
from shared.ml.azureml.states import state_text
from shared.ml.port import MANAGED_BY_TAG, MANAGED_BY_VALUE, DeploymentInfo, DeploymentSpec, EndpointInfo

ENDPOINT_NAME = re.compile(r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")
NAME_LENGTH = (3, 32)
LIVENESS_INITIAL_DELAY_SECONDS = 600
REQUEST_TIMEOUT_MS = 90_000
DEPLOYMENT_HEADER = "azureml-model-deployment"
# Deployment states the port knows; Azure's "Canceled" is a failed creation for the app.
PORT_STATES = {"Creating", "Updating", "Succeeded", "Failed", "Deleting"}
CREATED_AT_FORMAT = "%Y-%m-%dT%H:%M:%S.%f%z"
_MODEL_ARM_ID = re.compile(r"/models/([^/]+)/versions/([^/]+)$")
_MODEL_SHORT = re.compile(r"^azureml:([^:/]+):([^:/]+)$")


def check_endpoint_name(name: str, what: str = "endpoint") -> None:
    """Azure's rule: 3-32 characters, a letter first, letters, digits and dashes, no dash last."""
    low, high = NAME_LENGTH
    if not (low <= len(name) <= high and ENDPOINT_NAME.match(name)):
        hint = "; a dataset manifest can set endpoint_name" if what == "endpoint" else ""
        raise InvalidParameterError(
            f"{what} name {name!r} is not valid: use {low}-{high} letters, digits and dashes, starting with a letter "
            f"and not ending with a dash{hint}"
        )


def model_reference(name: str, version: str) -> str:
    return f"azureml:{name}:{version}"


def parse_model_reference(reference: Any) -> tuple[str, str]:
    """(name, version) of a deployment's model, whether an ARM id or `azureml:name:version`."""
    text = str(getattr(reference, "id", None) or reference or "")
    match = _MODEL_ARM_ID.search(text) or _MODEL_SHORT.match(text)
    return (match.group(1), match.group(2)) if match else (text, "")


def build_endpoint(name: str, tags: dict[str, str], description: str) -> Any:
    """A managed online endpoint with key auth, tagged as managed by this app."""
    from azure.ai.ml.entities import ManagedOnlineEndpoint

    check_endpoint_name(name)
    return ManagedOnlineEndpoint(
        name=name,
        auth_mode="key",
        description=description,
        tags={**tags, MANAGED_BY_TAG: MANAGED_BY_VALUE},
    )


def traffic_update(current: Any, traffic: dict[str, int], mirror_traffic: dict[str, int]) -> Any:
    """The endpoint as read, with new traffic, and without the `properties` the SDK fills from ARM's systemData.

    Those would go back in the PUT as endpoint properties, which Azure lets be added but never changed.
    Everything else the user may have set is kept: a PUT replaces the whole resource, so what it leaves
    out (public network access, say) would fall back to its default.
    """
    from azure.ai.ml.entities import ManagedOnlineEndpoint

    return ManagedOnlineEndpoint(
        name=current.name,
        auth_mode=current.auth_mode,
        description=current.description,
        tags=dict(current.tags or {}),
        identity=current.identity,
        public_network_access=getattr(current, "public_network_access", None),
        kind=getattr(current, "kind", None),
        traffic=dict(traffic),
        mirror_traffic=dict(mirror_traffic),
    )


def build_deployment(spec: DeploymentSpec, instance_type: str, instance_count: int) -> Any:
    """The walkthrough's deployment: liveness probe after 600 s, requests time out after 90 s."""
    from azure.ai.ml.entities import ManagedOnlineDeployment, OnlineRequestSettings, ProbeSettings

    check_endpoint_name(spec.deployment_name, "deployment")
    return ManagedOnlineDeployment(
        name=spec.deployment_name,
        endpoint_name=spec.endpoint_name,
        model=model_reference(spec.model_name, spec.model_version),
        instance_type=instance_type,
        instance_count=instance_count,
        liveness_probe=ProbeSettings(initial_delay=LIVENESS_INITIAL_DELAY_SECONDS),
        request_settings=OnlineRequestSettings(request_timeout_ms=REQUEST_TIMEOUT_MS),
        tags={**spec.tags, MANAGED_BY_TAG: MANAGED_BY_VALUE},
    )


def created_at(entity: Any) -> datetime | None:
    """When Azure created the endpoint (the SDK keeps ARM's systemData.createdAt in `properties`)."""
    raw = (getattr(entity, "properties", None) or {}).get("createdAt")
    if not raw:
        return None
    try:
        moment = datetime.strptime(str(raw), CREATED_AT_FORMAT)
    except ValueError:
        try:
            moment = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
        except ValueError:
            return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def endpoint_info(entity: Any, deployments: list[str]) -> EndpointInfo:
    return EndpointInfo(
        name=str(entity.name),
        scoring_uri=str(getattr(entity, "scoring_uri", None) or ""),
        traffic={name: int(weight) for name, weight in (entity.traffic or {}).items()},
        deployments=tuple(sorted(deployments)),
        tags=dict(entity.tags or {}),
        created_at=created_at(entity),
    )


def deployment_state(entity: Any) -> str:
    state = state_text(getattr(entity, "provisioning_state", None)) or "Creating"
    if state == "Canceled":
        return "Failed"
    return state if state in PORT_STATES else "Creating"


def deployment_info(entity: Any, endpoint_name: str, error: str | None = None) -> DeploymentInfo:
    model_name, model_version = parse_model_reference(entity.model)
    return DeploymentInfo(
        endpoint_name=endpoint_name,
        name=str(entity.name),
        model_name=model_name,
        model_version=model_version,
        state=deployment_state(entity),
        error=error,
        tags={str(key): str(value) for key, value in (getattr(entity, "tags", None) or {}).items()},
    )


def check_traffic(traffic: dict[str, int], mirror_traffic: dict[str, int]) -> None:
    """Traffic adds up to 0 or 100; mirror traffic goes to at most one deployment, at most 50 %."""
    if sum(traffic.values()) not in (0, 100) or any(weight < 0 for weight in traffic.values()):
        raise InvalidParameterError(f"traffic must be shares adding up to 100 (or all 0), got {traffic}")
    if len(mirror_traffic) > 1 or any(not 0 <= weight <= 50 for weight in mirror_traffic.values()):
        raise InvalidParameterError(f"mirror traffic goes to one deployment, at most 50 %, got {mirror_traffic}")


def post_score(
    session: Any, scoring_uri: str, key: str, request: dict[str, Any], deployment_name: str | None, timeout: float
) -> Any:
    """POST one scoring request; `deployment_name` goes in the `azureml-model-deployment` header.

    The SDK's `online_endpoints.invoke` writes its headers into a class-level dict, so a deployment
    header once sent sticks to later calls in the same process; this sends fresh headers every time.
    """
    import requests

    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    if deployment_name:
        headers[DEPLOYMENT_HEADER] = deployment_name
    target = f"{scoring_uri} ({deployment_name or 'by traffic'})"
    try:
        response = session.post(scoring_uri, json=request, headers=headers, timeout=timeout)
    except requests.RequestException as exc:
        raise TransientError(f"scoring {target} did not answer: {exc}") from exc
    status = int(response.status_code)
    detail = str(response.text)[:500]
    if status in (408, 429, 503):
        raise TransientError(f"scoring {target}: {status}, not ready or throttled ({detail})")
    if status in (401, 403):
        raise AuthorizationError(f"scoring {target}: {status}; the endpoint key was refused ({detail})")
    if status == 404:
        raise NotFoundError(f"scoring {target}: 404 ({detail})")
    if status >= 400:
        raise BackendError(f"scoring {target}: {status} ({detail})")
    try:
        return response.json()
    except ValueError:
        raise BackendError(f"scoring {target}: the answer is not JSON ({detail})") from None
