"""`autopilot endpoints [--json]`, `autopilot endpoint-key NAME`, `autopilot chat ENDPOINT MESSAGE`,
`autopilot restore ENDPOINT [--no-wait]`: served models."""

from __future__ import annotations

import argparse
import json
from typing import Any

from autopilot.commands.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CommandError, NotFound
from shared.ml.port import MLBackend


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    endpoints = subparsers.add_parser(
        "endpoints", help="list endpoints: scoring URI, deployments, traffic; and those deleted as idle"
    )
    endpoints.add_argument("--json", action="store_true", help="print JSON instead of text")
    endpoints.set_defaults(func=list_endpoints)
    key = subparsers.add_parser("endpoint-key", help="print an endpoint's key (local backend), and nothing else")
    key.add_argument("name", metavar="NAME", help="the endpoint's name, as `autopilot endpoints` shows it")
    key.set_defaults(func=print_key)
    chat = subparsers.add_parser("chat", help="send one message to an endpoint in Azure ML's chat request format")
    chat.add_argument("endpoint", metavar="ENDPOINT", help="the endpoint's name")
    chat.add_argument("message", metavar="MESSAGE", help="what the user says")
    chat.add_argument("--deployment", help="send to this deployment whatever the traffic (azureml-model-deployment)")
    chat.add_argument("--max-new-tokens", type=int, default=200, help="longest answer, in tokens (default 200)")
    chat.add_argument("--temperature", type=float, default=0.6, help="sampling temperature (default 0.6)")
    chat.add_argument("--json", action="store_true", help="print the endpoint's whole response as JSON")
    chat.add_argument("--greedy", action="store_true", help="no sampling: the most likely answer")
    chat.set_defaults(func=chat_once)
    restore = subparsers.add_parser(
        "restore", help="bring back an endpoint the idle cleanup deleted, with the model its last live run served"
    )
    restore.add_argument("endpoint", metavar="ENDPOINT", help="the endpoint's name, as `autopilot endpoints` shows it")
    restore.add_argument("--json", action="store_true", help="print the outcome as JSON (progress goes to stderr)")
    restore.add_argument("--no-wait", action="store_true", help="ask for it and return; do not wait until it serves")
    restore.add_argument(
        "--timeout", type=float, default=900.0, help="seconds to wait for it to serve again (default 900)"
    )
    restore.set_defaults(func=restore_endpoint)


def _backend() -> MLBackend:
    from autopilot.commands.common import cli_settings
    from shared.bootstrap import build_backend

    # The backends keep their own records (the local one in the state folder): storage need not answer.
    # It watches no jobs: the function host's backend finishes them (and publishes their events).
    return build_backend(cli_settings(need_storage=False), watch=False)


def list_endpoints(args: argparse.Namespace) -> int:
    from autopilot.commands.common import cli_settings, open_ledger
    from shared.stages.endpoints import endpoint_overview

    endpoints = endpoint_overview(_backend(), open_ledger(cli_settings()))
    if args.json:
        print(json.dumps(endpoints, indent=1))
        return 0
    if not endpoints:
        print("(no endpoints)")
    for endpoint in endpoints:
        if endpoint["state"] != "live":
            print(f"{endpoint['name']}  {endpoint['state']} {endpoint['since']}  (model {endpoint['model']})")
            print(f"  bring it back with: autopilot restore {endpoint['name']}")
            continue
        print(f"{endpoint['name']}  {endpoint['scoring_uri']}")
        print(f"  last request: {endpoint['last_request_at'] or 'never'}")
        for deployment in endpoint["deployments"]:
            print(
                f"  {deployment['name']:<16} {deployment['traffic']:>3} %  {deployment['state']:<10} "
                f"{deployment['model']}"
            )
    return 0


def print_key(args: argparse.Namespace) -> int:
    from shared.errors import NotFoundError

    backend = _backend()
    endpoint_key = getattr(backend, "endpoint_key", None)
    if endpoint_key is None:
        raise CommandError(
            f"endpoint-key works with the local backend, not {backend.name}",
            EXIT_USAGE,
            hint=f"for Azure ML: {_key_command(backend.name, args.name)}",
        )
    try:
        print(endpoint_key(args.name))
    except NotFoundError as exc:
        raise NotFound(str(exc), hint="`autopilot endpoints` lists the endpoints") from exc
    return EXIT_OK


def chat_once(args: argparse.Namespace) -> int:
    from shared.errors import AutopilotError
    from shared.ml.scoring import chat_request, response_text

    parameters: dict[str, Any] = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature}
    if args.greedy:
        parameters["do_sample"] = False
    request = chat_request([{"role": "user", "content": args.message}], parameters)
    backend = _backend()
    try:
        response = backend.score(args.endpoint, request, args.deployment)
    except AutopilotError as exc:
        if backend.get_endpoint(args.endpoint) is None:
            raise NotFound(str(exc), hint=_deleted_hint(args.endpoint)) from exc
        raise
    print(json.dumps(response, indent=1) if args.json else response_text(response))
    return EXIT_OK


def _deleted_hint(endpoint: str) -> str:
    from autopilot.commands.common import cli_settings, open_ledger
    from shared.errors import AutopilotError
    from shared.stages.restore import run_to_restore

    try:
        run = run_to_restore(open_ledger(cli_settings()), endpoint)
    except AutopilotError:
        return f"endpoint {endpoint} does not exist"
    return (
        f"endpoint {endpoint} was deleted by the idle cleanup ({run.endpoint_state}); "
        f"bring it back with: autopilot restore {endpoint}"
    )


def _key_command(backend: str, endpoint: str) -> str:
    if backend == "azureml":
        return f"az ml online-endpoint get-credentials -n {endpoint} -g <resource group> -w <workspace>"
    if backend == "local":
        return f"autopilot endpoint-key {endpoint}"
    return "the simulated backend has no keys"


def restore_endpoint(args: argparse.Namespace) -> int:
    """Send `RestoreEndpoint` for the endpoint's last live run; wait until it serves again unless told not to."""

    from autopilot.commands.common import cli_settings, open_ledger, wait_for_run
    from autopilot.commands.progress import Progress
    from autopilot.commands.runs import outcome_printer
    from shared.errors import NotFoundError
    from shared.queueing import StorageQueueSender
    from shared.stages.restore import RESTORE_FAILED, request_restore

    settings = cli_settings()
    ledger = open_ledger(settings)
    say = outcome_printer(args)
    progress = Progress()
    try:
        run, command = request_restore(ledger, args.endpoint)
    except NotFoundError as exc:
        raise NotFound(str(exc), hint="`autopilot endpoints` lists the endpoints, live and deleted") from exc
    if command is None:
        say(f"endpoint {args.endpoint} is live already (run {run.run_id}, {run.scoring_uri})")
        return _restored(args, run.run_id, "live", run.scoring_uri)
    StorageQueueSender(settings.storage_connection).send(command)
    progress.say(
        f"restoring endpoint {args.endpoint}: model {run.model_name}:{run.model_version} as deployment "
        f"{run.deployment_name} (run {run.run_id}); the function app does the work"
    )
    if args.no_wait:
        return _restored(args, run.run_id, "restoring", "")
    with progress.waiting(f"waiting for endpoint {args.endpoint} to serve") as wait:
        settled = wait_for_run(
            ledger,
            run.run_id,
            lambda current: current.endpoint_state == "live" or current.endpoint_state.startswith(RESTORE_FAILED),
            args.timeout,
            report=wait.news,
            report_every=wait.news_every,
        )
    if settled is not None and settled.endpoint_state == "live":
        say(f"endpoint {args.endpoint} is live again: {settled.scoring_uri}")
        say(f"its keys are new: {_key_command(settings.ml_backend, args.endpoint)}")
        return _restored(args, run.run_id, "live", settled.scoring_uri)
    if settled is not None:
        raise CommandError(f"endpoint {args.endpoint} could not be restored: {settled.endpoint_state}", EXIT_FAILED)
    raise CommandError(
        f"endpoint {args.endpoint} is not serving after {args.timeout:.0f} s",
        EXIT_FAILED,
        hint=f"is the function app running? `autopilot status`; `autopilot run {run.run_id}` shows the run",
    )


def _restored(args: argparse.Namespace, run_id: str, state: str, scoring_uri: str) -> int:
    if args.json:
        print(json.dumps({"endpoint": args.endpoint, "run_id": run_id, "state": state, "scoring_uri": scoring_uri}))
    return EXIT_OK
