"""Register the trained model, deploy it next to the live one, smoke-test it, then give it traffic."""

from __future__ import annotations

import hashlib
import re
import time
from datetime import datetime, timedelta
from typing import Any

from shared.datasets import slug
from shared.errors import (
    BackendError,
    DeploymentFailedError,
    InvalidParameterError,
    LedgerConflictError,
    PermanentError,
    QualityGateError,
    QuotaExceededError,
    SmokeTestFailedError,
)
from shared.ledger import Run, RunStage, RunStatus, end_run, iso, update_claimed, update_run
from shared.lifecycle import announce
from shared.messages import DeployModel, PromoteDeployment, QueueMessage, RegisterModel, SmokeTestDeployment
from shared.ml.port import (
    MANAGED_BY_TAG,
    MANAGED_BY_VALUE,
    QUOTA_DEPLOYMENT_ERRORS,
    RUN_TAG,
    DeploymentHealth,
    DeploymentInfo,
    DeploymentSpec,
    EndpointInfo,
    ModelRegistration,
)
from shared.ml.quality import similarity
from shared.ml.scoring import chat_request, response_text
from shared.settings import Settings
from shared.stages.context import StageContext, log, mark_live_runs, run_stage
from shared.stages.release import release_run_resources
from shared.timestamps import parse_iso

DEFAULT_SMOKE_PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Give me one tip for writing clear emails."}],
]
# Greedy, so that the new and the live deployment are compared on their best answers, not on luck.
SMOKE_PARAMETERS: dict[str, Any] = {"max_new_tokens": 64, "do_sample": False}
ENDPOINT_NAME_LIMIT = 32
CHECK_SLACK = timedelta(seconds=1)
SCOPE_HASH_LENGTH = 6
# Model versions are positive integers (azure-facts.md; azureml-examples issue #2725); the walkthrough uses
# Unix seconds. The app keeps them within a signed 32-bit integer, the narrowest type a service could hold
# them in: seconds fit until 2038.
MAX_MODEL_VERSION = 2**31 - 1
VERSION_TRIES = 10


def model_name_for(run: Run) -> str:
    """`<base model>-<dataset>`, in the characters Azure ML allows in model names."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{run.base_model or 'model'}-{run.dataset}")[:255]


def model_version_for(run: Run, attempt: int = 0) -> str:
    """The same on every retry: Unix seconds of the run's creation (+ `attempt` when another run has that one)."""
    version = int(parse_iso(run.created_at).timestamp()) + attempt
    if not 0 < version <= MAX_MODEL_VERSION:
        raise InvalidParameterError(f"model version {version} of run {run.run_id} is outside 1..{MAX_MODEL_VERSION}")
    return str(version)


def endpoint_name_for(run: Run, scope: str = "") -> str:
    """The manifest's `endpoint_name`, or `ftap-<dataset>` (+ a short hash of the workspace when `scope` is set).

    Azure wants 3-32 characters, a letter first, letters, digits and dashes, and a name unique in the
    region across workspaces: the hash keeps two workspaces' endpoints for the same dataset apart, and
    stays the same for every run of the dataset in one workspace.
    """
    if run.manifest.get("endpoint_name"):
        return str(run.manifest["endpoint_name"])
    base = f"ftap-{slug(run.dataset)}"
    if not scope:
        return base[:ENDPOINT_NAME_LIMIT].rstrip("-")
    digest = hashlib.sha256(scope.encode("utf-8")).hexdigest()[:SCOPE_HASH_LENGTH]
    return f"{base[: ENDPOINT_NAME_LIMIT - SCOPE_HASH_LENGTH - 1].rstrip('-')}-{digest}"


def register_model(message: RegisterModel, ctx: StageContext) -> DeployModel | None:
    """Register the job's trained model with lineage tags; registering again returns the same version."""
    return run_stage(
        ctx, message.run_id, RunStage.REGISTERING, lambda run: _register(run, ctx), DeployModel, retry=message
    )


def _register(run: Run, ctx: StageContext) -> DeployModel:
    for attempt in range(VERSION_TRIES):
        try:
            model = ctx.backend.register_model(
                ModelRegistration(
                    job_name=run.job_name,
                    model_name=model_name_for(run),
                    version=model_version_for(run, attempt),
                    description=f"{run.base_model} fine-tuned on {run.dataset}/{run.version} by Finetune Autopilot",
                    tags={
                        RUN_TAG: run.run_id,
                        "dataset": run.dataset,
                        "dataset_version": run.version,
                        "job": run.job_name,
                    },
                )
            )
            break
        except BackendError as error:
            # Another run of the dataset was made in the same second and holds that version: take the next.
            if error.category != "conflict" or attempt == VERSION_TRIES - 1:
                raise

    def record(current: Run) -> None:
        current.model_name, current.model_version, current.model_uri = model.name, model.version, model.uri
        current.stage_done = True

    update_claimed(ctx.ledger, run, record)
    log.info("run %s: registered %s:%s", run.run_id, model.name, model.version)
    return DeployModel(run.run_id)


def deploy_model(message: DeployModel, ctx: StageContext) -> SmokeTestDeployment | None:
    """Create the new deployment with no traffic; while it is being created, check back later."""
    return run_stage(
        ctx, message.run_id, RunStage.DEPLOYING, lambda run: _deploy(run, ctx), SmokeTestDeployment, retry=message
    )


def _deploy(run: Run, ctx: StageContext) -> SmokeTestDeployment | None:
    if run.deploy_check_due and ctx.clock() < parse_iso(run.deploy_check_due) - CHECK_SLACK:
        log.info("run %s: a later deployment check is already scheduled; this one is a duplicate", run.run_id)
        return None
    if not run.endpoint_name:
        run = _choose_endpoint(run, ctx)
    if superseded(ctx, run):
        return None
    endpoint_name, deployment_name = run.endpoint_name, run.deployment_name
    endpoint = ctx.backend.ensure_endpoint(endpoint_name, {MANAGED_BY_TAG: MANAGED_BY_VALUE, "dataset": run.dataset})
    _check_managed(endpoint, run)
    deployment = ctx.backend.get_deployment(endpoint_name, deployment_name, run.deployment_operation)
    if deployment is None or deployment.retryable:
        if deployment is not None:
            log.warning("run %s: deployment %s: %s; starting it again", run.run_id, deployment_name, deployment.error)
        previous = (
            run.previous_deployment
            or max(
                ((weight, name) for name, weight in endpoint.traffic.items() if weight > 0 and name != deployment_name),
                default=(0, ""),
            )[1]
        )
        deployment = ctx.backend.begin_deployment(
            DeploymentSpec(
                endpoint_name,
                deployment_name,
                run.model_name,
                run.model_version,
                tags={RUN_TAG: run.run_id, MANAGED_BY_TAG: MANAGED_BY_VALUE},
            )
        )
        operation = deployment.operation

        def record_start(current: Run) -> None:
            current.scoring_uri, current.previous_deployment = endpoint.scoring_uri, previous
            current.deployment_operation = operation

        update_claimed(ctx.ledger, run, record_start)
    if deployment.failed:
        raise deployment_failure(deployment)
    if deployment.ready:
        update_claimed(ctx.ledger, run, lambda current: setattr(current, "stage_done", True))
        log.info("run %s: deployment %s/%s is ready", run.run_id, endpoint_name, deployment_name)
        return SmokeTestDeployment(run.run_id)
    started = parse_iso(run.stage_times[RunStage.DEPLOYING.value])
    check_again_later(ctx, run.run_id, deployment, started, DeployModel(run.run_id), DeploymentFailedError)
    return None


# Stages in which a run has (or is about to have) a deployment on its endpoint without being live.
ROLLING_OUT = (RunStage.DEPLOYING, RunStage.SMOKE_TESTING, RunStage.PROMOTING)


def _data_order(run: Run) -> tuple[str, str, str]:
    """Which run's data is newer: the run made later (its folder settled later), then the version's name."""
    return (run.created_at, run.version, run.run_id)


def superseded(ctx: StageContext, run: Run) -> bool:
    """Serialise the runs that roll out to one endpoint: the newest data wins.

    True when a newer run is rolling out to (or went live on) the run's endpoint: this run then ends
    `superseded`, and what it made is removed. Otherwise older runs still rolling out there end
    `superseded` instead, so two versions uploaded together never race for the traffic.
    """
    newer, older = [], []
    for other in ctx.ledger.runs_of_endpoint(run.endpoint_name):
        if other.run_id == run.run_id:
            continue
        if _data_order(other) > _data_order(run):
            if other.status is RunStatus.SUCCEEDED or (not other.finished and other.stage in ROLLING_OUT):
                newer.append(other)
        elif not other.finished and other.stage in ROLLING_OUT:
            older.append(other)
    if newer:
        supersede(ctx, run.run_id, newer[0])
        return True
    for other in older:
        supersede(ctx, other.run_id, run)
    return False


def supersede(ctx: StageContext, run_id: str, by: Run) -> None:
    """End the run `superseded` by `by` (a run with newer data for the same endpoint) and remove what it made."""
    message = (
        f"run {by.run_id} ({by.dataset}/{by.version}) has newer data for endpoint {by.endpoint_name}; its data wins"
    )

    def change(current: Run) -> None:
        if not current.finished:
            end_run(current, RunStatus.SUPERSEDED, category="superseded", message=message)

    ended = update_run(ctx.ledger, run_id, change)
    if ended.status is RunStatus.SUPERSEDED:
        announce(ctx, ended)
        log.warning("run %s superseded: %s", run_id, message)
        release_run_resources(ctx, run_id)


def _choose_endpoint(run: Run, ctx: StageContext) -> Run:
    """Name the run's endpoint and deployment on the run before anything is created.

    A retry after a crash (or a lost answer) then finds the names, so whatever the first try made is
    smoke-tested, promoted or removed, never left billing unknown to the run.
    """
    endpoint_name = endpoint_name_for(run, ctx.backend.endpoint_scope)
    # Azure wants 3-32 characters: a short version (a model registered by hand as 7) is padded (v07).
    deployment_name = f"v{run.model_version:0>2}"[:ENDPOINT_NAME_LIMIT]
    existing = ctx.backend.get_endpoint(endpoint_name)
    if existing is not None:
        _check_managed(existing, run)

    def record(current: Run) -> None:
        if not current.endpoint_name:
            current.endpoint_name, current.deployment_name = endpoint_name, deployment_name
            current.created_endpoint = existing is None

    return update_claimed(ctx.ledger, run, record)


def _check_managed(endpoint: EndpointInfo, run: Run) -> None:
    """Only endpoints this app made (its `managed_by` tag) take its deployments: never another one of the workspace."""
    if endpoint.tags.get(MANAGED_BY_TAG) != MANAGED_BY_VALUE:
        raise InvalidParameterError(
            f"endpoint {endpoint.name} exists and was not made by Finetune Autopilot (no {MANAGED_BY_TAG}="
            f"{MANAGED_BY_VALUE} tag): run {run.run_id} will not deploy to it; set another endpoint_name in the "
            "dataset's autopilot.json, or leave it out for the app's own endpoint"
        )


def deployment_failure(deployment: DeploymentInfo) -> PermanentError:
    """The run's error for a failed deployment: `quota` for a quota shortfall, else `deployment`."""
    where = f"deployment {deployment.name} on {deployment.endpoint_name}"
    if deployment.error_code in QUOTA_DEPLOYMENT_ERRORS:
        return QuotaExceededError(f"{where} failed: {deployment.error}")
    return DeploymentFailedError(f"{where} failed: {deployment.error}")


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
    return run_stage(
        ctx,
        message.run_id,
        RunStage.SMOKE_TESTING,
        lambda run: _smoke_test(run, ctx),
        PromoteDeployment,
        retry=message,
    )


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

    update_claimed(ctx.ledger, run, record)
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
    """Remove the new deployment (`removed` says what), then end the run `rolled_back`."""
    message = (
        f"{error}; the new deployment is removed and traffic stays on "
        f"{run.previous_deployment or 'nothing (no live deployment before)'}"
    )
    release_run_resources(ctx, run.run_id, ending=True)

    def record(current: Run) -> None:
        current.smoke = smoke
        if not current.finished:
            end_run(current, RunStatus.ROLLED_BACK, category=error.category, message=message)

    announce(ctx, update_claimed(ctx.ledger, run, record))
    log.error("run %s rolled back: %s", run.run_id, message)


def promote_deployment(message: PromoteDeployment, ctx: StageContext) -> None:
    """Move traffic to the new deployment in steps, judging each bake period against the live deployment;
    at 100 % remove the deployments it replaced. A breach rolls it back (`rolled_back`, category `canary`).

    The stage stays claimed across the steps: each step sends this message again, delayed by the bake
    period (AUTOPILOT_BAKE_MINUTES), and the delivery that finds the bake over judges it.
    """
    run_stage(ctx, message.run_id, RunStage.PROMOTING, lambda run: _promote(run, ctx), retry=message)


def _promote(run: Run, ctx: StageContext) -> None:
    """After the bake steps, all traffic to the new deployment (kept if already so: a retry makes no new
    update), then the deployments this app made before it are deleted; others on the endpoint are left alone."""
    if run.traffic_steps and run.deploy_check_due and ctx.clock() < parse_iso(run.deploy_check_due) - CHECK_SLACK:
        log.info("run %s: a later traffic step is already scheduled; this delivery is a duplicate", run.run_id)
        return
    if superseded(ctx, run):
        return
    try:
        if not _baked(run, ctx):
            return
    except PermanentError:
        # The run is about to end `failed`, and the release of its resources leaves a deployment that takes
        # traffic in place: give the live deployment all of it back first.
        _give_live_all_traffic(run, ctx)
        raise
    wanted = {run.deployment_name: 100}
    endpoint = ctx.backend.get_endpoint(run.endpoint_name)
    if endpoint is None or {name: weight for name, weight in endpoint.traffic.items() if weight} != wanted:
        ctx.backend.set_traffic(run.endpoint_name, wanted)
        endpoint = ctx.backend.get_endpoint(run.endpoint_name)
    replaced, kept = [], []
    for name in endpoint.deployments if endpoint else ():
        if name == run.deployment_name:
            continue
        other = ctx.backend.get_deployment(run.endpoint_name, name)
        if other is not None and not other.managed:
            kept.append(name)
            continue
        ctx.backend.delete_deployment(run.endpoint_name, name)
        replaced.append(name)
    if kept:
        log.warning(
            "run %s: deployments %s on %s were not made by this app: left in place", run.run_id, kept, run.endpoint_name
        )

    def record(current: Run) -> None:
        if current.stage is not RunStage.PROMOTING:
            return
        current.stage, current.stage_done = RunStage.LIVE, True
        current.stage_times[RunStage.LIVE.value] = iso(ctx.clock())
        current.traffic_steps.append(
            {"step": len(current.traffic_steps) + 1, "mode": "split", "percent": 100, "started_at": iso(ctx.clock())}
        )
        current.endpoint_state = "live"
        end_run(current, RunStatus.SUCCEEDED)

    announce(ctx, update_claimed(ctx.ledger, run, record))
    mark_live_runs(ctx, run.endpoint_name, f"replaced by {run.run_id}", except_run_id=run.run_id)
    log.info(
        "run %s: %s/%s is live (replaced: %s)", run.run_id, run.endpoint_name, run.deployment_name, replaced or "none"
    )


CANARY_CATEGORY = "canary"


def bake_plan(run: Run, ctx: StageContext) -> list[tuple[str, int]]:
    """The steps baked before 100 %, as (mode, percent): "split" steps from AUTOPILOT_TRAFFIC_STEPS, or one
    "mirror" step at AUTOPILOT_MIRROR_PERCENT; none when no live deployment is there to compare with."""
    if not run.previous_deployment or run.previous_deployment == run.deployment_name:
        return []
    if ctx.settings.mirror_percent:
        return [("mirror", ctx.settings.mirror_percent)]
    return [("split", percent) for percent in ctx.settings.traffic_steps if percent < 100]


def _baked(run: Run, ctx: StageContext) -> bool:
    """Start, wait for or judge the current bake step; True once every step passed and all traffic may move."""
    plan = bake_plan(run, ctx)
    if run.traffic_steps and "verdict" not in run.traffic_steps[-1]:
        step = run.traffic_steps[-1]
        due = parse_iso(step["started_at"]) + timedelta(minutes=ctx.settings.bake_minutes)
        if ctx.clock() < due - CHECK_SLACK:
            _check_step_at(ctx, run, due)
            return False
        judged = _judge_step(run, ctx, step)
        if judged is None:
            return False
        run = judged
    index = len(run.traffic_steps)
    if index >= len(plan):
        return True
    endpoint = ctx.backend.get_endpoint(run.endpoint_name)
    if endpoint is None or run.previous_deployment not in endpoint.deployments:
        log.warning(
            "run %s: the live deployment %s is gone from %s: no bake, all traffic moves at once",
            run.run_id,
            run.previous_deployment,
            run.endpoint_name,
        )
        return True
    mode, percent = plan[index]
    live, new = run.previous_deployment, run.deployment_name
    if mode == "mirror":
        ctx.backend.set_traffic(run.endpoint_name, {live: 100}, mirror_traffic={new: percent})
    else:
        ctx.backend.set_traffic(run.endpoint_name, {live: 100 - percent, new: percent})
    started = ctx.clock()

    def record(current: Run) -> None:
        if len(current.traffic_steps) == index:
            current.traffic_steps.append(
                {"step": index + 1, "mode": mode, "percent": percent, "started_at": iso(started)}
            )

    update_claimed(ctx.ledger, run, record)
    log.info(
        "run %s: step %d: %d %% of live traffic %s %s for %g min",
        run.run_id,
        index + 1,
        percent,
        "mirrored to" if mode == "mirror" else "goes to",
        new,
        ctx.settings.bake_minutes,
    )
    _check_step_at(ctx, run, started + timedelta(minutes=ctx.settings.bake_minutes))
    return False


def _give_live_all_traffic(run: Run, ctx: StageContext) -> None:
    """Best effort, for a rollout that cannot go on: all traffic (and no mirror) back on the live deployment."""
    if not bake_plan(run, ctx):
        return
    try:
        ctx.backend.set_traffic(run.endpoint_name, {run.previous_deployment: 100}, mirror_traffic={})
    except Exception as exc:  # the run's own error is what must be recorded and raised
        log.error("run %s: could not give %s all traffic back: %s", run.run_id, run.previous_deployment, exc)


def _check_step_at(ctx: StageContext, run: Run, due: datetime) -> None:
    """Send the promote message again for `due` (once: duplicate deliveries keep one chain of checks)."""
    if schedule_check(ctx, run.run_id, due):
        ctx.sender.send(PromoteDeployment(run.run_id), delay_seconds=max(0.0, (due - ctx.clock()).total_seconds()))


def _judge_step(run: Run, ctx: StageContext, step: dict[str, Any]) -> Run | None:
    """Compare the new deployment's live figures since the step started with the live deployment's.

    The run as recorded with the verdict when the step passed; None when it breached (the run is then
    rolled back). Too few requests to judge passes the step, with that verdict, rather than hold a
    quiet endpoint's rollout forever.
    """
    since = parse_iso(step["started_at"])
    new = ctx.backend.deployment_health(run.endpoint_name, run.deployment_name, since)
    live = ctx.backend.deployment_health(run.endpoint_name, run.previous_deployment, since)
    problem = canary_breach(new, live, ctx.settings)
    verdict = "breach" if problem else "passed"
    if not problem and new.requests < ctx.settings.canary_min_requests:
        verdict = "too_few_requests"
    judged = {**step, "judged_at": iso(ctx.clock()), "new": new.figures(), "live": live.figures(), "verdict": verdict}
    if problem:
        judged["problem"] = problem
        _roll_back_canary(run, ctx, judged)
        return None
    if verdict == "too_few_requests":
        log.warning(
            "run %s: step %d saw %d requests (< %d, AUTOPILOT_CANARY_MIN_REQUESTS): passed unjudged",
            run.run_id,
            step["step"],
            new.requests,
            ctx.settings.canary_min_requests,
        )

    def record(current: Run) -> None:
        current.traffic_steps[len(current.traffic_steps) - 1] = judged

    return update_claimed(ctx.ledger, run, record)


def canary_breach(new: DeploymentHealth, live: DeploymentHealth, settings: Settings) -> str:
    """What the new deployment's figures breach ("" if nothing, or too few requests to judge)."""
    if new.requests < settings.canary_min_requests:
        return ""
    margin = settings.canary_error_rate_margin
    if new.error_rate * 100 > live.error_rate * 100 + margin:
        return (
            f"5xx rate {new.error_rate:.1%} ({new.errors_5xx} of {new.requests} requests) vs {live.error_rate:.1%} "
            f"on the live deployment (allowed: {margin:g} percentage points more, "
            "setting AUTOPILOT_CANARY_ERROR_RATE_MARGIN)"
        )
    ratio = settings.canary_latency_ratio
    if new.p95_ms is not None and live.p95_ms and new.p95_ms > live.p95_ms * ratio:
        return (
            f"p95 latency {new.p95_ms:.0f} ms vs {live.p95_ms:.0f} ms on the live deployment "
            f"(allowed: {ratio:g}x, setting AUTOPILOT_CANARY_LATENCY_RATIO)"
        )
    return ""


def _roll_back_canary(run: Run, ctx: StageContext, step: dict[str, Any]) -> None:
    """All traffic back to the live deployment (no mirror), end the run `rolled_back`, remove the new deployment."""
    live = run.previous_deployment
    ctx.backend.set_traffic(run.endpoint_name, {live: 100}, mirror_traffic={})
    message = (
        f"canary step {step['step']} ({step['percent']} % {step['mode']}) of {run.endpoint_name}/"
        f"{run.deployment_name}: {step['problem']}; all traffic is back on {live} and the new deployment is removed"
    )

    def record(current: Run) -> None:
        current.traffic_steps[len(current.traffic_steps) - 1] = step
        if not current.finished:
            end_run(current, RunStatus.ROLLED_BACK, category=CANARY_CATEGORY, message=message)

    update_claimed(ctx.ledger, run, record)
    log.error("run %s rolled back: %s", run.run_id, message)
    release_run_resources(ctx, run.run_id)
