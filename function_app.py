"""The function app: logging and telemetry, then one Blueprint per stage. Domain code lives in `shared/`."""

from __future__ import annotations

import logging

import azure.functions as func

from functions import (
    cancel_run,
    check_finetune_job,
    cleanup_api,
    cleanup_idle_endpoints,
    dashboard_api,
    dataset_arrival,
    deploy_model,
    endpoints_api,
    ml_job_events,
    model_registered,
    promote_deployment,
    reconcile_runs,
    register_model,
    rejected_api,
    restore_endpoint,
    runs_api,
    settle_dataset,
    smoke_test,
    submit_finetune,
    validate_dataset,
)
from shared.telemetry import configure_telemetry

logging.getLogger("azure").setLevel(logging.WARNING)
# Exporters only where a telemetry setting names one (shared/telemetry.py); none set: nothing is imported.
configure_telemetry()

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
for stage in (
    dataset_arrival,
    settle_dataset,
    validate_dataset,
    submit_finetune,
    ml_job_events,
    model_registered,
    check_finetune_job,
    register_model,
    deploy_model,
    smoke_test,
    promote_deployment,
    cleanup_idle_endpoints,
    reconcile_runs,
    restore_endpoint,
    cancel_run,
    runs_api,
    endpoints_api,
    rejected_api,
    cleanup_api,
    dashboard_api,
):
    app.register_functions(stage.bp)
