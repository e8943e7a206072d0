"""Which stack am I talking to: every command resolves its target in one place and names it,
the embedded runtime never reaches an exported endpoint, flags a stack decides are refused,
`--endpoint-url` alone reaches the stack `fanout serve` deploys, and what a stack did
(already loaded, no job started) is said. Against a moto server standing in for a stack's
endpoint: a CloudFormation stack named `fanout` whose outputs name its resources, with a
ledger table whose name is not the default one (a deployed stack's is generated)."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fanout import ledger
from fanout.aws import client
from fanout.ledger import MessageCounts
from fanout.mapping import Spec
from fanout.settings import LOCAL_CONFIG, ResourceNames
from fanout_cli.cli import main
from fanout_cli.local.emulator import Emulator
from fanout_cli.local.ministack import free_port
from fanout_cli.local.resources import LocalStack, create_resources
from fanout_cli.local.serve import Activity, why_no_job
from fanout_cli.local.stack import find_stack, job_for_key

# What a deployed stack's generated names look like: not the defaults a bare endpoint has.
NAMES = ResourceNames(bucket="fanout-bucket83908e77-1x2y3z", ledger_table="fanout-LedgerTable-ABC123",
                      table="fanout-ItemsTable-DEF456", rows_queue="fanout-RowsQueue-GHI",
                      dlq="fanout-Dlq-JKL")
NOWHERE = "http://127.0.0.1:9"  # nothing listens: any request sent there fails


def write_csv(path: Path, rows: int = 30) -> Path:
    path.write_text("account,offer_id,risk\n" + "".join(f"a{i % 4},o{i},r{i % 3}\n" for i in range(rows)))
    return path


@dataclass
class Served:
    emulator: Emulator
    local: LocalStack

    @property
    def url(self) -> str:
        assert self.emulator.endpoint_url
        return self.emulator.endpoint_url


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    """A moto server holding a stack `fanout` as `fanout serve` would (outputs, generated names)."""
    with Emulator("server") as emulator:
        try:
            local = create_resources(emulator.clients(), Spec.default(), config=LOCAL_CONFIG, names=NAMES)
            outputs = {"BucketName": NAMES.bucket, "UploadPrefix": "uploads/",
                       "LedgerTableName": NAMES.ledger_table, "TableName": NAMES.table,
                       "RowsQueueUrl": local.settings.rows_queue_url, "DlqUrl": local.settings.dlq_url}
            template = {"Resources": {"Placeholder": {"Type": "AWS::SQS::Queue",
                                                      "Properties": {"QueueName": "placeholder"}}},
                        "Outputs": {key: {"Value": value} for key, value in outputs.items()}}
            emulator.client("cloudformation").create_stack(StackName="fanout",
                                                           TemplateBody=json.dumps(template))
            yield Served(emulator, local)
        finally:  # moto's backends outlive the server, in this process
            urllib.request.urlopen(urllib.request.Request(f"{emulator.endpoint_url}/moto-api/reset",
                                                          method="POST"), timeout=10).close()


def complete_job(served: Served, job: str, rows: int = 25) -> None:
    """The job as the stack's splitter and writers leave it: COMPLETE, every row written."""
    ddb, table = served.emulator.clients().dynamodb, NAMES.ledger_table
    ledger.start_job(ddb, table, job, source_uri=f"s3://{NAMES.bucket}/uploads/data.csv", table=NAMES.table,
                     owner="splitter")
    ledger.finish_split(ddb, table, job, rows_read=rows, messages_total=1, header=["account"],
                        error_location=f"s3://{NAMES.bucket}/errors/")
    ledger.record_batch(ddb, table, "w0", {job: {"0": MessageCounts(rows, 0, 0)}})
    ledger.settle(ddb, table, job, owner="writer")
    assert ledger.get_job(ddb, table, job)["status"] == ledger.COMPLETE


def test_an_exported_endpoint_never_reaches_the_embedded_runtime(tmp_path, monkeypatch, capsys):
    # Given the shell `fanout serve`'s banner sets up: AWS_ENDPOINT_URL exported (here to a
    # port where nothing listens, so any request that went there would fail the run)
    monkeypatch.setenv("AWS_ENDPOINT_URL", NOWHERE)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", NOWHERE)
    data = write_csv(tmp_path / "data.csv")
    # When `fanout ingest FILE` runs without --stack
    code = main(["ingest", str(data), "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    # Then it loads in the embedded runtime, says once what it ignored, and names its target
    assert code == 0, captured.err
    assert captured.err.startswith(
        "target: the embedded runtime (moto in this process); AWS_ENDPOINT_URL, AWS_ENDPOINT_URL_S3 "
        "ignored (add --stack NAME to load into that stack)\n")
    assert "rows read  30" in captured.out
    assert "target     the embedded runtime (moto in this process)" in captured.out
    # And the shell's environment is as it was
    assert os.environ["AWS_ENDPOINT_URL"] == NOWHERE and os.environ["AWS_ENDPOINT_URL_S3"] == NOWHERE


@pytest.fixture
def other_emulator() -> Iterator[str]:
    """Someone else's emulator: a moto server in a process of its own (an in-process one
    would share this process's moto backends with the embedded runtime)."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_the_embedded_runtime_leaves_nothing_in_an_emulator_the_environment_names(other_emulator, tmp_path,
                                                                                  monkeypatch, capsys):
    # Given a running emulator exported as AWS_ENDPOINT_URL
    monkeypatch.setenv("AWS_ENDPOINT_URL", other_emulator)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    # When a local ingest runs, twice (the second used to find its tables already there)
    data = write_csv(tmp_path / "data.csv")
    for run in ("a", "b"):
        assert main(["ingest", str(data), "--out", str(tmp_path / run), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["target"]["runtime"] == "embedded"
    # Then that emulator holds nothing of the local runs
    dynamodb = client("dynamodb", endpoint_url=other_emulator)
    assert dynamodb.list_tables()["TableNames"] == []
    assert client("s3", endpoint_url=other_emulator).list_buckets()["Buckets"] == []
    assert client("sqs", endpoint_url=other_emulator).list_queues().get("QueueUrls", []) == []


@pytest.mark.parametrize("flags", [
    ["--spec", "spec.toml"], ["--partition-key", "account"], ["--sort-key", ""],
    ["--delimiter", ";"], ["--encoding", "latin-1"], ["--concurrency", "9"],
    ["--range-bytes", "1000"], ["--out", "x"], ["--json-copy"], ["--emulator", "server"],
])
def test_flags_the_stack_decides_are_refused_with_the_fix(flags, tmp_path, capsys):
    data = write_csv(tmp_path / "data.csv")
    # When one is given with --stack (at an endpoint where nothing listens: refused first)
    code = main(["ingest", str(data), "--stack", "fanout", "--endpoint-url", NOWHERE, *flags])
    err = capsys.readouterr().err
    # Then it is refused in one line naming it, the stack and how to change what it sets
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"fanout ingest: error: {flags[0]}: not with --stack fanout: the stack ")
    if flags[0] in ("--spec", "--partition-key", "--sort-key", "--delimiter", "--encoding"):
        assert "reads every file with its own spec (keys, delimiter, encoding): to change it, redeploy " \
               "with a spec (`fanout serve --spec FILE`, or `cdk deploy -c spec=FILE`" in err
    else:
        assert "runs as it was deployed (its writers' concurrency from -c write_budget" in err
    assert err.endswith("; or drop --stack to load FILE in the embedded runtime\n")


def test_several_refused_flags_are_named_together(tmp_path, capsys):
    data = write_csv(tmp_path / "data.csv")
    assert main(["ingest", str(data), "--stack", "s", "--partition-key", "a", "--delimiter", ";"]) == 2
    assert capsys.readouterr().err.startswith("fanout ingest: error: --partition-key, --delimiter: "
                                              "not with --stack s")


def test_status_with_only_an_endpoint_reads_the_stack_fanout(served, capsys):
    # Given a job in the stack's ledger (a generated name, not fanout-jobs)
    complete_job(served, "data-0123456789ab")
    # When `fanout status JOB --endpoint-url URL` (the README's form for a running serve)
    assert main(["status", "data-0123456789ab", "--endpoint-url", served.url]) == 0
    shown = json.loads(capsys.readouterr().out)
    # Then it found the stack's ledger and says which target it read
    assert shown["status"] == ledger.COMPLETE and shown["rows_written"] == 25
    assert shown["target"] == {"runtime": "stack", "stack": "fanout", "endpoint_url": served.url,
                               "region": "us-east-1", "ledger_table": NAMES.ledger_table}
    # And --stack with --endpoint-url is the same target, not refused
    assert main(["status", "data-0123456789ab", "--stack", "fanout", "--endpoint-url", served.url]) == 0
    assert json.loads(capsys.readouterr().out)["target"]["stack"] == "fanout"


def test_status_of_a_stack_that_is_not_at_the_endpoint_names_both(served, capsys):
    assert main(["status", "j", "--stack", "other", "--endpoint-url", served.url]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"fanout status: error: no stack 'other' at {served.url} (check --stack")


def test_follow_of_a_job_that_does_not_exist_exits_1_at_once(served, capsys):
    # When `fanout status nosuchjob --follow` (this used to poll in silence until Ctrl-C)
    result: list[int] = []
    started = time.monotonic()
    worker = threading.Thread(target=lambda: result.append(
        main(["status", "nosuchjob", "--endpoint-url", served.url, "--follow"])), daemon=True)
    worker.start()
    worker.join(timeout=30)
    # Then it ends at once, exit 1, with one line naming the job and the stack's ledger
    assert result == [1] and time.monotonic() - started < 30
    err = capsys.readouterr().err
    assert err == (f"fanout status: error: no job 'nosuchjob' in stack 'fanout''s ledger "
                   f"({NAMES.ledger_table}): check the job id (ingest printed it)\n")


def test_an_upload_already_loaded_says_so_and_shows_that_job(served, tmp_path, capsys):
    # Given data.csv uploaded and loaded before (its job COMPLETE in the ledger)
    data = write_csv(tmp_path / "data.csv", rows=25)
    stack = find_stack("fanout", served.url)
    stack.s3.upload_file(str(data), NAMES.bucket, "uploads/data.csv")
    job = job_for_key(stack, "uploads/data.csv")
    complete_job(served, job)
    # When the same content is ingested again (the splitter starts no job for it)
    code = main(["ingest", str(data), "--endpoint-url", served.url])
    captured = capsys.readouterr()
    # Then it says it was already loaded, as which job, and shows that job
    assert code == 0, captured.err
    lines = captured.err.splitlines()
    assert lines[0] == (f"target: stack 'fanout' at {served.url}, us-east-1 (--endpoint-url) "
                        "(the default name; --stack NAME for another)")
    assert lines[1] == (f"uploaded {data} to s3://{NAMES.bucket}/uploads/data.csv: already loaded as "
                        f"job {job} (the same content; no new job started): that job:")
    assert f"job        {job}" in captured.out and "status     COMPLETE" in captured.out
    assert f"target     stack 'fanout' at {served.url}, us-east-1" in captured.out
    # And --json says so too
    assert main(["ingest", str(data), "--stack", "fanout", "--endpoint-url", served.url, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["already_loaded"] is True and shown["job_id"] == job
    assert shown["target"]["endpoint_url"] == served.url


def test_the_serve_console_names_why_an_upload_started_no_job(served):
    # Given the serve console watching the stack's upload prefix (uploads ending in .csv start a job)
    out = io.StringIO()
    stack = find_stack("fanout", served.url)
    activity = Activity(stack, out, suffixes=(".csv",))
    # When objects that start no job are uploaded, and one that does, twice with the same content
    for key, body in (("readme.md", b"hi"), ("A.CSV", b"a,b\n1,2\n"), ("t.csv.gz", b"\x1f\x8b"),
                      ("data.csv", b"account,offer_id\na,1\n")):
        stack.s3.put_object(Bucket=NAMES.bucket, Key=f"uploads/{key}", Body=body)
    activity.poll()
    time.sleep(1.1)  # S3's LastModified has whole seconds
    stack.s3.put_object(Bucket=NAMES.bucket, Key="uploads/data.csv", Body=b"account,offer_id\na,1\n")
    activity.poll()
    # Then each line says what happened to it, and why no job started
    said = [line.split("  ", 1)[1] for line in out.getvalue().splitlines()]
    job = job_for_key(stack, "uploads/data.csv")
    bucket = f"s3://{NAMES.bucket}/uploads"
    assert said == [
        f"upload  {bucket}/A.CSV (8 bytes): no job: the upload filter is case-sensitive (.csv): name it A.csv",
        f"upload  {bucket}/data.csv (21 bytes): job {job}",
        f"upload  {bucket}/readme.md (2 bytes): no job: only names ending in .csv start one",
        f"upload  {bucket}/t.csv.gz (2 bytes): no job: t.csv.gz ends in .csv.gz, which only a stack deployed "
        "with -c gzip=true takes (or name it .csv: gzip is told by its first bytes)",
        f"upload  {bucket}/data.csv (21 bytes): the same content again: already loaded as job {job}; "
        "no new job started",
    ]


def test_a_gzip_stack_takes_csv_gz_names():
    assert why_no_job("uploads/t.csv.gz", (".csv", ".csv.gz")) is None
    assert why_no_job("uploads/t.csv", (".csv",)) is None
    assert why_no_job("uploads/T.CSV.GZ", (".csv", ".csv.gz")) == (
        "no job: the upload filter is case-sensitive (.csv, .csv.gz): name it T.csv.gz")


def test_serve_fails_on_a_port_another_process_holds_and_names_the_holder(capsys):
    from fanout_cli.local import ministack
    from fanout_cli.local.serve import serve_forever

    # Given a port this process listens on (as another serve's MiniStack would)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert (ministack.port_holder(port) or "").startswith(f"pid {os.getpid()} (")
        # When `fanout serve --port` that port
        out = io.StringIO()
        code = serve_forever(port=port, stream=out)
        # Then it exits 1 with one line naming the port and who holds it, before deploying anything
        err = capsys.readouterr().err
        assert code == 1 and err.count("\n") == 1
        assert err.startswith(f"fanout serve: error: port {port} is in use by pid {os.getpid()} (")
        assert err.rstrip().endswith("pick another --port (or none, for a free one), or stop that process")
        assert "deploy" not in out.getvalue().replace("cdk deploy (about 30 s)", "")
    # And a free port has no holder; each serve writes a log of its own
    assert ministack.port_holder(port) is None
    assert ministack.MiniStack(port=port).log_path.name == f"fanout-ministack-{port}-{os.getpid()}.log"
