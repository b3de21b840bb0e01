"""Register the trained model, deploy it next to the live one, smoke-test it, then give it traffic."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta
from typing import Any

from shared.datasets import slug
from shared.errors import (
    BackendError,
    DeploymentFailedError,
    LedgerConflictError,
    PermanentError,
    QualityGateError,
    SmokeTestFailedError,
)
from shared.ledger import Run, RunStage, RunStatus, end_run, iso, update_run
from shared.messages import DeployModel, PromoteDeployment, QueueMessage, RegisterModel, SmokeTestDeployment
from shared.ml.port import (
    MANAGED_BY_TAG,
    MANAGED_BY_VALUE,
    RUN_TAG,
    DeploymentInfo,
    DeploymentSpec,
    ModelRegistration,
)
from shared.ml.quality import similarity
from shared.ml.scoring import chat_request, response_text
from shared.stages.context import StageContext, log, mark_live_runs, permanent_errors_end_run, run_stage
from shared.timestamps import parse_iso

DEFAULT_SMOKE_PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Give me one tip for writing clear emails."}],
]
# Greedy, so that the new and the live deployment are compared on their best answers, not on luck.
SMOKE_PARAMETERS: dict[str, Any] = {"max_new_tokens": 64, "do_sample": False}
ENDPOINT_NAME_LIMIT = 32
CHECK_SLACK = timedelta(seconds=1)


def model_name_for(run: Run) -> str:
    """`<base model>-<dataset>`, in the characters Azure ML allows in model names."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{run.base_model or 'model'}-{run.dataset}")[:255]


def model_version_for(run: Run) -> str:
    """Unique to the run and the same on every retry: milliseconds of the run's creation."""
    created = parse_iso(run.created_at)
    return str(int(created.timestamp() * 1000))


def endpoint_name_for(run: Run) -> str:
    """3-32 characters, starting with a letter, letters, digits and dashes (Azure's rule)."""
    if run.manifest.get("endpoint_name"):
        return str(run.manifest["endpoint_name"])
    return f"ftap-{slug(run.dataset)}"[:ENDPOINT_NAME_LIMIT].rstrip("-")


def register_model(message: RegisterModel, ctx: StageContext) -> DeployModel | None:
    """Register the job's trained model with lineage tags; registering again returns the same version."""
    return run_stage(ctx, message.run_id, RunStage.REGISTERING, lambda run: _register(run, ctx), DeployModel)


def _register(run: Run, ctx: StageContext) -> DeployModel:
    model = ctx.backend.register_model(
        ModelRegistration(
            job_name=run.job_name,
            model_name=model_name_for(run),
            version=model_version_for(run),
            description=f"{run.base_model} fine-tuned on {run.dataset}/{run.version} by Finetune Autopilot",
            tags={RUN_TAG: run.run_id, "dataset": run.dataset, "dataset_version": run.version, "job": run.job_name},
        )
    )

    def record(current: Run) -> None:
        current.model_name, current.model_version, current.model_uri = model.name, model.version, model.uri
        current.stage_done = True

    update_run(ctx.ledger, run.run_id, record)
    log.info("run %s: registered %s:%s", run.run_id, model.name, model.version)
    return DeployModel(run.run_id)


def deploy_model(message: DeployModel, ctx: StageContext) -> SmokeTestDeployment | None:
    """Create the new deployment with no traffic; while it is being created, check back later."""
    return run_stage(ctx, message.run_id, RunStage.DEPLOYING, lambda run: _deploy(run, ctx), SmokeTestDeployment)


def _deploy(run: Run, ctx: StageContext) -> SmokeTestDeployment | None:
    if run.deploy_check_due and ctx.clock() < parse_iso(run.deploy_check_due) - CHECK_SLACK:
        log.info("run %s: a later deployment check is already scheduled; this one is a duplicate", run.run_id)
        return None
    endpoint_name = run.endpoint_name or endpoint_name_for(run)
    deployment_name = run.deployment_name or f"v{run.model_version}"[:ENDPOINT_NAME_LIMIT]
    endpoint = ctx.backend.ensure_endpoint(endpoint_name, {MANAGED_BY_TAG: MANAGED_BY_VALUE, "dataset": run.dataset})
    deployment = ctx.backend.get_deployment(endpoint_name, deployment_name)
    if deployment is None:
        previous = max(
            ((weight, name) for name, weight in endpoint.traffic.items() if weight > 0 and name != deployment_name),
            default=(0, ""),
        )[1]
        deployment = ctx.backend.begin_deployment(
            DeploymentSpec(
                endpoint_name, deployment_name, run.model_name, run.model_version, tags={RUN_TAG: run.run_id}
            )
        )

        def record_start(current: Run) -> None:
            current.endpoint_name, current.deployment_name = endpoint_name, deployment_name
            current.scoring_uri, current.previous_deployment = endpoint.scoring_uri, previous

        update_run(ctx.ledger, run.run_id, record_start)
    if deployment.failed:
        raise DeploymentFailedError(f"deployment {deployment_name} on {endpoint_name} failed: {deployment.error}")
    if deployment.ready:
        update_run(ctx.ledger, run.run_id, lambda current: setattr(current, "stage_done", True))
        log.info("run %s: deployment %s/%s is ready", run.run_id, endpoint_name, deployment_name)
        return SmokeTestDeployment(run.run_id)
    started = parse_iso(run.stage_times[RunStage.DEPLOYING.value])
    check_again_later(ctx, run.run_id, deployment, started, DeployModel(run.run_id), DeploymentFailedError)
    return None


def check_again_later(
    ctx: StageContext,
    run_id: str,
    deployment: DeploymentInfo,
    started: datetime,
    check: QueueMessage,
    timeout_error: type[PermanentError],
) -> None:
    """For a deployment still being created: raise `timeout_error` past the deployment timeout, else send
    `check` once, delayed (duplicate deliveries keep one chain of checks)."""
    waited_minutes = (ctx.clock() - started).total_seconds() / 60
    where = f"deployment {deployment.name} on {deployment.endpoint_name}"
    if waited_minutes > ctx.settings.deployment_timeout_minutes:
        raise timeout_error(
            f"{where} still {deployment.state} after {waited_minutes:.0f} min "
            f"(limit {ctx.settings.deployment_timeout_minutes:.0f} min, setting AUTOPILOT_DEPLOYMENT_TIMEOUT_MINUTES)"
        )
    # Check soon at first (small models deploy in seconds), then back off to the poll setting.
    delay = min(ctx.settings.deployment_poll_seconds, max(2.0, waited_minutes * 30))
    if schedule_check(ctx, run_id, ctx.clock() + timedelta(seconds=delay)):
        ctx.sender.send(check, delay_seconds=delay)
        log.info("run %s: %s is %s; checking again in %.0f s", run_id, where, deployment.state, delay)


def schedule_check(ctx: StageContext, run_id: str, due: datetime) -> bool:
    """Claim the next deployment check (compare-and-swap), so duplicate deliveries keep one chain of checks."""
    run = ctx.ledger.get(run_id)
    if run is None or (run.deploy_check_due and ctx.clock() < parse_iso(run.deploy_check_due) - CHECK_SLACK):
        return False
    run.deploy_check_due = iso(due)
    try:
        ctx.ledger.replace(run)
    except LedgerConflictError:
        return False
    return True


def smoke_test_deployment(message: SmokeTestDeployment, ctx: StageContext) -> PromoteDeployment | None:
    """Score real test conversations against the new deployment alone; a failure or a worse model rolls it back."""
    return run_stage(ctx, message.run_id, RunStage.SMOKE_TESTING, lambda run: _smoke_test(run, ctx), PromoteDeployment)


def _smoke_test(run: Run, ctx: StageContext) -> PromoteDeployment | None:
    """Each test conversation goes, without its answer, to the new deployment and to the live one.

    Their replies are compared with the test answer (ROUGE-L, `shared.ml.quality`). The new
    deployment must answer every request, its mean similarity must reach AUTOPILOT_SMOKE_MIN_SIMILARITY,
    and it must not fall more than AUTOPILOT_SMOKE_QUALITY_MARGIN below the live deployment's.
    """
    live = run.previous_deployment
    results = []
    for conversation in run.smoke_prompts or DEFAULT_SMOKE_PROMPTS:
        messages, reference = _without_answer(conversation)
        result = _smoke_request(ctx, run.endpoint_name, run.deployment_name, messages, reference)
        if live:
            compared = _smoke_request(ctx, run.endpoint_name, live, messages, reference)
            result["live"] = {key: compared[key] for key in ("answer", "ok", "error", "similarity") if key in compared}
        results.append(result)
    smoke: dict[str, Any] = {"passed": True, "requests": len(results), "results": results}
    smoke.update(_quality(results, live, ctx))
    error = _smoke_failure(run, smoke)
    if error is not None:
        smoke["passed"] = False
        _roll_back(run, smoke, error, ctx)
        return None

    def record(current: Run) -> None:
        current.smoke = smoke
        current.stage_done = True

    update_run(ctx.ledger, run.run_id, record)
    log.info("run %s: smoke test passed (%d requests%s)", run.run_id, len(results), _similarities(smoke))
    return PromoteDeployment(run.run_id)


def _smoke_failure(run: Run, smoke: dict[str, Any]) -> PermanentError | None:
    """Why the new deployment must not get traffic: failed requests first, then its quality; None if nothing."""
    failures = [result for result in smoke["results"] if not result["ok"]]
    where = f"{run.endpoint_name}/{run.deployment_name}"
    if failures:
        return SmokeTestFailedError(
            f"{len(failures)} of {smoke['requests']} smoke requests to {where} failed (first: {failures[0]['error']})"
        )
    if smoke.get("quality_problem"):
        return QualityGateError(f"{where}: {smoke['quality_problem']}")
    return None


def _without_answer(conversation: list[dict[str, str]]) -> tuple[list[dict[str, str]], str]:
    """The conversation to send, and the answer to compare with ("" when it has none)."""
    if len(conversation) >= 2 and conversation[-1].get("role") == "assistant":
        return conversation[:-1], conversation[-1].get("content", "")
    return conversation, ""


def _smoke_request(
    ctx: StageContext, endpoint: str, deployment: str, messages: list[dict[str, str]], reference: str
) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        text = response_text(ctx.backend.score(endpoint, chat_request(messages, SMOKE_PARAMETERS), deployment))
        error = "" if text.strip() else "empty answer"
    except BackendError as exc:
        text, error = "", str(exc)
    result: dict[str, Any] = {
        "prompt": messages[-1]["content"][:200],
        "answer": text[:300],
        "latency_ms": round((time.perf_counter() - started) * 1000, 1),
        "ok": not error,
        "error": error,
    }
    if reference:
        result["reference"] = reference[:300]
        result["similarity"] = round(similarity(text, reference), 4)
    return result


def _quality(results: list[dict[str, Any]], live: str, ctx: StageContext) -> dict[str, Any]:
    """Mean similarities of the new and the live deployment, and what is wrong with the new one ("" if nothing)."""
    scored = [result for result in results if "similarity" in result]
    if not scored:
        return {}
    new = sum(result["similarity"] for result in scored) / len(scored)
    quality: dict[str, Any] = {"similarity": round(new, 4), "quality_problem": ""}
    minimum, margin = ctx.settings.smoke_min_similarity, ctx.settings.smoke_quality_margin
    if new < minimum:
        quality["quality_problem"] = (
            f"its answers are too unlike the test answers: similarity {new:.2f} < {minimum:.2f} "
            f"(setting AUTOPILOT_SMOKE_MIN_SIMILARITY)"
        )
    if live and all(result.get("live", {}).get("ok") for result in scored):
        before = sum(result["live"]["similarity"] for result in scored) / len(scored)
        quality["live_similarity"] = round(before, 4)
        if not quality["quality_problem"] and new < before - margin:
            quality["quality_problem"] = (
                f"its answers are less like the test answers than those of the live deployment {live}: "
                f"similarity {new:.2f} vs {before:.2f} "
                f"(allowed margin {margin:.2f}, setting AUTOPILOT_SMOKE_QUALITY_MARGIN)"
            )
    return quality


def _similarities(smoke: dict[str, Any]) -> str:
    if "similarity" not in smoke:
        return ""
    live = f" vs {smoke['live_similarity']:.2f} live" if "live_similarity" in smoke else ""
    return f", similarity {smoke['similarity']:.2f}{live}"


def _roll_back(run: Run, smoke: dict[str, Any], error: PermanentError, ctx: StageContext) -> None:
    message = (
        f"{error}; the new deployment was removed and traffic stays on "
        f"{run.previous_deployment or 'nothing (no live deployment before)'}"
    )
    with permanent_errors_end_run(ctx, run.run_id):
        ctx.backend.delete_deployment(run.endpoint_name, run.deployment_name)

    def record(current: Run) -> None:
        current.smoke = smoke
        if not current.finished:
            end_run(current, RunStatus.ROLLED_BACK, category=error.category, message=message)

    update_run(ctx.ledger, run.run_id, record)
    log.error("run %s rolled back: %s", run.run_id, message)


def promote_deployment(message: PromoteDeployment, ctx: StageContext) -> None:
    """Give the new deployment all traffic, then remove the deployments it replaced."""
    run_stage(ctx, message.run_id, RunStage.PROMOTING, lambda run: _promote(run, ctx))


def _promote(run: Run, ctx: StageContext) -> None:
    ctx.backend.set_traffic(run.endpoint_name, {run.deployment_name: 100})
    endpoint = ctx.backend.get_endpoint(run.endpoint_name)
    replaced = [name for name in (endpoint.deployments if endpoint else ()) if name != run.deployment_name]
    for name in replaced:
        ctx.backend.delete_deployment(run.endpoint_name, name)

    def record(current: Run) -> None:
        if current.stage is not RunStage.PROMOTING:
            return
        current.stage, current.stage_done = RunStage.LIVE, True
        current.stage_times[RunStage.LIVE.value] = iso(ctx.clock())
        current.endpoint_state = "live"
        end_run(current, RunStatus.SUCCEEDED)

    update_run(ctx.ledger, run.run_id, record)
    mark_live_runs(ctx, run.endpoint_name, f"replaced by {run.run_id}", except_run_id=run.run_id)
    log.info(
        "run %s: %s/%s is live (replaced: %s)", run.run_id, run.endpoint_name, run.deployment_name, replaced or "none"
    )
