"""One line for every failure a `fanout` or `dlq-replayer` command can end with.

The commands map what they cannot fix themselves (no credentials, nothing listening at the
endpoint, a stack that does not exist, an AWS error) to one line that says what happened
and what to do, and an exit code their --help documents; never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, NoReturn
from urllib.parse import urlparse

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ReadTimeoutError,
)

# Exit codes of `fanout`, the same for every command (documented in its --help).
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_REJECTED = 3  # `fanout ingest`: the run finished, but some rows were rejected

# A local emulator accepts any credentials (these are moto's).
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_DEFAULT_REGION": "us-east-1"}
DEBUG_VARIABLE = "FANOUT_DEBUG"  # set to 1 to see the traceback of an unexpected failure


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line naming the command, the argument and the rule (exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def is_loopback(endpoint_url: str | None) -> bool:
    host = urlparse(endpoint_url or "").hostname or ""
    return host in ("127.0.0.1", "localhost", "::1")


def use_local_credentials(endpoint_url: str | None) -> None:
    """Supply fake credentials for a loopback endpoint when none are set, so a command
    pointed at `fanout serve` works on a machine with no AWS profile."""
    if is_loopback(endpoint_url) and not os.environ.get("AWS_ACCESS_KEY_ID") \
            and not os.environ.get("AWS_PROFILE"):
        for name, value in FAKE_CREDENTIALS.items():
            os.environ.setdefault(name, value)


def describe(exc: BaseException) -> str | None:
    """What an AWS-side failure means, in one line with the fix; None for anything else."""
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return ("no AWS credentials found: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (for a local stack, --endpoint-url http://127.0.0.1:PORT "
                "needs none)")
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError):
        where = getattr(exc, "kwargs", {}).get("endpoint_url", "the endpoint")
        return (f"cannot connect to {where}: nothing is listening there (is `fanout serve` "
                "running, and is the port right?)")
    if isinstance(exc, ReadTimeoutError):
        return f"no answer in time: {exc}"
    if isinstance(exc, NoRegionError):
        return "no AWS region: set AWS_DEFAULT_REGION or pass --region"
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code, message = error.get("Code", "Error"), error.get("Message", str(exc))
        if code in ("ExpiredToken", "ExpiredTokenException", "InvalidClientTokenId",
                    "UnrecognizedClientException", "SignatureDoesNotMatch"):
            return f"AWS refused the credentials ({code}: {message}): refresh or fix them"
        return f"{exc.operation_name}: {code}: {message}"
    if isinstance(exc, BotoCoreError):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:  # a file that cannot be read or written
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return None


def one_line(text: str) -> str:
    """An error as one line, however many its exception's message had."""
    return " ".join(str(text).split())


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1, or a one-line error naming the rule."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1 (got {text!r})") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1 (got {value})")
    return value


class _Stderr:
    """Whatever sys.stderr is when a line is written (a test's capture replaces it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


VERBOSE_VARIABLE = "FANOUT_VERBOSE"  # what --verbose sets: the Lambdas' INFO logs on stderr


def verbose() -> bool:
    """--verbose (or FANOUT_DEBUG=1): the Lambdas' INFO lines reach stderr."""
    return bool(os.environ.get(VERBOSE_VARIABLE) or os.environ.get(DEBUG_VARIABLE))


def logs_to_stderr(*loggers: Any) -> None:
    """Locally stdout is the summary's (and `--json`'s alone): the Lambdas' Powertools
    loggers, which write their JSON lines to stdout as Lambda expects, write to stderr,
    and only their warnings and errors unless `verbose()`: a command's user did not ask
    for the handlers' INFO lines (`reading s3://... as ...`)."""
    for logger in loggers:
        logger.setLevel(logging.INFO if verbose() else logging.WARNING)
        handler = logger.registered_handler
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(_Stderr())  # type: ignore[arg-type]
