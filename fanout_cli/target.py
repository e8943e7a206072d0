"""Which AWS a command talks to: the one place that decides it, for every command.

A target is one of two things:

- the embedded runtime: `fanout ingest FILE` with neither `--stack` nor `--endpoint-url`
  runs the handlers on moto in this process. It never talks to an endpoint from the
  environment: an exported AWS_ENDPOINT_URL (the `fanout serve` banner's) is ignored, and
  the command says so once, so nothing is created in someone else's emulator.
- a stack: `--stack NAME`, found by its CloudFormation outputs at the endpoint given by
  `--endpoint-url`, else AWS_ENDPOINT_URL, else AWS itself. `--endpoint-url` without
  `--stack` means the stack `fanout serve` deploys unless told otherwise (`fanout`).

Every command prints the target it used in one line (`Target.line()`), or puts it in its
JSON (`Target.as_dict()`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fanout_cli.failures import use_local_credentials

# The stack name `fanout serve` (and infra/app.py) uses unless given another.
DEFAULT_STACK = "fanout"
ENDPOINT_VARIABLE = "AWS_ENDPOINT_URL"
DEFAULT_REGION = "us-east-1"


def endpoint_variables(env: Mapping[str, str]) -> dict[str, str]:
    """AWS_ENDPOINT_URL and its per-service forms (AWS_ENDPOINT_URL_S3, ...) that are set."""
    return {name: value for name, value in env.items()
            if (name == ENDPOINT_VARIABLE or name.startswith(ENDPOINT_VARIABLE + "_")) and value}


def region_from(env: Mapping[str, str]) -> str:
    return env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or DEFAULT_REGION


@dataclass(frozen=True)
class Target:
    """The embedded runtime (`stack` None) or a stack at an endpoint (None: AWS itself)."""

    stack: str | None
    endpoint_url: str | None
    region: str
    endpoint_from: str = ""  # "--endpoint-url" or "AWS_ENDPOINT_URL"
    stack_defaulted: bool = False  # --endpoint-url without --stack
    ignored: tuple[str, ...] = ()  # the environment's endpoints the embedded runtime ignored

    @property
    def embedded(self) -> bool:
        return self.stack is None

    def line(self) -> str:
        """`target: stack 'fanout' at http://127.0.0.1:4566 (AWS_ENDPOINT_URL), us-east-1`."""
        if self.embedded:
            ignored = (f"; {', '.join(self.ignored)} ignored (add --stack NAME to load into "
                       "that stack)") if self.ignored else ""
            return f"target: {describe(self.as_dict())}{ignored}"
        where = f" ({self.endpoint_from})" if self.endpoint_url else ""
        default = " (the default name; --stack NAME for another)" if self.stack_defaulted else ""
        return f"target: {describe(self.as_dict())}{where}{default}"

    def as_dict(self) -> dict[str, Any]:
        return {"runtime": "embedded" if self.embedded else "stack", "stack": self.stack,
                "endpoint_url": self.endpoint_url, "region": self.region}

    def use(self) -> Target:
        """Make the process's environment agree with the target: fake credentials for a
        loopback endpoint that needs none (a local stack)."""
        use_local_credentials(self.endpoint_url)
        return self


def describe(target: Mapping[str, Any]) -> str:
    """A target's `as_dict()` (as a summary's JSON holds it) in words."""
    if target.get("runtime") == "embedded":
        return "the embedded runtime (moto in this process)"
    where = f"at {target['endpoint_url']}" if target.get("endpoint_url") else "in AWS"
    return f"stack {target.get('stack')!r} {where}, {target.get('region')}"


def resolve(*, stack: str | None = None, endpoint_url: str | None = None,
            embedded: bool = True, region: str | None = None,
            env: Mapping[str, str] | None = None) -> Target:
    """The target of a command from its `--stack`, `--endpoint-url` (and `--region`).

    `embedded`: whether the command has an embedded runtime (`fanout ingest FILE`); one
    that has none (status --follow, the replayer) takes the stack `fanout` when only an
    endpoint is known."""
    env = os.environ if env is None else env
    region = region or region_from(env)
    if stack is None and endpoint_url is None and embedded:
        return Target(None, None, region, ignored=tuple(sorted(endpoint_variables(env))))
    defaulted = stack is None
    if endpoint_url:
        source = "--endpoint-url"
    elif env.get(ENDPOINT_VARIABLE):
        endpoint_url, source = env[ENDPOINT_VARIABLE], ENDPOINT_VARIABLE
    else:
        source = ""
    return Target(stack or DEFAULT_STACK, endpoint_url, region, source, defaulted)
