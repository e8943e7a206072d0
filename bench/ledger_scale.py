"""Ledger scale: the jobs ledger's work for a 100-million-row job (4,000,000 messages),
through the real `fanout.ledger` code, on an in-memory ledger table.

The job's log is synthesized, as the writers' `record_batch` would leave it (moto would
take hours to hold it and serve the folds): a parallel split of 200 ranges (seq = range *
1e9 + n, the worst case for how many shards a fold step touches), delivered interleaved
across the ranges and shuffled within windows (a standard queue keeps no order), 100
messages per writer invocation (the stack's BatchSize), 1% of the deliveries duplicated
(delivered again later) and 300 replayed messages mixed in. Every invocation that
`ledger.should_settle` says would settle runs `ledger.settle` for real, with the log
visible up to its own ticket. After completion, one writer invocation reports replayed
rows and a late duplicate through the real `record_batch` and `settle`.

Per settle: CPU (time.process_time), peak RSS above the RSS just before it (the peak is
reset through /proc/self/clear_refs), and the DynamoDB units of its calls (writes: the
larger of the item before and after, 1 per KB, failed conditions included; reads:
strongly consistent, 1 per 4 KB). Every call goes through botocore's DynamoDB serializer
and parser, as a client's would; the table itself costs nothing (its dicts are in the
baseline).
"""

from __future__ import annotations

import base64
import json
import math
import random
import re
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import botocore.session
from botocore import parsers, serialize
from botocore.exceptions import ClientError

from bench.report import goal, print_alone
from fanout import ledger
from fanout.ledger import MessageCounts
from fanout.mapping import item_size

KB = 1024
JOB = "big-job-0123456789ab"
TABLE = "fanout-jobs"
RANGES = 200
RANGE_SPAN = 1_000_000_000  # splitter/fan.py's RANGE_SEQ_SPAN
MESSAGES_PER_INVOCATION = 100
ROWS_PER_MESSAGE = 25
DUPLICATE_RATE = 0.01
REPLAYS = 300
REJECT_EVERY = 500  # one message in 500 has a rejected row (the replays fix them)
WRITER_VCPU = 256 / 1769  # Lambda: 1,769 MB = 1 vCPU
WRITER_TIMEOUT_S = 60


# ------------------------------------------------------------------ the table

class _Conditions:
    """The subset of DynamoDB's condition grammar the ledger uses: AND, OR, parentheses,
    attribute_exists / attribute_not_exists, = < > <= >=, IN (...)."""

    TOKEN = re.compile(r"\(|\)|,|<=|>=|<>|=|<|>|:[\w]+|#?[A-Za-z_][\w]*")

    def __init__(self, expr: str, item: dict[str, Any], names: dict[str, str],
                 values: dict[str, Any]) -> None:
        self.tokens = self.TOKEN.findall(expr)
        self.pos, self.item, self.names, self.values = 0, item, names, values

    def evaluate(self) -> bool:
        result = self._or()
        assert self.pos == len(self.tokens), f"unparsed: {self.tokens[self.pos:]}"
        return result

    def _next(self) -> str:
        self.pos += 1
        return self.tokens[self.pos - 1]

    def _peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _or(self) -> bool:
        result = self._and()
        while self._peek() == "OR":
            self._next()
            result = self._and() or result
        return result

    def _and(self) -> bool:
        result = self._atom()
        while self._peek() == "AND":
            self._next()
            result = self._atom() and result
        return result

    def _operand(self, token: str) -> Any:
        value = self.values[token] if token.startswith(":") else self.item.get(
            self.names.get(token, token))
        if value is None:
            return None
        (type_, v), = value.items()
        return int(v) if type_ == "N" else v

    def _atom(self) -> bool:
        token = self._next()
        if token == "(":
            result = self._or()
            assert self._next() == ")"
            return result
        if token in ("attribute_exists", "attribute_not_exists"):
            assert self._next() == "("
            name = self._next()
            assert self._next() == ")"
            present = self.names.get(name, name) in self.item
            return present if token == "attribute_exists" else not present
        left = self._operand(token)
        op = self._next()
        if op == "IN":
            assert self._next() == "("
            options = [self._operand(self._next())]
            while self._next() == ",":
                options.append(self._operand(self._next()))
            return left in options
        right = self._operand(self._next())
        if left is None or right is None:
            return False
        return {"=": left == right, "<>": left != right, "<": left < right, ">": left > right,
                "<=": left <= right, ">=": left >= right}[op]


def _apply_update(item: dict[str, Any], expr: str, names: dict[str, str],
                  values: dict[str, Any]) -> None:
    parts = re.split(r"\b(SET|ADD|REMOVE)\b", expr)
    for keyword, body in zip(parts[1::2], parts[2::2], strict=True):
        for clause in (c.strip() for c in body.split(",") if c.strip()):
            if keyword == "SET":
                name, value = (x.strip() for x in clause.split("=", 1))
                item[names.get(name, name)] = values[value]
            elif keyword == "REMOVE":
                item.pop(names.get(clause, clause), None)
            else:
                name, value = clause.split()
                name, add = names.get(name, name), values[value]
                if "N" in add:
                    old = int(item.get(name, {"N": "0"})["N"])
                    item[name] = {"N": str(old + int(add["N"]))}
                else:
                    (set_type, members), = add.items()
                    item[name] = {set_type: sorted(set(item.get(name, {}).get(set_type, [])) |
                                                   set(members))}


_MODEL = botocore.session.get_session().get_service_model("dynamodb")
_SERIALIZER = serialize.create_serializer("json")
_PARSER = parsers.create_parser("json")


def _b64(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    raise TypeError(type(value).__name__)


def _wire(operation: str, params: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    """`response` as a botocore client returns it: the request serialized, the response
    encoded as DynamoDB's JSON and parsed back (binary values base64 on the wire)."""
    model = _MODEL.operation_model(operation)
    _SERIALIZER.serialize_to_request(params, model)
    body = json.dumps(response, default=_b64).encode()
    parsed: dict[str, Any] = _PARSER.parse({"body": body, "headers": {}, "status_code": 200},
                                           model.output_shape)
    parsed.pop("ResponseMetadata", None)
    return parsed


def _failed(operation: str, params: dict[str, Any] | None = None,
            before: dict[str, Any] | None = None) -> ClientError:
    """A failed condition; with ReturnValuesOnConditionCheckFailure=ALL_OLD, the item."""
    response: dict[str, Any] = {"Error": {"Code": "ConditionalCheckFailedException",
                                          "Message": "The conditional request failed"}}
    if (params or {}).get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and before:
        response["Item"] = before
    return ClientError(response, operation)  # type: ignore[arg-type]


@dataclass
class Units:
    write: int = 0
    read: float = 0.0
    calls: int = 0

    def __sub__(self, other: Units) -> Units:
        return Units(self.write - other.write, self.read - other.read, self.calls - other.calls)


class MemoryLedger:
    """A ledger table in memory, speaking the DynamoDB client calls the ledger makes.

    Log records of tickets 1..`visible` come from `synthesized(ticket)` (the job's log, made
    on demand so the table holds none of it); every other item lives in `items`."""

    def __init__(self, synthesized: Callable[[int], str]) -> None:
        self.items: dict[tuple[str, str], dict[str, Any]] = {}
        self.synthesized = synthesized
        self.visible = 0
        self.units = Units()

    # --------------------------------------------------------------- storage
    def _load(self, pk: str, sk: str) -> dict[str, Any] | None:
        item = self.items.get((pk, sk))
        if item is None and sk.startswith(ledger.LOG_PREFIX):
            ticket = int(sk[len(ledger.LOG_PREFIX):])
            if 1 <= ticket <= self.visible:
                item = {"pk": {"S": pk}, "sk": {"S": sk}, "m": {"S": self.synthesized(ticket)},
                        "r": {"S": f"request-{ticket}"}}
        return item

    def _write_units(self, before: dict[str, Any] | None, after: dict[str, Any] | None) -> None:
        size = max(item_size(before) if before else 0, item_size(after) if after else 0)
        self.units.write += max(1, math.ceil(size / KB))
        self.units.calls += 1

    def _read_units(self, size: int) -> None:
        self.units.read += max(1, math.ceil(size / (4 * KB)))
        self.units.calls += 1

    # --------------------------------------------------------------- the API
    # Each call goes through botocore's serializer and parser for DynamoDB, as a real
    # client's would, so their CPU is in the figures; the service itself costs nothing.
    def get_item(self, **params: Any) -> dict[str, Any]:
        key = params["Key"]
        item = self._load(key["pk"]["S"], key["sk"]["S"])
        self._read_units(item_size(item) if item else 0)
        return _wire("GetItem", params, {"Item": item} if item else {})

    def put_item(self, **params: Any) -> dict[str, Any]:
        new = params["Item"]
        key = (new["pk"]["S"], new["sk"]["S"])
        before = self._load(*key)
        self._write_units(before, new)
        condition = params.get("ConditionExpression")
        if condition and not _Conditions(condition, before or {},
                                         params.get("ExpressionAttributeNames", {}),
                                         params.get("ExpressionAttributeValues", {})).evaluate():
            raise _failed("PutItem", params, before)
        self.items[key] = dict(new)
        return _wire("PutItem", params, {})

    def update_item(self, **params: Any) -> dict[str, Any]:
        key = (params["Key"]["pk"]["S"], params["Key"]["sk"]["S"])
        before = self._load(*key)
        names = params.get("ExpressionAttributeNames", {})
        values = params.get("ExpressionAttributeValues", {})
        condition = params.get("ConditionExpression")
        if condition and not _Conditions(condition, before or {}, names, values).evaluate():
            self._write_units(before, None)
            raise _failed("UpdateItem", params, before)
        after = dict(before or {"pk": params["Key"]["pk"], "sk": params["Key"]["sk"]})
        _apply_update(after, params["UpdateExpression"], names, values)
        self._write_units(before, after)
        self.items[key] = after
        returned = {"ALL_NEW": after, "ALL_OLD": before}.get(params.get("ReturnValues", "NONE"))
        return _wire("UpdateItem", params, {"Attributes": returned} if returned else {})

    def delete_item(self, **params: Any) -> dict[str, Any]:
        key = (params["Key"]["pk"]["S"], params["Key"]["sk"]["S"])
        self._write_units(self._load(*key), None)
        self.items.pop(key, None)
        return _wire("DeleteItem", params, {})

    def transact_write_items(self, **params: Any) -> dict[str, Any]:
        """Puts, Updates and Deletes with their conditions, all or none; 2 write units per
        item per KB."""
        reasons, loaded = [], []
        for entry in params["TransactItems"]:
            (_, op), = entry.items()
            key = op.get("Key") or op["Item"]
            before = self._load(key["pk"]["S"], key["sk"]["S"])
            loaded.append(before)
            passed = not op.get("ConditionExpression") or _Conditions(
                op["ConditionExpression"], before or {}, op.get("ExpressionAttributeNames", {}),
                op.get("ExpressionAttributeValues", {})).evaluate()
            reasons.append({"Code": "None" if passed else "ConditionalCheckFailed"})
            self.units.write += 2 * max(1, math.ceil((item_size(before) if before else 0) / KB))
        self.units.calls += 1
        if any(r["Code"] != "None" for r in reasons):
            raise ClientError({"Error": {"Code": "TransactionCanceledException",
                                         "Message": "Transaction cancelled"},
                               "CancellationReasons": reasons}, "TransactWriteItems")
        for entry, before in zip(params["TransactItems"], loaded, strict=True):
            if "Put" in entry:
                item = entry["Put"]["Item"]
                self.items[(item["pk"]["S"], item["sk"]["S"])] = dict(item)
            elif "Delete" in entry:
                key = entry["Delete"]["Key"]
                self.items.pop((key["pk"]["S"], key["sk"]["S"]), None)
            elif "Update" in entry:
                op = entry["Update"]
                after = dict(before or {"pk": op["Key"]["pk"], "sk": op["Key"]["sk"]})
                _apply_update(after, op["UpdateExpression"], op.get("ExpressionAttributeNames", {}),
                              op.get("ExpressionAttributeValues", {}))
                self.items[(op["Key"]["pk"]["S"], op["Key"]["sk"]["S"])] = after
        return _wire("TransactWriteItems", params, {})

    def batch_get_item(self, **params: Any) -> dict[str, Any]:
        (table, request), = params["RequestItems"].items()
        found = []
        for key in request["Keys"]:
            item = self._load(key["pk"]["S"], key["sk"]["S"])
            if item:
                found.append(item)
            self.units.read += max(1, math.ceil((item_size(item) if item else 0) / (4 * KB)))
        self.units.calls += 1
        return _wire("BatchGetItem", params, {"Responses": {table: found}, "UnprocessedKeys": {}})

    def query(self, **params: Any) -> dict[str, Any]:
        values = params["ExpressionAttributeValues"]
        pk = values[":pk"]["S"]
        start = params.get("ExclusiveStartKey")
        after = start["sk"]["S"] if start else ""
        limit = params.get("Limit", 1_000_000)
        if "BETWEEN" in params["KeyConditionExpression"]:
            low, high = values[":low"]["S"], values[":high"]["S"]
            keys: Iterator[str] = self._log_keys(max(low, after), high, skip=after)
        else:  # "pk = :pk", with or without "AND begins_with(sk, :p)"
            prefix = next((v["S"] for k, v in values.items() if k != ":pk"), "")
            keys = iter(sorted(sk for p, sk in self.items if p == pk and sk.startswith(prefix)
                               and sk > after))
        items: list[dict[str, Any]] = []
        size = 0
        for sk in keys:
            item = self._load(pk, sk)
            if item is None:
                continue
            items.append(item)
            size += item_size(item)
            if len(items) == limit or size >= 1024 * KB:
                break
        self._read_units(size)
        page: dict[str, Any] = {"Items": items, "Count": len(items)}
        if items and (len(items) == limit or size >= 1024 * KB):
            page["LastEvaluatedKey"] = {"pk": {"S": pk}, "sk": items[-1]["sk"]}
        return _wire("Query", params, page)

    def _log_keys(self, low: str, high: str, skip: str) -> Iterator[str]:
        first, last = (int(x[len(ledger.LOG_PREFIX):]) for x in (low, high))
        for ticket in range(first, last + 1):
            sk = ledger.layout._log_sk(ticket)
            if sk != skip:
                yield sk

    def get_paginator(self, operation: str) -> Any:
        table = self

        class Paginator:
            def paginate(self, **params: Any) -> Iterator[dict[str, Any]]:
                while True:
                    page = table.query(**params)
                    yield page
                    if "LastEvaluatedKey" not in page:
                        return
                    params["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        assert operation == "query"
        return Paginator()


# ------------------------------------------------------------------ the job

def _counts(seq: int) -> MessageCounts:
    return MessageCounts(24, 1, 0) if (seq % RANGE_SPAN) % REJECT_EVERY == 7 else MessageCounts(25, 0, 0)


@dataclass
class SyntheticJob:
    """The delivery stream of a job: codes >= 0 are seqs, -(k+1) is replayed message k."""

    messages: int
    per_invocation: int = MESSAGES_PER_INVOCATION
    stream: array = field(default_factory=lambda: array("q"))
    replayed: list[int] = field(default_factory=list)  # replayed message k's seq

    @classmethod
    def make(cls, messages: int, per_invocation: int = MESSAGES_PER_INVOCATION,
             seed: int = 16) -> SyntheticJob:
        rng = random.Random(seed)
        per_range = messages // RANGES
        assert per_range * RANGES == messages
        base = array("q")
        window = 5_000
        for start in range(0, messages, window):
            chunk = [(p % RANGES) * RANGE_SPAN + p // RANGES
                     for p in range(start, min(start + window, messages))]
            rng.shuffle(chunk)
            base.extend(chunk)
        later: dict[int, list[int]] = {}
        for p in rng.sample(range(messages), int(messages * DUPLICATE_RATE)):
            later.setdefault(min(messages - 1, p + rng.randint(1_000, 50_000)), []).append(base[p])
        job = cls(messages, per_invocation)
        rejected = [p for p in range(messages) if (base[p] % RANGE_SPAN) % REJECT_EVERY == 7]
        for k, p in enumerate(sorted(rng.sample(rejected, REPLAYS))):
            job.replayed.append(base[p])
            later.setdefault(min(messages - 1, p + rng.randint(10_000, 200_000)), []).append(-(k + 1))
        for p in range(messages):
            job.stream.append(base[p])
            if p in later:
                job.stream.extend(later[p])
        return job

    @property
    def tickets(self) -> int:
        return -(-len(self.stream) // self.per_invocation)

    def entry(self, code: int) -> str:
        if code >= 0:
            c = _counts(code)
            return f"{code}:{c.written}:{c.rejected}:{c.superseded}"
        return f"{self.replayed[-code - 1]}~fix{-code - 1:04d}:1:0:0"

    def record(self, ticket: int) -> str:
        start = (ticket - 1) * self.per_invocation
        return ",".join(self.entry(c) for c in self.stream[start:start + self.per_invocation])

    def expected(self) -> MessageCounts:
        """The exact counts, from the job's definition (not from the ledger)."""
        written = rejected = 0
        for r in range(RANGES):
            for n in range(self.messages // RANGES):
                c = _counts(r * RANGE_SPAN + n)
                written, rejected = written + c.written, rejected + c.rejected
        return MessageCounts(written + len(self.replayed), rejected - len(self.replayed), 0)


# ------------------------------------------------------------------ measuring

def _status_kb(field_name: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field_name):
                return int(line.split()[1])
    raise RuntimeError(f"no {field_name} in /proc/self/status")


@dataclass
class Measured:
    cpu_s: float
    rss_mb: float
    units: Units


def measure(run: Callable[[], Any], table: MemoryLedger) -> tuple[Any, Measured]:
    """Run `run`; its CPU, its peak RSS above the RSS before it, its DynamoDB units."""
    with open("/proc/self/clear_refs", "w") as f:  # reset VmHWM to the current RSS
        f.write("5")
    before_kb, units, cpu = _status_kb("VmRSS:"), table.units, time.process_time()
    table.units = Units()
    result = run()
    spent = Measured(time.process_time() - cpu, max(0, _status_kb("VmHWM:") - before_kb) / 1024,
                     table.units)
    table.units = Units(units.write + spent.units.write, units.read + spent.units.read,
                        units.calls + spent.units.calls)
    return result, spent


@dataclass
class ScaleResult:
    messages: int
    tickets: int
    deliveries: int
    settles: int
    completing: Measured
    worst_cpu: Measured
    worst_rss: Measured
    fold_cpu_total_s: float
    fold_wru: int
    fold_rru: float
    writer_wru: int
    replay_record: Measured
    replay_settle: Measured
    status: Measured  # `fanout status` (ledger.get_job) of the job while RUNNING
    exact: bool
    summaries: int
    synth_s: float


def run_scale(messages: int = 4_000_000,
              per_invocation: int = MESSAGES_PER_INVOCATION) -> ScaleResult:
    started = time.monotonic()
    job = SyntheticJob.make(messages, per_invocation)
    synth_s = time.monotonic() - started
    table = MemoryLedger(job.record)
    ddb: Any = table
    ledger.start_job(ddb, TABLE, JOB, source_uri="s3://bucket/uploads/big.csv", table="items",
                     owner="splitter")
    ledger.finish_split(ddb, TABLE, JOB, rows_read=messages * ROWS_PER_MESSAGE,
                        messages_total=messages, header=["account", "offer_id"],
                        error_location="s3://bucket/errors/")
    # The writers' reports: the tally as each one's ADD left it (their log records are the
    # synthesized ones); the writers' own units are counted from the records' sizes.
    writer_wru = 0
    reported = 0
    settles, summaries = 0, 0
    completing: Measured | None = None
    worst_cpu = worst_rss = status = Measured(0.0, 0.0, Units())
    fold_cpu = 0.0
    fold_units = Units()
    for ticket in range(1, job.tickets + 1):
        record = {"pk": {"S": JOB}, "sk": {"S": ledger.layout._log_sk(ticket)}, "m": {"S": job.record(ticket)},
                  "r": {"S": f"request-{ticket}"}, "prev_at": {"N": "1764628800.123"}}
        now = record["m"]["S"].count(",") + 1
        reported += now
        writer_wru += 1 + max(1, math.ceil(item_size(record) / KB))  # the tally ADD, the record
        tally = table.items[(JOB, ledger.TALLY_SK)]  # the completion replaces the item
        tally.update({"tickets": {"N": str(ticket)}, "messages_reported": {"N": str(reported)},
                      "ticket_at": {"N": "1764628800.123"}})
        table.visible = ticket
        if ticket == job.tickets // 2:
            _, status = measure(lambda: ledger.get_job(ddb, TABLE, JOB), table)
        if not ledger.should_settle(tally | {"reported_now": {"N": str(now)}}):
            continue
        settles += 1
        done, spent = measure(partial(ledger.settle, ddb, TABLE, JOB, owner=f"w{ticket}",
                                      lease_s=50), table)
        fold_cpu += spent.cpu_s
        fold_units = Units(fold_units.write + spent.units.write, fold_units.read + spent.units.read)
        worst_cpu = max(worst_cpu, spent, key=lambda m: m.cpu_s)
        worst_rss = max(worst_rss, spent, key=lambda m: m.rss_mb)
        if done is not None and done.summary is not None:
            summaries += 1
            ledger.mark_published(ddb, TABLE, JOB)
            completing = completing or spent
    counted = ledger.get_job(ddb, TABLE, JOB) or {}
    expected = job.expected()
    exact = (counted.get("status") == ledger.COMPLETE and
             (counted["rows_written"], counted["rows_rejected"], counted["rows_superseded"]) ==
             (expected.written, expected.rejected, expected.superseded))
    # After completion: one writer invocation with 10 replayed messages (one of them
    # delivered twice in the batch's life) and a late duplicate of an original message.
    fixed = set(job.replayed)
    still_rejected = [seq for seq in (r * RANGE_SPAN + n for r in range(RANGES)
                                      for n in range(7, messages // RANGES, REJECT_EVERY))
                      if seq not in fixed]
    batch = {f"{seq}~late": MessageCounts(1, 0, 0) for seq in still_rejected[:10]}
    batch[str(job.stream[123])] = _counts(job.stream[123])
    (tally_now,), record_spent = measure(
        lambda: ledger.record_batch(ddb, TABLE, "replay-request", {JOB: batch}), table)
    done, replay_spent = measure(lambda: ledger.settle(ddb, TABLE, JOB, owner="replayer",
                                                       lease_s=50), table)
    after = ledger.get_job(ddb, TABLE, JOB) or {}
    exact = exact and (after["rows_written"], after["rows_rejected"]) == (
        expected.written + 10, expected.rejected - 10) and ledger.should_settle(tally_now)
    assert completing is not None, "the job never completed"
    return ScaleResult(messages, job.tickets, len(job.stream), settles, completing, worst_cpu,
                       worst_rss, fold_cpu, fold_units.write, fold_units.read, writer_wru,
                       record_spent, replay_spent, status, exact, summaries, synth_s)


def old_job_item_units() -> tuple[int, int, int]:
    """Write units of the previous format's per-invocation update of the job item (its
    counter lived there): a small sequential job's item, a 200-range parallel job's, and
    one with the largest header the splitter accepts (64 KiB)."""
    base = {"pk": {"S": JOB}, "sk": {"S": "job"}, "status": {"S": "RUNNING"},
            "source": {"S": "s3://bucket/uploads/big.csv"}, "table": {"S": "items"},
            "started_at": {"S": "2026-12-01T21:00:00.000+00:00"}, "split_owner": {"S": "x" * 36},
            "messages_reported": {"N": "123456"}, "range_bytes": {"N": "8388608"},
            "rows_read": {"N": "100000000"}, "messages_total": {"N": "4000000"},
            "error_location": {"S": "s3://bucket/errors/" + JOB + "/"},
            "header": {"L": [{"S": f"column_{i}"} for i in range(20)]}}
    ranges = {f"{kind}s_done": {"NS": [str(i) for i in range(RANGES)]}
              for kind in ("scan", "check", "range")}
    parallel = base | ranges | {"parallel_ranges": {"N": "200"}, "header_line": {"N": "1"}}
    wide = parallel | {"header": {"L": [{"S": "h" * 1000} for _ in range(64)]}}
    return tuple(max(1, math.ceil(item_size(i) / KB)) for i in (base, parallel, wide))  # type: ignore[return-value]


# ------------------------------------------------------------------ the reconciler

RECONCILE_RUNS_PER_HOUR = 60  # PipelineConfig.reconcile_every_s = 60
RUNNING_JOBS = 20
CALL_ROUND_TRIP_S = 0.010  # assumed per DynamoDB call inside the region (not measured here)
WRITE_PRICE = 0.625 / 1e6  # on-demand, per write request unit
READ_PRICE = 0.125 / 1e6  # on-demand, per read request unit
LAMBDA_REQUEST_PRICE = 0.20 / 1e6
LAMBDA_GB_S_PRICE = 0.0000133334  # arm64


@dataclass
class ReconcilerCost:
    idle: Measured  # one run over an empty active index
    per_job: Units  # one visit of a RUNNING job whose writers folded their own reports
    per_job_cpu_s: float
    exact: bool


def reconciler_cost(jobs: int = RUNNING_JOBS) -> ReconcilerCost:
    """The reconciler's runs through the real code: over an empty active index, and over
    `jobs` RUNNING jobs (each split into 1,000 messages, 300 reported and folded by their
    own writers, as in the steady state; the reconciler finds nothing to fold)."""
    table = MemoryLedger(lambda ticket: "")
    ddb: Any = table
    now = 1_764_628_800.0

    def run() -> list[ledger.Reconciled]:
        return ledger.reconcile(ddb, TABLE, owner="reconciler", time_left=lambda: 50.0,
                                clock=lambda: now, sleep=lambda s: None)

    _, idle = measure(run, table)
    for n in range(jobs):
        job = f"running-{n:03d}"
        ledger.start_job(ddb, TABLE, job, source_uri=f"s3://bucket/uploads/{n}.csv",
                         table="items", owner="splitter", clock=lambda: now)
        ledger.finish_split(ddb, TABLE, job, rows_read=25_000, messages_total=1000,
                            header=["account"], error_location="s3://bucket/errors/",
                            clock=lambda: now)
        for start in range(0, 300, 100):
            ledger.record_batch(ddb, TABLE, f"w{n}-{start}", {job: {
                str(seq): MessageCounts(25, 0, 0) for seq in range(start, start + 100)}},
                clock=lambda: now)
        ledger.settle(ddb, TABLE, job, owner=f"w{n}", clock=lambda: now, sleep=lambda s: None)
    ended, visit = measure(run, table)
    statuses = {(ledger.get_job(ddb, TABLE, f"running-{n:03d}") or {}).get("status")
                for n in range(jobs)}
    per_job = visit.units - idle.units
    return ReconcilerCost(idle, Units(per_job.write // jobs, per_job.read / jobs,
                                      per_job.calls // jobs),
                          (visit.cpu_s - idle.cpu_s) / jobs,
                          ended == [] and statuses == {ledger.RUNNING})


def reconciler_rows(rows: list[tuple[str, str, str, str, str]]) -> None:
    from bench.invocation import stack_config

    writer_mb = stack_config().DEFAULT_WRITER_MEMORY_MB
    r = reconciler_cost()
    memory_gb = writer_mb / 1024
    idle_s = r.idle.cpu_s + r.idle.units.calls * CALL_ROUND_TRIP_S
    idle_hour = RECONCILE_RUNS_PER_HOUR * (
        LAMBDA_REQUEST_PRICE + idle_s * memory_gb * LAMBDA_GB_S_PRICE
        + r.idle.units.write * WRITE_PRICE + r.idle.units.read * READ_PRICE)
    job_s = r.per_job_cpu_s + r.per_job.calls * CALL_ROUND_TRIP_S
    job_hour = RECONCILE_RUNS_PER_HOUR * (job_s * memory_gb * LAMBDA_GB_S_PRICE
                                          + r.per_job.write * WRITE_PRICE
                                          + r.per_job.read * READ_PRICE)
    rows.append((
        f"reconciler: an idle hour ({RECONCILE_RUNS_PER_HOUR} runs, no active job)",
        f"${idle_hour:.6f} / hour; a run: {r.idle.units.calls} call(s), "
        f"{r.idle.units.read:.0f} RRU, {r.idle.cpu_s * 1000:.1f} ms CPU",
        f"a {writer_mb} MB writer invocation; {CALL_ROUND_TRIP_S * 1000:.0f} ms a "
        "call assumed", "—", goal(r.idle.units.calls <= 1 and idle_hour < 0.001,
                                  "1 Query a run, < $0.001 an hour"),
    ))
    rows.append((
        f"reconciler: per RUNNING job ({RUNNING_JOBS} jobs, writers up to date)",
        f"${job_hour:.6f} / job-hour; a visit: {r.per_job.calls} calls, {r.per_job.write} WRU, "
        f"{r.per_job.read:.0f} RRU, {r.per_job_cpu_s * 1000:.1f} ms CPU",
        "none reached COMPLETE or STALLED early" if r.exact else "A JOB ENDED EARLY", "—",
        goal(r.exact and r.per_job.calls <= 10, "a few small calls, the job's size aside"),
    ))


# ------------------------------------------------------------------ cancellation's cost

CANCEL_CHECK_MESSAGES = 20_000


def cancel_rows(rows: list[tuple[str, str, str, str, str]]) -> None:
    """What `fanout cancel` costs the writers while no job is cancelled: the ledger calls
    and units of a writer invocation's report (record_batch, then learn_cancels, which
    reads the tally the ADD returned) against the same report without the check; and the
    CPU of the per-message check (writer.load.dropped) as a share of the mapping the
    writer does for each message anyway (writer.load.prepare), both in this process."""
    from fanout.contract import RowsMessage, Source
    from fanout.mapping import Spec
    from fanout.runtime import Runtime
    from fanout.settings import Settings
    from writer.load import dropped, learn_cancels, prepare

    table = MemoryLedger(lambda ticket: "")
    ddb: Any = table
    now = 1_764_628_800.0
    for job in ("plain", "checked"):
        ledger.start_job(ddb, TABLE, job, source_uri="s3://b/k.csv", table="items", owner="s",
                         clock=lambda: now)
        ledger.finish_split(ddb, TABLE, job, rows_read=25_000, messages_total=1000,
                            header=["account"], error_location="s3://b/errors/", clock=lambda: now)
    report = {str(seq): MessageCounts(25, 0, 0) for seq in range(MESSAGES_PER_INVOCATION)}
    runtime = Runtime(Settings(table_name="items", ledger_table_name=TABLE), Spec.default(),
                      None)  # type: ignore[arg-type]  # the check reads no client
    _, plain = measure(lambda: ledger.record_batch(ddb, TABLE, "w1", {"plain": report},
                                                   clock=lambda: now), table)
    _, checked = measure(lambda: learn_cancels(runtime, ledger.record_batch(
        ddb, TABLE, "w2", {"checked": report}, clock=lambda: now)), table)
    extra = checked.units - plain.units
    rows.append((
        f"cancel: a writer report of {MESSAGES_PER_INVOCATION} messages, no job cancelled",
        f"{checked.units.calls} calls, {checked.units.write} WRU, {checked.units.read:.0f} RRU; "
        f"without the check {plain.units.calls} calls, {plain.units.write} WRU, "
        f"{plain.units.read:.0f} RRU",
        "the cancel is read from the tally the ticket ADD returns", f"extra: {extra.calls} calls",
        goal(extra.calls == 0 and extra.write == 0 and extra.read == 0 and not runtime.cancelled_jobs,
             "0 extra calls and units"),
    ))
    header = ["account", "offer_id", "risk"]
    messages = [RowsMessage(f"job-{n % 7}", n, Source("b", "k.csv", "e"), header,
                            list(range(2 + 25 * n, 27 + 25 * n)),
                            [[f"a{i % 5}", f"o{n}-{i}", "low"] for i in range(25)])
                for n in range(CANCEL_CHECK_MESSAGES)]
    spec = Spec.default("account", "offer_id")
    runtime.cancelled_jobs["another-job"] = None  # a process that knows of some other cancel

    def best_of_3(step: Callable[[RowsMessage], Any]) -> float:
        spent = []
        for _ in range(3):
            started = time.process_time()
            for message in messages:
                step(message)
            spent.append(time.process_time() - started)
        return min(spent)
    mapping_s = best_of_3(lambda message: prepare(message, spec))
    check_s = best_of_3(lambda message: dropped(message, runtime))
    rows.append((
        "cancel: the writer's per-message check (writer.load.dropped), no job of the batch "
        "cancelled",
        f"{check_s / len(messages) * 1e9:.0f} ns a message = {100 * check_s / mapping_s:.2f} % of "
        "mapping its 25 rows",
        f"mapping (writer.load.prepare): {mapping_s / len(messages) * 1e6:.0f} µs a message",
        "no AWS call", goal(check_s <= 0.02 * mapping_s, "≤ 2 % of the mapping (best of 3)"),
    ))


# ------------------------------------------------------------------ the bench's rows

def _scaled(cpu_s: float) -> float:
    return cpu_s / WRITER_VCPU


def add_rows(rows: list[tuple[str, str, str, str, str]], notes: list[str], quick: bool) -> None:
    """Run the ledger scale case and add its rows and note to `python -m bench`'s table."""
    messages = 1_000_000 if quick else 4_000_000
    r = run_scale(messages)
    label = f"{messages * ROWS_PER_MESSAGE / 1e6:.0f}M-row job ({messages:,} messages)"
    c = r.completing
    rows.append((
        f"ledger: completing settle of a {label}: peak RSS above baseline / CPU (at 256 MB)",
        f"{c.rss_mb:.1f} MB / {c.cpu_s * 1000:.0f} ms ({_scaled(c.cpu_s):.2f} s)",
        "previous format: 868 MB / 9.8 s of a core (the issue's figure)",
        f"{c.units.write} WRU, {c.units.read:.0f} RRU",
        goal(c.rss_mb <= 64 and _scaled(c.cpu_s) < WRITER_TIMEOUT_S / 4,
              "≤ 64 MB, well inside 60 s"),
    ))
    rows.append((
        f"ledger: worst settle of the {label} ({r.settles:,} settles in all)",
        f"{r.worst_rss.rss_mb:.1f} MB peak; {r.worst_cpu.cpu_s * 1000:.0f} ms CPU "
        f"({_scaled(r.worst_cpu.cpu_s):.2f} s at 256 MB)",
        f"all folds: {r.fold_cpu_total_s:.1f} s CPU", "—",
        goal(r.worst_rss.rss_mb <= 64 and _scaled(r.worst_cpu.cpu_s) < WRITER_TIMEOUT_S / 4,
              "≤ 64 MB, well inside 60 s"),
    ))
    rec, rep = r.replay_record, r.replay_settle
    rows.append((
        "ledger: a replay after completion (10 replayed messages + a late duplicate): "
        "record + recount",
        f"{rec.rss_mb + rep.rss_mb:.2f} MB / {(rec.cpu_s + rep.cpu_s) * 1000:.1f} ms CPU "
        f"({_scaled(rec.cpu_s + rep.cpu_s) * 1000:.0f} ms at 256 MB)",
        "previous format: a full recount (as completion)",
        f"{rec.units.write + rep.units.write} WRU, {rec.units.read + rep.units.read:.0f} RRU",
        goal(rec.rss_mb + rep.rss_mb < 1 and rec.cpu_s + rep.cpu_s < 0.1, "< 1 MB, < 100 ms"),
    ))
    rows.append((
        f"ledger: `fanout status` of the {label} half way (ledger.get_job)",
        f"{r.status.rss_mb:.2f} MB / {r.status.cpu_s * 1000:.2f} ms CPU, "
        f"{r.status.units.read:.0f} RRU",
        "previous format: a full read of the job's batch records",
        "—", goal(r.status.units.read <= 3, "3 small reads, whatever the job's size"),
    ))
    data_wru = messages * ROWS_PER_MESSAGE
    ledger_pct = 100 * (r.writer_wru + r.fold_wru) / data_wru
    rows.append((
        f"ledger: bookkeeping write units of the {label}",
        f"{r.writer_wru + r.fold_wru:,} WRU = {ledger_pct:.2f} % of {data_wru:,} data WRU",
        f"writers {r.writer_wru:,} (tally + log record), folds {r.fold_wru:,}",
        f"{r.fold_rru:,.0f} RRU", goal(ledger_pct <= 1.0, "≤ 1 %"),
    ))
    # The same job cut 10 messages an invocation (the local BatchSize; the 0.8%),
    # on a quarter of the messages: bookkeeping is a ratio, the job's size barely moves it.
    small_batches = run_scale(messages // 4, per_invocation=10)
    pct_10 = 100 * (small_batches.writer_wru + small_batches.fold_wru) / (
        messages // 4 * ROWS_PER_MESSAGE)
    rows.append((
        f"ledger: bookkeeping write units at 10 messages per invocation ({messages // 4:,} "
        "messages)",
        f"{pct_10:.2f} % of the data WRU",
        f"writers {small_batches.writer_wru:,}, folds {small_batches.fold_wru:,} "
        f"({small_batches.settles:,} settles); previous format 0.8 % sequential, 2.4 % for a "
        "200-range parallel job", "exact" if small_batches.exact else "NOT EXACT",
        goal(pct_10 <= 1.0 and small_batches.exact, "≤ 1 %"),
    ))
    reconciler_rows(rows)
    cancel_rows(rows)
    small, parallel, wide = old_job_item_units()
    notes.append(
        f"Ledger scale ({label}, {r.deliveries:,} deliveries: {DUPLICATE_RATE:.0%} duplicates, "
        f"{REPLAYS} replayed messages; a 200-range parallel split delivered interleaved, "
        f"{MESSAGES_PER_INVOCATION} messages per writer invocation, {r.tickets:,} log "
        f"records; synthesized in {r.synth_s:.1f} s): the real fanout.ledger code on an "
        f"in-memory table (bench/ledger_scale.py), every settle ledger.should_settle calls "
        f"for, {r.settles:,} in all; counts exact: {'yes' if r.exact else 'NO'}; summaries "
        f"returned for publishing: {r.summaries} (goal 1). CPU is this machine's, scaled to "
        f"the writer's share ({WRITER_VCPU:.3f} vCPU at 256 MB), botocore's serializing "
        f"and parsing of every call included. The previous format's counter lived on the job item, so "
        f"each writer invocation's update cost {small} WRU for a sequential job's item, "
        f"{parallel} for a 200-range parallel job's (its done-sets), {wide} with a 64 KiB "
        f"header; the tally is under 1 KB whatever the job item holds.")


def main() -> None:
    """`python -m bench.ledger_scale [--quick]`: these rows alone."""
    print_alone(add_rows)

if __name__ == "__main__":
    main()
