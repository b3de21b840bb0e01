"""`autopilot register-model PATH --name N [--tag K=V ...] [--json]`: register a model from outside the app.

The local (or simulated) backend registers it and publishes `Microsoft.MachineLearningServices.ModelRegistered`
to the Event Grid stand-in, as Azure ML does for every registration ("Raised when a new Model or Model version
has been successfully registered", https://learn.microsoft.com/azure/event-grid/event-schema-machine-learning).
A model whose name AUTOPILOT_REDEPLOY_MODELS matches is then rolled out through the guarded path.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Protocol, cast
from urllib.parse import urlsplit

from autopilot.commands.exits import EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, START_THE_STACK, CommandError, NotFound
from shared.ml.port import RUN_TAG, RegisteredModel
from shared.settings import EVENTGRID_PUBLISH_URL, Settings
from shared.stages.redeploy import ENDPOINT_TAG, redeploy_run_id


class RegistersModelFolders(Protocol):
    """A backend that registers a model from outside and publishes its ModelRegistered event itself."""

    def next_model_version(self, name: str) -> str: ...

    def register_model_folder(self, folder: Path, name: str, tags: dict[str, str]) -> RegisteredModel: ...


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "register-model",
        help="register a model folder from outside this app (local backend: an MLflow model folder); "
        "its ModelRegistered event may start a rollout (AUTOPILOT_REDEPLOY_MODELS)",
    )
    parser.add_argument(
        "path", type=Path, metavar="PATH", help="the model folder (local backend: with an MLmodel file)"
    )
    parser.add_argument("--name", required=True, help="the registered model's name")
    parser.add_argument(
        "--version",
        help="the version to expect: the local registries number versions themselves (1, 2, ...), so a "
        "different number is refused",
    )
    parser.add_argument(
        "--tag",
        action="append",
        default=[],
        type=parse_tag,
        metavar="K=V",
        help=f"a tag on the model version, repeatable; {ENDPOINT_TAG}=NAME names the endpoint to roll it out to "
        "(unless the function app sets AUTOPILOT_REDEPLOY_ENDPOINT)",
    )
    parser.add_argument("--json", action="store_true", help="print the registered version as JSON (progress on stderr)")
    parser.set_defaults(func=register_model)


def parse_tag(text: str) -> tuple[str, str]:
    """ "K=V" -> ("K", "V"); the value may hold "=" itself."""
    key, separator, value = text.partition("=")
    if not separator or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not K=V, e.g. {ENDPOINT_TAG}=support-bot")
    if key.strip() == RUN_TAG:
        raise argparse.ArgumentTypeError(
            f"the tag {RUN_TAG} marks models this app registered itself: a model carrying it is never rolled out"
        )
    return key.strip(), value


def register_model(args: argparse.Namespace) -> int:
    from autopilot.commands.common import cli_settings

    if not args.path.exists():
        raise NotFound(f"{args.path} does not exist", hint="give the folder of the model to register")
    settings = cli_settings()
    backend = _registering_backend(settings)
    expected = backend.next_model_version(args.name)
    if args.version is not None and args.version != expected:
        raise CommandError(
            f"the {settings.ml_backend} registry would make {args.name} version {expected}, not {args.version}: "
            "it numbers versions itself",
            EXIT_USAGE,
            f"leave out --version, or give --version {expected}",
        )
    print(f"registering {args.path} as {args.name} ({settings.ml_backend} backend)", file=sys.stderr)
    registered = backend.register_model_folder(args.path.resolve(), args.name, dict(args.tag))
    summary = {
        "name": registered.name,
        "version": registered.version,
        "uri": registered.uri,
        "tags": registered.tags,
        "backend": settings.ml_backend,
        "event": "Microsoft.MachineLearningServices.ModelRegistered",
        "redeploy_run_id": redeploy_run_id(registered.name, registered.version),
    }
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        print(f"registered {registered.name}:{registered.version} ({registered.uri})")
        print(f"published ModelRegistered; {_redeploy_note(registered)}")
    return EXIT_OK


def _registering_backend(settings: Settings) -> RegistersModelFolders:
    """The backend as a short-lived client of the running stack, publishing to the stack's Event Grid stand-in."""
    from autopilot.commands.common import settings_env
    from autopilot.local.processes import port_answers
    from autopilot.local.stack import LocalStack
    from shared.bootstrap import build_backend

    if settings.ml_backend == "azureml":
        raise CommandError(
            "with the Azure ML backend, register the model in the workspace (`az ml model create`, the studio or "
            "the SDK): Azure ML raises ModelRegistered itself",
            EXIT_USAGE,
        )
    env = settings_env()
    publish_url = env.get(EVENTGRID_PUBLISH_URL, "")
    if not publish_url:
        stack = LocalStack(env=env)
        publish_url = f"{(stack.load() or stack.default_state()).eventgrid_url}/api/events"
    if not port_answers(urlsplit(publish_url).port or 80):
        raise CommandError(
            f"the local stack is not running: nothing answers at {publish_url} (the Event Grid stand-in)",
            EXIT_UNREACHABLE,
            START_THE_STACK,
        )
    # The backend as the function host builds it, publishing to the stand-in that answered; no job timers here.
    backend = build_backend(dataclasses.replace(settings, eventgrid_publish_url=publish_url), watch=False)
    return cast(RegistersModelFolders, backend)


def _redeploy_note(registered: RegisteredModel) -> str:
    run_id = redeploy_run_id(registered.name, registered.version)
    return (
        f"if the function app's AUTOPILOT_REDEPLOY_MODELS matches {registered.name}, run {run_id} rolls it out: "
        f"autopilot run {run_id} --follow"
    )
