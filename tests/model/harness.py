"""A model of the pipeline around the jobs ledger, to check the ledger's protocol (the
docstring of fanout/ledger.py) against faults, one seed at a time (issue 21, item 5).

What runs for real: the ledger's own code, on moto's DynamoDB held to the AWS contract by
tests/strict_aws.py. The splitter's steps as splitter/split.py takes them (`start_job`,
then `finish_split` and `settle_job`, or `settle_job` alone on "skip"); a writer's as
writer/load.py's `load_batch` takes them once its rows are written (`record_batch`, then
`settle_job` with the time the invocation has left); `settle_job`'s publish and
`mark_published`; and `fanout.runtime.reconcile_jobs` every 60 s, when it exists.

What is modelled, everything else:

* Time: one global clock that jumps from event to event, so nothing really sleeps. Each
  invocation reads it through its own skew, up to ±5 s. A ledger call takes milliseconds
  (now and then seconds); the ledger's `sleep` waits in simulated time. Invocations are
  threads that run one at a time and hand over at every ledger call and every wait, so
  they interleave at call boundaries, in the order the seed's events dictate.
* Lambda: an invocation still running at its function's timeout is killed. The splitter
  is invoked asynchronously: a failed attempt is retried 1 and then 2 minutes later with
  the same request id (the split lease's owner; its lease is its lifetime plus 5 s, as
  splitter/handler.py asks), then lands in the failure destination, which the operator
  redrives as a new invocation. 10% of seeds get a duplicate S3 event at a random time.
* SQS, with DEFAULT_CONFIG's numbers: receive counts, the visibility timeout, the DLQ
  past maxReceiveCount, batches of 1 to 10, 10% duplicate deliveries (most soon after,
  some a minute or two later). A writer's messages are deleted when it returns, except
  those it reported failed; when it raised or was killed, all of them come back after
  the visibility timeout.
* Rows: a message is 25 rows with fixed counts (written, rejected, superseded) drawn per
  seed. Writing them takes time and can fail (throttled past the budget; in a storm, every
  write fails, so messages reach the DLQ). A message with rejected rows leaves a
  "rejected" entry in the DLQ; operator redrives at random times send those back as
  replays named as the replayer names them (`seq~replay_id`), whose counts, fixed per
  replay id, move rows out of rejected (some rows may be rejected again).
* The job: 3 to 40 messages, most of them few. The ledger's sizes shrink with it, per
  seed (SHARD_SEQS, FOLD_MESSAGES, LOG_PAGE and, with small fold steps, FOLD_BUDGET_S),
  so a small job spans several shards and fold steps and a fold's budget holds a few.
* Faults in the ledger's calls (`FaultyLedger`), with per-seed rates: a throttle (the
  ClientError botocore raises once its retries are spent), a kill before the call, a
  kill after a write committed, and a lost reply: the write committed, botocore sends the
  same request again and the caller gets that second outcome. The retry of a transaction
  carries the first try's ClientRequestToken and DynamoDB does not apply it twice within
  10 minutes; moto ignores the token, so the layer does that. Now and then a call is
  slow (seconds: botocore's retries after throttles that then succeeded).

After the seed's fault period, no more faults, duplicates or slow writes: deliveries,
redrives of what failed and the reconciler go on until nothing is left to do, then (with
a reconciler) for a quiet tail. Then the checks: the job is COMPLETE with exact counts;
no completion before every message was counted; every published summary sums to the rows
read; at least one summary was published, and more than one only after a publisher died
between its publish and its `mark_published` (the README's at-least-once).
"""

from __future__ import annotations

import functools
import heapq
import itertools
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import astuple, dataclass, replace
from typing import Any
from unittest import mock

from botocore.exceptions import ClientError

import fanout.runtime
from fanout import ledger
from fanout.aws import Clients
from fanout.contract import REPLAY_MARK, replay_id
from fanout.ledger import MessageCounts
from fanout.mapping import Spec
from fanout.runtime import Runtime, settle_job
from fanout.settings import DEFAULT_CONFIG, ROWS_PER_MESSAGE, Settings
from tests.strict_aws import Faults, Record, StrictDynamoDB
from writer.load import learn_cancels

JOB = "model-job"
SOURCE = "s3://fanout-uploads/uploads/model.csv"
TOPIC = "arn:aws:sns:us-east-1:123456789012:fanout-jobs"
START = 1_800_000_000.0  # the global clock's origin (2027)
SKEW_S = 5.0  # an invocation's clock is the global one plus up to this, either way
ASYNC_RETRY_DELAYS_S = (60.0, 120.0)  # Lambda's retries of a failed asynchronous invocation
RECONCILE_EVERY_S = 60.0
CANCEL_SHARE = 0.3  # seeds in which an operator cancels the job
TTL_SWEEP_EVERY_S = 60.0
RECONCILER_TIMEOUT_S = 900.0  # the Lambda maximum, until the stack names the reconciler's
FAILURE_REDRIVE_EVERY_S = 600.0  # after the fault period the operator redrives what failed
# With a reconciler: how long it runs once nothing else is left: long enough for a dead
# splitter's lease (the splitter's timeout) and then STALL_AFTER_S to pass.
QUIET_TAIL_S = 2400.0
# The model's stall time: above the visibility timeout, as synth requires (an hour in AWS).
STALL_AFTER_S = 600
MAX_QUIET_S = 6 * 3600.0  # a seed still busy this long after its faults stopped fails
IDEMPOTENCY_WINDOW_S = 600.0  # DynamoDB's ClientRequestToken window

WRITES = frozenset({"put_item", "update_item", "delete_item", "transact_write_items",
                    "batch_write_item"})
READS = frozenset({"get_item", "query", "scan", "batch_get_item"})


class Killed(BaseException):  # noqa: N818  (what it is, not an error)
    """The invocation's sandbox died (a crash, or Lambda's timeout): nothing it does after
    this takes effect. A BaseException, so no `except Exception` in the product code can
    swallow it; a `finally` or `except BaseException` that makes a call is killed again."""


# ------------------------------------------------------------------ simulated time

class Sim:
    """The global clock and its events. One thread runs at a time: this one, or the
    invocation it handed the baton to, until that invocation waits or ends."""

    def __init__(self, start: float) -> None:
        self.now = start
        self.current: Invocation | None = None
        self.live: set[Invocation] = set()
        self._events: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._baton = threading.Semaphore(0)

    def at(self, when: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._events, (max(when, self.now), next(self._order), action))

    def run(self, until: float, stop: Callable[[], bool] | None = None) -> None:
        """Run events up to `until`, or until `stop()` says so."""
        while self._events and self._events[0][0] <= until:
            if stop is not None and stop():
                return
            when, _, action = heapq.heappop(self._events)
            self.now = when
            action()
        if stop is None or not stop():
            self.now = max(self.now, until)

    def shutdown(self) -> None:
        """Kill every invocation still alive, so no thread outlives the seed."""
        for invocation in list(self.live):
            invocation.dead = True
            invocation.on_end = lambda _: None
            invocation.step()


class Invocation:
    """One Lambda invocation: `body(self)` on a thread of its own, run in turns."""

    def __init__(self, sim: Sim, name: str, request_id: str, lifetime_s: float, skew_s: float,
                 body: Callable[[Invocation], Any], on_end: Callable[[Invocation], None]) -> None:
        self.sim, self.name, self.request_id = sim, name, request_id
        self.deadline = sim.now + lifetime_s
        self.skew_s = skew_s
        self.body, self.on_end = body, on_end
        self.result: Any = None
        self.error: BaseException | None = None
        self.dead = False
        self.ended = False
        self._go = threading.Semaphore(0)
        threading.Thread(target=self._main, name=name, daemon=True).start()
        sim.live.add(self)
        sim.at(sim.now, self.step)

    def clock(self) -> float:
        """This invocation's wall clock: the global one, skewed."""
        return self.sim.now + self.skew_s

    def remaining_s(self) -> float:
        """What Lambda's context says is left (its own timer, not the skewed clock)."""
        return max(0.0, self.deadline - self.sim.now)

    def wait(self, seconds: float) -> None:
        """Let `seconds` of simulated time pass for this invocation (others run meanwhile).
        Lambda kills it at its deadline."""
        if self.dead:
            raise Killed(f"{self.name} is dead")
        self.sim.at(min(self.sim.now + seconds, self.deadline), self.step)
        self.sim._baton.release()
        self._go.acquire()
        if self.dead:
            raise Killed(f"{self.name} is dead")
        if self.sim.now >= self.deadline:
            self.dead = True
            raise Killed(f"{self.name}: Lambda ended it at its timeout")

    def kill(self, why: str) -> None:
        self.dead = True
        raise Killed(f"{self.name}: {why}")

    def step(self) -> None:
        """(The simulation's thread.) Run the invocation until it waits or ends."""
        self.sim.current = self
        self._go.release()
        self.sim._baton.acquire()
        self.sim.current = None
        if self.ended:
            self.sim.live.discard(self)
            self.on_end(self)

    def _main(self) -> None:
        self._go.acquire()
        try:
            self.result = self.body(self)
        except BaseException as exc:
            self.error = exc
        finally:
            self.ended = True
            self.sim._baton.release()


# ------------------------------------------------------------------ the fault layer

@dataclass(frozen=True)
class FaultRates:
    """Chances per ledger call while the seed's faults are on."""

    throttle: float = 0.0
    kill_before: float = 0.0
    kill_after: float = 0.0  # after a write committed
    lost_reply: float = 0.0  # of a write that committed: botocore sends it again
    slow: float = 0.0  # the call takes seconds (botocore retried throttles, then succeeded)

    def scaled(self, factor: float) -> FaultRates:
        return FaultRates(*(rate * factor for rate in astuple(self)))


BASE_RATES = FaultRates(throttle=0.01, kill_before=0.005, kill_after=0.005, lost_reply=0.01,
                        slow=0.02)
NO_FAULTS = FaultRates()


@dataclass(frozen=True)
class Fault:
    at: float
    invocation: str
    kind: str  # "slow", "throttle", "killed before", "killed after", "lost reply"
    call: str  # call_name()

    def __str__(self) -> str:
        return f"{self.kind} {self.call}"


def call_name(op: str, params: dict[str, Any]) -> str:
    """A ledger call as the fault log names it: the item and what the call does, e.g.
    `tally ADD tickets` (a writer's ticket) or `fold SET #cursor` (a fold step's save)."""
    if op == "transact_write_items":  # named by what it does (fanout/ledger's transactions)
        text = str(params["TransactItems"])
        if "cancelled_by" in text:
            return "cancel transaction"
        if "completed_at" in text:
            return "completion transaction"
        if "stalled_at" in text:  # (it also removes summary_published: not a publish mark)
            return "stall transaction"
        if "messages_total = :m" in text:
            return "split end transaction"
        if "attribute_not_exists(pk)" in text:
            return "job start transaction"
        return "transaction"
    if op in ("query", "scan", "batch_get_item"):
        values = params.get("ExpressionAttributeValues", {})
        prefixes = [v["S"].rstrip("#") for name, v in values.items() if name != ":pk" and "S" in v]
        return f"{op} {prefixes[0].split('#')[0]}" if prefixes else op
    key = params.get("Key") or params.get("Item") or {}
    kind = key.get(ledger.SORT_KEY, {}).get("S", "").split("#", 1)[0]
    if op == "update_item":
        return f"{kind} {' '.join(params['UpdateExpression'].replace(',', ' ').split()[:2])}"
    if op == "put_item":
        item = params["Item"]
        return f"{kind} {'record' if 'm' in item else 'void' if 'void' in item else 'put'}"
    return f"{op} {kind}"


def _operation(op: str) -> str:
    return "".join(word.title() for word in op.split("_"))


class FaultyLedger:
    """The ledger table's client as the model's invocations see it: every call takes
    simulated time and, while faults are on, may be throttled, kill its invocation before
    or after it commits, or lose its reply (see the module docstring)."""

    def __init__(self, ddb: StrictDynamoDB, pipeline: Pipeline, rng: random.Random) -> None:
        self._ddb, self._pipeline, self._rng = ddb, pipeline, rng
        self._tokens: dict[str, float] = {}  # ClientRequestToken -> when its call committed
        self._token_numbers = itertools.count(1)
        self.faults: list[Fault] = []
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        if name in WRITES or name in READS:
            return lambda **params: self._call(name, params)
        return getattr(self._ddb, name)

    def get_paginator(self, name: str) -> _Paginator:
        return _Paginator(getattr(self, name))

    def _call(self, op: str, params: dict[str, Any]) -> Any:
        pipeline, rng = self._pipeline, self._rng
        invocation = pipeline.sim.current
        assert invocation is not None, f"{op} outside an invocation"
        rates = pipeline.rates()
        name = call_name(op, params)
        self.calls[name] += 1
        latency = rng.uniform(0.002, 0.02)
        if rates.slow and rng.random() < rates.slow:
            latency += rng.uniform(0.5, 5.0)
            self._fault(invocation, "slow", name)
        invocation.wait(latency)
        if rates.throttle and rng.random() < rates.throttle:
            self._fault(invocation, "throttle", name)
            raise self._throttled(op, params)
        if rates.kill_before and rng.random() < rates.kill_before:
            self._fault(invocation, "killed before", name)
            invocation.kill(f"killed before {name}")
        if op == "transact_write_items" and "ClientRequestToken" not in params:
            # botocore makes one token per API call and reuses it on its retries
            params = {**params, "ClientRequestToken": f"token-{next(self._token_numbers)}"}
        result, error, applied = self._send(op, params)
        if not applied:
            if error is not None:
                raise error
            return result
        pipeline.committed(invocation, name, params, result)
        if rates.kill_after and rng.random() < rates.kill_after:
            self._fault(invocation, "killed after", name)
            invocation.kill(f"killed after {name} committed")
        if rates.lost_reply and rng.random() < rates.lost_reply:
            self._fault(invocation, "lost reply", name)
            invocation.wait(rng.uniform(0.05, 0.5))  # botocore's backoff before it retries
            result, error, applied = self._send(op, params)
            if applied:
                pipeline.committed(invocation, name, params, result)
            if error is not None:
                raise error
        return result

    def _send(self, op: str, params: dict[str, Any]) -> tuple[Any, ClientError | None, bool]:
        """One request as DynamoDB answers it: (result, error, whether a write applied)."""
        token = params.get("ClientRequestToken")
        now = self._pipeline.sim.now
        if token is not None and now - self._tokens.get(token, -IDEMPOTENCY_WINDOW_S) < IDEMPOTENCY_WINDOW_S:
            return {}, None, False  # the same transaction again: success, not applied twice
        try:
            result = getattr(self._ddb, op)(**params)
        except ClientError as exc:
            return None, exc, False
        if token is not None:
            self._tokens[token] = now
        return result, None, op in WRITES

    def _fault(self, invocation: Invocation, kind: str, name: str) -> None:
        fault = Fault(self._pipeline.sim.now, invocation.name, kind, name)
        self.faults.append(fault)
        self._pipeline.note(f"{invocation.name}: {fault}")

    def _throttled(self, op: str, params: dict[str, Any]) -> ClientError:
        if op == "transact_write_items":  # a transaction reports its throttled item
            reasons = [{"Code": "None"} for _ in params["TransactItems"]]
            reasons[self._rng.randrange(len(reasons))] = {
                "Code": "ThrottlingError", "Message": "Throughput exceeds the current capacity"}
            return ClientError({"Error": {"Code": "TransactionCanceledException",
                                          "Message": "Transaction cancelled (injected throttle)"},
                                "CancellationReasons": reasons,
                                "ResponseMetadata": {"HTTPStatusCode": 400}}, _operation(op))
        return ClientError({"Error": {"Code": "ProvisionedThroughputExceededException",
                                      "Message": "injected: throughput exceeded (retries spent)"},
                            "ResponseMetadata": {"HTTPStatusCode": 400}}, _operation(op))


class _Paginator:
    """`get_paginator` through the fault layer (botocore's would call the client beneath)."""

    def __init__(self, call: Callable[..., Any]) -> None:
        self._call = call

    def paginate(self, **params: Any) -> Iterator[dict[str, Any]]:
        while True:
            page = self._call(**params)
            yield page
            if "LastEvaluatedKey" not in page:
                return
            params = {**params, "ExclusiveStartKey": page["LastEvaluatedKey"]}


# ------------------------------------------------------------------ the seed's plan

@dataclass(frozen=True)
class Message:
    message_id: str
    seq: int
    counts: MessageCounts
    rejected_lines: tuple[int, ...]  # the lines of its rejected rows: its DLQ entry's


@dataclass(frozen=True)
class Plan:
    """What a seed draws before it runs."""

    messages: tuple[Message, ...]
    shard_seqs: int
    fold_messages: int
    log_page: int
    fold_budget_s: float
    concurrency: int
    rates: FaultRates
    fault_period_s: float
    storm: tuple[float, float] | None  # every row write fails in this span (DLQ traffic)
    redrives_at: tuple[float, ...]  # operator redrives of the whole DLQ, seconds from start
    duplicate_event_at: float | None
    # An operator's `fanout cancel`, seconds from the start (drawn by its own generator, so
    # a seed without one runs as it did before cancels existed).
    cancel_at: float | None = None

    @classmethod
    def draw(cls, rng: random.Random) -> Plan:
        messages = []
        for seq in range(3 + int(37 * rng.random() ** 3)):  # 3 to 40, most of them small
            rejected = 0 if rng.random() < 0.7 else rng.randint(1, 5)
            superseded = 0 if rng.random() < 0.8 else rng.randint(1, 3)
            lines = sorted(seq * ROWS_PER_MESSAGE + 2 + i
                           for i in rng.sample(range(ROWS_PER_MESSAGE), rejected))
            messages.append(Message(str(seq), seq, MessageCounts(
                ROWS_PER_MESSAGE - rejected - superseded, rejected, superseded), tuple(lines)))
        fault_period_s = rng.uniform(120.0, 900.0)
        storm = None
        if rng.random() < 0.15:
            begin = rng.uniform(0.0, 60.0)
            storm = (begin, begin + rng.uniform(1200.0, 2400.0))
            fault_period_s = max(fault_period_s, storm[1])
        redrives = tuple(sorted(rng.uniform(0.0, 90.0) if rng.random() < 0.4
                                else rng.uniform(90.0, fault_period_s + 900.0)
                                for _ in range(rng.choice((0, 0, 1, 2)))))
        # The ledger's sizes shrunk with the job, so a small job spans several shards and
        # fold steps, and a fold's budget holds a few steps, as it holds a big job's few
        # hundred (a step here is a few calls of milliseconds each).
        fold_messages = rng.choice((4, 20_000, 20_000))
        return cls(
            messages=tuple(messages),
            shard_seqs=rng.choice((8, 16, 4096)),
            fold_messages=fold_messages,
            log_page=rng.choice((2, 100)),
            fold_budget_s=rng.choice((0.2, 0.5, ledger.FOLD_BUDGET_S)) if fold_messages < 10
            else ledger.FOLD_BUDGET_S,
            concurrency=rng.randint(1, 4),
            rates=BASE_RATES.scaled(rng.choice((0.0, 0.5, 1.0, 1.0, 2.0))),
            fault_period_s=fault_period_s,
            storm=storm,
            redrives_at=redrives,
            duplicate_event_at=rng.uniform(0.0, fault_period_s + 600.0) if rng.random() < 0.1 else None,
        )

    def describe(self) -> str:
        return (f"{len(self.messages)} messages, SHARD_SEQS={self.shard_seqs}, "
                f"FOLD_MESSAGES={self.fold_messages}, LOG_PAGE={self.log_page}, "
                f"FOLD_BUDGET_S={self.fold_budget_s}, "
                f"{self.concurrency} writers, rates {self.rates}, faults for "
                f"{self.fault_period_s:.0f} s, storm {self.storm}, redrives at "
                f"{[round(t) for t in self.redrives_at]}, duplicate S3 event at {self.duplicate_event_at}, "
                f"cancel at {self.cancel_at}")


# ------------------------------------------------------------------ the pipeline

@dataclass(eq=False)
class Copy:
    """One copy of a message in the rows queue (a duplicate delivery is another copy)."""

    message: Message
    visible_at: float
    receives: int = 0


@dataclass(frozen=True)
class Published:
    at: float
    by: str  # the invocation
    summary: dict[str, Any]
    replays_sent: int  # how many replays had been sent when it was published


@dataclass(frozen=True)
class Problem:
    kind: str  # what failed, stable across seeds (the report groups by it)
    detail: str


class Topic:
    """The SNS topic: records every summary it takes."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline
        self.published: list[Published] = []

    def publish(self, **params: Any) -> dict[str, Any]:
        pipeline = self._pipeline
        invocation = pipeline.sim.current
        assert invocation is not None
        invocation.wait(pipeline.rng.uniform(0.01, 0.05))
        summary = json.loads(params["Message"])
        self.published.append(Published(pipeline.sim.now, invocation.name, summary,
                                        len(pipeline.replays_sent)))
        pipeline.note(f"{invocation.name}: published {summary}")
        return {"MessageId": str(len(self.published))}


@dataclass(frozen=True)
class FoldSeen:
    """What one `ledger.fold` call returned, for the diagnosis."""

    invocation: str
    budget_s: float
    outcome: str  # "state", "lease held", or the exception's name
    cursor: int | None = None
    tickets: int | None = None
    stalled: int | None = None


class Pipeline:
    """One seed's world: the job, its messages, the queues, the Lambdas and the ledger."""

    def __init__(self, seed: int, ddb: Any, table: str, *, trace: bool = False) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.plan = Plan.draw(self.rng)
        self.cancel_rng = random.Random(f"cancel-{seed}")
        if self.cancel_rng.random() < CANCEL_SHARE:
            self.plan = replace(self.plan, cancel_at=self.cancel_rng.uniform(
                0.0, 2.0 if self.cancel_rng.random() < 0.3 else self.plan.fault_period_s + 300.0))
        # Writer processes (warm containers), each with what it learned of cancels.
        self.containers: list[dict[str, None]] = [{} for _ in range(self.plan.concurrency)]
        self.cancel_committed: float | None = None  # when the cancel transaction took effect
        self.cancel_outcome: ledger.CancelOutcome | None = None
        self.dropped = 0  # copies the writers dropped as cancelled
        self.log_records: dict[str, str] = {}  # every committed log record's entries, by its sk
        self.table = table
        self.sim = Sim(START)
        self.faulty = True
        self.trace: list[str] | None = [] if trace else None
        self.record = Record()
        self.raw = ddb
        strict = StrictDynamoDB(ddb, Faults(), self.record, random.Random(0), threading.Lock())
        self.ddb = FaultyLedger(strict, self, random.Random(f"faults-{seed}"))
        self.topic = Topic(self)
        self.clients = Clients(s3=None, sqs=None, dynamodb=self.ddb, sns=self.topic)
        self.spec = Spec.default()
        self.settings = Settings.for_pipeline(
            replace(DEFAULT_CONFIG, stall_after_s=STALL_AFTER_S), self.spec,
            table_name="fanout-items", ledger_table_name=table,
            rows_queue_url="", dlq_url="", bucket="", topic_arn=TOPIC)
        self.reconcile = getattr(fanout.runtime, "reconcile_jobs", None)
        self.queue: list[Copy] = []
        self.failed: list[Message] = []  # DLQ: rows messages past maxReceiveCount
        self.rejected: list[Message] = []  # DLQ: the rejected rows of a message written
        self.split_failures: list[str] = []  # the splitter's failure destination
        self.replays: dict[str, Message] = {}  # every replay made, by id
        self.replays_sent: list[str] = []  # distinct replay ids sent to the rows queue
        self.replays_recorded: set[str] = set()  # replay ids a committed log record holds
        self.writers = 0
        self.pending = 0  # scheduled actions that still have work to bring
        self.numbers = itertools.count(1)
        self.problems: list[Problem] = []
        self.marked: dict[str, float] = {}  # invocation -> when its mark_published committed
        self.completed_at: float | None = None
        self.folds: list[FoldSeen] = []
        self.ticket_takers: dict[int, str] = {}  # log ticket -> the invocation whose ADD took it
        self.fold_owners: dict[str, str] = {}  # a fold's lease owner -> its invocation
        self._poll_at: float | None = None
        # Half the seeds delete folded log records (TTL), from their own random stream.
        self.ttl_rng = random.Random(f"ttl-{seed}")
        self.ttl_sweeps = self.ttl_rng.random() < 0.5
        self.ttl_swept = 0  # tickets up to this one were offered to the sweep
        self.ttl_deleted = 0
        base = [0, 0, 0]
        for message in self.plan.messages:
            base = [a + b for a, b in zip(base, message.counts.values()[:3], strict=True)]
        self.base = MessageCounts(*base)
        self.rows_read = ROWS_PER_MESSAGE * len(self.plan.messages)

    # -------------------------------------------------------------- running a seed

    def run(self) -> None:
        plan = self.plan
        real_fold = ledger.complete.fold

        def fold(*args: Any, **kwargs: Any) -> ledger.FoldState | None:
            name = self.sim.current.name if self.sim.current else "?"
            self.fold_owners[str(kwargs.get("owner"))] = name
            budget = float(kwargs.get("budget_s", ledger.FOLD_BUDGET_S))
            try:
                state = real_fold(*args, **kwargs)
            except BaseException as exc:
                self.folds.append(FoldSeen(name, budget, type(exc).__name__))
                raise
            self.folds.append(FoldSeen(name, budget, "lease held") if state is None else
                              FoldSeen(name, budget, "state", state.cursor, state.tickets, state.stalled))
            return state

        # The ledger's tunables live in ledger.layout; FOLD_BUDGET_S is read by the runtime
        # (through the door) and the reconciler; `fold` is called by the completion module.
        from fanout.ledger import complete, reconciler
        with mock.patch.multiple(ledger.layout, SHARD_SEQS=plan.shard_seqs,
                                 FOLD_MESSAGES=plan.fold_messages, LOG_PAGE=plan.log_page), \
                mock.patch.multiple(ledger, FOLD_BUDGET_S=plan.fold_budget_s), \
                mock.patch.multiple(reconciler, FOLD_BUDGET_S=plan.fold_budget_s), \
                mock.patch.multiple(complete, fold=fold):
            try:
                self.invoke_splitter("the S3 event", f"s3-{next(self.numbers)}")
                if plan.duplicate_event_at is not None:
                    self.later(plan.duplicate_event_at, lambda: self.invoke_splitter(
                        "a duplicate S3 event", f"s3-{next(self.numbers)}"))
                for at in plan.redrives_at:
                    self.later(at, lambda: self.redrive(everything=True))
                if plan.cancel_at is not None:
                    self.later(plan.cancel_at, self.cancel)
                if self.reconcile is not None:
                    self.sim.at(START + RECONCILE_EVERY_S, self.reconcile_tick)
                if self.ttl_sweeps:
                    self.sim.at(START + TTL_SWEEP_EVERY_S, self.ttl_tick)
                self.sim.run(START + plan.fault_period_s)
                self.faulty = False
                self.note("faults stop")
                self.sim.at(self.sim.now, self.failure_redrive_tick)
                self.sim.run(self.sim.now + MAX_QUIET_S, stop=lambda: not self.busy())
                if self.busy():
                    self.problems.append(Problem("did not quiesce", self.state_line()))
                elif self.reconcile is not None:  # its turn: until the job has ended, or the tail
                    tail_end = self.sim.now + QUIET_TAIL_S
                    while self.sim.now < tail_end and not self.ended_and_published():
                        self.sim.run(min(tail_end, self.sim.now + RECONCILE_EVERY_S))
            finally:
                self.sim.shutdown()

    def ended_and_published(self) -> bool:
        """The job is in a final state, its summary recorded as published, no invocation alive."""
        job = self.raw.get_item(TableName=self.table, Key=ledger.layout._key(JOB, ledger.JOB_SK),
                                ConsistentRead=True).get("Item", {})
        return not self.sim.live and "summary_published" in job and \
            job.get("status", {}).get("S") not in (ledger.SPLITTING, ledger.RUNNING, ledger.CANCELLING)

    def rates(self) -> FaultRates:
        return self.plan.rates if self.faulty else NO_FAULTS

    def busy(self) -> bool:
        return bool(self.queue or self.sim.live or self.failed or self.split_failures
                    or self.pending)

    def later(self, delay: float, action: Callable[[], None]) -> None:
        """An action that brings work (a retry, an event, a redrive) `delay` s from now."""
        self.pending += 1

        def run() -> None:
            self.pending -= 1
            action()
        self.sim.at(self.sim.now + delay, run)

    def note(self, text: str) -> None:
        if self.trace is not None:
            self.trace.append(f"{self.sim.now - START:9.3f} {text}")

    def state_line(self) -> str:
        return (f"queue {len(self.queue)}, DLQ {len(self.failed)} failed + {len(self.rejected)} "
                f"rejected, split failures {len(self.split_failures)}, live "
                f"{sorted(i.name for i in self.sim.live)}, pending {self.pending}")

    def invoke(self, name: str, request_id: str, lifetime_s: float,
               body: Callable[[Invocation], Any], on_end: Callable[[Invocation], None]) -> Invocation:
        skew = self.rng.uniform(-SKEW_S, SKEW_S)
        self.note(f"{name} starts (skew {skew:+.2f} s)")
        return Invocation(self.sim, name, request_id, lifetime_s, skew, body, on_end)

    def runtime(self, invocation: Invocation) -> Runtime:
        return Runtime(self.settings, self.spec, self.clients, clock=invocation.clock,
                       sleep=invocation.wait)

    def ended(self, invocation: Invocation) -> None:
        """Note how an invocation ended; an error the pipeline does not expect is a problem."""
        error = invocation.error
        self.note(f"{invocation.name} ends: {error!r}" if error else f"{invocation.name} ends")
        # AWS errors, a voided ticket, and a reconciler run that could not visit every job
        # (an AWS error each) fail an invocation as the pipeline expects.
        if error is None or isinstance(error, Killed | ClientError | ledger.TicketVoided
                                       | ledger.ReconcileIncomplete):
            return
        self.problems.append(Problem(f"an invocation raised {type(error).__name__}",
                                     f"{invocation.name}: {error!r}"))

    # -------------------------------------------------------------- the splitter

    def invoke_splitter(self, event: str, request_id: str, attempt: int = 1) -> None:
        lifetime = float(DEFAULT_CONFIG.splitter_timeout_s)

        def split(invocation: Invocation) -> str:
            runtime = self.runtime(invocation)
            claim, _ = ledger.start_job(
                self.ddb, self.table, JOB, source_uri=SOURCE, table=self.settings.table_name,
                owner=request_id, lease_s=invocation.remaining_s() + 5, clock=invocation.clock)
            self.note(f"{invocation.name}: start_job says {claim}")
            if claim == "skip":
                settle_job(runtime, ledger.raw_job(self.ddb, self.table, JOB))
                return claim
            messages = self.plan.messages
            sent = len(messages)
            for start in range(0, len(messages), 10):  # SendMessageBatch, 10 a call
                invocation.wait(self.rng.uniform(0.01, 0.05))
                for message in messages[start:start + 10]:
                    self.send(message)
                if self.plan.cancel_at is not None and start + 10 < len(messages):
                    # A checkpoint after each batch (splitter/split.py's, after the sends
                    # drained): a cancel stops the split there, with what it sent.
                    try:
                        ledger.save_checkpoint(self.ddb, self.table, JOB, request_id,
                                               json.dumps({"messages": start + 10}),
                                               clock=invocation.clock)
                    except ledger.SplitCancelled:
                        sent = start + 10
                        self.note(f"{invocation.name}: cancelled after {sent} messages")
                        break
            job_item = ledger.finish_split(
                self.ddb, self.table, JOB, rows_read=ROWS_PER_MESSAGE * sent, messages_total=sent,
                header=["account", "offer_id"], error_location=f"s3://fanout-uploads/errors/{JOB}/",
                clock=invocation.clock)
            settle_job(runtime, job_item)
            return claim

        def split_ended(invocation: Invocation) -> None:
            self.ended(invocation)
            if invocation.error is None:
                return
            if attempt <= len(ASYNC_RETRY_DELAYS_S):  # Lambda retries, same request id
                self.later(ASYNC_RETRY_DELAYS_S[attempt - 1],
                           lambda: self.invoke_splitter(event, request_id, attempt + 1))
            else:
                self.split_failures.append(event)

        self.invoke(f"splitter {request_id} try {attempt} ({event})", request_id, lifetime,
                    split, split_ended)

    # -------------------------------------------------------------- SQS and the writers

    def send(self, message: Message, delay: float = 0.0) -> None:
        self.queue.append(Copy(message, self.sim.now + delay))
        self.schedule_poll(self.sim.now + delay)

    def schedule_poll(self, when: float) -> None:
        if self._poll_at is not None and self._poll_at <= when:
            return
        self._poll_at = when

        def poll() -> None:
            if self._poll_at == when:
                self._poll_at = None
                self.poll()
        self.sim.at(when, poll)

    def poll(self) -> None:
        """The event source mapping: hand visible messages to writers, up to the concurrency."""
        now = self.sim.now
        visible = [copy for copy in self.queue if copy.visible_at <= now]
        self.rng.shuffle(visible)  # a standard queue keeps no order
        while visible and self.writers < self.plan.concurrency:
            # The batching window mostly fills a batch from what is there, up to 10.
            size = 10 if self.rng.random() < 0.6 else self.rng.randint(1, 10)
            taken, visible = visible[:size], visible[size:]
            batch = []
            for copy in taken:
                copy.receives += 1
                if copy.receives > DEFAULT_CONFIG.max_receive_count:
                    self.queue.remove(copy)
                    self.failed.append(copy.message)
                    self.note(f"message {copy.message.message_id} goes to the DLQ")
                    continue
                copy.visible_at = now + DEFAULT_CONFIG.visibility_timeout_s
                batch.append(copy)
                if self.faulty and self.rng.random() < 0.10:  # delivered twice: mostly soon after
                    self.send(copy.message, delay=self.rng.uniform(0.0, 3.0) if self.rng.random() < 0.8
                              else self.rng.uniform(3.0, 120.0))
            if batch:
                self.invoke_writer(batch)
        waiting = [copy.visible_at for copy in self.queue if copy.visible_at > now]
        if waiting and not visible:
            self.schedule_poll(min(waiting))

    def storming(self) -> bool:
        storm = self.plan.storm
        return self.faulty and storm is not None and storm[0] <= self.sim.now - START < storm[1]

    def invoke_writer(self, batch: list[Copy]) -> None:
        self.writers += 1
        number = next(self.numbers)

        container = (self.containers[self.cancel_rng.randrange(len(self.containers))]
                     if self.plan.cancel_at is not None else {})

        def write(invocation: Invocation) -> list[Copy]:
            """What load_batch does: write the rows (modelled), then record and settle."""
            # Now and then the items table throttles: writer/batch_write.py's Budget writes
            # until 3 s (its reserve) plus a call's 2 s are left, the messages it did not
            # finish fail, and the ledger gets what is left. Once in a while a call hangs
            # and Lambda ends the writer.
            per_message, done = None, len(batch)  # seconds a message's rows take; how many land
            if self.faulty and self.rng.random() < 0.10:
                left = self.rng.uniform(3.0, 5.0) if self.rng.random() < 0.95 else -1.0
                per_message = (invocation.remaining_s() - left) / len(batch)
                done = self.rng.randint(0, len(batch))
            finished: dict[str, MessageCounts] = {}
            failed = []
            for n, copy in enumerate(batch):
                if JOB in container and REPLAY_MARK not in copy.message.message_id:
                    # writer.load.dropped: a known-cancelled job's message, not written
                    finished[copy.message.message_id] = MessageCounts(cancelled=ROWS_PER_MESSAGE)
                    self.dropped += 1
                    continue
                invocation.wait(per_message or self.rng.uniform(0.05, 0.5))
                failure_rate = 1.0 if self.storming() or n >= done else 0.03 if self.faulty else 0.0
                if self.rng.random() < failure_rate:  # failed within the budget: SQS retries it
                    failed.append(copy)
                    continue
                finished[copy.message.message_id] = copy.message.counts
                if copy.message.rejected_lines:
                    self.rejected.append(copy.message)
            runtime = self.runtime(invocation)
            recorded = ledger.record_batch(self.ddb, self.table, invocation.request_id,
                                           {JOB: finished} if finished else {}, clock=invocation.clock)
            learn_cancels(replace(runtime, cancelled_jobs=container), recorded)
            for item in recorded:
                settle_job(runtime, item, owner=invocation.request_id,
                           remaining_s=invocation.remaining_s)
            return failed

        def write_ended(invocation: Invocation) -> None:
            self.ended(invocation)
            self.writers -= 1
            if invocation.error is None:
                for copy in batch:
                    if copy not in invocation.result and copy in self.queue:
                        self.queue.remove(copy)
            self.schedule_poll(self.sim.now)

        ids = ",".join(copy.message.message_id for copy in batch)
        self.invoke(f"writer {number} [{ids}]", f"w-{number}", float(DEFAULT_CONFIG.writer_timeout_s),
                    write, write_ended)

    # -------------------------------------------------------------- the operator and the reconciler

    def replay_of(self, rejected: Message) -> Message:
        """The replay the replayer makes of a message's rejected rows: its id is a hash of
        the rows (contract.replay_id), its counts fixed per id."""
        lines = list(rejected.rejected_lines)
        rid = replay_id(JOB, str(rejected.seq), lines, [[f"row {line}"] for line in lines])
        message_id = f"{rejected.seq}{REPLAY_MARK}{rid}"
        if message_id not in self.replays:
            rows = len(lines)
            again = 0 if self.rng.random() < 0.6 else self.rng.randint(1, rows)
            superseded = 1 if rows - again > 1 and self.rng.random() < 0.2 else 0
            self.replays[message_id] = Message(
                message_id, rejected.seq, MessageCounts(rows - again - superseded, again, superseded),
                tuple(lines[rows - again:]))
        return self.replays[message_id]

    def redrive(self, *, everything: bool) -> None:
        """The operator: failed messages back as they are, the splitter's failed events
        invoked again, and (`everything`) rejected rows back as replays."""
        self.note(f"redrive ({'everything' if everything else 'what failed'})")
        failed, self.failed = self.failed, []
        for message in failed:
            self.send(message)
        events, self.split_failures = self.split_failures, []
        for event in events:
            self.invoke_splitter(f"{event}, redriven", f"s3-{next(self.numbers)}")
        if everything:
            rejected, self.rejected = self.rejected, []
            for message in rejected:
                replay = self.replay_of(message)
                if replay.message_id in self.replays_sent:
                    continue  # the same rows rejected the same way again: the operator drops them
                self.replays_sent.append(replay.message_id)
                self.send(replay)

    def cancel(self, attempt: int = 1) -> None:
        """The operator's `fanout cancel JOB`; a run that fails (killed, throttled) is run
        again a little later, up to 3 times."""
        def run(invocation: Invocation) -> ledger.CancelOutcome:
            outcome = ledger.cancel_job(self.ddb, self.table, JOB, by="operator", clock=invocation.clock)
            self.note(f"{invocation.name}: cancelled {outcome.cancelled}, status {outcome.status}")
            self.cancel_outcome = outcome
            return outcome

        def ended(invocation: Invocation) -> None:
            self.ended(invocation)
            if invocation.error is not None and attempt < 3:
                self.later(30.0, lambda: self.cancel(attempt + 1))

        self.invoke(f"operator cancel try {attempt}", f"c-{attempt}", 60.0, run, ended)

    def failure_redrive_tick(self) -> None:
        if self.failed or self.split_failures:
            self.redrive(everything=False)
        self.sim.at(self.sim.now + FAILURE_REDRIVE_EVERY_S, self.failure_redrive_tick)

    def ttl_tick(self) -> None:
        """DynamoDB's TTL, hurried: log records carry `expires_at` (30 days on), and the
        ledger holds that none is read once the fold's cursor has passed it; here each
        such record is deleted within a minute, at a random moment between ledger calls."""
        cursor = int(self.raw.get_item(TableName=self.table, ConsistentRead=True,
                                       Key=ledger.layout._key(JOB, ledger.FOLD_SK))
                     .get("Item", {}).get("cursor", {}).get("N", "0"))
        for ticket in range(self.ttl_swept + 1, cursor + 1):
            if self.ttl_rng.random() < 0.7:
                self.raw.delete_item(TableName=self.table, Key=ledger.layout._key(
                    JOB, ledger.layout._log_sk(ticket)))
                self.ttl_deleted += 1
            self.ttl_swept = ticket
        self.sim.at(self.sim.now + self.ttl_rng.uniform(1.0, TTL_SWEEP_EVERY_S), self.ttl_tick)

    def reconcile_tick(self) -> None:
        reconcile = self.reconcile
        assert reconcile is not None
        number = next(self.numbers)
        self.invoke(f"reconciler {number}", f"r-{number}", RECONCILER_TIMEOUT_S,
                    lambda invocation: reconcile(self.runtime(invocation)), self.ended)
        self.sim.at(self.sim.now + RECONCILE_EVERY_S, self.reconcile_tick)

    # -------------------------------------------------------------- what the checks need

    def committed(self, invocation: Invocation, name: str, params: dict[str, Any], result: Any) -> None:
        """A ledger write took effect (called by the fault layer, in the invocation)."""
        if name == "cancel transaction" and self.cancel_committed is None:
            self.cancel_committed = self.sim.now
        if name == "job SET summary_published":
            self.marked.setdefault(invocation.name, self.sim.now)
        elif name == "log record":
            self.replays_recorded |= {entry.split(":", 1)[0] for entry in params["Item"]["m"]["S"].split(",")
                                      if REPLAY_MARK in entry.split(":", 1)[0]}
            # Kept here too: the TTL sweep deletes folded records from the table.
            self.log_records[params["Item"]["sk"]["S"]] = params["Item"]["m"]["S"]
        elif name == "tally ADD tickets":
            ticket = int(result.get("Attributes", {}).get("tickets", {}).get("N", "0")) + 1
            self.ticket_takers[ticket] = invocation.name
        elif name == "completion transaction" and self.completed_at is None and "'CANCELLED'" not in str(params):
            self.completed_at = self.sim.now
            job = ledger.plain(self.raw.get_item(TableName=self.table, Key=ledger.layout._key(JOB, ledger.JOB_SK),
                                                 ConsistentRead=True)["Item"])
            self.note(f"{invocation.name}: COMPLETE with {ledger.counts_of(job)}")
            # The completion counts every report recorded before it (its condition: the
            # tally holds no ticket the fold has not read), a replay's included.
            trouble = self.counts_trouble(ledger.counts_of(job), len(self.replays_sent),
                                          required=self.replays_recorded)
            if trouble:
                self.problems.append(Problem("completed before every message was counted",
                                             f"{invocation.name}: {trouble}"))

    def fault_of(self, invocation: str | None, *calls: str) -> str:
        """` (the fault)` that most likely explains what `invocation` left behind: its last
        fault on one of `calls` (name prefixes) or that killed it, else its last fault
        other than a throttle or a slow call, else its last of those."""
        own = [f for f in self.ddb.faults if f.invocation == invocation]
        likely = [f for f in own if f.kind != "slow" and (f.call.startswith(calls) or f.kind.startswith("killed"))]
        fault = (likely or [f for f in own if f.kind not in ("throttle", "slow")] or own or [None])[-1]
        return f" ({fault})" if fault else ""

    def expected(self) -> MessageCounts:
        """The job's exact counts once every replay sent so far is counted."""
        counts = self.base
        for message_id in self.replays_sent:
            c = self.replays[message_id].counts
            counts = MessageCounts(counts.written + c.written, counts.rejected - c.landed,
                                   counts.superseded + c.superseded)
        return counts

    def counts_trouble(self, counts: MessageCounts, replays_sent: int,
                       required: set[str] = frozenset()) -> str | None:  # type: ignore[assignment]
        """Why `counts` are not every original message plus some of the first
        `replays_sent` replays, all of `required` among them (None when they are)."""
        if sum(counts.values()) != self.rows_read:
            return f"{counts} sum to {sum(counts.values())}, not the {self.rows_read} rows read"
        must = [m for m in self.replays_sent[:replays_sent] if m in required]
        reachable = {(sum(self.replays[m].counts.written for m in must),
                      sum(self.replays[m].counts.superseded for m in must))}
        for message_id in self.replays_sent[:replays_sent]:
            if message_id in must:
                continue
            c = self.replays[message_id].counts
            reachable |= {(w + c.written, s + c.superseded) for w, s in reachable}
        if (counts.written - self.base.written, counts.superseded - self.base.superseded) not in reachable:
            return (f"{counts} are not the original messages' {self.base} plus some of the replays"
                    + (f" (including the {len(must)} recorded before it)" if must else ""))
        return None


# ------------------------------------------------------------------ the verdict

class LedgerState:
    """The job's small items as the run left them, each read when first asked for (a
    passing seed needs only the job item)."""

    def __init__(self, ddb: Any, table: str) -> None:
        self._ddb, self._table = ddb, table

    def _item(self, sk: str) -> dict[str, Any]:
        return _plain(self._ddb.get_item(TableName=self._table, Key=ledger.layout._key(JOB, sk),
                                         ConsistentRead=True).get("Item", {}))

    @functools.cached_property
    def job(self) -> dict[str, Any]:
        return self._item(ledger.JOB_SK)

    @functools.cached_property
    def tally(self) -> dict[str, Any]:
        return self._item(ledger.TALLY_SK)

    @functools.cached_property
    def fold(self) -> dict[str, Any]:
        return self._item(ledger.FOLD_SK)

    def has_record(self, ticket: int) -> bool:
        return "Item" in self._ddb.get_item(TableName=self._table, ConsistentRead=True,
                                            Key=ledger.layout._key(JOB, ledger.layout._log_sk(ticket)))


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    """An item's top-level values without their DynamoDB types (numbers as float when
    they have a fraction, such as the tally's `ticket_at`)."""
    out: dict[str, Any] = {}
    for name, value in item.items():
        ((kind, v),) = value.items()
        out[name] = (float(v) if "." in v else int(v)) if kind == "N" else v
    return out


@dataclass
class SeedResult:
    seed: int
    plan: Plan
    problems: list[Problem]
    status: str
    published: int
    republished_why: list[str]  # why each summary after the first was published
    faults: Counter[str]
    calls: int
    seconds: float
    cpu_seconds: float
    trace: list[str] | None = None
    ttl_deleted: int = 0  # folded log records the TTL sweep deleted

    @property
    def kinds(self) -> list[str]:
        return list(dict.fromkeys(problem.kind for problem in self.problems))


AT_LEAST_ONCE = "an earlier publisher died between its publish and mark_published (at-least-once)"
RACE = "another settle published before the first publisher's mark_published landed"
STALLED_THEN_COMPLETE = "a STALLED job completed after all (its missing messages came): published again"
STALLED_THEN_CANCELLED = "a STALLED job was cancelled: its CANCELLED summary published after the STALLED one"


def verdict(pipeline: Pipeline) -> tuple[list[Problem], str, list[str]]:
    """Every check on the finished run: (problems, the job's status, why each summary
    after the first was published)."""
    problems = list(pipeline.problems)
    state = LedgerState(pipeline.raw, pipeline.table)
    status = state.job.get("status", "(no job item)")
    if status == ledger.STALLED and "split stopped" in state.job.get("stall_reason", ""):
        # The one end this model allows besides COMPLETE: the splitter died after its
        # retries (or a redrive of its event came within the dead one's lease), so nothing
        # was left to finish the split. Its STALLED summary must be out.
        if not any(p.summary.get("STATUS") == ledger.STALLED for p in pipeline.topic.published):
            problems.append(Problem("STALLED split, no summary published", str(state.job)))
    elif pipeline.cancel_committed is not None or status == ledger.CANCELLED:
        problems += cancelled_trouble(pipeline, state, status)
    elif status != ledger.COMPLETE:
        problems.append(Problem(diagnose(pipeline, state), f"ends {status}; {pipeline.state_line()}"))
    else:
        counts = ledger.counts_of(state.job)
        if counts != pipeline.expected() or state.job.get("rows_read") != pipeline.rows_read:
            problems.append(Problem(diagnose(pipeline, state),
                                    f"{counts}, rows_read {state.job.get('rows_read')}; expected "
                                    f"{pipeline.expected()}, rows_read {pipeline.rows_read}"))
        if "summary_published" not in state.job:
            problems.append(Problem("COMPLETE, no summary recorded as published", str(state.job)))
    published = pipeline.topic.published
    if status == ledger.COMPLETE and not published:
        problems.append(Problem("COMPLETE, no summary published", ""))
    for p in published:
        if p.summary.get("STATUS") == ledger.STALLED and p.summary.get("TOTAL_NUMBER_OF_ROWS_READ"):
            # What is missing is named in rows too, so a STALLED summary also sums to rows read.
            shown = sum(int(p.summary.get(ledger.SUMMARY_NAMES[name]) or 0) for name in ledger.OUTCOMES[:3])
            if shown + int(p.summary.get("TOTAL_NUMBER_OF_ROWS_MISSING") or 0) != pipeline.rows_read:
                problems.append(Problem("a STALLED summary does not sum to the rows read",
                                        f"by {p.by}: {p.summary}"))
        if p.summary.get("STATUS") != ledger.COMPLETE:
            continue
        counts = MessageCounts(*(int(p.summary.get(ledger.SUMMARY_NAMES[name]) or 0)
                                 for name in ledger.OUTCOMES[:3]))
        trouble = pipeline.counts_trouble(counts, p.replays_sent)
        if p.summary.get("TOTAL_NUMBER_OF_ROWS_READ") != pipeline.rows_read:
            trouble = f"rows read {p.summary.get('TOTAL_NUMBER_OF_ROWS_READ')}, not {pipeline.rows_read}"
        if trouble:
            problems.append(Problem("a published summary is not exact", f"by {p.by}: {trouble}"))
    republished_why = []
    for i, p in enumerate(published[1:], start=1):
        if p.summary.get("STATUS") in (ledger.COMPLETE, ledger.CANCELLED) and any(
                q.summary.get("STATUS") == ledger.STALLED for q in published[:i]) and not any(
                q.summary.get("STATUS") == p.summary.get("STATUS") for q in published[:i]):
            republished_why.append(STALLED_THEN_COMPLETE if p.summary.get("STATUS") == ledger.COMPLETE
                                   else STALLED_THEN_CANCELLED)
        elif any(q.by not in pipeline.marked for q in published[:i]):
            republished_why.append(AT_LEAST_ONCE)
        else:
            republished_why.append(RACE)
            problems.append(Problem("a summary published again without a failed publish",
                                    f"by {p.by} at {p.at - START:.3f} s; earlier by "
                                    f"{[(q.by, round(q.at - START, 3)) for q in published[:i]]}, "
                                    f"marked {[(k, round(v - START, 3)) for k, v in pipeline.marked.items()]}"))
    if pipeline.record.violations:
        problems.append(Problem("a ledger call broke the AWS contract", pipeline.record.violations[0]))
    return problems, status, republished_why


def cancelled_trouble(pipeline: Pipeline, state: LedgerState, status: str) -> list[Problem]:
    """A job whose cancel committed ends CANCELLED, once, with counts that are the log's
    (each message counted once, as the first report of it said: written, rejected,
    superseded or cancelled), that sum to its rows read but for the messages it names as
    missing, and its CANCELLED summary published; and none ends CANCELLED without one."""
    job = state.job
    if pipeline.cancel_committed is None:
        return [Problem("CANCELLED without a cancel", str(job))]
    if status != ledger.CANCELLED:
        return [Problem(f"cancelled, ends {status}", f"{pipeline.state_line()}; {job}")]
    problems = []
    counts, logged = ledger.counts_of(job), log_totals(pipeline)
    if counts != logged:
        problems.append(Problem("CANCELLED, counts not the log's", f"{counts}; the log says {logged}"))
    rows_read = int(job.get("rows_read", -1))
    missing = ROWS_PER_MESSAGE * int(job.get("missing_messages", 0))
    if rows_read > pipeline.rows_read or sum(counts.values()) + missing != rows_read:
        problems.append(Problem("CANCELLED, counts do not sum to the rows read",
                                f"{counts} + {missing} missing, rows_read {rows_read}"))
    if "summary_published" not in job:
        problems.append(Problem("CANCELLED, no summary recorded as published", str(job)))
    summaries = [p.summary for p in pipeline.topic.published if p.summary.get("STATUS") == ledger.CANCELLED]
    if not summaries:
        problems.append(Problem("CANCELLED, no summary published", ""))
    for summary in summaries:
        shown = sum(int(summary.get(name) or 0) for name in ledger.SUMMARY_NAMES.values())
        if shown + int(summary.get("TOTAL_NUMBER_OF_ROWS_MISSING") or 0) != summary.get(
                "TOTAL_NUMBER_OF_ROWS_READ"):
            problems.append(Problem("a CANCELLED summary does not sum to the rows read", str(summary)))
    return problems


def log_totals(pipeline: Pipeline) -> MessageCounts:
    """The job's counts recomputed from every log record that committed (the TTL sweep may
    have deleted folded ones from the table), in ticket order: the first record of each
    message counts (as the fold's bitmaps do), a replay once by its id."""
    first: dict[str, MessageCounts] = {}
    for sk in sorted(pipeline.log_records):
        for message_id, c in ledger.parse_entries(pipeline.log_records[sk]):
            first.setdefault(message_id, c)
    return ledger.totals(first)


def diagnose(pipeline: Pipeline, state: LedgerState) -> str:
    """Why the job did not end with exact counts: the failure kind the report groups seeds
    by, with the fault that began it where the run can tell."""
    status = state.job.get("status", "(no job item)")
    if status == ledger.RUNNING and "messages_total" not in state.tally:
        splitter = [f for f in pipeline.ddb.faults if f.call in ("job SET rows_read", "tally SET messages_total")]
        return "RUNNING: the tally has no messages_total" + (f" ({splitter[-1]})" if splitter else "")
    if status == ledger.SPLITTING:
        first = next((f for f in pipeline.ddb.faults if f.invocation.startswith("splitter")), None)
        return "SPLITTING: a redriven or duplicate event skipped while a dead splitter's lease held" + (
            f" ({first})" if first else "")
    if status not in (ledger.RUNNING, ledger.COMPLETE):
        return f"ends {status}"
    prefix = "RUNNING" if status == ledger.RUNNING else "COMPLETE, counts not exact"
    tickets, cursor = int(state.tally.get("tickets", 0)), int(state.fold.get("cursor", 0))
    if cursor < tickets:
        if not state.has_record(cursor + 1):
            taker = pipeline.ticket_takers.get(cursor + 1)
            return f"{prefix}: a hole in the log never voided{pipeline.fault_of(taker, 'tally ADD', 'log')}"
        if "lease_owner" in state.fold:
            owner = pipeline.fold_owners.get(state.fold["lease_owner"])
            return (f"{prefix}: the fold lease left held by a folder that stopped folding"
                    f"{pipeline.fault_of(owner, 'fold SET lease_owner')}")
        last = pipeline.folds[-1] if pipeline.folds else None
        if last is not None and last.outcome == "state":
            if last.stalled is None and (last.cursor or 0) < (last.tickets or 0):
                return f"{prefix}: the last fold ran out of budget{pipeline.fault_of(last.invocation)}"
            return f"{prefix}: the last fold stopped at a hole"
        if last is not None:
            return f"{prefix}: the last fold ended {last.outcome}{pipeline.fault_of(last.invocation, 'fold', 'shard')}"
        return f"{prefix}: nothing folded the log"
    if int(state.fold.get("distinct", 0)) < len(pipeline.plan.messages):
        return f"{prefix}: messages missing from the log"
    last = pipeline.folds[-1] if pipeline.folds else None
    outcome = "the job not completed" if status == ledger.RUNNING else "the job item's counts not moved"
    return f"{prefix}: every report folded, {outcome}" + (
        pipeline.fault_of(last.invocation, "fold", "shard", "completion") if last else "")


def run_seed(seed: int, ddb: Any, template: dict[str, Any], *, trace: bool = False) -> SeedResult:
    """One seed, on a ledger table of its own made like `template` (describe_table's)."""
    started, cpu = time.perf_counter(), time.process_time()
    table = f"fanout-jobs-model-{seed}"
    ddb.create_table(TableName=table, AttributeDefinitions=template["AttributeDefinitions"],
                     KeySchema=template["KeySchema"], BillingMode="PAY_PER_REQUEST",
                     **({"GlobalSecondaryIndexes": [
                         {k: v for k, v in index.items() if k in ("IndexName", "KeySchema", "Projection")}
                         for index in template["GlobalSecondaryIndexes"]]}
                        if template.get("GlobalSecondaryIndexes") else {}))
    try:
        pipeline = Pipeline(seed, ddb, table, trace=trace)
        try:
            pipeline.run()
            problems, status, republished = verdict(pipeline)
        except Exception as exc:  # a fault of the harness: still one seed's failure, with its seed
            problems, status, republished = [Problem("the harness failed", repr(exc))], "?", []
        return SeedResult(seed, pipeline.plan, problems, status, len(pipeline.topic.published),
                          republished, Counter(f.kind for f in pipeline.ddb.faults),
                          sum(pipeline.ddb.calls.values()), time.perf_counter() - started,
                          time.process_time() - cpu, pipeline.trace, pipeline.ttl_deleted)
    finally:
        ddb.delete_table(TableName=table)
