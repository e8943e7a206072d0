"""Shared fixtures: moto in-process with fake credentials, and the local stack on it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# No test may reach a real account: fake credentials before boto3 is used anywhere.
os.environ.update(
    AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_SESSION_TOKEN="testing",
    AWS_DEFAULT_REGION="us-east-1", POWERTOOLS_METRICS_DISABLED="true",
    POWERTOOLS_TRACE_DISABLED="true", POWERTOOLS_LOG_LEVEL="WARNING",
)

import botocore.loaders  # noqa: E402
from moto import mock_aws  # noqa: E402

from fanout.aws import Clients  # noqa: E402
from fanout.mapping import Spec  # noqa: E402
from fanout.settings import LOCAL_CONFIG, ResourceNames  # noqa: E402
from fanout_cli.local.resources import LocalStack, create_resources  # noqa: E402
from tests.sqs_clock import QueueClock, sqs_time_ahead  # noqa: E402


def _parse_botocore_data_once() -> None:
    """botocore parses its JSON data files (endpoints, service models, rule sets) once per
    Session, and fanout.aws makes a Session per client: each Clients.create() spent ~0.7 s
    of its ~1 s parsing the same files again. Here they are parsed once per test process.
    (A Session already shares one parsed model among its clients; the one in-place edit,
    the sdk-extras merge, writes the same values each time.)"""
    load_file = botocore.loaders.JSONFileLoader.load_file
    parsed: dict[str, Any] = {}

    def load_once(self: botocore.loaders.JSONFileLoader, file_path: str) -> Any:
        if file_path not in parsed:
            parsed[file_path] = load_file(self, file_path)
        return parsed[file_path]
    botocore.loaders.JSONFileLoader.load_file = load_once  # type: ignore[method-assign]


_parse_botocore_data_once()

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


@pytest.fixture
def queue_clock() -> Iterator[QueueClock]:
    """moto's SQS clock, for a test to jump over a visibility timeout (tests/sqs_clock.py)."""
    clock = QueueClock()
    with sqs_time_ahead(lambda: clock.offset_s):
        yield clock


# With pytest-xdist (`make test` runs `-n 2 --dist loadgroup`), a group's tests run one
# after another in one worker: the deployed tier shares one MiniStack (and starts the
# others it needs one at a time), the infra tests share one synthesis per context, and
# the chaos scenarios run in their file's order (split over two workers,
# test_a_folder_killed_mid_fold_is_resumed_by_the_next_invocation ended INCOMPLETE), and
# the ledger's model (tests/model: one long CPU-bound loop over seeds) keeps to one worker.
XDIST_GROUPS = {"deployed": "ministack", "infra": "cdk-synth", "chaos": "chaos", "model": "model"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    tests = Path(__file__).parent
    for item in items:
        folder = item.path.relative_to(tests).parts[0] if item.path.is_relative_to(tests) else ""
        if folder in XDIST_GROUPS:
            item.add_marker(pytest.mark.xdist_group(XDIST_GROUPS[folder]))
