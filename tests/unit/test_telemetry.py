"""Logs carry the keys of the thread that wrote them; traces open a subsegment per AWS call
that matters, and cost nothing when tracing is off."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from types import SimpleNamespace
from typing import Any

import pytest

from fanout import telemetry
from fanout.telemetry import log_keys, subsegment, with_log_keys
from writer.batch_write import Budget, write_items
from writer.load import log as writer_log


@contextmanager
def captured(logger: Any) -> Iterator[io.StringIO]:
    """The JSON lines the Logger prints, while the block runs (at INFO and above)."""
    stream = io.StringIO()
    handler, level = logger.registered_handler, logger.log_level
    old = handler.setStream(stream)
    logger.setLevel("INFO")
    try:
        yield stream
    finally:
        handler.setStream(old)
        logger.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_each_thread_logs_its_own_keys_and_drops_them_after_the_block() -> None:
    # Given two pool threads writing two messages at the same time
    both_in = threading.Barrier(2)

    def write(message_id: str) -> None:
        both_in.wait()  # each logs while the other holds its keys
        writer_log.info("writing")
        both_in.wait()

    with captured(writer_log) as stream:
        threads = [threading.Thread(target=with_log_keys(
            writer_log, {"job": "j", "message_id": m, "seq": int(m)}, write), args=(m,))
            for m in ("3", "4")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        writer_log.info("after")
    logged = lines(stream)
    # Then each line carries its own thread's message, once, and the line after none
    assert sorted((x["message"], x["job"], x["message_id"], x["seq"]) for x in logged[:2]) == [
        ("writing", "j", "3", 3), ("writing", "j", "4", 4)]
    assert logged[2]["message"] == "after" and not {"job", "message_id", "seq"} & set(logged[2])
    assert len(logged) == 3  # one line per call: the logic's Logger is the handler's


def test_a_message_inside_a_job_gives_the_job_key_back() -> None:
    with captured(writer_log) as stream, log_keys(writer_log, job="outer"):
        with log_keys(writer_log, job="inner", message_id="7", seq=7):
            writer_log.info("in the message")
        writer_log.info("in the job")
    inner, outer = lines(stream)
    assert (inner["job"], inner["message_id"]) == ("inner", "7")
    assert outer["job"] == "outer" and "message_id" not in outer and "seq" not in outer
    assert writer_log.thread_safe_get_current_keys() == {}


class Provider:
    """A tracer provider that records the subsegments opened and their annotations."""

    def __init__(self) -> None:
        self.opened: list[tuple[str, dict[str, Any]]] = []

    @contextmanager
    def in_subsegment(self, name: str) -> Iterator[Any]:
        annotations: dict[str, Any] = {}
        self.opened.append((name, annotations))
        yield SimpleNamespace(put_annotation=lambda key, value: annotations.__setitem__(key, value))


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> Provider:
    recording = Provider()
    monkeypatch.setattr(telemetry, "tracer", lambda: SimpleNamespace(disabled=False,
                                                                      provider=recording))
    return recording


class Throttling:
    """BatchWriteItem that leaves the first item unprocessed once."""

    def __init__(self) -> None:
        self.calls = 0

    def batch_write_item(self, RequestItems: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        self.calls += 1
        ((table, requests),) = RequestItems.items()
        return {"UnprocessedItems": {table: requests[:1]} if self.calls == 1 else {}}


def items(n: int) -> list[dict[str, Any]]:
    return [{"pk": {"S": str(i)}} for i in range(n)]


def test_every_batch_write_item_round_opens_a_subsegment(provider: Provider) -> None:
    outcome = write_items(Throttling(), "t", items(30), Budget(remaining_s=lambda: 60.0,
                                                               sleep=lambda _s: None))
    assert outcome.written == 30
    # 25 + 5 items, then the one left unprocessed
    assert provider.opened == [("## BatchWriteItem", {"items": 25}),
                               ("## BatchWriteItem", {"items": 1}),
                               ("## BatchWriteItem", {"items": 5})]


def test_with_tracing_off_a_subsegment_is_a_null_context_that_never_reaches_x_ray(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # conftest sets POWERTOOLS_TRACE_DISABLED, as the local runtime does
    assert telemetry.tracer().disabled

    def refuse(**_: Any) -> Any:
        raise AssertionError("X-Ray was called with tracing off")

    monkeypatch.setattr(telemetry.tracer().provider, "in_subsegment", refuse)
    assert isinstance(subsegment("BatchWriteItem", items=25), nullcontext)
    assert write_items(Throttling(), "t", items(3),
                       Budget(remaining_s=lambda: 60.0, sleep=lambda _s: None)).written == 3
