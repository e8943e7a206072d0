"""A strict AWS layer for tests: holds requests to the real AWS contract and injects faults.

moto is more lenient than AWS: it never returns UnprocessedItems, accepts more than 25
requests in a BatchWriteItem, and accepts two requests for one key unless the items are
identical. These proxies sit between the code under test and moto:

* `StrictDynamoDB.batch_write_item` rejects, as AWS does, the whole call with a
  ValidationException for more than 25 requests, two requests for one key, an empty
  string in a key attribute, or an item over 400 KB; and injects UnprocessedItems,
  ProvisionedThroughputExceededException and 500s at chosen rates.
* `StrictSQS` rejects a SendMessageBatch of more than 10 entries or over 1 MiB, injects
  `Failed` entries, and duplicates deliveries (a received message is sent again, as
  at-least-once delivery may hand it over twice).
* `StrictDynamoDB.batch_get_item` rejects more than 100 keys or a key asked twice, and
  injects UnprocessedKeys.

Every decision comes from one seeded `random.Random`, so a failing run can be replayed.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from fanout.aws import Clients
from fanout.mapping import item_size

MAX_BATCH_WRITE_ITEMS = 25
MAX_ITEM_BYTES = 400 * 1024
MAX_SEND_BATCH = 10
MAX_BATCH_BYTES = 1_048_576
MAX_BATCH_GET_KEYS = 100


@dataclass
class Faults:
    unprocessed_rate: float = 0.0  # per write request, returned in UnprocessedItems
    throttle_rate: float = 0.0  # per BatchWriteItem call, ProvisionedThroughputExceeded
    server_error_rate: float = 0.0  # per BatchWriteItem call, HTTP 500
    send_failed_rate: float = 0.0  # per SendMessageBatch entry, a Failed entry
    duplicate_delivery_rate: float = 0.0  # per received message, delivered again later
    unprocessed_keys_rate: float = 0.0  # per BatchGetItem key, returned in UnprocessedKeys
    seed: int = 0


@dataclass
class Record:
    """What the strict layer saw: for assertions."""

    calls: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    injected: Counter[str] = field(default_factory=Counter)


def _client_error(code: str, message: str, operation: str, status: int = 400) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}},
        operation,
    )


class _Proxy:
    def __init__(self, client: Any, faults: Faults, record: Record, rng: random.Random,
                 lock: threading.Lock) -> None:
        self._client = client
        self._faults = faults
        self._record = record
        self._rng = rng
        self._lock = lock

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if callable(attr) and not name.startswith("_") and name not in ("get_paginator",):
            def counted(*args: Any, **kwargs: Any) -> Any:
                with self._lock:
                    self._record.calls[name] += 1
                return attr(*args, **kwargs)
            return counted
        return attr

    def _chance(self, rate: float) -> bool:
        if rate <= 0:
            return False
        with self._lock:
            return self._rng.random() < rate

    def _violation(self, text: str, operation: str) -> ClientError:
        with self._lock:
            self._record.violations.append(text)
        return _client_error("ValidationException", text, operation)


class StrictDynamoDB(_Proxy):
    _key_names: dict[str, list[str]]

    def _keys(self, table: str) -> list[str]:
        if not hasattr(self, "_key_names"):
            self._key_names = {}
        if table not in self._key_names:
            schema = self._client.describe_table(TableName=table)["Table"]["KeySchema"]
            self._key_names[table] = [k["AttributeName"] for k in schema]
        return self._key_names[table]

    def batch_write_item(self, **params: Any) -> Any:
        with self._lock:
            self._record.calls["batch_write_item"] += 1
        request_items = params["RequestItems"]
        total = sum(len(v) for v in request_items.values())
        if total > MAX_BATCH_WRITE_ITEMS:
            raise self._violation(
                f"Too many items requested for the BatchWriteItem call ({total})", "BatchWriteItem")
        for table, requests in request_items.items():
            keys = self._keys(table)
            seen: set[tuple[Any, ...]] = set()
            for request in requests:
                item = request.get("PutRequest", {}).get("Item") or request["DeleteRequest"]["Key"]
                key_values = []
                for name in keys:
                    if name not in item:
                        raise self._violation(
                            f"One of the required keys was not given a value: {name}",
                            "BatchWriteItem")
                    (type_, value), = item[name].items()
                    if type_ in ("S", "B") and len(value) == 0:
                        raise self._violation(
                            f"One or more parameter values are not valid. The AttributeValue "
                            f"for a key attribute cannot contain an empty string value. Key: {name}",
                            "BatchWriteItem")
                    key_values.append((type_, value))
                key = tuple(key_values)
                if key in seen:
                    raise self._violation("Provided list of item keys contains duplicates",
                                          "BatchWriteItem")
                seen.add(key)
                if "PutRequest" in request and item_size(item) > MAX_ITEM_BYTES:
                    raise self._violation("Item size has exceeded the maximum allowed size",
                                          "BatchWriteItem")
        if self._chance(self._faults.throttle_rate):
            with self._lock:
                self._record.injected["throttle"] += 1
            raise _client_error("ProvisionedThroughputExceededException",
                                "injected: throughput exceeded", "BatchWriteItem")
        if self._chance(self._faults.server_error_rate):
            with self._lock:
                self._record.injected["server_error"] += 1
            raise _client_error("InternalServerError", "injected: 500", "BatchWriteItem", 500)
        send: dict[str, list[Any]] = {}
        unprocessed: dict[str, list[Any]] = {}
        for table, requests in request_items.items():
            for request in requests:
                if self._chance(self._faults.unprocessed_rate):
                    unprocessed.setdefault(table, []).append(request)
                else:
                    send.setdefault(table, []).append(request)
        if unprocessed:
            with self._lock:
                self._record.injected["unprocessed"] += sum(len(v) for v in unprocessed.values())
        response = self._client.batch_write_item(RequestItems=send) if send else {}
        merged = dict(response.get("UnprocessedItems") or {})
        for table, requests in unprocessed.items():
            merged.setdefault(table, []).extend(requests)
        return {**response, "UnprocessedItems": merged}


    def batch_get_item(self, **params: Any) -> Any:
        """AWS rejects more than 100 keys, or one key twice, in a call; throttled keys come
        back in UnprocessedKeys."""
        with self._lock:
            self._record.calls["batch_get_item"] += 1
        request_items = params["RequestItems"]
        total = sum(len(v["Keys"]) for v in request_items.values())
        if total > MAX_BATCH_GET_KEYS:
            raise self._violation(f"Too many items requested for the BatchGetItem call ({total})",
                                  "BatchGetItem")
        send: dict[str, Any] = {}
        unprocessed: dict[str, Any] = {}
        for table, request in request_items.items():
            keys = [tuple(sorted((k, str(v)) for k, v in key.items())) for key in request["Keys"]]
            if len(set(keys)) != len(keys):
                raise self._violation("Provided list of item keys contains duplicates",
                                      "BatchGetItem")
            for key in request["Keys"]:
                target = unprocessed if self._chance(self._faults.unprocessed_keys_rate) else send
                target.setdefault(table, {**request, "Keys": []})["Keys"].append(key)
        if unprocessed:
            with self._lock:
                self._record.injected["unprocessed_keys"] += sum(
                    len(v["Keys"]) for v in unprocessed.values())
        response = self._client.batch_get_item(RequestItems=send) if send else {"Responses": {}}
        merged = dict(response.get("UnprocessedKeys") or {})
        for table, request in unprocessed.items():
            merged.setdefault(table, {**request, "Keys": []})["Keys"].extend(request["Keys"])
        return {**response, "UnprocessedKeys": merged}


class StrictSQS(_Proxy):
    def send_message_batch(self, **params: Any) -> Any:
        with self._lock:
            self._record.calls["send_message_batch"] += 1
        entries = params["Entries"]
        if len(entries) > MAX_SEND_BATCH:
            raise _client_error("AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
                                f"{len(entries)} entries", "SendMessageBatch")
        size = sum(len(e["MessageBody"].encode()) for e in entries)
        if size > MAX_BATCH_BYTES:
            raise _client_error("AWS.SimpleQueueService.BatchRequestTooLong",
                                f"batch of {size} bytes", "SendMessageBatch")
        failed = [e for e in entries if self._chance(self._faults.send_failed_rate)]
        if failed:
            with self._lock:
                self._record.injected["send_failed"] += len(failed)
        failed_ids = {e["Id"] for e in failed}
        sent = [e for e in entries if e["Id"] not in failed_ids]
        response = self._client.send_message_batch(QueueUrl=params["QueueUrl"], Entries=sent) \
            if sent else {"Successful": []}
        response["Failed"] = list(response.get("Failed") or []) + [
            {"Id": e["Id"], "SenderFault": False, "Code": "InternalError", "Message": "injected"}
            for e in failed
        ]
        return response

    def receive_message(self, **params: Any) -> Any:
        with self._lock:
            self._record.calls["receive_message"] += 1
        response = self._client.receive_message(**params)
        for message in response.get("Messages", []):
            if self._chance(self._faults.duplicate_delivery_rate):
                with self._lock:
                    self._record.injected["duplicate_delivery"] += 1
                self._client.send_message(QueueUrl=params["QueueUrl"], MessageBody=message["Body"])
        return response


@dataclass
class StrictLayer:
    """Wraps Clients; `record` says what was called, violated and injected."""

    faults: Faults = field(default_factory=Faults)
    record: Record = field(default_factory=Record)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.faults.seed)
        self._lock = threading.Lock()

    def wrap(self, clients: Clients) -> Clients:
        args = (self.faults, self.record, self._rng, self._lock)
        return Clients(
            s3=clients.s3,
            sqs=StrictSQS(clients.sqs, *args),
            dynamodb=StrictDynamoDB(clients.dynamodb, *args),
            sns=clients.sns,
        )
