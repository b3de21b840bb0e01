"""Redeploy on registration: a model registered outside this app whose name AUTOPILOT_REDEPLOY_MODELS matches is
rolled out through the same guarded path as a fine-tuned one (deploy, smoke test, quality gate, promotion).

The run starts where a fine-tuned run's registration ends (`registering`, done, with the model's name and
version), so `DeployModel` claims it like any other. Its endpoint is AUTOPILOT_REDEPLOY_ENDPOINT, else the
model's `autopilot_endpoint` tag, else that of the model's last run, else `ftap-<model name>`; its test
conversations come from AUTOPILOT_REDEPLOY_TEST_CONVERSATIONS (a JSON Lines blob in the training container),
else from the model's last run.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from shared.datasets import slug
from shared.errors import MalformedMessageError, TransientError
from shared.ledger import Run, RunStage, RunStatus, iso
from shared.messages import DeployModel
from shared.ml.port import RUN_TAG, MLEventPublisher
from shared.stages.context import StageContext, log

MODEL_REGISTERED = "Microsoft.MachineLearningServices.ModelRegistered"
# A model tag naming the endpoint to roll the model out to.
ENDPOINT_TAG = "autopilot_endpoint"


@dataclass(frozen=True)
class ModelRegistered:
    """Azure ML's `ModelRegistered` event (or the local backend's imitation): which model version, its tags."""

    event_id: str
    model_name: str
    model_version: str
    tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, event_id: str, event_type: str, subject: str, data: Any) -> ModelRegistered:
        """Raises `MalformedMessageError` for another event type or data without the model's name and version."""
        if event_type != MODEL_REGISTERED:
            raise MalformedMessageError(f"event {event_id}: not a ModelRegistered event ({event_type!r})")
        if not isinstance(data, dict):
            raise MalformedMessageError(f"event {event_id}: data is not an object")
        # Casing of data fields differs between documentation and payloads: accept both.
        lowered = {str(key).lower(): value for key, value in data.items()}
        name, version = str(lowered.get("modelname") or ""), str(lowered.get("modelversion") or "")
        if not name or not version:
            raise MalformedMessageError(f"event {event_id} ({subject}): data lacks modelName or modelVersion")
        tags = lowered.get("modeltags") or {}
        return cls(
            event_id=event_id,
            model_name=name,
            model_version=version,
            tags={str(k): str(v) for k, v in tags.items()} if isinstance(tags, dict) else {},
        )


def model_registered_payload(
    model_name: str, model_version: str, tags: dict[str, str], topic: str, event_time: str
) -> list[dict[str, Any]]:
    """The Event Grid event Azure ML raises when a model version is registered (for non-Azure backends)."""
    return [
        {
            "topic": topic,
            "subject": f"models/{model_name}:{model_version}",
            "eventType": MODEL_REGISTERED,
            "eventTime": event_time,
            "id": hashlib.sha256(f"{model_name}:{model_version}".encode()).hexdigest()[:32],
            "data": {"modelName": model_name, "modelVersion": model_version, "modelTags": tags, "modelProperties": {}},
            "dataVersion": "",
            "metadataVersion": "1",
        }
    ]


def announce_registration(
    publisher: MLEventPublisher | None,
    model_name: str,
    model_version: str,
    tags: dict[str, str],
    topic: str,
    event_time: str,
    *,
    required: bool,
) -> None:
    """Publish a registration's ModelRegistered event, as Azure ML does for every one (for non-Azure backends).

    `required`: a registration from outside, which only its event rolls out: a lost event is a `TransientError`.
    Otherwise (the app's own registrations, which the handler ignores) a lost event is only logged.
    """
    if publisher is None:
        return
    try:
        publisher.publish(model_registered_payload(model_name, model_version, dict(tags), topic, event_time))
    except TransientError as exc:
        if required:
            raise TransientError(
                f"model {model_name}:{model_version} is registered, but its ModelRegistered event could not be "
                f"published, so nothing rolls it out: {exc}"
            ) from exc
        log.warning("model %s:%s registered; its ModelRegistered event was lost: %s", model_name, model_version, exc)


def redeploy_model(event: ModelRegistered, ctx: StageContext) -> DeployModel | None:
    """Start a run for a model registered outside this app whose name the setting matches; None otherwise.

    The run id follows from the model's name and version: a repeated event finds the run and, while it has
    not been deployed yet, hands `DeployModel` on again.
    """
    patterns = ctx.settings.redeploy_models
    if not patterns:
        log.info("model %s:%s registered; redeploying is off", event.model_name, event.model_version)
        return None
    if RUN_TAG in event.tags:
        log.info(
            "model %s:%s was registered by run %s: nothing to do",
            event.model_name,
            event.model_version,
            event.tags[RUN_TAG],
        )
        return None
    if not any(fnmatch.fnmatchcase(event.model_name, pattern) for pattern in patterns):
        log.info("model %s:%s matches no name in the redeploy setting", event.model_name, event.model_version)
        return None
    run_id = redeploy_run_id(event.model_name, event.model_version)
    last = _last_run_of(ctx, event.model_name)
    endpoint = ctx.settings.redeploy_endpoint or event.tags.get(ENDPOINT_TAG) or (last.endpoint_name if last else "")
    now = iso(ctx.clock())
    run = Run(
        run_id=run_id,
        dataset=event.model_name,
        version=event.model_version,
        content_hash=f"model:{event.model_name}:{event.model_version}",
        ml_backend=ctx.backend.name,
        created_at=now,
        updated_at=now,
        stage=RunStage.REGISTERING,
        stage_done=True,
        stage_times={RunStage.RECEIVED.value: now, RunStage.REGISTERING.value: now},
        manifest={"endpoint_name": endpoint, "registered_outside": True} if endpoint else {"registered_outside": True},
        smoke_prompts=_test_conversations(ctx) or (last.smoke_prompts if last else []),
        model_name=event.model_name,
        model_version=event.model_version,
    )
    if ctx.ledger.create(run):
        log.info("run %s: rolling out %s:%s, registered outside this app", run_id, run.model_name, run.model_version)
        return DeployModel(run_id)
    existing = ctx.ledger.get(run_id)
    if existing is not None and existing.stage is RunStage.REGISTERING and existing.status is RunStatus.IN_PROGRESS:
        return DeployModel(run_id)
    log.info("model %s:%s already has run %s", event.model_name, event.model_version, run_id)
    return None


def redeploy_run_id(model_name: str, model_version: str) -> str:
    """The one run of a model version registered outside: `<model>-<hash of name and version>`."""
    digest = hashlib.sha256(f"{model_name}:{model_version}".encode()).hexdigest()
    return f"{slug(model_name)[:60]}-{digest[:12]}"


def _last_run_of(ctx: StageContext, model_name: str) -> Run | None:
    runs = [run for run in ctx.ledger.list_runs() if run.model_name == model_name and run.run_id]
    return max(runs, key=lambda run: run.created_at, default=None)


def _test_conversations(ctx: StageContext) -> list[list[dict[str, str]]]:
    """The conversations of the AUTOPILOT_REDEPLOY_TEST_CONVERSATIONS blob (rows with `messages`), at most
    AUTOPILOT_SMOKE_PROMPTS of them; [] when the setting is empty."""
    name = ctx.settings.redeploy_test_conversations
    if not name:
        return []
    try:
        with ctx.blobs.open_read(ctx.settings.training_container, name) as stream:
            rows = [json.loads(line) for line in stream.read().decode("utf-8").splitlines() if line.strip()]
    except Exception as error:
        # A missing or unreadable file must not stop the rollout: the model's last run's conversations (or the
        # built-in ones) test it instead, and the log says why.
        log.warning("could not read the test conversations %s (AUTOPILOT_REDEPLOY_TEST_CONVERSATIONS): %s", name, error)
        return []
    conversations = [row["messages"] for row in rows if isinstance(row, dict) and isinstance(row.get("messages"), list)]
    return conversations[: ctx.settings.smoke_prompts]
