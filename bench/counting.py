"""Count the AWS requests the handlers make, in the units AWS bills.

`RequestCounter.wrap` goes into `IngestOptions.wrap_clients`: the handlers and the local
event source mapping call AWS through these proxies; the local runtime's own calls
(upload, progress polling, the output export) use the raw clients and are not counted.

Billing units recorded per call:
* DynamoDB: write units of data items (BatchWriteItem, each item ceil(size/1 KB), minus
  UnprocessedItems) apart from ledger write units (PutItem/UpdateItem: ceil(size/1 KB) of
  the item when the response returns it, else 1 -- ledger items are small); read units
  (GetItem/Query, consistent: ceil(bytes/4 KB); BatchGetItem: that per item).
* SQS: each 64 KiB chunk of a request's payload (sent bodies, or received bodies) is one
  billed request; empty receives (the local driver's 20 ms polling) are counted, not
  billed. Calls on the local S3-notification queue are local plumbing (in AWS, S3 invokes
  the splitter directly): counted apart and not priced.
* S3: GET class (GetObject, HeadObject) and PUT class (PutObject, List*).
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from bench.model import read_units, sqs_billed_requests, write_units
from fanout.aws import Clients
from fanout.mapping import item_size
from fanout.settings import ResourceNames


@dataclass
class Counts:
    calls: Counter[str] = field(default_factory=Counter)  # "service.operation[target]"
    # billed units per calls key (DynamoDB reads come in halves)
    units: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    item_wru: int = 0
    items_written: int = 0
    ledger_wru: int = 0
    rru: float = 0.0
    sqs_billed: int = 0
    local_only: Counter[str] = field(default_factory=Counter)
    s3_get: int = 0
    s3_put: int = 0
    empty_receives: Counter[str] = field(default_factory=Counter)
    writer_invocations: int = 0
    messages_received: int = 0
    splitter_invocations: int = 0


class RequestCounter:
    def __init__(self, names: ResourceNames | None = None, table: str | None = None) -> None:
        self.names = names or ResourceNames()
        self.table = table or self.names.table
        self.counts = Counts()
        self._lock = threading.Lock()

    def wrap(self, clients: Clients) -> Clients:
        return Clients(
            s3=_Proxy(clients.s3, self, "s3"),
            sqs=_Proxy(clients.sqs, self, "sqs"),
            dynamodb=_Proxy(clients.dynamodb, self, "dynamodb"),
            sns=_Proxy(clients.sns, self, "sns") if clients.sns is not None else None,
        )

    # ------------------------------------------------------------------ accounting

    def _queue(self, url: str) -> str:
        name = url.rstrip("/").rsplit("/", 1)[-1]
        if name == self.names.rows_queue:
            return "rows"
        if name == self.names.dlq:
            return "dlq"
        return "local"

    def record(self, service: str, operation: str, params: dict[str, Any],
               response: dict[str, Any] | None) -> None:
        c = self.counts
        with self._lock:
            if service == "sqs":
                self._sqs(operation, params, response or {})
                return
            key = f"{service}.{operation}"
            c.calls[key] += 1
            if service == "dynamodb":
                c.units[key] += self._dynamodb(operation, params, response)
            elif service == "s3":
                if operation in ("get_object", "head_object"):
                    c.s3_get += 1
                elif operation in ("put_object", "list_objects_v2", "list_objects"):
                    c.s3_put += 1
                c.units[key] += 1

    def _sqs(self, operation: str, params: dict[str, Any], response: dict[str, Any]) -> None:
        c = self.counts
        target = self._queue(params.get("QueueUrl", ""))
        key = f"sqs.{operation}[{target}]"
        if target == "local":
            c.local_only[key] += 1
            if operation == "receive_message":
                for m in response.get("Messages", []):
                    if "s3:TestEvent" not in m.get("Body", ""):
                        c.splitter_invocations += 1
            return
        if operation == "get_queue_attributes":  # the local backpressure's depth probe
            c.local_only[key] += 1
            return
        c.calls[key] += 1
        if operation == "send_message_batch":
            billed = sqs_billed_requests(
                sum(len(e["MessageBody"].encode()) for e in params["Entries"]))
        elif operation == "send_message":
            billed = sqs_billed_requests(len(params["MessageBody"].encode()))
        elif operation == "receive_message":
            messages = response.get("Messages", [])
            billed = sqs_billed_requests(sum(len(m["Body"].encode()) for m in messages))
            if messages and target == "rows":
                c.writer_invocations += 1
                c.messages_received += len(messages)
            if not messages:
                # The local driver polls an empty queue every 20 ms; AWS's pollers long-poll
                # and are busy during a load. Listed, not priced.
                c.empty_receives[target] += 1
                billed = 0
        else:
            billed = 1
        c.sqs_billed += billed
        c.units[key] += billed

    def _dynamodb(self, operation: str, params: dict[str, Any],
                  response: dict[str, Any] | None) -> float:
        """Record and return the call's billed units (WRU or RRU)."""
        c = self.counts
        if operation == "batch_write_item":
            if response is None:
                return 0  # rejected whole: nothing written
            unprocessed = sum(len(v) for v in (response.get("UnprocessedItems") or {}).values())
            sizes = [item_size(r["PutRequest"]["Item"])
                     for requests in params["RequestItems"].values()
                     for r in requests if "PutRequest" in r]
            written = sorted(sizes)[:max(0, len(sizes) - unprocessed)]
            units = sum(write_units(s) for s in written)
            if self.table in params["RequestItems"]:
                c.item_wru += units
                c.items_written += len(written)
            else:
                c.ledger_wru += units
            return units
        if operation in ("put_item", "update_item", "delete_item"):
            item = (response or {}).get("Attributes") or params.get("Item")
            units = write_units(item_size(item)) if item else 1
            c.ledger_wru += units
            return units
        if operation == "get_item":
            item = (response or {}).get("Item")
            read = read_units(item_size(item) if item else 0,
                              consistent=bool(params.get("ConsistentRead")))
            c.rru += read
            return read
        if operation == "transact_write_items":  # the ledger's completion: 2 units an item
            units = 2 * len(params.get("TransactItems", []))
            c.ledger_wru += units
            return units
        if operation == "batch_get_item":  # the ledger's fold reading its shards
            items = [i for found in (response or {}).get("Responses", {}).values() for i in found]
            read = sum(read_units(item_size(i)) for i in items) if items else 0.0
            c.rru += read
            return read
        if operation in ("query", "scan"):
            size = sum(item_size(i) for i in (response or {}).get("Items", []))
            read = read_units(size, consistent=bool(params.get("ConsistentRead")))
            c.rru += read
            return read
        return 0


class _Proxy:
    """A client whose API calls are reported to the counter (failed calls too)."""

    def __init__(self, client: Any, counter: RequestCounter, service: str) -> None:
        self._client = client
        self._counter = counter
        self._service = service

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name == "get_paginator":
            return lambda operation: _Paginator(attr(operation), self._counter, self._service,
                                                operation)
        if name.startswith("_") or not callable(attr) or name in ("get_waiter", "can_paginate"):
            return attr

        def counted(*args: Any, **params: Any) -> Any:
            try:
                response = attr(*args, **params)
            except Exception:
                self._counter.record(self._service, name, params, None)
                raise
            self._counter.record(self._service, name, params, response)
            return response
        return counted


class _Paginator:
    """A paginator whose every page request is reported to the counter."""

    def __init__(self, paginator: Any, counter: RequestCounter, service: str,
                 operation: str) -> None:
        self._paginator = paginator
        self._counter = counter
        self._service = service
        self._operation = operation

    def paginate(self, **params: Any) -> Any:
        for page in self._paginator.paginate(**params):
            self._counter.record(self._service, self._operation, params, page)
            yield page
