"""Shared fixtures: moto in-process with fake credentials, and the local stack on it."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# No test may reach a real account: fake credentials before boto3 is used anywhere.
os.environ.update(
    AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_SESSION_TOKEN="testing",
    AWS_DEFAULT_REGION="us-east-1", POWERTOOLS_METRICS_DISABLED="true",
    POWERTOOLS_TRACE_DISABLED="true", POWERTOOLS_LOG_LEVEL="WARNING",
)

from moto import mock_aws  # noqa: E402

from fanout.aws import Clients  # noqa: E402
from fanout.mapping import Spec  # noqa: E402
from fanout.settings import LOCAL_CONFIG, ResourceNames  # noqa: E402
from fanout_cli.local.resources import LocalStack, create_resources  # noqa: E402

# The issues' "done when" sizes (50k rows under faults, 100k rows with continuations) run
# with FANOUT_FULL_SIZE=1 (`make test-full`); CI runs the same tests on smaller files so the
# suite stays within a few minutes on two cores.
FULL_SIZE = os.environ.get("FANOUT_FULL_SIZE") == "1"


def sized(full: int, ci: int) -> int:
    return full if FULL_SIZE else ci


@pytest.fixture
def aws() -> Iterator[Clients]:
    with mock_aws():
        yield Clients.create()


@pytest.fixture
def spec() -> Spec:
    return Spec.default()


@pytest.fixture
def stack(aws: Clients, spec: Spec) -> LocalStack:
    return create_resources(aws, spec, config=LOCAL_CONFIG, names=ResourceNames())
