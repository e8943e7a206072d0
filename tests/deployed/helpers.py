"""What the deployed tests do over and over: files, waits, scans, the CLIs as subprocesses."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from fanout import ledger
from fanout_cli.local import ministack

T = TypeVar("T")
BIN = Path(sys.executable).parent


def write_csv(path: Path, rows: int, *, poison: frozenset[int] = frozenset(),
              tag: str = "a") -> list[dict[str, str]]:
    """account,offer_id,risk rows with distinct keys; the given 1-based file lines (the
    header is line 1) get an empty account, which the writer rejects (empty_key)."""
    records = [{"account": "" if line in poison else f"acct-{line % 7}", "offer_id": f"{tag}{line}",
                "risk": f"r{line % 3}"} for line in range(2, rows + 2)]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["account", "offer_id", "risk"])
        writer.writeheader()
        writer.writerows(records)
    return records


def wait_until(predicate: Callable[[], T | None], *, timeout_s: float, what: str,
               every_s: float = 0.5) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def finished_job(dynamodb: Any, ledger_table: str, job: str, timeout_s: float = 120) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        item = ledger.get_job(dynamodb, ledger_table, job)
        return item if item and item.get("status") in (ledger.COMPLETE, ledger.FAILED) else None
    return wait_until(done, timeout_s=timeout_s, what=f"job {job} to finish")


def scan(dynamodb: Any, table: str) -> list[dict[str, str]]:
    """Every item of the table as {attribute: string value} (scanned, all pages)."""
    items = []
    for page in dynamodb.get_paginator("scan").paginate(TableName=table):
        items.extend({name: next(iter(value.values())) for name, value in item.items()}
                     for item in page["Items"])
    return items


def queue_depth(sqs: Any, url: str) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages",
                                      "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return sum(int(v) for v in attributes.values())


def run(command: list[str], endpoint_url: str, timeout_s: float = 180) -> subprocess.CompletedProcess[str]:
    """A CLI as a user in a second terminal runs it: only the endpoint and the printed
    credentials set (no AWS profile, nothing else)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= ministack.client_env(endpoint_url) | {"PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s,
                          check=False)
