"""`autopilot endpoints [--json]`, `autopilot endpoint-key NAME`, `autopilot chat ENDPOINT MESSAGE`,
`autopilot restore ENDPOINT [--no-wait]`: served models."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from shared.ml.port import MLBackend

EXIT_FAILED = 1


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    endpoints = subparsers.add_parser(
        "endpoints", help="list endpoints: scoring URI, deployments, traffic; and those deleted as idle"
    )
    endpoints.add_argument("--json", action="store_true", help="print JSON instead of text")
    endpoints.set_defaults(func=list_endpoints)
    key = subparsers.add_parser("endpoint-key", help="print an endpoint's key (local backend), and nothing else")
    key.add_argument("name", metavar="NAME")
    key.set_defaults(func=print_key)
    chat = subparsers.add_parser("chat", help="send one message to an endpoint in Azure ML's chat request format")
    chat.add_argument("endpoint", metavar="ENDPOINT")
    chat.add_argument("message", metavar="MESSAGE")
    chat.add_argument("--deployment", help="send to this deployment whatever the traffic (azureml-model-deployment)")
    chat.add_argument("--max-new-tokens", type=int, default=200)
    chat.add_argument("--temperature", type=float, default=0.6)
    chat.add_argument("--greedy", action="store_true", help="no sampling: the most likely answer")
    chat.set_defaults(func=chat_once)
    restore = subparsers.add_parser(
        "restore", help="bring back an endpoint the idle cleanup deleted, with the model its last live run served"
    )
    restore.add_argument("endpoint", metavar="ENDPOINT")
    restore.add_argument("--no-wait", action="store_true", help="ask for it and return; do not wait until it serves")
    restore.add_argument(
        "--timeout", type=float, default=900.0, help="seconds to wait for it to serve again (default 900)"
    )
    restore.set_defaults(func=restore_endpoint)


def _backend() -> MLBackend:
    from autopilot.commands.common import cli_settings
    from shared.bootstrap import build_backend

    settings = cli_settings()
    if settings.ml_backend == "local":
        from shared.ml.local.backend import LocalMLBackend

        return LocalMLBackend.from_settings(settings, watch=False)
    return build_backend(settings)


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
        print(f"endpoint-key works with the local backend, not {backend.name}", file=sys.stderr)
        return EXIT_FAILED
    try:
        print(endpoint_key(args.name))
    except NotFoundError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_FAILED
    return 0


def chat_once(args: argparse.Namespace) -> int:
    from shared.errors import AutopilotError
    from shared.ml.scoring import chat_request, response_text

    parameters: dict[str, Any] = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature}
    if args.greedy:
        parameters["do_sample"] = False
    request = chat_request([{"role": "user", "content": args.message}], parameters)
    backend = _backend()
    try:
        print(response_text(backend.score(args.endpoint, request, args.deployment)))
    except AutopilotError as exc:
        print(str(exc), file=sys.stderr)
        if backend.get_endpoint(args.endpoint) is None:
            print(_deleted_hint(args.endpoint), file=sys.stderr)
        return EXIT_FAILED
    return 0


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
    from shared.errors import AutopilotError
    from shared.queueing import StorageQueueSender
    from shared.stages.restore import RESTORE_FAILED, request_restore

    settings = cli_settings()
    ledger = open_ledger(settings)
    try:
        run, command = request_restore(ledger, args.endpoint)
        if command is None:
            print(f"endpoint {args.endpoint} is live already (run {run.run_id}, {run.scoring_uri})")
            return 0
        StorageQueueSender(settings.storage_connection).send(command)
    except AutopilotError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_FAILED
    print(
        f"restoring endpoint {args.endpoint}: model {run.model_name}:{run.model_version} as deployment "
        f"{run.deployment_name} (run {run.run_id}); the function app does the work"
    )
    if args.no_wait:
        return 0
    settled = wait_for_run(
        ledger,
        run.run_id,
        lambda current: current.endpoint_state == "live" or current.endpoint_state.startswith(RESTORE_FAILED),
        args.timeout,
    )
    if settled is not None and settled.endpoint_state == "live":
        print(f"endpoint {args.endpoint} is live again: {settled.scoring_uri}")
        print(f"its keys are new: {_key_command(settings.ml_backend, args.endpoint)}")
        return 0
    if settled is not None:
        print(f"endpoint {args.endpoint} could not be restored: {settled.endpoint_state}", file=sys.stderr)
        return EXIT_FAILED
    print(
        f"endpoint {args.endpoint} is not serving after {args.timeout:.0f} s; is the function app running? "
        f"(autopilot up; autopilot run {run.run_id})",
        file=sys.stderr,
    )
    return EXIT_FAILED
