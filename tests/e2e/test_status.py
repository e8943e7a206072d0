"""`fanout status JOB`: how long an unfinished job has not moved, and what a STALLED job
is missing, in the JSON and on `--follow`'s progress line and summary; against a moto
server standing in for a stack's endpoint."""

from __future__ import annotations

import io
import json
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from fanout import ledger
from fanout.ledger import MessageCounts
from fanout.mapping import Spec
from fanout.runtime import Runtime, reconcile_jobs
from fanout.settings import LOCAL_CONFIG, ResourceNames
from fanout_cli.cli import main
from fanout_cli.failures import EXIT_REJECTED
from fanout_cli.local.emulator import Emulator
from fanout_cli.local.resources import LocalStack, create_resources
from fanout_cli.local.stack import DeployedStack, follow_and_report, idle_note
from tests.integration.test_ledger import Clock

JOB = "data-0123456789ab"
C = MessageCounts(25, 0, 0)


@pytest.fixture
def server() -> Iterator[tuple[Emulator, LocalStack]]:
    with Emulator("server") as emulator:
        try:
            yield emulator, create_resources(emulator.clients(), Spec.default(),
                                             config=LOCAL_CONFIG, names=ResourceNames())
        finally:  # moto's backends outlive the server, in this process
            urllib.request.urlopen(urllib.request.Request(f"{emulator.endpoint_url}/moto-api/reset",
                                                          method="POST"), timeout=10).close()


def running_job(emulator: Emulator, local: LocalStack, clock: Clock) -> None:
    """Three messages split; message 0 reported at `clock()`, 1 and 2 not."""
    ddb, table = emulator.clients().dynamodb, local.settings.ledger_table_name
    ledger.start_job(ddb, table, JOB, source_uri="s3://b/data.csv", table="t", owner="a", clock=clock)
    ledger.finish_split(ddb, table, JOB, rows_read=75, messages_total=3, header=["h"],
                        error_location="s3://b/errors/", clock=clock)
    ledger.record_batch(ddb, table, "w0", {JOB: {"0": C}}, clock=clock)


def status(emulator: Emulator, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert main(["status", JOB, "--endpoint-url", str(emulator.endpoint_url),
                 "--ledger-table", ResourceNames().ledger_table]) == 0
    return dict(json.loads(capsys.readouterr().out))


def test_a_running_job_shows_how_long_it_has_not_moved(server, capsys):
    emulator, local = server
    # Given a job whose last report came 95 s ago
    clock = Clock(time.time() - 100)
    running_job(emulator, local, clock)
    ledger.record_batch(emulator.clients().dynamodb, local.settings.ledger_table_name, "w2",
                        {JOB: {"2": C}}, clock=Clock(clock.now + 5))
    # When `fanout status JOB` reads it
    shown = status(emulator, capsys)
    # Then the JSON says when it last moved, and how long ago that is
    assert shown["status"] == ledger.RUNNING
    assert shown["last_progress_at"] == pytest.approx(clock.now + 5, abs=0.01)
    assert 95 <= shown["seconds_since_progress"] < 110


def test_a_stalled_job_names_what_is_missing(server, capsys):
    emulator, local = server
    # Given a job the reconciler stalled: message 1 never came, and no progress for 2 minutes
    clock = Clock(time.time() - 300)
    running_job(emulator, local, clock)
    ledger.record_batch(emulator.clients().dynamodb, local.settings.ledger_table_name, "w2",
                        {JOB: {"2": C}}, clock=clock)
    runtime = Runtime(replace(local.settings, stall_after_s=120), Spec.default(),
                      emulator.clients(), clock=clock, sleep=clock.sleep)
    reconcile_jobs(runtime)
    clock.now += 121
    (ended,) = reconcile_jobs(runtime)
    assert ended.status == ledger.STALLED
    # When `fanout status JOB` reads it
    shown = status(emulator, capsys)
    # Then it says why, how many messages and which seqs are missing, and since when
    assert (shown["status"], shown["missing_messages"], shown["missing_seqs"]) == (
        ledger.STALLED, 1, [1])
    assert "dlq-replayer redrive" in shown["stall_reason"]
    assert 295 <= shown["seconds_since_progress"] < 320

    # And `--follow` (here on the same ledger) ends on it, says so, and exits 3: rows are
    # missing, as when they wait in the DLQ
    clients = emulator.clients()
    stack = DeployedStack("fanout", {"BucketName": local.settings.bucket,
                                     "LedgerTableName": local.settings.ledger_table_name,
                                     "RowsQueueUrl": local.settings.rows_queue_url},
                          clients.s3, clients.dynamodb, clients.sqs, emulator.endpoint_url)
    out, err = io.StringIO(), io.StringIO()
    assert follow_and_report(stack, JOB, started=time.monotonic(), as_json=False, stdout=out,
                             stderr=err) == EXIT_REJECTED
    assert "status     STALLED" in out.getvalue()
    assert "the job stalled: 1 message(s) missing; first seqs 1: messages are missing" in out.getvalue()


def test_the_progress_line_says_when_a_job_has_not_moved_for_a_while():
    now = time.time()
    running = {"status": ledger.RUNNING, "last_progress_at": now - 65}
    assert idle_note(running) == "no progress for 1:05"
    assert idle_note(running | {"last_progress_at": now - 5}) is None  # moving: nothing said
    assert idle_note({"status": ledger.COMPLETE, "last_progress_at": now - 65}) is None


def test_serve_shows_a_job_the_reconciler_stalled_and_then_its_completion():
    from fanout_cli.local.serve import Activity, Watched

    out = io.StringIO()
    activity = Activity(None, out)  # type: ignore[arg-type]  # report() reads no stack
    watched = activity.jobs[JOB] = Watched("uploads/data.csv", status=ledger.RUNNING)
    # Given the reconciler stalled the job (a message went to the DLQ)
    activity.report(JOB, watched, {"status": ledger.STALLED, "missing_messages": 1,
                                   "missing_seqs": [1], "stall_reason": "messages are missing: "
                                   "redrive the dead-letter queue (dlq-replayer redrive)"})
    assert out.getvalue().endswith(f"job {JOB}: STALLED: 1 message(s) missing; first seqs 1: "
                                   "messages are missing: redrive the dead-letter queue "
                                   "(dlq-replayer redrive)\n")
    assert JOB in activity.jobs  # still watched: a redrive completes it
    # When the redriven message completes it, that is shown too, and the job is let go
    activity.report(JOB, watched, {"status": ledger.COMPLETE, "rows_read": 75, "rows_written": 75,
                                   "started_at": "2026-01-01T00:00:00+00:00",
                                   "finished_at": "2026-01-01T00:05:00+00:00"})
    assert f"job {JOB}: COMPLETE: 75 rows read, 75 written" in out.getvalue()
    assert JOB not in activity.jobs
