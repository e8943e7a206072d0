"""A parallel split's steps (splitter/fan.py calls these and touches the table no other
way): the job item's parallel-split attributes and the `<kind>#<index>` step items."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from fanout.ledger.layout import JOB_SK, Clock, _n, _s, now_iso


def record_plan(ddb: Any, table: str, job: str, *, ranges: int, header: list[str],
                header_line: int) -> None:
    """A parallel split's plan: how many ranges, and the header every range's messages carry."""
    ddb.update_item(
        TableName=table, Key={"pk": _s(job), "sk": _s(JOB_SK)},
        UpdateExpression="SET parallel_ranges = :n, #h = :h, header_line = :l",
        ExpressionAttributeNames={"#h": "header"},
        ExpressionAttributeValues={":n": _n(ranges), ":h": {"L": [_s(h) for h in header]},
                                   ":l": _n(header_line)},
    )


def report_step(ddb: Any, table: str, job: str, kind: str, index: int,
                result: Mapping[str, Any], *, clock: Clock = time.time) -> dict[str, Any]:
    """Store one step's result (JSON) and add its index to the job's `<kind>s_done` set
    (both idempotent); return the job item as it is now."""
    ddb.put_item(TableName=table, Item={"pk": _s(job), "sk": _s(f"{kind}#{index:05d}"),
                                        "result": _s(json.dumps(result, separators=(",", ":")))})
    attributes: dict[str, Any] = ddb.update_item(
        TableName=table, Key={"pk": _s(job), "sk": _s(JOB_SK)},
        # `checkpoint_at`: the split made progress (the reconciler stalls a split without it).
        UpdateExpression=f"ADD {kind}s_done :i SET checkpoint_at = :t",
        ExpressionAttributeValues={":i": {"NS": [str(index)]}, ":t": _s(now_iso(clock))},
        ReturnValues="ALL_NEW",
    )["Attributes"]
    return attributes


def steps_done(job_item: Mapping[str, Any], kind: str) -> set[int]:
    """The indexes of the `kind` steps that have reported."""
    return {int(i) for i in job_item.get(f"{kind}s_done", {}).get("NS", [])}


def stage_fanned(job_item: Mapping[str, Any], kind: str) -> bool:
    return f"{kind}s_fanned" in job_item


def plan_header(job_item: Mapping[str, Any]) -> tuple[list[str], int]:
    """The header a parallel split's plan recorded, and its line."""
    return ([h.get("S", "") for h in job_item.get("header", {}).get("L", [])],
            int(job_item.get("header_line", {}).get("N", "1")))


def mark_fanned(ddb: Any, table: str, job: str, kind: str) -> None:
    """The `kind` stage has started the next one (so a duplicate step does not again)."""
    ddb.update_item(TableName=table, Key={"pk": _s(job), "sk": _s(JOB_SK)},
                    UpdateExpression=f"SET {kind}s_fanned = :t",
                    ExpressionAttributeValues={":t": {"BOOL": True}})


def step_results(ddb: Any, table: str, job: str, kind: str) -> list[dict[str, Any] | None]:
    """Every `kind` step's stored result, in index order (at most 200: one per range);
    None for a step stored by an earlier version (no `result`)."""
    items: list[dict[str, Any]] = []
    for page in ddb.get_paginator("query").paginate(
        TableName=table, KeyConditionExpression="pk = :pk AND begins_with(sk, :p)",
        ExpressionAttributeValues={":pk": _s(job), ":p": _s(f"{kind}#")}, ConsistentRead=True,
    ):
        items.extend(page.get("Items", []))
    items.sort(key=lambda item: item["sk"]["S"])
    return [json.loads(item["result"]["S"]) if "result" in item else None for item in items]
