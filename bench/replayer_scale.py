"""dlq-replayer scale: `inspect` and `export` over a DLQ of 100,000 rejected rows.

The real `dlq_replayer.cli.main` runs against `MemorySQS`, an in-memory stand-in for one
standard queue (moto would take minutes to serve 100,000 messages and would measure
itself): ReceiveMessage returns up to 10 visible messages and hides them for their
visibility timeout; ChangeMessageVisibility(Batch), DeleteMessage, SendMessageBatch and
GetQueueAttributes behave as SQS's do; receipt handles are as long as real ones (~400
characters; only the newest is valid; the stand-in keeps none); more than `max_in_flight`
messages in flight is SQS's OverLimit error (120,000 for a standard queue). It records
the most messages it ever had in flight at once.

Each case runs in a child process: the queue is filled first (its memory is the
baseline), then the peak RSS is reset (/proc/self/clear_refs) and the command runs;
the child reports its peak RSS above that baseline (VmHWM) and its CPU
(time.process_time). `python -m bench.replayer_scale [--quick]` prints the table alone.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tempfile
import time
from array import array
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from bench.report import print_alone

REPO = Path(__file__).resolve().parent.parent
ROWS = 100_000
HEADER = ["account", "offer_id", "risk", "region", "amount", "updated_at"]
# Measured once by this bench's child over main at 25f4942 (before the replayer streamed;
# `git archive 25f4942 dlq_replayer fanout` beside this bench, then
# `python -m bench.replayer_scale --child COMMAND 100000 PER`); at 10,000 rows: 33 MB.
BEFORE = {("inspect", 1): "337 MB / 3.8 s", ("inspect", 25): "131 MB / 1.1 s",
          ("export", 1): "372 MB / 5.2 s", ("export", 25): "166 MB / 1.9 s"}
FLAT_MB = 8  # the goal: 100,000 rows within this much of 10,000 rows


class MemorySQS:
    """One standard queue in memory, as the SQS API presents it (see the module doc).

    Its own memory does not grow while the replayer reads (so the bench measures the
    replayer): message i is bodies[i] (None once deleted), hidden until until[i] (0:
    visible) under the receive numbered number[i], in arrays made when it was sent."""

    def __init__(self, max_in_flight: int = 120_000) -> None:
        self.max_in_flight = max_in_flight
        self.index: dict[str, int] = {}
        self.ids: list[str] = []
        self.bodies: list[str | None] = []
        self.until = array("d")
        self.number = array("q")
        self.visible: deque[int] = deque()
        self.in_flight = 0
        self.sent: list[str] = []  # bodies sent to other queues (the rows queue)
        self.peak_in_flight = 0
        self._receives = 0

    def add(self, body: str, queue_url: str = "dlq") -> None:
        if queue_url != "dlq":
            self.sent.append(body)
            return
        i = len(self.ids)
        self.ids.append(f"{i + 1:08d}-0000-4000-8000-{i + 1:012d}")
        self.index[self.ids[i]] = i
        self.bodies.append(body)
        self.until.append(0.0)
        self.number.append(0)
        self.visible.append(i)

    def _restore(self) -> None:
        """Hidden messages whose visibility timeout has passed are visible again."""
        now = time.monotonic()
        for i, until in enumerate(self.until):
            if until and until <= now and self.bodies[i] is not None:
                self.until[i] = 0.0
                self.in_flight -= 1
                self.visible.append(i)

    def receive_message(self, QueueUrl: str, MaxNumberOfMessages: int = 1,  # noqa: N803
                        VisibilityTimeout: int = 30, **_: Any) -> dict[str, Any]:
        if self.in_flight >= self.max_in_flight:
            raise ClientError({"Error": {"Code": "OverLimit", "Message": "too many messages "
                               "in flight"}}, "ReceiveMessage")
        if not self.visible and self.in_flight:
            self._restore()
        out: list[dict[str, Any]] = []
        while self.visible and len(out) < MaxNumberOfMessages:
            i = self.visible.popleft()
            if self.bodies[i] is None or self.until[i]:  # deleted, or hidden again
                continue
            self._receives += 1
            self.until[i], self.number[i] = time.monotonic() + VisibilityTimeout, self._receives
            self.in_flight += 1
            out.append({"MessageId": self.ids[i], "Body": self.bodies[i], "Attributes": {},
                        "ReceiptHandle": f"{self.ids[i]}:{self._receives}:".ljust(400, "r")})
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        return {"Messages": out} if out else {}

    def _held(self, receipt: str) -> int:
        message_id, number, _ = receipt.split(":", 2)
        i = self.index.get(message_id)
        if i is None or self.bodies[i] is None or not self.until[i] or \
                self.number[i] != int(number):
            raise ClientError({"Error": {"Code": "ReceiptHandleIsInvalid",
                               "Message": "stale receipt"}}, "ChangeMessageVisibility")
        return i

    def change_message_visibility(self, QueueUrl: str, ReceiptHandle: str,  # noqa: N803
                                  VisibilityTimeout: int) -> dict[str, Any]:
        i = self._held(ReceiptHandle)
        if VisibilityTimeout:
            self.until[i] = time.monotonic() + VisibilityTimeout
            return {}
        self.until[i] = 0.0
        self.in_flight -= 1
        self.visible.append(i)
        return {}

    def change_message_visibility_batch(self, QueueUrl: str,  # noqa: N803
                                        Entries: list[dict[str, Any]]) -> dict[str, Any]:
        ok, failed = [], []
        for entry in Entries:
            try:
                self.change_message_visibility(QueueUrl, entry["ReceiptHandle"],
                                               entry["VisibilityTimeout"])
                ok.append({"Id": entry["Id"]})
            except ClientError:
                failed.append({"Id": entry["Id"], "Code": "ReceiptHandleIsInvalid",
                               "SenderFault": True})
        return {"Successful": ok, "Failed": failed}

    def delete_message(self, QueueUrl: str, ReceiptHandle: str) -> dict[str, Any]:  # noqa: N803
        try:
            i = self._held(ReceiptHandle)
        except ClientError:  # SQS: a stale receipt may or may not delete; here it does not
            return {}
        self.bodies[i] = None
        self.in_flight -= 1
        return {}

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]  # noqa: N803
                           ) -> dict[str, Any]:
        for entry in Entries:
            self.add(entry["MessageBody"], QueueUrl)
        return {"Successful": [{"Id": e["Id"], "MessageId": "m"} for e in Entries],
                "Failed": []}

    def get_queue_attributes(self, QueueUrl: str, AttributeNames: list[str]  # noqa: N803
                             ) -> dict[str, Any]:
        return {"Attributes": {"ApproximateNumberOfMessages":
                               str(len(self.visible)),
                               "ApproximateNumberOfMessagesNotVisible": str(self.in_flight)}}


def fill(sqs: MemorySQS, rows: int, per_message: int, jobs: int = 4) -> None:
    """`rows` rejected rows, `per_message` to a DLQ message, across `jobs` jobs."""
    from fanout.contract import KIND_REJECTED, Rejection, RowsMessage, Source

    source = Source("fanout-uploads", "uploads/offers.csv", "etag1")
    reasons = ["empty_key", "bad_number", "column_count", "bad_bool"]
    for seq, start in enumerate(range(0, rows, per_message)):
        lines = range(start + 2, min(start + per_message, rows) + 2)
        sqs.add(RowsMessage(
            f"job-{seq % jobs}", seq, source, HEADER, [], [], kind=KIND_REJECTED,
            rejections=[Rejection(line, [f"acct-{line:09d}", str(line), "low", "eu-west-1",
                                         f"{line * 1.25:.2f}", "2026-12-01T10:00:00Z"],
                                  reasons[line % len(reasons)], f"line {line}: bad value")
                        for line in lines]).encode())


def _kb(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(command: str, rows: int, per_message: int) -> dict[str, Any]:
    """Fill a queue, then run the real `dlq-replayer COMMAND` once and measure it."""
    from dlq_replayer.cli import main
    from dlq_replayer.target import Target

    sqs = MemorySQS()
    fill(sqs, rows, per_message)
    with tempfile.TemporaryDirectory() as tmp:
        argv = [command, "--json"] + (["--out", f"{tmp}/rows.csv"] if command == "export" else [])
        out = io.StringIO()
        with open("/proc/self/clear_refs", "w") as f:  # reset VmHWM to the current RSS
            f.write("5")
        before_kb, cpu = _kb("VmRSS:"), time.process_time()
        code = main(argv, stdout=out, stderr=io.StringIO(),
                    target=Target(sqs, "dlq", "rows", wait_s=0))
        spent = time.process_time() - cpu
        peak_mb = max(0, _kb("VmHWM:") - before_kb) / 1024
    result = json.loads(out.getvalue())
    return {"code": code, "rows": result["rows"], "peak_mb": peak_mb, "cpu_s": spent,
            "peak_in_flight": sqs.peak_in_flight}


@dataclass(frozen=True)
class Case:
    command: str
    rows: int
    per_message: int
    code: int
    rows_seen: int
    peak_mb: float
    cpu_s: float
    peak_in_flight: int


def measure(command: str, rows: int, per_message: int) -> Case:
    done = subprocess.run([sys.executable, "-m", "bench.replayer_scale", "--child", command,
                           str(rows), str(per_message)], cwd=REPO, capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"replayer child failed:\n{done.stderr[-2000:]}")
    r = json.loads(done.stdout.strip().splitlines()[-1])
    return Case(command, rows, per_message, r["code"], r["rows"], r["peak_mb"], r["cpu_s"],
                r["peak_in_flight"])


def add_rows(rows: list[tuple[str, str, str, str, str]], notes: list[str], quick: bool) -> None:
    """Run the cases and add their rows and note to `python -m bench`'s table."""
    from bench.report import goal

    big = ROWS // 10 if quick else ROWS
    for command in ("inspect", "export"):
        for per in (1, 25):
            small, large = measure(command, big // 10, per), measure(command, big, per)
            assert large.code == 0 and large.rows_seen == big, large
            rows.append((
                f"dlq-replayer {command}: {big:,} rejected rows, {per} per DLQ message "
                f"({big // per:,} messages): peak RSS above baseline / CPU",
                f"{large.peak_mb:.1f} MB / {large.cpu_s:.1f} s "
                f"(at {big // 10:,} rows: {small.peak_mb:.1f} MB)",
                f"before: {BEFORE.get((command, per), 'not measured')}",
                f"{large.peak_in_flight:,} in flight at most",
                goal(large.peak_mb - small.peak_mb <= FLAT_MB,
                     f"flat: within {FLAT_MB} MB of {big // 10:,} rows"),
            ))
    notes.append(
        "dlq-replayer: the real CLI over an in-memory SQS stand-in (bench/replayer_scale.py); "
        "'before' was measured once on main at 25f4942 over the same DLQ (it held every "
        "message and parsed row until the run ended).")


def main() -> None:
    """`python -m bench.replayer_scale [--quick]`: these rows alone."""
    print_alone(add_rows)

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
    else:
        main()
