"""Each Lambda validates, at cold start, every setting it uses: a missing or malformed value
fails loudly, naming it (a writer without its DLQ would drop rejected rows silently)."""

from __future__ import annotations

import json

import pytest

from fanout.mapping import Spec
from fanout.runtime import Runtime
from fanout.settings import SPLITTER_REQUIRED, WRITER_REQUIRED, Settings, SettingsError

STACK_ENV = {
    "FANOUT_TABLE": "items", "FANOUT_LEDGER_TABLE": "jobs",
    "FANOUT_ROWS_QUEUE_URL": "https://sqs/rows", "FANOUT_DLQ_URL": "https://sqs/dlq",
    "FANOUT_BUCKET": "uploads", "FANOUT_TOPIC_ARN": "arn:aws:sns:us-east-1:0:jobs",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def use_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name in [*STACK_ENV, "FANOUT_SPEC_JSON", "FANOUT_SPEC", "AWS_LAMBDA_FUNCTION_NAME"]:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize("required", [SPLITTER_REQUIRED, WRITER_REQUIRED], ids=["splitter", "writer"])
def test_the_stacks_environment_is_enough(monkeypatch, required) -> None:
    use_env(monkeypatch, STACK_ENV)
    runtime = Runtime.from_env(required=required)
    assert runtime.settings.dlq_url == "https://sqs/dlq"
    assert runtime.spec == Spec.default()


@pytest.mark.parametrize("lambda_, required, name", [
    (lambda_, required, name)
    for lambda_, required in (("splitter", SPLITTER_REQUIRED), ("writer", WRITER_REQUIRED))
    for name in required
])
def test_removing_any_variable_a_lambda_uses_fails_its_cold_start(monkeypatch, lambda_, required,
                                                                   name) -> None:
    use_env(monkeypatch, {k: v for k, v in STACK_ENV.items() if k != name})
    with pytest.raises(SettingsError, match=f"missing required environment variable.*{name}"):
        Runtime.from_env(required=required)


def test_the_writer_requires_its_dlq_and_bucket_and_the_splitter_its_queue() -> None:
    assert {"FANOUT_DLQ_URL", "FANOUT_BUCKET", "FANOUT_TOPIC_ARN"} <= set(WRITER_REQUIRED)
    assert {"FANOUT_ROWS_QUEUE_URL", "FANOUT_BUCKET"} <= set(SPLITTER_REQUIRED)


@pytest.mark.parametrize("name, value, message", [
    ("FANOUT_RANGE_BYTES", "8MiB", "FANOUT_RANGE_BYTES='8MiB': not a whole number"),
    ("FANOUT_WRITER_IN_FLIGHT", "0", "FANOUT_WRITER_IN_FLIGHT='0': must be greater than 0"),
    ("FANOUT_SPLIT_RESERVE_S", "soon", "FANOUT_SPLIT_RESERVE_S='soon': not a number"),
])
def test_a_malformed_number_names_the_variable(name, value, message) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({**STACK_ENV, name: value}, required=WRITER_REQUIRED)
    assert str(raised.value) == message


def test_the_spec_is_read_in_one_place_and_a_bad_one_fails_naming_it(monkeypatch) -> None:
    spec = {"table": {"partition_key": {"name": "pk"}}, "columns": {"types": {"n": "N"}}}
    use_env(monkeypatch, {**STACK_ENV, "FANOUT_SPEC_JSON": json.dumps(spec)})
    assert Runtime.from_env(required=WRITER_REQUIRED).spec.partition_key.name == "pk"
    monkeypatch.setenv("FANOUT_SPEC_JSON", '{"table": {}}')
    with pytest.raises(SettingsError, match="FANOUT_SPEC_JSON: table.partition_key: required"):
        Runtime.from_env(required=WRITER_REQUIRED)


def test_inside_lambda_the_handler_builds_at_init(monkeypatch) -> None:
    from fanout.runtime import RuntimeSlot

    built = []
    slot = RuntimeSlot(lambda: built.append(1) or Runtime.from_env(required=WRITER_REQUIRED))
    use_env(monkeypatch, {k: v for k, v in STACK_ENV.items() if k != "FANOUT_DLQ_URL"})
    slot.build_in_lambda()  # outside Lambda: nothing is built at import
    assert built == []
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "fanout-writer")
    with pytest.raises(SettingsError, match="FANOUT_DLQ_URL"):
        slot.build_in_lambda()
