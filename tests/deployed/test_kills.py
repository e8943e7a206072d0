"""Processes killed on the deployed stack: every job still ends, as the README says.

The stack `fanout-kill` is the local template with the variant stack's short writer waits
(12 s timeout and visibility timeout, so a killed batch comes back in 12 s and a dead
writer's ticket may be voided 2 x 12 s + 30 s after it was taken) and a stall time of
60 s, the shortest above both. Its reconciler is the stack's own EventBridge rule, which
MiniStack fires every minute (services/eventbridge.py, `_tick_scheduled_rules`).

Each kill is a test-only entry point deployed over the function's code: it wraps one
ledger call and ends the process with os._exit the first time (a marker file says it
happened), which is a Lambda execution environment dying at that line. A kill from
outside (freezing MiniStack's worker process when the ticket appears) raced a batch that
ends in milliseconds, so it could not say where the process died.

Each test prints how long the job took to end after the kill; each waits a bounded time.
"""

from __future__ import annotations

import io
import time
import uuid
import zipfile
from pathlib import Path
from typing import Any

import pytest

from fanout import ledger
from fanout_cli.local import ministack
from fanout_cli.local.stack import find_stack, job_for_key
from tests.deployed.conftest import Local
from tests.deployed.helpers import scan, wait_until, write_csv

STACK = "fanout-kill"
WAITS = {"writer_timeout_s": "12", "visibility_timeout_s": "55", "stall_after_s": "60"}
REPO_ROOT = Path(__file__).resolve().parents[2]
# How long a job may take to end after a kill: a redelivery (55 s), a dead writer's
# ticket voided (54 s after it was taken), a dead splitter's lease run out (its timeout),
# a stall (60 s without progress), each seen at the reconciler's next minute.
END_WITHIN_S = 240
# The splitter's timeout in test (b): its lease lasts that long (plus 5 s), so a retry
# that is not the dead invocation (a new request id) finds it held until then.
SPLITTER_TIMEOUT_S = 60
GHOST = f"ghost-{uuid.uuid4().hex[:12]}"  # an active-index entry with no job


@pytest.fixture(scope="module")
def kill_stack(local: Local) -> ministack.Deployment:
    deployment = local.deploy(STACK, **WAITS)
    # A stray entry in the active index, for a job that does not exist: only the
    # reconciler removes it (fanout/ledger/reconciler.py), so its going shows that the
    # EventBridge rule ran the writer with RECONCILE_EVENT.
    local.client("dynamodb").put_item(
        TableName=deployment.outputs["LedgerTableName"],
        Item={ledger.PARTITION_KEY: {"S": ledger.ACTIVE_PK}, ledger.SORT_KEY: {"S": GHOST}})
    return deployment


def in_flight(sqs: Any, url: str) -> int:
    return int(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessagesNotVisible"])["Attributes"]["ApproximateNumberOfMessagesNotVisible"])


def ended_job(dynamodb: Any, table: str, job: str, timeout_s: float = END_WITHIN_S) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        item = ledger.get_job(dynamodb, table, job)
        return item if item and item.get("status") in ledger.ENDED else None
    return wait_until(ended, timeout_s=timeout_s, what=f"job {job} to end", every_s=1.0)


WRITER_CRASH_MODULE = '''
"""Test-only: the writer's handler, with the process dying the first time a batch has
taken its ledger ticket and recorded its counts (os._exit: no cleanup, no settle, no
reply to SQS), as if the execution environment were killed there, mid-batch."""
import os

from fanout import ledger
from writer import handler

_record_batch = ledger.record_batch


def _dies_first(*args, **kwargs):
    recorded = _record_batch(*args, **kwargs)
    marker = os.environ["FANOUT_TEST_CRASH_MARKER"]
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(137)
    return recorded


ledger.record_batch = _dies_first
lambda_handler = handler.lambda_handler
'''


def test_a_writer_killed_mid_batch_at_the_end_of_a_job_still_completes_exactly(
        local: Local, kill_stack: ministack.Deployment, tmp_path: Path):
    o = kill_stack.outputs
    s3, dynamodb, sqs = local.client("s3"), local.client("dynamodb"), local.client("sqs")
    table = o["LedgerTableName"]
    # Given the writer dies (once) the moment its batch has taken the job's ledger ticket,
    # before it settles the job or answers SQS (a kill at that line, made deterministic:
    # freezing a worker from outside raced a batch that ends in milliseconds)
    with_crash(local, o["WriterFunctionName"], "writer", "crash_after_record_batch",
               WRITER_CRASH_MODULE, tmp_path / "crashed")
    # And a file of 4 messages: one writer batch, the job's last
    data = tmp_path / "last.csv"
    write_csv(data, 100, tag="kill-w")
    s3.upload_file(str(data), o["BucketName"], "uploads/last.csv")
    job = job_for_key(find_stack(kill_stack.stack_name, local.endpoint_url), "uploads/last.csv")
    wait_until(lambda: (tmp_path / "crashed").exists() or None, timeout_s=90,
               what="the writer to die after taking its ticket")
    killed_at = time.monotonic()
    mid_batch = in_flight(sqs, o["RowsQueueUrl"])
    records = dynamodb.query(
        TableName=table, ConsistentRead=True, KeyConditionExpression="pk = :pk AND begins_with(sk, :log)",
        ExpressionAttributeValues={":pk": {"S": job}, ":log": {"S": ledger.LOG_PREFIX}})["Count"]
    status_then = ledger.get_job(dynamodb, table, job)["status"]
    assert mid_batch > 0, "the dead batch stays in flight until its visibility timeout"
    assert records >= 1, "the dead batch's counts were recorded before it died"

    # Then the job ends (another batch's settle, the redelivery's or the reconciler's), and
    # SQS delivers the dead batch again once its visibility timeout runs out
    ended_job(dynamodb, table, job)
    def drained() -> bool | None:
        attrs = sqs.get_queue_attributes(QueueUrl=o["RowsQueueUrl"], AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        return sum(int(v) for v in attrs.values()) == 0 or None
    wait_until(drained, timeout_s=END_WITHIN_S, what="the dead batch to be delivered again")
    # And, after that replay, the job is COMPLETE with every row counted once and in the table
    item = ended_job(dynamodb, table, job)
    took = time.monotonic() - killed_at
    print(f"\n[kill a] writer killed with {mid_batch} message(s) in flight, {records} log record(s) "
          f"for 1 ticket, job {status_then} then; {item['status']} {took:.0f} s after the kill")
    assert item["status"] == ledger.COMPLETE, item
    assert (item["rows_read"], item["rows_written"], item["rows_rejected"]) == (100, 100, 0), item
    loaded = [i for i in scan(dynamodb, o["TableName"]) if i["offer_id"].startswith("kill-w")]
    assert len(loaded) == 100


CRASH_MODULE = '''
"""Test-only: the splitter's handler, with the process dying the first time the split is
about to record its end (os._exit: no cleanup, no lease released), as if killed there."""
import os

from fanout import ledger
from splitter import handler

_finish_split = ledger.finish_split


def _dies_first(*args, **kwargs):
    marker = os.environ["FANOUT_TEST_CRASH_MARKER"]
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(137)
    return _finish_split(*args, **kwargs)


ledger.finish_split = _dies_first
lambda_handler = handler.lambda_handler
'''


def code_with_crash(package: str, module: str, source: str) -> bytes:
    """A Lambda's asset (the core and its own package, as infra/fanout_stack/code.py
    builds it) plus a crashing entry point."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name in ("fanout", package):
            for path in sorted((REPO_ROOT / name).rglob("*.py")):
                archive.write(path, str(path.relative_to(REPO_ROOT)))
        archive.writestr(f"{module}.py", source)
    return out.getvalue()


def updated(functions: Any, name: str) -> None:
    wait_until(lambda: functions.get_function_configuration(FunctionName=name).get(
        "LastUpdateStatus") in (None, "Successful"), timeout_s=30, what=f"{name} to update")


def with_crash(local: Local, name: str, package: str, module: str, source: str, marker: Path,
               timeout_s: int | None = None) -> None:
    """Deploys `name` with the crashing entry point `module` (dies once, then `marker` exists)."""
    functions = local.client("lambda")
    env = functions.get_function_configuration(FunctionName=name)["Environment"]["Variables"]
    functions.update_function_code(FunctionName=name, ZipFile=code_with_crash(package, module, source))
    updated(functions, name)
    functions.update_function_configuration(
        FunctionName=name, Handler=f"{module}.lambda_handler",
        Environment={"Variables": env | {"FANOUT_TEST_CRASH_MARKER": str(marker)}},
        **({"Timeout": timeout_s} if timeout_s else {}))
    updated(functions, name)


def test_a_splitter_killed_after_its_sends_before_the_split_ends_is_never_left_running(
        local: Local, kill_stack: ministack.Deployment, tmp_path: Path):
    """Run last: it changes the stack's splitter."""
    o = kill_stack.outputs
    s3, dynamodb = local.client("s3"), local.client("dynamodb")
    table, name = o["LedgerTableName"], o["SplitterFunctionName"]
    # Given the splitter dies (once) after it sent every message, before finish_split
    with_crash(local, name, "splitter", "crash_before_finish_split", CRASH_MODULE,
               tmp_path / "crashed", timeout_s=SPLITTER_TIMEOUT_S)
    data = tmp_path / "unfinished.csv"
    write_csv(data, 100, tag="kill-s")
    s3.upload_file(str(data), o["BucketName"], "uploads/unfinished.csv")
    job = job_for_key(find_stack(kill_stack.stack_name, local.endpoint_url), "uploads/unfinished.csv")
    wait_until(lambda: (tmp_path / "crashed").exists() or None, timeout_s=90,
               what="the splitter to die before the split's end")
    killed_at = time.monotonic()

    # Then the job ends as the README says: Lambda's retry of the same invocation resumes
    # the split and finishes it (AWS), or, when the retry is another invocation that finds
    # the dead one's lease (MiniStack gives each try a new request id), the reconciler
    # stalls it once the lease ran out and it made no progress for the stall time. Never
    # RUNNING, nor SPLITTING, for good.
    item = ended_job(dynamodb, table, job)
    took = time.monotonic() - killed_at
    print(f"\n[kill b] splitter died before finish_split; job {item['status']} {took:.0f} s later: "
          f"{item.get('stall_reason', '')} (rows read {item.get('rows_read')}, written "
          f"{item.get('rows_written')}, messages reported {item.get('messages_reported')})")
    if item["status"] == ledger.COMPLETE:
        assert (item["rows_read"], item["rows_written"]) == (100, 100), item
    else:
        assert item["status"] == ledger.STALLED, item
        assert "split stopped" in item["stall_reason"], item
        assert "messages_total" not in item  # the split's end was never recorded
    # The writers wrote every row the splitter had sent, whatever the job's end
    assert len([i for i in scan(dynamodb, o["TableName"]) if i["offer_id"].startswith("kill-s")]) == 100

    # And the stray active entry is gone: MiniStack fired the stack's EventBridge rule
    ghosts = dynamodb.get_item(TableName=table, Key={ledger.PARTITION_KEY: {"S": ledger.ACTIVE_PK},
                                                     ledger.SORT_KEY: {"S": GHOST}}).get("Item")
    assert ghosts is None
