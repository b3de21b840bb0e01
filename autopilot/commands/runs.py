"""`autopilot runs [--json]`, `autopilot run RUN_ID [--json] [--follow]`, `autopilot cancel RUN_ID`: the ledger."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from autopilot.commands.exits import EXIT_FAILED, EXIT_OK, CommandError, NotFound
from autopilot.commands.progress import Progress, StepHook
from shared.ledger import STAGE_ORDER, Run, RunLedger, RunStage, RunStatus

# A run appears in the ledger within seconds of its manifest's upload; longer means it never will.
APPEAR_WITHIN_S = 20.0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    runs = subparsers.add_parser("runs", help="list runs, newest first")
    runs.add_argument("--json", action="store_true", help="print JSON instead of a table")
    runs.add_argument("--limit", type=int, default=50, help="show at most this many runs (default 50)")
    runs.set_defaults(func=list_runs)
    one = subparsers.add_parser("run", help="show one run")
    one.add_argument("run_id", metavar="RUN_ID", help="a run id, as `autopilot runs` or `autopilot upload` shows it")
    one.add_argument("--json", action="store_true", help="print JSON instead of text")
    one.add_argument(
        "--follow",
        action="store_true",
        help="print each stage as it happens, until the run ends; exit 0 if it succeeded, else 1",
    )
    one.add_argument("--timeout", type=float, default=3600, help="seconds --follow waits at most (default 3600)")
    one.set_defaults(func=show_run)
    cancel = subparsers.add_parser(
        "cancel", help="stop a run that is under way: its training job is canceled, its new deployment removed"
    )
    cancel.add_argument("run_id", metavar="RUN_ID", help="the run to stop")
    cancel.add_argument("--reason", default="canceled from the command line", help="recorded on the run")
    cancel.add_argument("--no-wait", action="store_true", help="ask and return; do not wait until it has stopped")
    cancel.add_argument("--json", action="store_true", help="print the outcome as JSON (progress goes to stderr)")
    cancel.add_argument("--timeout", type=float, default=120.0, help="seconds to wait (default 120)")
    cancel.set_defaults(func=cancel_run)


def _ledger() -> RunLedger:
    from autopilot.commands.common import cli_settings, open_ledger

    return open_ledger(cli_settings())


def list_runs(args: argparse.Namespace) -> int:
    runs = _ledger().list_runs(args.limit)
    if args.json:
        print(json.dumps([run.to_dict() for run in runs], indent=1))
        return 0
    rows = [("RUN", "DATASET/VERSION", "STAGE", "STATUS", "ENDPOINT", "UPDATED", "ERROR")]
    rows += [
        (
            r.run_id,
            f"{r.dataset}/{r.version}",
            r.stage.value,
            r.status.value,
            f"{r.endpoint_name} ({r.endpoint_state.split(' ', 1)[0]})" if r.endpoint_state else "",
            r.updated_at[:19],
            (r.error_category + ": " + r.error_message)[:60] if r.error_message else "",
        )
        for r in runs
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    if not runs:
        print("(no runs yet)")
    return 0


def stage_times_in_order(run: Run) -> list[tuple[str, str]]:
    return [(stage.value, run.stage_times[stage.value]) for stage in STAGE_ORDER if stage.value in run.stage_times]


def describe(run: Run) -> str:
    lines = [
        f"run       {run.run_id}   ({run.ml_backend} backend)",
        f"dataset   {run.dataset}/{run.version}   content {run.content_hash[:12]}",
        f"status    {run.status.value}, stage {run.stage.value}{' (done)' if run.stage_done else ''}",
    ]
    for stage, moment in stage_times_in_order(run):
        lines.append(f"  {moment}  {stage}")
    stages = {stage.value for stage in STAGE_ORDER}
    for moment, event in sorted((moment, event) for event, moment in run.stage_times.items() if event not in stages):
        lines.append(f"  {moment}  {event}")
    if run.validation.get("summary"):
        lines.append(f"validation {run.validation['summary']}")
    if run.job_name:
        lines.append(f"job       {run.job_name} ({run.job_status}) {run.metrics or ''}")
    if run.model_name:
        lines.append(f"model     {run.model_name}:{run.model_version}")
    if run.endpoint_name:
        lines.append(f"endpoint  {run.endpoint_name} / {run.deployment_name}  {run.scoring_uri}  {run.endpoint_state}")
    if run.smoke:
        similar = ""
        if "similarity" in run.smoke:
            live = run.smoke.get("live_similarity")
            similar = f", similarity to the test answers {run.smoke['similarity']:.2f}"
            similar += f" (live deployment {live:.2f})" if live is not None else ""
        lines.append(
            f"smoke     {'passed' if run.smoke.get('passed') else 'FAILED'} ({run.smoke.get('requests')} requests"
            f"{similar})"
        )
    for step in run.traffic_steps:
        figures = ", ".join(f"{key} {value}" for key, value in step.items() if key not in ("step", "mode", "percent"))
        lines.append(f"traffic   step {step.get('step')}: {step.get('percent')} % {step.get('mode', '')}  {figures}")
    if run.retries:
        counts = ", ".join(f"{step} {count}" for step, count in sorted(run.retries.items()))
        lines.append(
            f"retries   {counts} (transient errors tried again; reconciled_*: moved on by the reconcile timer)"
        )
    if run.removed:
        lines.append(f"removed   {', '.join(run.removed)}")
    if run.error_message:
        lines.append(f"error     [{run.error_category} in {run.error_stage}] {run.error_message}")
    return "\n".join(lines)


JobProgress = Callable[[str], dict[str, Any] | None]


def follow(
    ledger: RunLedger,
    run_id: str,
    report: Callable[[str], None],
    timeout: float,
    interval: float = 0.5,
    job_progress: JobProgress | None = None,
    appear_within: float | None = None,
    on_step: StepHook | None = None,
) -> Run | None:
    """Print the run's stages as they happen until it ends; None if it never appeared or time ran out.

    With `job_progress` (the job's latest {"step", "steps", "loss"}, or None), training steps are
    printed too, as the job reports them, or handed to `on_step` (a bar) when given. With `appear_within`,
    a run not in the ledger after that many seconds is given up on (None) rather than waited for until `timeout`.
    """
    started = time.monotonic()
    deadline = started + timeout
    seen: set[str] = set()
    run = None
    while time.monotonic() < deadline:
        run = ledger.get(run_id)
        if run is None and appear_within is not None and time.monotonic() - started >= appear_within:
            return None
        if run is None:
            if "waiting" not in seen:
                report(f"waiting for run {run_id} to appear ...")
                seen.add("waiting")
        else:
            for stage, moment in stage_times_in_order(run):
                if stage not in seen:
                    seen.add(stage)
                    report(f"  {moment[11:23]}  {stage}")
            if job_progress is not None and run.stage is RunStage.TRAINING and run.job_name:
                progress = job_progress(run.job_name)
                if progress is not None and on_step is not None:
                    on_step(progress["step"], progress["steps"], progress["loss"])
                elif progress is not None:
                    line = f"step {progress['step']}/{progress['steps']}, loss {progress['loss']:.3f}"
                    if line not in seen:
                        seen.add(line)
                        report(f"  {datetime.now(timezone.utc).isoformat(timespec='milliseconds')[11:23]}    {line}")
            if run.finished:
                return run
        time.sleep(interval)
    return run


def local_job_progress() -> JobProgress | None:
    """With the local backend, a reader of a job's latest training step and loss; None with any other."""
    from autopilot.commands.common import cli_settings

    settings = cli_settings()
    if settings.ml_backend != "local":
        return None
    from shared.ml.local.backend import LocalMLBackend

    return LocalMLBackend.from_settings(settings, watch=False).job_progress


def cancel_run(args: argparse.Namespace) -> int:
    """Send `CancelRun` for the run; wait until the function app has stopped it unless told not to."""
    from autopilot.commands.common import cli_settings, wait_for_run
    from shared.errors import AutopilotError
    from shared.queueing import StorageQueueSender
    from shared.stages.cancel import request_cancel

    settings = cli_settings()
    ledger = _ledger()
    if ledger.get(args.run_id) is None:
        raise NotFound(f"no run {args.run_id}", hint="`autopilot runs` lists the runs")
    try:
        command = request_cancel(ledger, args.run_id, args.reason)
    except AutopilotError as exc:
        raise CommandError(str(exc), EXIT_FAILED) from exc
    StorageQueueSender(settings.storage_connection).send(command)
    progress = Progress()
    progress.say(f"canceling run {args.run_id}: {command.reason}; the function app does the work")
    if args.no_wait:
        return report(args, {"run_id": args.run_id, "requested": True, "status": None}, EXIT_OK)
    with progress.waiting(f"waiting for run {args.run_id} to stop") as wait:
        run = wait_for_run(
            ledger,
            args.run_id,
            lambda current: current.finished,
            args.timeout,
            report=wait.news,
            report_every=wait.news_every,
        )
    if run is None:
        raise CommandError(
            f"run {args.run_id} had not stopped after {args.timeout:.0f} s",
            EXIT_FAILED,
            hint="is the function app running? `autopilot status` says",
        )
    outcome_printer(args)(f"run {args.run_id} ended {run.status.value}: {run.error_message}")
    code = EXIT_OK if run.status is RunStatus.CANCELED else EXIT_FAILED
    return report(args, {"run_id": args.run_id, "requested": True, "status": run.status.value}, code)


def show_run(args: argparse.Namespace) -> int:
    from autopilot.commands.upload import upload_settling

    ledger = _ledger()
    if args.follow:
        # Progress goes to stderr, so that stdout holds the run (its JSON alone with --json).
        settling = upload_settling(args.run_id)
        appear_within = None if settling else APPEAR_WITHIN_S
        job_progress = local_job_progress()
        with Progress().following(f"following run {args.run_id}") as watch:
            run = follow(
                ledger,
                args.run_id,
                watch.say,
                args.timeout,
                job_progress=job_progress,
                appear_within=appear_within,
                on_step=watch.step,
            )
    else:
        run = ledger.get(args.run_id)
    if run is None:
        raise NotFound(
            f"no run {args.run_id}",
            hint="`autopilot runs` lists the runs; a run appears seconds after its folder's manifest is uploaded",
        )
    print(json.dumps(run.to_dict(), indent=1) if args.json else describe(run))
    if args.follow and not run.finished:
        raise CommandError(f"run {args.run_id} had not ended after {args.timeout:.0f} s", EXIT_FAILED)
    # Followed to its end, the run's outcome is the exit code, so that scripts can wait on a run.
    if args.follow and run.status is not RunStatus.SUCCEEDED:
        return EXIT_FAILED
    return EXIT_OK


def outcome_printer(args: argparse.Namespace) -> Callable[[str], None]:
    """Where a command's closing lines go: stdout for people, stderr when stdout carries --json.

    Progress during the wait goes to stderr either way (autopilot.commands.progress).
    """
    if getattr(args, "json", False):
        return lambda line: print(line, file=sys.stderr, flush=True)
    return lambda line: print(line, flush=True)


def report(args: argparse.Namespace, result: dict[str, Any], code: int) -> int:
    """With --json, the command's result as one JSON object on stdout; the exit code either way."""
    if getattr(args, "json", False):
        print(json.dumps(result, indent=1))
    return code
