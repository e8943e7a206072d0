"""dlq_replayer holds a bounded number of messages whatever the DLQ's size: no more than
one receive's worth in memory, no more than `max_held` in flight (SQS's in-flight quota),
and each message counted once even when it comes back in the same run.

The queue is bench.replayer_scale.MemorySQS (moto would take minutes for thousands of
messages), which refuses to receive past its in-flight quota as SQS does and records the
most messages it had in flight at once."""

from __future__ import annotations

import io
import json
import threading
import weakref
from pathlib import Path
from typing import Any

import pytest

from bench.replayer_scale import MemorySQS, fill
from dlq_replayer.cli import main
from dlq_replayer.dlq import DlqMessage, DlqReader, WaitingRow
from dlq_replayer.inspect import read_selected, summarize
from dlq_replayer.plan import PURGE, REDRIVE, Filters
from dlq_replayer.redrive import Options, run
from dlq_replayer.target import Target
from fanout.contract import decode


class Alive:
    """How many instances of a class are alive: each one counted from its __init__ until
    it is freed (a weak reference's finalizer), so counting costs nothing per heap object
    (gc.get_objects() took seconds a count once the whole suite had filled the heap)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, cls: type) -> None:
        self.n = 0
        self._lock = threading.Lock()
        init = cls.__init__

        def counted(obj: Any, *args: Any, **kwargs: Any) -> None:
            init(obj, *args, **kwargs)
            self._add(1)
            weakref.finalize(obj, self._add, -1)
        monkeypatch.setattr(cls, "__init__", counted)

    def _add(self, n: int) -> None:
        with self._lock:
            self.n += n


class CountingSQS(MemorySQS):
    """Also counts, every few receives, the DlqMessage and WaitingRow objects alive."""

    def __init__(self, messages: Alive, rows: Alive, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls = 0
        self.messages, self.rows = messages, rows
        self.most_messages = self.most_rows = 0

    def receive_message(self, **params: Any) -> dict[str, Any]:
        self.calls += 1
        if self.calls % 5 == 0:
            self.most_messages = max(self.most_messages, self.messages.n)
            self.most_rows = max(self.most_rows, self.rows.n)
        return super().receive_message(**params)


def _cli(sqs: MemorySQS, *argv: str) -> tuple[int, dict[str, Any]]:
    out = io.StringIO()
    code = main([*argv, "--json"], stdout=out, stderr=io.StringIO(),
                target=Target(sqs, "dlq", "rows", wait_s=0))
    return code, json.loads(out.getvalue())


def test_inspect_and_export_keep_one_receive_in_memory(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch):
    sqs = CountingSQS(Alive(monkeypatch, DlqMessage), Alive(monkeypatch, WaitingRow))
    fill(sqs, 6_000, 3)  # 2,000 messages
    code, summary = _cli(sqs, "inspect")
    assert code == 0 and summary["rows"] == 6_000 and summary["messages"] == 2_000
    assert sum(j["rows"] for j in summary["jobs"].values()) == 6_000
    code, result = _cli(sqs, "export", "--out", str(tmp_path / "rows.csv"))
    assert code == 0 and result["rows"] == 6_000
    assert len((tmp_path / "rows.csv").read_text().splitlines()) == 6_001
    # The old reader held all 2,000 messages (and their 6,000 rows) until the end.
    assert 0 < sqs.most_messages <= 20 and sqs.most_rows <= 60
    assert sqs.in_flight == 0  # everything visible again


def test_a_dlq_past_the_in_flight_quota_is_read_once_through_and_counted_once():
    sqs = MemorySQS(max_in_flight=100)
    fill(sqs, 1_000, 2)  # 500 messages, five times what may be in flight
    # A killed redrive's copy: the same rows (job, message, line) in a second message.
    sqs.add(sqs.bodies[0])
    reader = DlqReader(sqs, "dlq", wait_s=0, max_held=60)
    found = read_selected(reader, Filters())
    summary = summarize(found)
    assert summary["rows"] == 1_000  # the copy's rows once, the released messages once
    assert summary["messages"] == 501
    assert sqs.peak_in_flight <= 60 and reader.released_early > 0
    assert sqs.in_flight == 0


def test_redrive_past_the_quota_sends_each_selected_row_once():
    sqs = MemorySQS(max_in_flight=100)
    fill(sqs, 600, 2)  # 300 messages; reasons alternate by line, so each has two
    target = Target(sqs, "dlq", "rows", wait_s=0)
    outcome = run(target, Options(op=REDRIVE, filters=Filters(reasons=frozenset({"empty_key"}))),
                  DlqReader(sqs, "dlq", wait_s=0, max_held=60))
    sent_lines = [line for body in sqs.sent for line in decode(body).lines]
    assert outcome.messages_done == 150 and len(sent_lines) == len(set(sent_lines)) == 150
    remaining = [decode(b) for b in sqs.bodies if b is not None]
    assert all(r.reason != "empty_key" for m in remaining for r in m.rejections)
    assert sum(len(m.rejections) for m in remaining) == 450  # nothing lost
    assert sqs.peak_in_flight <= 60 and sqs.in_flight == 0 and not outcome.partial


def test_a_purge_that_asks_stops_at_what_one_run_may_hold():
    sqs = MemorySQS(max_in_flight=100)
    fill(sqs, 300, 1)
    asked: list[dict[str, Any]] = []
    outcome = run(Target(sqs, "dlq", "rows", wait_s=0),
                  Options(op=PURGE, confirm=lambda s: asked.append(s) or True),
                  DlqReader(sqs, "dlq", wait_s=0, max_held=60))
    assert asked[0]["messages"] == outcome.messages_done <= 60
    assert outcome.partial and any("run again" in n for n in outcome.notes)
    assert sum(1 for b in sqs.bodies if b is not None) == 300 - outcome.messages_done
    assert sqs.in_flight == 0
