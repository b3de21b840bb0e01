"""`autopilot demo [--no-input] [--no-wait]`: the whole chain on the local stack with the sample dataset.

`--no-input` asks nothing (as everywhere: no prompt); `--no-wait` returns once the run is started (as with
`cancel` and `restore`: do not wait for the work to end).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from autopilot.local.processes import PROJECT_ROOT

if TYPE_CHECKING:
    from shared.ledger import Run
    from shared.settings import Settings

SAMPLE_DATASET = PROJECT_ROOT / "samples" / "ahoy-chat" / "v1"
SAMPLE_NAME = "ahoy-chat"
# Not in the sample dataset: the tuned model has to carry the style over to a new question.
COMPARISON_PROMPT = "How do I make a good cup of tea?"
COMPARISON_PARAMETERS = {"do_sample": False, "max_new_tokens": 80}


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("demo", help="start the local stack, upload the sample dataset and follow its run")
    parser.add_argument("--no-input", action="store_true", help="ask nothing; leave the stack running at the end")
    parser.add_argument(
        "--no-wait",
        action="store_true",
        help="return once the sample is uploaded, with its run id; do not follow the run (implies --no-input)",
    )
    parser.add_argument(
        "--timeout", type=float, default=900, metavar="S", help="seconds to wait for the run (default 900)"
    )
    parser.set_defaults(func=run)


def _say(text: str = "") -> None:
    print(text, flush=True)


def run(args: argparse.Namespace) -> int:
    from autopilot.commands.common import cli_settings, open_ledger, settings_env
    from autopilot.commands.runs import describe, follow, local_job_progress
    from autopilot.commands.upload import upload_folder
    from autopilot.local.stack import LocalStack

    env = settings_env()
    # The stack is started below: its storage need not answer yet.
    settings = cli_settings(need_storage=False)
    _say("== Finetune Autopilot demo ==")
    if settings.ml_backend == "simulated":
        _say("ML backend: SIMULATED - no model is trained or served; jobs, models and endpoints are stand-ins")
        _say("            that behave like Azure ML's (events, versions, traffic), so the event chain is real.")
    elif settings.ml_backend == "local":
        _say(f"ML backend: local - LoRA fine-tuning of {settings.local_base_model} on this machine (a few minutes on")
        _say("            a CPU), tracked and registered in MLflow, served by a local endpoint with key auth.")
    else:
        _say(f"ML backend: {settings.ml_backend}")
    _say("\n-- starting the local stack")
    stack = LocalStack(env=env)
    # The demo's run makes an endpoint of its own: endpoints of earlier demos may go on loading meanwhile.
    stack.up(report=lambda line: _say("   " + line), endpoint_timeout=None)

    version = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    _say(f"\n-- uploading the sample dataset as {SAMPLE_NAME}/{version}")
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        for item in SAMPLE_DATASET.iterdir():
            shutil.copy(item, folder / item.name)
        # A fresh note in the manifest makes fresh content, so every demo starts its own run.
        manifest = json.loads((folder / "autopilot.json").read_text())
        manifest["description"] = f"{manifest.get('description', '')} Demo of {version}.".strip()
        (folder / "autopilot.json").write_text(json.dumps(manifest, indent=2))
        run_id = upload_folder(folder, SAMPLE_NAME, version, report=lambda line: _say("   " + line))
    if args.no_wait:
        _say(f"\nrun {run_id} is under way; follow it with: autopilot run {run_id} --follow")
        _say("the local stack keeps running; stop it with: autopilot down")
        _final(run_id, "started", "", settings.ml_backend)
        return 0

    _say(f"\n-- following run {run_id} (ledger: table {settings.runs_table})")
    result = follow(open_ledger(settings), run_id, _say, args.timeout, job_progress=local_job_progress())
    if result is None or not result.finished:
        _say(f"\nthe run did not finish within {args.timeout:.0f} s; logs are in {stack.logs}")
        _final(run_id, result.status.value if result else "missing", "", settings.ml_backend)
        return 1
    _say("")
    _say(describe(result))
    for item in result.smoke.get("results", []):
        similar = f", similarity {item['similarity']:.2f}" if "similarity" in item else ""
        _say(f"   smoke: {item['prompt'][:60]!r} -> {item['answer'][:90]!r} ({item['latency_ms']} ms{similar})")
    if settings.ml_backend == "local" and result.status.value == "succeeded":
        _compare_base_and_tuned(settings, result)
    if not args.no_input and sys.stdin.isatty():
        answer = input("\nStop the local stack now? [y/N] ").strip().lower()
        if answer == "y":
            stack.down()
    else:
        _say("\nthe local stack keeps running; stop it with: autopilot down")
    losses = {key: round(result.metrics[key], 4) for key in ("train_loss", "eval_loss") if key in result.metrics}
    _final(run_id, result.status.value, result.endpoint_name, settings.ml_backend, result.scoring_uri, losses)
    return 0 if result.status.value == "succeeded" else 1


def _compare_base_and_tuned(settings: Settings, run: Run) -> None:
    """The same prompt to the base model (in this process) and to the fine-tuned endpoint (over HTTP)."""
    from shared.ml.local.backend import LocalMLBackend
    from shared.ml.local.conversations import generate_reply, load_for_replies
    from shared.ml.local.weights import BaseModel
    from shared.ml.scoring import chat_request, response_text
    from shared.stages.rollout import SMOKE_PARAMETERS

    backend = LocalMLBackend.from_settings(settings, watch=False)
    messages = [{"role": "user", "content": COMPARISON_PROMPT}]
    _say("\n-- the same prompt to the base model and to the fine-tuned endpoint (greedy decoding)")
    _say(f"   prompt: {COMPARISON_PROMPT}")
    folder = BaseModel.from_setting(settings.local_base_model).ensure_folder(backend.store.weights_dir)
    model, tokenizer = load_for_replies(folder)
    base = generate_reply(model, tokenizer, messages, COMPARISON_PARAMETERS)
    tuned = response_text(backend.score(run.endpoint_name, chat_request(messages, COMPARISON_PARAMETERS)))
    _say(f"   base {run.base_model}:\n      {_indented(base)}")
    _say(f"   fine-tuned, endpoint {run.endpoint_name} ({run.scoring_uri}):\n      {_indented(tuned)}")
    _say(f"   the sample's style (opens 'Ahoy', closes 'Fair winds'): base {_style(base)}, fine-tuned {_style(tuned)}")
    if "similarity" in run.smoke:
        base_similarity = _base_similarity(lambda turns: generate_reply(model, tokenizer, turns, SMOKE_PARAMETERS), run)
        _say(
            f"   similarity to the test answers (the smoke test's quality check): fine-tuned "
            f"{run.smoke['similarity']:.2f}, base {base_similarity:.2f} "
            f"on the same {len(run.smoke_prompts)} conversations"
        )
    metrics = run.metrics
    if "train_loss" in metrics:
        _say(
            f"   train loss: {metrics.get('train_loss_first', float('nan')):.3f} at the first step, "
            f"{metrics['train_loss']:.3f} over the last steps ({metrics.get('train_steps', 0):.0f} steps, "
            f"{metrics.get('train_runtime_seconds', 0):.0f} s)"
        )
    if "eval_loss" in metrics:
        _say(
            f"   eval loss on the test split: {metrics.get('eval_loss_before', float('nan')):.3f} before, "
            f"{metrics['eval_loss']:.3f} after"
        )


def _base_similarity(reply: Callable[[list[dict[str, str]]], str], run: Run) -> float:
    """The base model's mean similarity to the test answers on the run's smoke conversations."""
    from shared.ml.quality import similarity

    scores = [similarity(reply(conversation[:-1]), conversation[-1]["content"]) for conversation in run.smoke_prompts]
    return sum(scores) / len(scores) if scores else 0.0


def _indented(text: str) -> str:
    return "\n      ".join(line for line in text.splitlines() if line.strip())


def _style(answer: str) -> str:
    """Whether an answer has the sample dataset's style."""
    text = answer.strip().lower()
    return "yes" if text.startswith("ahoy") and "fair winds" in text[-60:] else "no"


def _final(
    run_id: str,
    status: str,
    endpoint: str,
    backend: str,
    scoring_uri: str = "",
    losses: dict[str, float] | None = None,
) -> None:
    line = {"run_id": run_id, "status": status, "endpoint": endpoint, "scoring_uri": scoring_uri, "ml_backend": backend}
    print(json.dumps({**line, **(losses or {})}), flush=True)
