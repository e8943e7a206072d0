"""An operator's three commands against a stack's endpoint (a moto server standing in for
it): `fanout jobs` finds a running job, `fanout cancel` stops it, `fanout status` says why
each job ended, with one line and the CLI's exit codes when there is nothing to do."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fanout import ledger
from fanout.ledger import MessageCounts
from fanout.settings import ResourceNames
from fanout_cli.cli import main
from fanout_cli.failures import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from fanout_cli.jobs import since_iso
from tests.e2e.test_status import server  # noqa: F401  (the fixture)
from tests.integration.test_ledger import Clock

LEDGER_TABLE = ResourceNames().ledger_table  # the local runtime's, at the test server


def at(endpoint: str) -> tuple[str, ...]:
    """The ledger at the test server, by name (no stack there to find it from)."""
    return ("--endpoint-url", endpoint, "--ledger-table", LEDGER_TABLE)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """The exit code, stdout and stderr, less the line naming the target (a text command
    prints it first once its ledger is found)."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    target = f"target: ledger table '{LEDGER_TABLE}' at "
    if err.startswith(target):
        err = err.split("\n", 1)[1]
    return code, out, err


def jobs(emulator: Any, local: Any) -> tuple[Any, str]:
    """Three jobs a minute apart: a FAILED one, a COMPLETE one with a rejected row, and a
    running one (one message of two reported)."""
    ddb, table = emulator.clients().dynamodb, local.settings.ledger_table_name
    clock = Clock(1_900_000_000.0)
    ledger.start_job(ddb, table, "bad", source_uri="s3://b/uploads/bad.csv", table="t", owner="a",
                     clock=clock)
    ledger.fail_job(ddb, table, "bad", error="s3://b/uploads/bad.csv: line 7: unterminated quote "
                                             "(fix the file and upload it again)", clock=clock)
    clock.now += 60
    ledger.start_job(ddb, table, "done", source_uri="s3://b/uploads/done.csv", table="t", owner="a",
                     clock=clock)
    ledger.finish_split(ddb, table, "done", rows_read=25, messages_total=1, header=["h"],
                        error_location="s3://b/errors/done/", clock=clock)
    ledger.record_batch(ddb, table, "w", {"done": {"0": MessageCounts(24, 1)}}, clock=clock)
    clock.now += 10
    ledger.settle(ddb, table, "done", owner="f", clock=clock)
    clock.now += 50
    ledger.start_job(ddb, table, "live", source_uri="s3://b/other/live.csv", table="t", owner="a",
                     clock=clock)
    ledger.finish_split(ddb, table, "live", rows_read=50, messages_total=2, header=["h"],
                        error_location="s3://b/errors/live/", clock=clock)
    ledger.record_batch(ddb, table, "w", {"live": {"0": MessageCounts(25)}}, clock=clock)
    return ddb, table


def test_find_a_running_job_stop_it_and_read_why_it_ended(server, capsys):  # noqa: F811
    emulator, local = server
    ddb, table = jobs(emulator, local)
    endpoint = str(emulator.endpoint_url)
    # Find: newest first, with its status and counts
    code, out, _ = run(capsys, "jobs", *at(endpoint))
    lines = out.splitlines()
    assert code == EXIT_OK and lines[0].split() == ["JOB", "STATUS", "SOURCE", "READ", "WRITTEN",
                                                    "REJECTED", "STARTED", "TIME", "ROWS/S"]
    assert [line.split()[:2] for line in lines[1:]] == [["live", "RUNNING"], ["done", "COMPLETE"],
                                                        ["bad", "FAILED"]]
    assert lines[2].split()[3:6] == ["25", "24", "1"] and lines[2].split()[-2:] == ["10s", "2"]
    assert lines[1].split()[-2].endswith("+")  # still running: how long so far
    code, out, _ = run(capsys, "jobs", *at(endpoint), "--status", "RUNNING", "--json")
    (live,) = json.loads(out)["jobs"]
    assert live["job_id"] == "live" and live["rows_written"] == 0  # nothing folded yet
    # Stop it
    code, out, err = run(capsys, "cancel", "live", *at(endpoint), "--by", "alice")
    assert (code, err) == (EXIT_OK, "")
    assert out.strip() == ("job live: CANCELLING (was RUNNING); it becomes CANCELLED once nothing more "
                           "of it will be written")
    assert run(capsys, "cancel", "live", *at(endpoint))[1].startswith(
        "job live: already CANCELLING (by alice at ")
    # Its last message, dropped by a writer that knew, ends it
    ledger.record_batch(ddb, table, "w2", {"live": {"1": MessageCounts(cancelled=25)}})
    ledger.settle(ddb, table, "live", owner="f")
    code, out, _ = run(capsys, "status", "live", *at(endpoint))
    shown = json.loads(out)
    why = shown["why"]
    assert why["status"] == ledger.CANCELLED and why["cancelled_by"] == "alice"
    # an ended job has no "since progress"; its target is the table by name, not a runtime
    assert "seconds_since_progress" not in shown
    assert shown["target"] == {"runtime": "ledger_table", "stack": None, "endpoint_url": endpoint,
                               "region": "us-east-1", "ledger_table": LEDGER_TABLE}
    # a table by name and a stack are one too many
    code, _, err = run(capsys, "status", "live", *at(endpoint), "--stack", "fanout")
    assert code == EXIT_USAGE and "drop one of --stack and --ledger-table" in err
    assert why["rows_cancelled"] == 25 and why["summary"].startswith("cancelled by alice at ")
    # Why the others ended: the file, the line and the reason; where rejected rows are
    why = json.loads(run(capsys, "status", "bad", *at(endpoint))[1])["why"]
    assert (why["file"], why["line"]) == ("s3://b/uploads/bad.csv", 7)
    assert "unterminated quote" in why["reason"]
    why = json.loads(run(capsys, "status", "done", *at(endpoint))[1])["why"]
    assert why["rejected_rows"] == {"count": 1, "report": "s3://b/errors/done/",
                                    "show": f"dlq-replayer inspect --job done --endpoint-url {endpoint}"}
    assert why["summary"] == "every row is accounted for: 24 written, 1 rejected, 0 superseded"


def test_a_cancel_of_a_finished_or_unknown_job_is_one_line_and_exit_1(server, capsys):  # noqa: F811
    emulator, local = server
    ddb, table = jobs(emulator, local)
    before = ledger.raw_job(ddb, table, "done")
    code, out, err = run(capsys, "cancel", "done", *at(str(emulator.endpoint_url)))
    assert (code, out) == (EXIT_FAILED, "")
    assert err.startswith("fanout cancel: error: job done already ended COMPLETE at ")
    assert err.endswith("there is nothing to cancel, and nothing was changed\n") and err.count("\n") == 1
    assert ledger.raw_job(ddb, table, "done") == before
    code, _, err = run(capsys, "cancel", "nope", *at(str(emulator.endpoint_url)))
    assert code == EXIT_FAILED and err == "fanout cancel: error: no job 'nope' in fanout-jobs\n"


def test_jobs_pages_and_filters(server, capsys):  # noqa: F811
    emulator, local = server
    jobs(emulator, local)
    endpoint = str(emulator.endpoint_url)
    # The text form names its target first, on stderr; the JSON form prints only the JSON
    assert main(["jobs", *at(endpoint), "--limit", "1"]) == EXIT_OK
    assert capsys.readouterr().err.splitlines()[0] == (
        f"target: ledger table '{LEDGER_TABLE}' at {endpoint}, us-east-1")
    code, out, err = run(capsys, "jobs", *at(endpoint), "--limit", "2", "--json")
    assert err == ""
    first = json.loads(out)
    assert [j["job_id"] for j in first["jobs"]] == ["live", "done"] and first["next"]
    code, out, err = run(capsys, "jobs", *at(endpoint), "--limit", "2")
    assert err == f"more: add --after {first['next']}\n"
    code, out, _ = run(capsys, "jobs", *at(endpoint), "--limit", "2", "--after",
                       first["next"], "--json")
    assert [j["job_id"] for j in json.loads(out)["jobs"]] == ["bad"]
    code, out, _ = run(capsys, "jobs", *at(endpoint), "--source", "s3://b/uploads/", "--json")
    assert [j["job_id"] for j in json.loads(out)["jobs"]] == ["done", "bad"]
    code, out, _ = run(capsys, "jobs", *at(endpoint), "--since", "2030-03-17T17:47:00",
                       "--json")
    assert [j["job_id"] for j in json.loads(out)["jobs"]] == ["live", "done"]
    code, out, _ = run(capsys, "jobs", *at(endpoint), "--status", "STALLED")
    assert (code, out) == (EXIT_OK, "no jobs match\n")
    code, _, err = run(capsys, "jobs", *at(endpoint), "--since", "yesterday")
    assert code == EXIT_USAGE and "--since 'yesterday': give a duration" in err


def test_since_takes_a_duration_or_a_time():
    assert since_iso("24h", now=1_900_086_400.0) == ledger.now_iso(lambda: 1_900_000_000.0)
    assert since_iso("2030-03-17T17:46:40") == "2030-03-17T17:46:40.000+00:00"
    assert since_iso("90s", now=100.0) == "1970-01-01T00:00:10.000+00:00"


def test_serve_shows_a_cancel_and_the_job_it_ends():
    import io

    from fanout_cli.local.serve import Activity, Watched

    out = io.StringIO()
    activity = Activity(None, out)  # type: ignore[arg-type]  # report() reads no stack
    watched = activity.jobs["j"] = Watched("uploads/data.csv", status=ledger.RUNNING)
    activity.report("j", watched, {"status": ledger.CANCELLING, "cancelled_by": "alice",
                                   "cancelled_at": "2026-01-01T00:01:00+00:00"})
    assert "job j: CANCELLING (by alice at 2026-01-01T00:01:00+00:00): the writers drop its " \
           "remaining messages\n" in out.getvalue()
    assert "j" in activity.jobs
    activity.report("j", watched, {"status": ledger.CANCELLED, "cancelled_by": "alice",
                                   "rows_read": 100, "rows_written": 25, "rows_cancelled": 75,
                                   "started_at": "2026-01-01T00:00:00+00:00",
                                   "finished_at": "2026-01-01T00:02:00+00:00"})
    assert "job j: CANCELLED by alice: 100 rows read, 25 written, 0 rejected, 0 superseded, " \
           "75 cancelled in " in out.getvalue()
    assert "j" not in activity.jobs


def test_following_a_job_that_is_cancelled_ends_with_exit_1_and_says_so():
    import io

    from fanout_cli.local.stack import exit_code, print_result

    result = {"job_id": "j", "stack": "fanout", "status": ledger.CANCELLED, "source": "s3://b/k",
              "table": "t", "mode": "put", "rows_read": 100, "rows_written": 25, "rows_rejected": 0,
              "rows_superseded": 0, "rows_deleted": 0, "rows_skipped_existing": 0,
              "rows_cancelled": 75, "rows_in_dlq_unreported": 0, "messages_sent": 4,
              "elapsed_s": 2.0, "rows_per_s": 50.0, "error": None, "error_data_location": None}
    out = io.StringIO()
    print_result(result, out)
    assert exit_code(result) == EXIT_FAILED
    assert out.getvalue().endswith("the job was cancelled: 75 row(s) not written "
                                   "(`fanout status j --stack fanout` says who and when)\n")
