"""What the Functions host sees when it indexes the app."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from shared.messages import ALL_QUEUES
from tests.app_functions import app_functions

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ["azure.ai.ml", "pandas", "datasets", "torch", "transformers", "mlflow", "pyarrow", "azure.storage.blob"]


def test_importing_function_app_loads_no_heavy_library() -> None:
    code = f"import json, sys, function_app; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    loaded = json.loads(
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    )
    assert loaded == []


def test_every_stage_is_its_own_function_with_the_expected_trigger() -> None:
    triggers = {}
    outputs = {}
    schedules = {}
    for function in app_functions():
        bindings = [binding.get_dict_repr() for binding in function.get_bindings()]
        trigger = next(b for b in bindings if b["type"].endswith("Trigger"))
        triggers[function.get_function_name()] = (trigger["type"], trigger.get("queueName") or trigger.get("route"))
        outputs[function.get_function_name()] = [b["queueName"] for b in bindings if b["type"] == "queue"]
        if trigger["type"] == "timerTrigger":
            schedules[function.get_function_name()] = trigger["schedule"]
    assert triggers == {
        "dataset_arrival": ("eventGridTrigger", None),
        "settle_dataset": ("queueTrigger", "settle-dataset"),
        "validate_dataset": ("queueTrigger", "validate-dataset"),
        "submit_finetune": ("queueTrigger", "submit-finetune"),
        "ml_job_events": ("eventGridTrigger", None),
        "model_registered": ("eventGridTrigger", None),
        "check_finetune_job": ("queueTrigger", "check-finetune-job"),
        "register_model": ("queueTrigger", "register-model"),
        "deploy_model": ("queueTrigger", "deploy-model"),
        "smoke_test": ("queueTrigger", "smoke-test"),
        "promote_deployment": ("queueTrigger", "promote-deployment"),
        "cleanup_idle_endpoints": ("timerTrigger", None),
        "reconcile_runs": ("timerTrigger", None),
        "show_dashboard": ("httpTrigger", "dashboard"),
        "list_runs": ("httpTrigger", "runs"),
        "get_run": ("httpTrigger", "runs/{run_id}"),
        "restore_endpoint": ("queueTrigger", "restore-endpoint"),
        "restore_endpoint_request": ("httpTrigger", "endpoints/{name}/restore"),
        "list_endpoints": ("httpTrigger", "endpoints"),
        "cancel_run": ("queueTrigger", "cancel-run"),
        "cancel_run_request": ("httpTrigger", "runs/{run_id}/cancel"),
        "list_rejected": ("httpTrigger", "rejected"),
        "get_rejected": ("httpTrigger", "rejected/{rejected_id}"),
        "cleanup_api": ("httpTrigger", "cleanup"),
    }
    assert outputs["validate_dataset"] == ["submit-finetune"] and outputs["ml_job_events"] == ["register-model"]
    assert outputs["restore_endpoint_request"] == ["restore-endpoint"]
    assert outputs["check_finetune_job"] == ["register-model"]
    # Every queue a function reads is one the app knows (ALL_QUEUES), and the other way round.
    assert {queue for kind, queue in triggers.values() if kind == "queueTrigger"} == set(ALL_QUEUES)
    # The timers read their NCRONTAB schedules from app settings.
    assert schedules == {
        "cleanup_idle_endpoints": "%AUTOPILOT_CLEANUP_SCHEDULE%",
        "reconcile_runs": "%AUTOPILOT_RECONCILE_SCHEDULE%",
    }
