"""The exit codes every command shares, and the one place an error becomes a message and a code.

0  success
1  the thing checked failed (a rejected dataset, a failed run, a refused plan)
2  usage error, or the run, endpoint, file or message named does not exist
3  the local stack or Azure could not be reached (or refused the credentials)
4  an unexpected error: a bug; `--debug` shows the traceback
130 interrupted (Ctrl-C)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator

from shared.errors import AutopilotError, ConfigurationError, NotFoundError, TransientError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_BUG = 4
EXIT_INTERRUPTED = 130

START_THE_STACK = "start the local stack with `autopilot up` (and see `autopilot status`)"
CHECK_AZURE = "check the network, the storage setting (AzureWebJobsStorage) and your Azure sign-in, then try again"
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "devstoreaccount1", "UseDevelopmentStorage")


class CommandError(Exception):
    """A command's failure, said once: what happened, the exit code, and what to do about it."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED, hint: str = "") -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.hint = hint


class NotFound(CommandError):
    """The run, endpoint, file or message named does not exist: exit 2."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message, EXIT_USAGE, hint)


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _is_unreachable(error: BaseException) -> bool:
    import socket

    try:
        from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError, ServiceResponseError

        azure_unreachable: tuple[type[BaseException], ...] = (
            ServiceRequestError,
            ServiceResponseError,
            ClientAuthenticationError,
        )
    except ImportError:
        azure_unreachable = ()
    # A refused connection or an unknown host shows up as one of these somewhere in the chain, whichever
    # client (azure-core, requests, urllib) was talking.
    unreachable = (*azure_unreachable, ConnectionError, TimeoutError, socket.gaierror)
    return any(isinstance(link, unreachable) for link in _chain(error))


def classify(error: BaseException) -> CommandError:
    """The message, exit code and hint for an error a command let out."""
    if isinstance(error, CommandError):
        return error
    # SDK messages run to many lines (headers, codes): the first says what happened.
    text = (str(error) or type(error).__name__).splitlines()[0]
    if isinstance(error, (NotFoundError, FileNotFoundError)):
        return CommandError(text, EXIT_USAGE)
    if isinstance(error, ConfigurationError):
        return CommandError(text, EXIT_USAGE, "set it in the environment or in local.settings.json (Values)")
    if isinstance(error, TransientError) or _is_unreachable(error):
        local = any(host in str(link) for link in _chain(error) for host in _LOCAL_HOSTS)
        where = "the local stack" if local else "Azure"
        return CommandError(
            f"{where} did not answer: {text}", EXIT_UNREACHABLE, START_THE_STACK if local else CHECK_AZURE
        )
    if isinstance(error, AutopilotError):
        return CommandError(text, EXIT_FAILED)
    return CommandError(
        f"unexpected {type(error).__name__}: {text}", EXIT_BUG, "run again with --debug for the traceback"
    )


def run_command(args: argparse.Namespace, debug: bool = False) -> int:
    """Run the parsed command; an error it lets out becomes its message on stderr and its exit code."""
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # every command fails the same way: one message, one documented exit code
        failure = classify(exc)
        if debug:
            import traceback

            traceback.print_exc()
        print(error_text(getattr(args, "command", "") or "", failure), file=sys.stderr)
        return failure.exit_code


def error_text(command: str, error: CommandError) -> str:
    """`autopilot CMD: error: ...`, with what to do on the next line."""
    prefix = f"autopilot {command}" if command else "autopilot"
    return f"{prefix}: error: {error or 'failed'}" + (f"\n  {error.hint}" if error.hint else "")
