"""The insert and update modes by PartiQL BatchExecuteStatement (writer/statements.py),
through the strict layer: the statements hold to AWS's rules, each row gets the verdict
one PutItem/UpdateItem a row gives (writer/rows.py), and throttles, 500s, statement
errors and replies lost after the write leave the table and the counts exact."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.strict_aws import Faults, StrictLayer
from writer.batch_write import Budget, InFlight
from writer.rows import insert_request, update_request, write_rows
from writer.statements import (
    UpdateOrder,
    forget_orders,
    insert_statement,
    update_statement,
    write_statements,
)

KEYS = ["account", "offer_id"]


def key(i: int) -> dict[str, Any]:
    return {"account": {"S": f"a{i % 3}"}, "offer_id": {"S": str(i)}}


def old(i: int) -> dict[str, Any]:
    return key(i) | {"risk": {"S": "old"}, "extra": {"S": f"kept-{i}"}}


def row(i: int, risk: str = "new") -> dict[str, Any]:
    return key(i) | {"risk": {"S": risk}, "amount": {"N": f"{i}.50"}, "a.b c": {"S": "x"}}


@pytest.fixture
def table(aws, stack):
    forget_orders()
    name = stack.settings.table_name
    for i in range(0, 40):  # keys 0..39 are in the table before the job
        aws.dynamodb.put_item(TableName=name, Item=old(i))
    return name


def contents(aws, table: str) -> dict[str, dict[str, Any]]:
    items = aws.dynamodb.scan(TableName=table)["Items"]
    return {i["offer_id"]["S"]: i for i in items}


def budget() -> Budget:
    return Budget(remaining_s=lambda: 60.0, reserve_s=0.0, sleep=lambda _: None)


def by_rows(aws, table: str, mode: str, items: list[dict[str, Any]]):
    """The same rows written one call a row (writer/rows.py): the reference."""
    request = insert_request if mode == "insert" else update_request
    return write_rows(aws.dynamodb, [request(table, item, KEYS) for item in items], budget())


def test_the_statements_the_writer_builds_pass_and_what_aws_refuses_fails(aws, table):
    layer = StrictLayer()
    ddb = layer.wrap(aws).dynamodb
    insert = insert_statement(table, row(100))
    update = update_statement(table, row(1), KEYS)
    assert insert is not None and update is not None
    answers = ddb.batch_execute_statement(Statements=[insert, update])["Responses"]
    assert [a.get("Error") for a in answers] == [None, None]
    assert layer.record.violations == []

    def refused(statements: list[dict[str, Any]]) -> str:
        with pytest.raises(ClientError) as caught:
            ddb.batch_execute_statement(Statements=statements)
        assert caught.value.response["Error"]["Code"] == "ValidationException"
        return caught.value.response["Error"]["Message"]

    many = [insert_statement(table, row(200 + i)) for i in range(26)]
    assert "less than or equal to 25" in refused(many)  # type: ignore[arg-type]
    assert "don't match" in refused([{**insert, "Parameters": insert["Parameters"][:-1]}])
    assert "duplicates" in refused([insert, insert_statement(table, row(100, "again"))])
    sets_key = {"Statement": f'UPDATE "{table}" SET "account" = ? WHERE "account" = ? AND '
                             '"offer_id" = ?', "Parameters": [{"S": "b"}, *key(1).values()]}
    assert "key attribute" in refused([sets_key])
    half_key = {"Statement": f'UPDATE "{table}" SET "risk" = ? WHERE "account" = ?',
                "Parameters": [{"S": "r"}, {"S": "a1"}]}
    assert "mandatory equality" in refused([half_key])
    wrong_type = insert_statement(table, row(3) | {"offer_id": {"N": "3"}})
    assert "Type mismatch" in refused([wrong_type])  # type: ignore[list-item]


def test_a_partiql_update_never_creates_and_an_insert_never_overwrites(aws, table):
    ddb = StrictLayer().wrap(aws).dynamodb
    absent = update_statement(table, row(300), KEYS)
    present = insert_statement(table, row(5))
    answers = ddb.batch_execute_statement(Statements=[absent, present])["Responses"]
    assert [a["Error"]["Code"] for a in answers] == ["ConditionalCheckFailed", "DuplicateItem"]
    assert "300" not in contents(aws, table) and contents(aws, table)["5"] == old(5)


@pytest.mark.parametrize("mode", ["insert", "update"])
def test_each_row_gets_the_verdict_one_call_a_row_gives_in_a_twenty_fifth_of_the_calls(
        aws, stack, table, mode):
    # Given rows for keys 20..119 (20..39 in the table), one of them already this row's
    # own item (a reply lost on an earlier delivery), and rows that are only a key
    items = [row(i) for i in range(20, 120)] + [key(500), key(5)]
    aws.dynamodb.put_item(TableName=table, Item=row(110))
    layer = StrictLayer(Faults(items_table=table))
    outcome = write_statements(layer.wrap(aws).dynamodb, table, items, KEYS, mode, budget())
    got = contents(aws, table)
    # Then the same rows as one PutItem/UpdateItem a row, on a fresh copy of the table
    for i in range(0, 200):
        aws.dynamodb.delete_item(TableName=table, Key=key(i))
    aws.dynamodb.delete_item(TableName=table, Key=key(500))
    for i in range(0, 40):
        aws.dynamodb.put_item(TableName=table, Item=old(i))
    aws.dynamodb.put_item(TableName=table, Item=row(110))
    reference = by_rows(aws, table, mode, items)
    assert got == contents(aws, table)
    assert (outcome.written, sorted(outcome.skipped), outcome.invalid) == (
        reference.written, sorted(reference.skipped), reference.invalid)
    assert layer.record.violations == []
    calls = layer.record.calls["batch_execute_statement"]
    assert calls <= 12 and reference.calls == len(items)
    if mode == "insert":  # 20..39 and the key 5: skipped; 110 is its own: written
        assert len(outcome.skipped) == 21 and outcome.written == len(items) - 21
        assert layer.record.calls["batch_get_item"] == 1  # the duplicates, read back at once
    else:
        assert outcome.written == len(items) and not outcome.skipped
        assert got["25"]["extra"] == {"S": "kept-25"} and got["25"]["risk"] == {"S": "new"}


def test_an_update_tries_first_what_the_latest_keys_needed():
    order = UpdateOrder()
    assert order.first() == "UPDATE"
    for _ in range(20):
        order.saw(present=False)
    assert order.first() == "INSERT"
    for _ in range(2000):
        order.saw(present=True)
    order.saw(present=False)
    assert order.first() == "UPDATE"
    for _ in range(14):  # however long the run before, a new job's keys decide quickly
        order.saw(present=False)
    assert order.first() == "INSERT"


def test_an_update_job_of_new_keys_pays_the_wrong_guess_for_the_first_rows_only(aws, table):
    layer = StrictLayer(Faults(items_table=table))
    ddb = layer.wrap(aws).dynamodb
    for start in range(1000, 1500, 25):  # 20 messages of new keys, one after another
        write_statements(ddb, table, [row(i) for i in range(start, start + 25)], KEYS, "update",
                         budget())
    # The first message tried UPDATE (refused, absent: 25 wasted statements) then INSERT;
    # every later message INSERTed at once.
    assert layer.record.calls["batch_execute_statement"] == 21


def test_what_partiql_cannot_say_or_refuses_goes_one_call_a_row(aws, table):
    layer = StrictLayer(Faults(items_table=table))
    ddb = layer.wrap(aws).dynamodb
    quoted = row(600) | {'say "hi"': {"S": "q"}}
    too_big = row(601) | {"blob": {"S": "x" * 410_000}}
    items = [row(602), quoted, too_big, row(603)]
    outcome = write_statements(ddb, table, items, KEYS, "insert", budget())
    assert insert_statement(table, quoted) is None
    assert outcome.written == 3 and [i for i, _ in outcome.invalid] == [2]
    got = contents(aws, table)
    assert got["600"] == quoted and "601" not in got and got["603"] == row(603)
    # the oversized item made AWS refuse its whole call: its three rows went one a row,
    # as the quoted name did
    assert layer.record.calls["put_item"] == 4


@pytest.mark.parametrize("mode", ["insert", "update"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_throttles_500s_statement_errors_and_lost_replies_change_nothing(aws, table, mode, seed):
    items = [row(i) for i in range(20, 320)] + [key(700)]
    clean_outcome = write_statements(StrictLayer().wrap(aws).dynamodb, table, items, KEYS, mode,
                                     budget())
    clean = contents(aws, table)
    for i in list(range(40, 120)) + [700]:
        aws.dynamodb.delete_item(TableName=table, Key=key(i))
    for i in range(20, 40):
        aws.dynamodb.put_item(TableName=table, Item=old(i))
    forget_orders()
    layer = StrictLayer(Faults(throttle_rate=0.2, server_error_rate=0.1, lost_reply_rate=0.3,
                               unprocessed_keys_rate=0.3, items_table=table, seed=seed))
    slots = InFlight(4)
    noisy = write_statements(layer.wrap(aws).dynamodb, table, items, KEYS, mode, budget(), slots)
    assert contents(aws, table) == clean
    assert (noisy.written, sorted(noisy.skipped), noisy.invalid) == (
        clean_outcome.written, sorted(clean_outcome.skipped), clean_outcome.invalid)
    injected = layer.record.injected
    assert injected["lost_reply"] and injected["statement_throttle"] and injected["throttle"]
    assert layer.record.violations == [] and noisy.throttled > 0 and slots.cuts > 0


def test_the_items_client_encodes_statements_as_botocore_would():
    """items_client() sends BatchExecuteStatement bodies encoded whole by json.dumps (as it
    does BatchWriteItem's): the same JSON botocore's serializer builds, binary values and
    every other type among the parameters, and the answer parsed by botocore."""
    import json

    import boto3
    from botocore.awsrequest import AWSResponse

    from bench.fakes import _CannedBody
    from writer.batch_write import items_client

    sent: list[Any] = []
    answer = b'{"Responses":[{"TableName":"t"},{"Error":{"Code":"DuplicateItem","Message":"d"}}]}'

    def capture(request: Any, **_: Any) -> AWSResponse:
        sent.append(json.loads(request.body))
        return AWSResponse(request.url, 200, {"x-amzn-RequestId": "r"}, _CannedBody(answer))

    fast = items_client()
    plain = boto3.session.Session(aws_access_key_id="k", aws_secret_access_key="s",
                                  region_name="us-east-1").client("dynamodb")
    item = row(1) | {"b": {"B": b"\x00\xff"}, "m": {"M": {"x": {"L": [{"N": "7"}, {"NULL": True}]}}},
                     "ss": {"SS": ["p", "q"]}, "t": {"BOOL": False}}
    statements = [insert_statement("t", item), update_statement("t", item, KEYS)]
    responses = []
    for client in (fast, plain):
        client.meta.events.register("before-send.dynamodb.BatchExecuteStatement", capture)
        responses.append(client.batch_execute_statement(Statements=statements)["Responses"])
    assert sent[0] == sent[1] and len(sent[0]["Statements"]) == 2
    assert responses[0] == responses[1] and responses[0][1]["Error"]["Code"] == "DuplicateItem"


def test_statements_throttled_past_the_budget_fail_the_message_not_overrun_it(aws, table):
    from writer.batch_write import TransientWriteError

    always = StrictLayer(Faults(throttle_rate=1.0, items_table=table)).wrap(aws).dynamodb
    slots = InFlight(8)
    with pytest.raises(TransientWriteError):
        write_statements(always, table, [row(800), row(801)], KEYS, "insert",
                         Budget(remaining_s=lambda: 3.5), slots)
    assert slots.limit < 8  # the throttles cut the calls in flight


class Answering:
    """A client whose BatchExecuteStatement answers every statement with one error."""

    def __init__(self, code: str) -> None:
        self.code = code
        self.calls = 0

    def batch_execute_statement(self, **params: Any) -> Any:
        self.calls += 1
        return {"Responses": [{"Error": {"Code": self.code, "Message": "no"}}
                              for _ in params["Statements"]]}


@pytest.mark.parametrize("code", ["AccessDenied", "ResourceNotFound",
                                  "ItemCollectionSizeLimitExceeded"])
def test_an_error_no_retry_can_mend_fails_the_message(code):
    client = Answering(code)
    with pytest.raises(ClientError) as caught:
        write_statements(client, "t", [row(1), row(2)], KEYS, "update", budget())
    assert caught.value.response["Error"]["Code"] == code and client.calls == 1


def test_the_lambdas_client_writes_by_statements_and_a_plain_one_a_row_at_a_time(aws, stack):
    from dataclasses import replace

    from fanout.mapping import Spec
    from fanout.runtime import Runtime
    from writer.batch_write import WriterDynamoDB
    from writer.load import write_mode

    table = stack.settings.table_name
    layer = StrictLayer(Faults(items_table=table))
    strict = layer.wrap(aws)
    spec = Spec.from_dict({"table": {"mode": "insert", "partition_key": "account",
                                     "sort_key": "offer_id"}})
    items = [row(900 + i) for i in range(30)]
    lambda_ = Runtime(stack.settings, spec, replace(strict, dynamodb=WriterDynamoDB(
        strict.dynamodb, strict.dynamodb, items_table=table)))
    assert write_mode("insert", lambda_, items[:15], budget(), None).written == 15
    assert (layer.record.calls["batch_execute_statement"], layer.record.calls["put_item"]) == (1, 0)
    plain = Runtime(stack.settings, spec, strict)
    assert write_mode("insert", plain, items[15:], budget(), None).written == 15
    assert (layer.record.calls["batch_execute_statement"], layer.record.calls["put_item"]) == (1, 15)


def test_a_number_key_written_otherwise_than_dynamodb_stores_it_is_still_its_own_item(aws, stack):
    """A key `007` is the item DynamoDB stores as `7`: an insert of it finds the item there
    and skips it (one read back, not a loop of inserts), as one PutItem a row would."""
    forget_orders()
    name = "numbers"
    aws.dynamodb.create_table(
        TableName=name, BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "account", "KeyType": "HASH"},
                   {"AttributeName": "offer_id", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "account", "AttributeType": "S"},
                              {"AttributeName": "offer_id", "AttributeType": "N"}])
    stored = {"account": {"S": "a"}, "offer_id": {"N": "7"}, "risk": {"S": "old"}}
    aws.dynamodb.put_item(TableName=name, Item=stored)
    layer = StrictLayer()
    items = [{"account": {"S": "a"}, "offer_id": {"N": "007"}, "risk": {"S": "new"}},
             {"account": {"S": "a"}, "offer_id": {"N": "8.50"}, "risk": {"S": "new"}}]
    ticks = itertools.count()  # a budget that runs out: a loop of inserts fails, not hangs
    running_out = Budget(remaining_s=lambda: 60.0 - next(ticks), reserve_s=0.0, sleep=lambda _: None)
    outcome = write_statements(layer.wrap(aws).dynamodb, name, items, KEYS, "insert", running_out)
    assert (outcome.written, outcome.skipped) == (1, [0])
    assert layer.record.violations == []
    assert aws.dynamodb.get_item(TableName=name, Key={"account": {"S": "a"}, "offer_id": {"N": "7"}})[
        "Item"]["risk"] == {"S": "old"}
