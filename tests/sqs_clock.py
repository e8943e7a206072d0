"""moto's SQS clock, moved at will: a test lets a visibility timeout pass at once instead of
sleeping through it (moto measures visibility timeouts and message delays on
`moto.sqs.models.unix_time` and `unix_time_millis`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import moto.sqs.models
import pytest


@contextmanager
def sqs_time_ahead(offset_s: Callable[[], float]) -> Iterator[None]:
    """While inside, moto's SQS clock runs `offset_s()` seconds ahead of the wall clock."""
    real_s, real_ms = moto.sqs.models.unix_time, moto.sqs.models.unix_time_millis
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(moto.sqs.models, "unix_time", lambda *a: real_s(*a) + offset_s())
        patch.setattr(moto.sqs.models, "unix_time_millis", lambda *a: real_ms(*a) + offset_s() * 1000)
        yield


class QueueClock:
    """moto's SQS clock, plus whatever time a test makes pass at once (`jump`); the
    `queue_clock` fixture (tests/conftest.py) installs it."""

    def __init__(self) -> None:
        self.offset_s = 0.0

    def jump(self, seconds: float) -> None:
        self.offset_s += seconds
