"""The strict layer holds the write modes' requests to the AWS contract: what moto lets
through and AWS refuses must fail here, and the requests the writer builds must pass."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from tests.strict_aws import StrictLayer
from writer.rows import insert_request, update_request

KEYS = ["account", "offer_id"]


@pytest.fixture
def strict(aws, stack):
    layer = StrictLayer()
    return layer, layer.wrap(aws).dynamodb, stack.settings.table_name


def refused(call, *args, **kwargs) -> str:
    with pytest.raises(ClientError) as caught:
        call(*args, **kwargs)
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    return caught.value.response["Error"]["Message"]


def key(i: int) -> dict:
    return {"account": {"S": "a"}, "offer_id": {"S": str(i)}}


@pytest.mark.parametrize("request_, message", [
    ({"DeleteRequest": {"Key": key(1) | {"risk": {"S": "x"}}}}, "does not match the schema"),
    ({"DeleteRequest": {"Key": {"account": {"S": "a"}}}}, "does not match the schema"),
    ({"DeleteRequest": {"Key": key(1), "Item": key(1)}}, "Key alone"),
    ({"DeleteRequest": {"Key": {"account": {"S": "a"}, "offer_id": {"N": "1"}}}}, "Type mismatch"),
    ({"DeleteRequest": {"Key": {"account": {"S": ""}, "offer_id": {"S": "1"}}}}, "empty string"),
    ({"PutRequest": {"Item": key(1)}, "DeleteRequest": {"Key": key(2)}}, "exactly one"),
])
def test_a_delete_request_is_its_key_alone(strict, request_, message):
    layer, ddb, table = strict
    assert message in refused(ddb.batch_write_item, RequestItems={table: [request_]})
    assert layer.record.violations


def test_deletes_are_25_a_call_and_one_per_key(strict):
    _, ddb, table = strict
    deletes = [{"DeleteRequest": {"Key": key(i)}} for i in range(26)]
    assert "Too many items" in refused(ddb.batch_write_item, RequestItems={table: deletes})
    twice = [{"DeleteRequest": {"Key": key(1)}}, {"PutRequest": {"Item": key(1)}}]
    assert "duplicates" in refused(ddb.batch_write_item, RequestItems={table: twice})
    assert ddb.batch_write_item(RequestItems={table: deletes[:25]})["UnprocessedItems"] == {}


def test_expression_placeholders_are_all_defined_and_all_used(strict):
    _, ddb, table = strict
    base = {"TableName": table, "Item": key(1)}
    assert "not defined" in refused(ddb.put_item, **base, ConditionExpression="attribute_not_exists(#k)")
    assert "unused" in refused(ddb.put_item, **base, ConditionExpression="attribute_not_exists(#k)",
                               ExpressionAttributeNames={"#k": "account", "#j": "risk"})
    assert "unused" in refused(ddb.put_item, **base, ConditionExpression="attribute_not_exists(#k)",
                               ExpressionAttributeNames={"#k": "account"},
                               ExpressionAttributeValues={":v": {"S": "x"}})
    assert "must not be empty" in refused(ddb.update_item, TableName=table, Key=key(1),
                                          ExpressionAttributeNames={})
    assert "Expression size" in refused(ddb.update_item, TableName=table, Key=key(1),
                                        UpdateExpression="SET risk = :v" + " " * 4096,
                                        ExpressionAttributeValues={":v": {"S": "x"}})


def test_an_update_never_sets_a_key_attribute_nor_one_path_twice(strict):
    _, ddb, table = strict
    assert "part of the key" in refused(
        ddb.update_item, TableName=table, Key=key(1), UpdateExpression="SET #a = :v",
        ExpressionAttributeNames={"#a": "offer_id"}, ExpressionAttributeValues={":v": {"S": "2"}})
    assert "overlap" in refused(
        ddb.update_item, TableName=table, Key=key(1), UpdateExpression="SET risk = :v, #r = :w",
        ExpressionAttributeNames={"#r": "risk"},
        ExpressionAttributeValues={":v": {"S": "2"}, ":w": {"S": "3"}})
    assert "does not match the schema" in refused(
        ddb.update_item, TableName=table, Key=key(1) | {"risk": {"S": "x"}})


def test_the_requests_the_writer_builds_pass(strict, aws):
    layer, ddb, table = strict
    item = key(1) | {"risk": {"S": "r"}, "size": {"N": "2"}, "a.b": {"S": "c"}}
    ddb.put_item(**insert_request(table, item, KEYS).params)
    ddb.update_item(**update_request(table, item | {"risk": {"S": "s"}}, KEYS).params)
    only_key = update_request(table, key(2), KEYS)  # nothing to set: a put of the key if absent
    assert only_key.done_if_present
    ddb.put_item(**only_key.params)
    assert layer.record.violations == []
    stored = aws.dynamodb.get_item(TableName=table, Key=key(1))["Item"]
    assert stored == item | {"risk": {"S": "s"}}
    assert aws.dynamodb.get_item(TableName=table, Key=key(2))["Item"] == key(2)
    with pytest.raises(ClientError) as caught:
        ddb.put_item(**insert_request(table, item, KEYS).params)
    assert caught.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    assert caught.value.response["Item"] == item | {"risk": {"S": "s"}}
