"""A strict AWS layer for tests: holds requests to the real AWS contract and injects faults.

moto is more lenient than AWS: it never returns UnprocessedItems, accepts more than 25
requests in a BatchWriteItem, and accepts two requests for one key unless the items are
identical. These proxies sit between the code under test and moto:

* `StrictDynamoDB.batch_write_item` rejects, as AWS does, the whole call with a
  ValidationException for more than 25 requests, two requests for one key, an empty
  string in a key attribute, a key attribute of the wrong type, or an item over 400 KB,
  and a DeleteRequest that is not `Key` alone holding exactly the table's key
  attributes; and injects UnprocessedItems, ProvisionedThroughputExceededException and
  500s at chosen rates.
* `put_item`, `update_item` and `delete_item` (the insert and update write modes, and
  the ledger) are held to the expression rules: every `#name`/`:value` placeholder used
  is defined and every one defined is used, neither map is empty, no expression is over
  4 KB; a PutItem's key as BatchWriteItem's; an UpdateItem's `Key` is exactly the key
  attributes, and it may not change a key attribute nor name one path twice. On the
  items table (`Faults.items_table`) PutItem and UpdateItem get throttles and 500s, and
  every item write (BatchWriteItem too) can lose its reply: the call takes effect and
  then fails with a 500, as a connection dropped after DynamoDB wrote does.
* `StrictSQS` rejects a SendMessageBatch of more than 10 entries or over 1 MiB, injects
  `Failed` entries, and duplicates deliveries (a received message is sent again, as
  at-least-once delivery may hand it over twice).
* `StrictDynamoDB.batch_execute_statement` (the insert and update modes' PartiQL) rejects
  more than 25 statements, a statement over 8,192 characters, parameters that do not
  match its `?`s, a key that is not the table's, an UPDATE whose WHERE is not every key
  attribute or that SETs a key or one name twice, two statements on one item, and any
  statement of a form the writer does not send; runs them on moto as PutItem/UpdateItem
  (moto cannot parse a parameterised INSERT), answering per statement as DynamoDB does
  (`DuplicateItem`, `ConditionalCheckFailed`); and injects the call's throttles, 500s and
  lost replies and a statement's own throttle and 500.
* `StrictDynamoDB.batch_get_item` rejects more than 100 keys or a key asked twice, and
  injects UnprocessedKeys.

Every decision comes from one seeded `random.Random`, so a failing run can be replayed.
"""

from __future__ import annotations

import random
import re
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
MAX_BATCH_STATEMENTS = 25
MAX_STATEMENT_CHARS = 8192
_INSERT = re.compile(r'INSERT INTO "([^"]+)" VALUE \{(.*)\}', re.DOTALL)
_INSERT_NAME = re.compile(r"'([^']*)': \?")
_UPDATE = re.compile(r'UPDATE "([^"]+)"((?: SET "[^"]+" = \?)+) WHERE (.+)', re.DOTALL)
_QUOTED = re.compile(r'"([^"]+)"')


@dataclass
class Faults:
    unprocessed_rate: float = 0.0  # per write request, returned in UnprocessedItems
    throttle_rate: float = 0.0  # per BatchWriteItem call, ProvisionedThroughputExceeded
    server_error_rate: float = 0.0  # per BatchWriteItem call, HTTP 500
    send_failed_rate: float = 0.0  # per SendMessageBatch entry, a Failed entry
    duplicate_delivery_rate: float = 0.0  # per received message, delivered again later
    unprocessed_keys_rate: float = 0.0  # per BatchGetItem key, returned in UnprocessedKeys
    lost_reply_rate: float = 0.0  # per item write call: it takes effect, then fails with a 500
    # The table whose PutItem/UpdateItem calls get throttle_rate, server_error_rate and
    # lost_reply_rate (the row writes of insert and update); the ledger's never do.
    items_table: str | None = None
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


MAX_EXPRESSION_CHARS = 4096
EXPRESSIONS = ("ConditionExpression", "UpdateExpression", "ProjectionExpression",
               "KeyConditionExpression", "FilterExpression")
_PLACEHOLDER = re.compile(r"[#:][A-Za-z0-9_]+")
_CLAUSE = re.compile(r"\b(SET|REMOVE|ADD|DELETE)\b", re.IGNORECASE)


class StrictDynamoDB(_Proxy):
    _schemas: dict[str, list[tuple[str, str]]]

    def _schema(self, table: str) -> list[tuple[str, str]]:
        """The table's key attributes, (name, type), partition key first."""
        if not hasattr(self, "_schemas"):
            self._schemas = {}
        if table not in self._schemas:
            description = self._client.describe_table(TableName=table)["Table"]
            types = {a["AttributeName"]: a["AttributeType"]
                     for a in description["AttributeDefinitions"]}
            self._schemas[table] = [(k["AttributeName"], types[k["AttributeName"]])
                                    for k in description["KeySchema"]]
        return self._schemas[table]

    def _keys(self, table: str) -> list[str]:
        return [name for name, _ in self._schema(table)]

    def _key_of(self, table: str, item: dict[str, Any], operation: str, *,
                exact: bool = False) -> tuple[Any, ...]:
        """The key of an item (or of a `Key`, `exact`: nothing but the key attributes), held
        to the table's key schema as AWS holds it."""
        schema = self._schema(table)
        if exact and set(item) != {name for name, _ in schema}:
            raise self._violation("The provided key element does not match the schema", operation)
        key_values = []
        for name, key_type in schema:
            if name not in item:
                raise self._violation(f"One of the required keys was not given a value: {name}",
                                      operation)
            (type_, value), = item[name].items()
            if type_ != key_type:
                raise self._violation("One or more parameter values were invalid: Type mismatch "
                                      f"for key {name} expected: {key_type} actual: {type_}",
                                      operation)
            if type_ in ("S", "B") and len(value) == 0:
                raise self._violation(
                    f"One or more parameter values are not valid. The AttributeValue "
                    f"for a key attribute cannot contain an empty string value. Key: {name}",
                    operation)
            key_values.append((type_, value))
        return tuple(key_values)

    def _expressions(self, params: dict[str, Any], operation: str) -> None:
        """AWS's rules for expression placeholders: each one used is defined, each one
        defined is used, neither map is empty, no expression over 4 KB."""
        used = set()
        for name in EXPRESSIONS:
            expression = params.get(name)
            if expression is None:
                continue
            if len(expression.encode()) > MAX_EXPRESSION_CHARS:
                raise self._violation(f"Invalid {name}: Expression size has exceeded the "
                                      "maximum allowed size", operation)
            used |= set(_PLACEHOLDER.findall(expression))
        for field_name, sigil, what in (("ExpressionAttributeNames", "#", "name"),
                                        ("ExpressionAttributeValues", ":", "value")):
            defined = params.get(field_name)
            if defined is not None and not defined:
                raise self._violation(f"{field_name} must not be empty", operation)
            defined = set(defined or ())
            wanted = {p for p in used if p.startswith(sigil)}
            if wanted - defined:
                raise self._violation(f"An expression attribute {what} used in the expression "
                                      f"is not defined; attribute {what}: {sorted(wanted - defined)[0]}",
                                      operation)
            if defined - wanted:
                raise self._violation(f"Value provided in {field_name} unused in expressions: "
                                      f"keys: {{{', '.join(sorted(defined - wanted))}}}", operation)

    def _updated_paths(self, params: dict[str, Any]) -> list[str]:
        """The top-level attributes an UpdateExpression's clauses change (names resolved)."""
        names = params.get("ExpressionAttributeNames") or {}
        parts = _CLAUSE.split(params.get("UpdateExpression") or "")
        paths = []
        for keyword, body in zip(parts[1::2], parts[2::2], strict=True):
            depth, current, actions = 0, "", []
            for char in body:  # split on the commas outside parentheses
                depth += (char == "(") - (char == ")")
                if char == "," and depth == 0:
                    actions.append(current)
                    current = ""
                else:
                    current += char
            actions.append(current)
            for action in actions:
                target = action.split("=", 1)[0] if keyword.upper() == "SET" else action
                token = (target.split() or [""])[0]
                first = re.split(r"[.\[]", token, maxsplit=1)[0]
                paths.append(names.get(first, first))
        return paths

    def _row_faults(self, params: dict[str, Any], operation: str) -> None:
        if params.get("TableName") != self._faults.items_table:
            return
        self._inject_call_faults(operation)

    def _inject_call_faults(self, operation: str) -> None:
        if self._chance(self._faults.throttle_rate):
            with self._lock:
                self._record.injected["throttle"] += 1
            raise _client_error("ProvisionedThroughputExceededException",
                                "injected: throughput exceeded", operation)
        if self._chance(self._faults.server_error_rate):
            with self._lock:
                self._record.injected["server_error"] += 1
            raise _client_error("InternalServerError", "injected: 500", operation, 500)

    def _lose_reply(self, operation: str, table: str | None) -> None:
        """After a write took effect: maybe fail it as a connection lost in the reply would."""
        if (table == self._faults.items_table or operation == "BatchWriteItem") and self._chance(
                self._faults.lost_reply_rate):
            with self._lock:
                self._record.injected["lost_reply"] += 1
            raise _client_error("InternalServerError", "injected: reply lost after the write",
                                operation, 500)

    def put_item(self, **params: Any) -> Any:
        with self._lock:
            self._record.calls["put_item"] += 1
        self._key_of(params["TableName"], params["Item"], "PutItem")
        if item_size(params["Item"]) > MAX_ITEM_BYTES:
            raise self._violation("Item size has exceeded the maximum allowed size", "PutItem")
        self._expressions(params, "PutItem")
        self._row_faults(params, "PutItem")
        response = self._client.put_item(**params)
        self._lose_reply("PutItem", params["TableName"])
        return response

    def update_item(self, **params: Any) -> Any:
        with self._lock:
            self._record.calls["update_item"] += 1
        table = params["TableName"]
        self._key_of(table, params["Key"], "UpdateItem", exact=True)
        self._expressions(params, "UpdateItem")
        paths = self._updated_paths(params)
        for path in paths:
            if path in self._keys(table):
                raise self._violation(f"One or more parameter values were invalid: Cannot update "
                                      f"attribute {path}. This attribute is part of the key",
                                      "UpdateItem")
        if len(paths) != len(set(paths)):
            raise self._violation("Invalid UpdateExpression: Two document paths overlap with "
                                  "each other; must remove or rewrite one of these paths",
                                  "UpdateItem")
        self._row_faults(params, "UpdateItem")
        response = self._client.update_item(**params)
        self._lose_reply("UpdateItem", table)
        return response

    def delete_item(self, **params: Any) -> Any:
        with self._lock:
            self._record.calls["delete_item"] += 1
        self._key_of(params["TableName"], params["Key"], "DeleteItem", exact=True)
        self._expressions(params, "DeleteItem")
        return self._client.delete_item(**params)

    def batch_write_item(self, **params: Any) -> Any:
        with self._lock:
            self._record.calls["batch_write_item"] += 1
        request_items = params["RequestItems"]
        total = sum(len(v) for v in request_items.values())
        if total > MAX_BATCH_WRITE_ITEMS:
            raise self._violation(
                f"Too many items requested for the BatchWriteItem call ({total})", "BatchWriteItem")
        for table, requests in request_items.items():
            seen: set[tuple[Any, ...]] = set()
            for request in requests:
                if len(request) != 1 or set(request) - {"PutRequest", "DeleteRequest"}:
                    raise self._violation("Supplied AttributeValue has more than one datatypes "
                                          "set, must contain exactly one of the supported "
                                          "datatypes", "BatchWriteItem")
                if "DeleteRequest" in request:
                    if set(request["DeleteRequest"]) != {"Key"}:
                        raise self._violation("DeleteRequest must hold Key alone",
                                              "BatchWriteItem")
                    item = request["DeleteRequest"]["Key"]
                    key = self._key_of(table, item, "BatchWriteItem", exact=True)
                else:
                    item = request["PutRequest"]["Item"]
                    key = self._key_of(table, item, "BatchWriteItem")
                if key in seen:
                    raise self._violation("Provided list of item keys contains duplicates",
                                          "BatchWriteItem")
                seen.add(key)
                if "PutRequest" in request and item_size(item) > MAX_ITEM_BYTES:
                    raise self._violation("Item size has exceeded the maximum allowed size",
                                          "BatchWriteItem")
        self._inject_call_faults("BatchWriteItem")
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
        if send:
            self._lose_reply("BatchWriteItem", None)
        merged = dict(response.get("UnprocessedItems") or {})
        for table, requests in unprocessed.items():
            merged.setdefault(table, []).extend(requests)
        return {**response, "UnprocessedItems": merged}


    def batch_execute_statement(self, **params: Any) -> Any:
        """PartiQL writes of the shapes writer/statements.py sends, held to AWS's rules and
        run on moto as the single-item calls they mean (moto's PartiQL cannot parse an
        INSERT with parameters): an INSERT is a PutItem on `attribute_not_exists` that
        answers `DuplicateItem` (with no Item, as MiniStack answers) when the key is
        there; an UPDATE is an UpdateItem on `attribute_exists` that answers
        `ConditionalCheckFailed` when the key is absent (a PartiQL UPDATE never creates).
        Faults: the call's throttles, 500s and lost reply (after every statement ran), and
        per statement a `ProvisionedThroughputExceeded` or `InternalServerError` error."""
        operation = "BatchExecuteStatement"
        with self._lock:
            self._record.calls["batch_execute_statement"] += 1
        statements = params["Statements"]
        if not 1 <= len(statements) <= MAX_BATCH_STATEMENTS:
            raise self._violation("1 validation error detected: Value at 'statements' failed to "
                                  "satisfy constraint: Member must have length less than or "
                                  f"equal to {MAX_BATCH_STATEMENTS}", operation)
        parsed = [self._statement(s, operation) for s in statements]
        seen: set[tuple[str, tuple[Any, ...]]] = set()
        for table, _, key, _ in parsed:
            if (table, key) in seen:
                raise self._violation("Provided list of item keys contains duplicates", operation)
            seen.add((table, key))
        tables = {table for table, *_ in parsed}
        if self._faults.items_table in tables:
            self._inject_call_faults(operation)
        responses = [self._run_statement(*p) for p in parsed]
        for table in tables:
            self._lose_reply(operation, table)
        return {"Responses": responses}

    def _statement(self, statement: dict[str, Any], operation: str
                   ) -> tuple[str, str, tuple[Any, ...], dict[str, Any]]:
        """(table, INSERT or UPDATE, key, the item or the UPDATE's Key and SET values)."""
        text, values = statement["Statement"], list(statement.get("Parameters") or [])
        if len(text) > MAX_STATEMENT_CHARS:
            raise self._violation("Statement length exceeded 8192", operation)
        if not values or text.count("?") != len(values):
            raise self._violation("Number of parameters in request and statement don't match.",
                                  operation)
        if match := _INSERT.fullmatch(text):
            table, body = match.groups()
            names = _INSERT_NAME.findall(body)
            if ", ".join(f"'{n}': ?" for n in names) != body or len(set(names)) != len(names):
                raise self._violation(f"strict layer: unknown INSERT form: {text}", operation)
            item = dict(zip(names, values, strict=True))
            key = self._key_of(table, item, operation)
            if item_size(item) > MAX_ITEM_BYTES:
                raise self._violation("Item size has exceeded the maximum allowed size", operation)
            return table, "INSERT", key, item
        if match := _UPDATE.fullmatch(text):
            table, sets, where = match.groups()
            names = _QUOTED.findall(sets)
            keys = _QUOTED.findall(where)
            if (where != " AND ".join(f'"{k}" = ?' for k in keys)
                    or sets != "".join(f' SET "{n}" = ?' for n in names)):
                raise self._violation(f"strict layer: unknown UPDATE form: {text}", operation)
            if sorted(keys) != sorted(self._keys(table)):
                raise self._violation("Where clause does not contain a mandatory equality on all "
                                      "key attributes", operation)
            if set(names) & set(keys) or len(set(names)) != len(names):
                raise self._violation("Cannot update a key attribute, nor one path twice",
                                      operation)
            key_item = dict(zip(keys, values[len(names):], strict=True))
            key = self._key_of(table, key_item, operation, exact=True)
            return table, "UPDATE", key, {"Key": key_item,
                                          "Set": dict(zip(names, values, strict=False))}
        raise self._violation(f"strict layer: unknown statement form: {text}", operation)

    def _run_statement(self, table: str, kind: str, _: tuple[Any, ...],
                       what: dict[str, Any]) -> dict[str, Any]:
        if table == self._faults.items_table:
            if self._chance(self._faults.throttle_rate):
                with self._lock:
                    self._record.injected["statement_throttle"] += 1
                return {"Error": {"Code": "ProvisionedThroughputExceeded",
                                  "Message": "injected: throughput exceeded"}}
            if self._chance(self._faults.server_error_rate):
                with self._lock:
                    self._record.injected["statement_server_error"] += 1
                return {"Error": {"Code": "InternalServerError", "Message": "injected: 500"}}
        first = self._keys(table)[0]
        try:
            if kind == "INSERT":
                self._client.put_item(TableName=table, Item=what,
                                      ConditionExpression="attribute_not_exists(#k)",
                                      ExpressionAttributeNames={"#k": first})
            else:
                sets = list(what["Set"].items())
                self._client.update_item(
                    TableName=table, Key=what["Key"],
                    UpdateExpression="SET " + ", ".join(f"#a{i} = :v{i}" for i in range(len(sets))),
                    ConditionExpression="attribute_exists(#k)",
                    ExpressionAttributeNames={"#k": first} | {f"#a{i}": n for i, (n, _) in
                                                              enumerate(sets)},
                    ExpressionAttributeValues={f":v{i}": v for i, (_, v) in enumerate(sets)})
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "ConditionalCheckFailedException":
                return {"TableName": table, "Error": {
                    "Code": "DuplicateItem" if kind == "INSERT" else "ConditionalCheckFailed",
                    "Message": "Duplicate primary key exists in table" if kind == "INSERT"
                    else "The conditional request failed"}}
            return {"Error": {"Code": "ValidationError" if code == "ValidationException" else code,
                              "Message": exc.response.get("Error", {}).get("Message", "")}}
        return {"TableName": table}

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
