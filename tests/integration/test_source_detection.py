"""The splitter handler decides each object's storage from its first bytes: what it
sends, and how a file it cannot read fails (fanout/dialect.py, splitter/source.py)."""

from __future__ import annotations

import gzip

import pytest

from fanout.mapping import Spec
from fanout.runtime import Runtime
from splitter import handler
from tests.integration.helpers import context, rows_messages, s3_event


@pytest.fixture
def runtime(aws, stack, spec):
    rt = Runtime(stack.settings, spec, aws)
    handler.runtime.use(rt)
    yield rt
    handler.runtime.use(None)


def split(aws, stack, key: str, body: bytes) -> dict:
    aws.s3.put_object(Bucket=stack.settings.bucket, Key=key, Body=body)
    return handler.lambda_handler(s3_event(stack.settings.bucket, key), context())["jobs"][0]


def test_gzip_named_csv_with_tabs_is_sent_as_the_rows_it_holds(aws, stack, runtime):
    body = gzip.compress(b"account\toffer_id\tnote\na1\t1\tx, y\na2\t2\t\"q\"\"t\"\n")
    job = split(aws, stack, "uploads/looks-plain.csv", body)
    assert job["status"] == "split" and job["rows_read"] == 2
    (message,) = rows_messages(aws.sqs, stack.settings.rows_queue_url)
    assert message.rows == [["a1", "1", "x, y"], ["a2", "2", 'q"t']]


def test_a_one_column_header_fails_saying_how_to_set_the_delimiter(aws, stack, runtime):
    job = split(aws, stack, "uploads/colon.csv", b"account:offer_id\na:1\n")
    assert job["status"] == "failed"
    assert "line 1: key template 'account' names column 'account'" in job["error"]
    assert "the header was read as one column (delimiter ',')" in job["error"]
    assert "--delimiter, or [source] delimiter in the spec" in job["error"]


def test_latin1_fails_naming_the_setting_and_loads_once_set(aws, stack, runtime, spec):
    body = "account,offer_id,city\na,1,Málaga\n".encode("latin-1")
    job = split(aws, stack, "uploads/latin.csv", body)
    assert job["status"] == "failed"
    assert "line 2: bytes are not valid utf-8" in job["error"]
    assert '[source] encoding = "latin-1"' in job["error"]
    handler.runtime.use(Runtime(stack.settings, Spec.from_dict({"source": {"encoding": "latin-1"}}),
                                aws))
    job = split(aws, stack, "uploads/latin-set.csv", body)
    assert job["status"] == "split"
    (message,) = rows_messages(aws.sqs, stack.settings.rows_queue_url)
    assert message.rows == [["a", "1", "Málaga"]]
