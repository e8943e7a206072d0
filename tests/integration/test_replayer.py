"""dlq_replayer on moto in-process: inspect, export, redrive (filters, fixes, dry run,
--max, --json), purge, and stack discovery."""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from moto import mock_aws

from dlq_replayer.cli import main
from dlq_replayer.plan import replay_id
from dlq_replayer.target import Target, TargetError, discover
from fanout.contract import KIND_ROWS, decode
from tests.integration.replayer_helpers import (
    HEADER,
    Tty,
    bodies,
    fresh_queues,
    peek,
    put,
    refs_in,
    rejected,
    replayer,
    rows,
)


@pytest.fixture
def target() -> Iterator[Target]:
    with mock_aws():
        yield fresh_queues()


@pytest.fixture
def aws(target: Target) -> SimpleNamespace:
    return SimpleNamespace(sqs=target.sqs)


@pytest.fixture
def waiting(aws: Any, target: Target) -> None:
    """Job A: one message with two bad rows (empty_key, bad_number), one that failed its
    retries; job B: one empty_key row."""
    put(aws.sqs, target.dlq_url,
        rejected("job-a", 0, [(3, ["", "2", "low"], "empty_key"),
                              (7, ["a7", "x", "low"], "bad_number")]),
        rows("job-a", 1, [27, 28]),
        rejected("job-b", 0, [(2, ["", "9", "high"], "empty_key")]))


def test_inspect_groups_by_job_and_reason_and_consumes_nothing(aws, target, waiting):
    code, out, _ = replayer(target, "inspect")
    assert code == 0
    assert "3 message(s)" in out and "5 row(s)" in out
    assert "empty_key: 2 row(s)" in out and "retries_exhausted: 2 row(s)" in out

    code, out, _ = replayer(target, "inspect", "--json", "--job", "job-a")
    summary = json.loads(out)
    assert summary["rows"] == 4 and set(summary["jobs"]) == {"job-a"}
    assert summary["jobs"]["job-a"]["by_reason"] == {"retries_exhausted": 2, "empty_key": 1,
                                                     "bad_number": 1}
    assert summary["reasons"]["bad_number"]["samples"][0]["row"] == {
        "account": "a7", "offer_id": "x", "risk": "low"}
    assert len(peek(aws.sqs, target.dlq_url)) == 3  # everything visible again


def test_nothing_matched_exits_3(target, waiting):
    assert replayer(target, "inspect", "--reason", "no_such_reason")[0] == 3
    code, out, _ = replayer(target, "redrive", "--job", "job-zzz")
    assert code == 3 and "nothing in the DLQ matches" in out


def test_export_csv_and_jsonl(aws, target, waiting, tmp_path: Path):
    put(aws.sqs, target.dlq_url, rows("job-a", 2, [1]))  # arrives last, sorts first
    code, out, _ = replayer(target, "export", "--out", str(tmp_path / "rows.csv"))
    assert code == 0 and "exported 6 row(s) from 4 DLQ message(s)" in out
    with open(tmp_path / "rows.csv", newline="") as f:
        records = list(csv.DictReader(f))
    # In (job, line) order, whatever order the DLQ handed the messages out in
    assert [(r["_job"], r["_message"], r["_line"]) for r in records] == [
        ("job-a", "2", "1"), ("job-a", "0", "3"), ("job-a", "0", "7"), ("job-a", "1", "27"), ("job-a", "1", "28"),
        ("job-b", "0", "2")]
    assert list(records[0]) == ["_job", "_message", "_line", "_kind", "_reason", "_detail",
                                "_source", *HEADER]
    source = "s3://fanout-uploads/uploads/data.csv"
    assert records[1] == {"_job": "job-a", "_message": "0", "_line": "3", "_kind": "rejected",
                          "_reason": "empty_key", "_detail": "empty_key on line 3",
                          "_source": source, "account": "", "offer_id": "2", "risk": "low"}
    assert records[3] == {"_job": "job-a", "_message": "1", "_line": "27", "_kind": "rows",
                          "_reason": "retries_exhausted",
                          "_detail": "the message failed maxReceiveCount times",
                          "_source": source, "account": "a27", "offer_id": "27", "risk": "low"}
    assert [[r[c] for c in HEADER] for r in records] == [
        ["a1", "1", "low"], ["", "2", "low"], ["a7", "x", "low"], ["a27", "27", "low"], ["a28", "28", "low"],
        ["", "9", "high"]]

    code, out, _ = replayer(target, "export", "--out", str(tmp_path / "rows.jsonl"),
                            "--reason", "retries_exhausted", "--json")
    assert json.loads(out)["rows"] == 3
    lines = [json.loads(t) for t in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert [(r["_line"], r["_kind"], r["fields"]) for r in lines] == [
        (1, KIND_ROWS, {"account": "a1", "offer_id": "1", "risk": "low"}),
        (27, KIND_ROWS, {"account": "a27", "offer_id": "27", "risk": "low"}),
        (28, KIND_ROWS, {"account": "a28", "offer_id": "28", "risk": "low"})]


def test_redrive_sends_rows_back_unchanged_and_rejects_as_replays(aws, target, waiting):
    original_rows_body = rows("job-a", 1, [27, 28])
    code, out, _ = replayer(target, "redrive", "--json")
    assert code == 0
    outcome = json.loads(out)
    assert outcome["messages_done"] == 3 and outcome["rows_sent"] == 5
    assert peek(aws.sqs, target.dlq_url) == []

    sent = peek(aws.sqs, target.rows_queue_url)
    assert original_rows_body in [m["Body"] for m in sent]  # same body, same message id
    replays = [decode(m["Body"]) for m in sent if decode(m["Body"]).replay]
    assert len(replays) == 2
    a = next(r for r in replays if r.job == "job-a")
    assert a.kind == KIND_ROWS and a.lines == [3, 7]
    assert a.rows == [["", "2", "low"], ["a7", "x", "low"]]
    assert a.replay == replay_id("job-a", "0", [3, 7], a.rows)  # deterministic
    assert a.message_id == f"0~{a.replay}"


def test_reason_filter_leaves_the_other_rows_in_a_remainder(aws, target, waiting):
    code, out, _ = replayer(target, "redrive", "--reason", "bad_number")
    assert code == 0 and "1 other row(s)" in out
    assert refs_in(aws.sqs, target.rows_queue_url) == {("job-a", "0", 7)}
    assert refs_in(aws.sqs, target.dlq_url) == {
        ("job-a", "0", 3), ("job-a", "1", 27), ("job-a", "1", 28), ("job-b", "0", 2)}
    remainder = next(m for m in bodies(aws.sqs, target.dlq_url)
                     if m.job == "job-a" and m.rejections)
    assert [r.reason for r in remainder.rejections] == ["empty_key"]


def test_job_filter_dry_run_and_max(aws, target, waiting):
    code, out, _ = replayer(target, "redrive", "--job", "job-a", "--dry-run")
    assert code == 0 and "would send 4 row(s) from 2 DLQ message(s)" in out
    assert len(peek(aws.sqs, target.dlq_url)) == 3 and peek(aws.sqs, target.rows_queue_url) == []

    code, out, _ = replayer(target, "redrive", "--job", "job-a", "--max", "1", "--json")
    assert code == 0 and json.loads(out)["messages_done"] == 1
    assert len(peek(aws.sqs, target.dlq_url)) == 2
    assert len(peek(aws.sqs, target.rows_queue_url)) == 1


def test_rate_limits_messages_per_second(target, waiting):
    import time

    started = time.monotonic()
    assert replayer(target, "redrive", "--rate", "10")[0] == 0
    assert time.monotonic() - started >= 0.2  # 3 messages at 10/s: two waits of 0.1 s


def test_purge_needs_yes_or_a_confirmation(aws, target, waiting):
    code, _, err = replayer(target, "purge", "--reason", "empty_key")
    assert code == 2 and "--yes" in err

    code, out, _ = replayer(target, "purge", "--reason", "empty_key", stdin=Tty("no\n"))
    assert code == 3 and "cancelled" in out
    assert len(peek(aws.sqs, target.dlq_url)) == 3

    code, out, err = replayer(target, "purge", "--reason", "empty_key", stdin=Tty("yes\n"))
    assert code == 0 and "purge: deleted 2 row(s) in 2 DLQ message(s)" in out and "Delete 2 row(s)" in err
    assert refs_in(aws.sqs, target.dlq_url) == {("job-a", "0", 7), ("job-a", "1", 27),
                                                ("job-a", "1", 28)}
    assert peek(aws.sqs, target.rows_queue_url) == []

    code, out, _ = replayer(target, "purge", "--yes", "--job", "job-a", "--json")
    assert code == 0 and json.loads(out)["rows_purged"] == 3
    assert peek(aws.sqs, target.dlq_url) == []


def test_redrive_fixes_sends_the_edited_rows_and_keeps_the_rest(aws, target, waiting, tmp_path):
    export = tmp_path / "fix.csv"
    assert replayer(target, "export", "--out", str(export), "--reason", "empty_key")[0] == 0
    with open(export, newline="") as f:
        records = list(csv.DictReader(f))
    for record in records:
        record["account"] = f"fixed-{record['_line']}"
    with open(export, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)

    code, out, _ = replayer(target, "redrive", "--fixes", str(export), "--json")
    outcome = json.loads(out)
    assert code == 0 and outcome["rows_sent"] == 2 and outcome["rows_fixed"] == 2
    sent = bodies(aws.sqs, target.rows_queue_url)
    assert sorted(m.rows[0][0] for m in sent) == ["fixed-2", "fixed-3"]
    assert all(m.replay for m in sent)
    # The bad_number row shared a message with a fixed row: it stays, in a remainder.
    assert refs_in(aws.sqs, target.dlq_url) == {("job-a", "0", 7), ("job-a", "1", 27),
                                                ("job-a", "1", 28)}

    # Running the same fixes again finds nothing left to replace.
    code, _, err = replayer(target, "redrive", "--fixes", str(export))
    assert code == 3 and "not found waiting in the DLQ" in err


def test_rows_message_with_fixes_goes_back_whole_under_its_own_id(aws, target, waiting,
                                                                  tmp_path):
    export = tmp_path / "fix.jsonl"
    replayer(target, "export", "--out", str(export), "--reason", "retries_exhausted")
    records = [json.loads(t) for t in export.read_text().splitlines()]
    records[0]["fields"]["risk"] = "medium"
    export.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert replayer(target, "redrive", "--fixes", str(export))[0] == 0
    (message,) = bodies(aws.sqs, target.rows_queue_url)
    assert message.message_id == "1" and message.replay is None
    assert [r[2] for r in message.rows] == ["medium", "low"]


def test_a_failed_send_keeps_the_original(aws, target, waiting, monkeypatch):
    monkeypatch.setattr("dlq_replayer.redrive.BACKOFF_S", 0.0)

    class Refusing:
        def __init__(self, sqs: Any) -> None:
            self._sqs = sqs

        def __getattr__(self, name: str) -> Any:
            return getattr(self._sqs, name)

        def send_message_batch(self, **params: Any) -> Any:
            return {"Successful": [], "Failed": [
                {"Id": e["Id"], "SenderFault": False, "Code": "InternalError"}
                for e in params["Entries"]]}

    flaky = Target(Refusing(aws.sqs), target.dlq_url, target.rows_queue_url, wait_s=0)
    code, _, err = replayer(flaky, "redrive")
    assert code == 1 and "did not accept" in err
    assert len(peek(aws.sqs, target.dlq_url)) == 3


def test_stack_outputs_and_default_names_find_the_queues(target):
    stack = SimpleNamespace(settings=SimpleNamespace(dlq_url=target.dlq_url,
                                                     rows_queue_url=target.rows_queue_url))
    outputs = {"DlqUrl": stack.settings.dlq_url, "RowsQueueUrl": stack.settings.rows_queue_url,
               "BucketName": "b", "TableName": "t"}

    class CloudFormation:  # what DescribeStacks answers for a deployed stack
        def describe_stacks(self, StackName: str) -> dict[str, Any]:  # noqa: N803
            assert StackName == "fanout"
            return {"Stacks": [{"StackName": StackName, "Outputs": [
                {"OutputKey": k, "OutputValue": v} for k, v in outputs.items()]}]}

    cloudformation = CloudFormation()
    found = discover(stack="fanout", sqs=target.sqs, cloudformation=cloudformation)
    assert (found.dlq_url, found.rows_queue_url, found.bucket, found.table) == (
        stack.settings.dlq_url, stack.settings.rows_queue_url, "b", "t")
    by_name = discover(sqs=target.sqs)
    assert by_name.dlq_url == stack.settings.dlq_url
    missing = {"Stacks": [{"Outputs": []}]}
    with pytest.raises(TargetError, match="DlqUrl"):
        discover(stack="x", sqs=target.sqs,
                 cloudformation=SimpleNamespace(describe_stacks=lambda **_: missing))


def test_usage_errors_exit_2(tmp_path):
    assert main(["inspect"]) == 2  # no target
    assert main(["redrive", "--max", "0", "--endpoint-url", "http://127.0.0.1:1"]) == 2
    assert main(["bogus"]) == 2


def test_a_partial_run_exits_4_and_nothing_matched_exits_3(aws, target, waiting, tmp_path):
    # Given a fixes file with the two empty_key rows and one row that is not in the DLQ
    export = tmp_path / "fix.jsonl"
    assert replayer(target, "export", "--out", str(export), "--reason", "empty_key")[0] == 0
    records = [json.loads(t) for t in export.read_text().splitlines()]
    ghost = {**records[0], "_line": 9999}
    export.write_text("".join(json.dumps(r) + "\n" for r in [*records, ghost]))
    # When it is redriven, two rows go back and one is not found: partial, exit 4
    code, out, err = replayer(target, "redrive", "--fixes", str(export), "--json")
    outcome = json.loads(out)
    assert code == 4 and outcome["rows_sent"] == 2 and outcome["fixes_unmatched"] == 1
    assert err == ""  # --json: nothing but the JSON
    # And a filter that matches nothing is exit 3, not 4
    assert replayer(target, "redrive", "--job", "no-such-job")[0] == 3


def test_failures_are_one_line_with_no_traceback(capsys, monkeypatch):
    # Nothing listens at the endpoint: one line that says so, exit 1.
    code = main(["inspect", "--endpoint-url", "http://127.0.0.1:9"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("dlq-replayer inspect: error: cannot connect to http://127.0.0.1:9")
    # A bad number names the flag and the rule.
    assert main(["redrive", "--max", "abc", "--endpoint-url", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "argument --max: must be a whole number of at least 1 (got 'abc')" in err
    # A stack that does not exist: one line naming it.
    with mock_aws():
        assert main(["inspect", "--stack", "no-such-stack"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot describe stack no-such-stack" in err
    assert "does not exist" in err
    # No credentials for a remote stack: one line naming the fix.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert main(["inspect", "--stack", "fanout"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no AWS credentials found" in err


@pytest.mark.parametrize("argv", [["--stack", "fanout", "inspect", "--json"],
                                  ["inspect", "--stack", "fanout", "--json"],
                                  ["--stack", "fanout", "--json", "inspect"]])
def test_the_target_may_come_before_or_after_the_command(argv):
    from dlq_replayer.cli import build_parser

    args = build_parser().parse_args(argv)
    assert (args.command, args.stack, args.json, args.visibility_timeout) == (
        "inspect", "fanout", True, 120)


def test_a_row_rejected_again_during_the_run_waits_for_the_next_run(aws, target, waiting):
    # Given the writer rejects job B's row again as soon as it is sent back (unfixed)
    def writer_rejects_again(point: str, plan: Any) -> None:
        if point == "deleted" and plan.selected[0].job == "job-b":
            time.sleep(0.01)  # SentTimestamp has milliseconds: after the run began
            put(aws.sqs, target.dlq_url, rejected("job-b", 0, [(2, ["", "9", "high"], "empty_key")]))

    # When the empty_key rows are redriven
    code, out, _ = replayer(target, "redrive", "--reason", "empty_key", hook=writer_rejects_again)
    # Then each row was sent once in this run (not twice), and the summary says one came back
    assert code == 0
    assert out.splitlines()[0] == "redrive: sent 2 row(s) from 2 DLQ message(s) back to the rows queue"
    assert ("  1 row(s) came back to the DLQ during this run (1 message(s): rejected again); they wait "
            "for the next run (`dlq-replayer inspect` says why)") in out.splitlines()
    assert len(peek(aws.sqs, target.rows_queue_url)) == 2
    # And it waits in the DLQ, visible, for the next run, which sends it
    assert ("job-b", "0", 2) in refs_in(aws.sqs, target.dlq_url)
    code, out, _ = replayer(target, "redrive", "--reason", "empty_key", "--json")
    outcome = json.loads(out)
    assert code == 0 and outcome["rows_sent"] == 1 and outcome["rows_came_back"] == 0
