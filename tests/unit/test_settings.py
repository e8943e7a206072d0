"""Each Lambda validates, at cold start, every setting it uses: a missing or malformed value
fails loudly, naming it (a writer without its DLQ would drop rejected rows silently)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from fanout import ledger
from fanout.mapping import Spec
from fanout.runtime import Runtime
from fanout.settings import (
    DEFAULT_CONFIG,
    HOLE_MARGIN_S,
    LOCAL_CONFIG,
    SPLITTER_REQUIRED,
    WRITER_REQUIRED,
    Settings,
    SettingsError,
    min_visibility_timeout_s,
    timing_error,
)
from fanout_cli.local.ministack import LOCAL_CONTEXT

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


# The ledger's timing rule: visibility timeout > 2 x writer timeout + HOLE_MARGIN_S, so that
# a dead writer's batch, delivered again after the visibility timeout, finds its hole
# voidable (fanout.settings.timing_error).
TOO_SHORT = ("visibility_timeout_s (60) must be more than 2 × writer_timeout_s (60) + 30 s = 150: "
             "set it to at least 151")


def test_a_visibility_timeout_the_ledger_cannot_finish_with_fails_the_cold_start() -> None:
    env = {**STACK_ENV, "FANOUT_WRITER_TIMEOUT_S": "60", "FANOUT_VISIBILITY_TIMEOUT_S": "60"}
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(env, required=WRITER_REQUIRED)
    assert str(raised.value) == TOO_SHORT


@pytest.mark.parametrize("visibility_s, refused", [(150, True), (151, False)])
def test_the_rule_is_strict_and_its_minimum_is_the_first_that_passes(visibility_s, refused) -> None:
    assert min_visibility_timeout_s(60) == 151
    env = {**STACK_ENV, "FANOUT_WRITER_TIMEOUT_S": "60", "FANOUT_VISIBILITY_TIMEOUT_S": str(visibility_s)}
    if refused:
        with pytest.raises(SettingsError, match=r"visibility_timeout_s \(150\).*at least 151"):
            Settings.from_env(env)
    else:
        assert Settings.from_env(env).visibility_timeout_s == 151


def test_the_local_runtime_cannot_be_given_a_config_that_breaks_the_rule() -> None:
    config = replace(DEFAULT_CONFIG, writer_timeout_s=60, visibility_timeout_s=60)
    with pytest.raises(SettingsError) as raised:
        Settings.for_pipeline(config, Spec.default(), table_name="t", ledger_table_name="l",
                              rows_queue_url="q", dlq_url="d", bucket="b", topic_arn="a")
    assert str(raised.value) == TOO_SHORT


@pytest.mark.parametrize("name, writer_s, visibility_s", [
    ("DEFAULT_CONFIG", DEFAULT_CONFIG.writer_timeout_s, DEFAULT_CONFIG.visibility_timeout_s),
    ("LOCAL_CONFIG", LOCAL_CONFIG.writer_timeout_s, LOCAL_CONFIG.visibility_timeout_s),
    ("LOCAL_CONTEXT (MiniStack)", int(LOCAL_CONTEXT["writer_timeout_s"]),
     int(LOCAL_CONTEXT["visibility_timeout_s"])),
])
def test_every_timing_the_project_ships_meets_the_rule(name, writer_s, visibility_s) -> None:
    assert timing_error(writer_s, visibility_s) is None, name


def test_the_rule_uses_the_ledgers_margin_and_its_minimum_is_exactly_when_the_hole_is_voidable() -> None:
    """A writer takes ticket 7 as its timeout ends it (one writer timeout after it received
    its batch). SQS delivers the batch again one visibility timeout after that receive, and
    the new writer's record, ticket 8, carries ticket 7's stamp: at the rule's minimum the
    ledger voids the hole, one second sooner it would not."""
    assert ledger.HOLE_MARGIN_S == HOLE_MARGIN_S
    writer_s = LOCAL_CONFIG.writer_timeout_s
    received = 1_000.0
    records = {8: {"prev_at": {"N": str(received + writer_s)}}}
    at = received + min_visibility_timeout_s(writer_s)
    assert ledger.HolePolicy(writer_s, clock=lambda: at).voidable(7, records)
    assert not ledger.HolePolicy(writer_s, clock=lambda: at - 1).voidable(7, records)


def test_each_setting_a_handler_takes_from_the_config_is_spelled_once_in_handler_config() -> None:
    from dataclasses import fields, replace

    from fanout.mapping import Spec
    from fanout.settings import DEFAULT_CONFIG, HANDLER_VARIABLES, HandlerConfig, PipelineConfig, Settings

    # PipelineConfig and Settings share exactly HandlerConfig's fields, with its defaults,
    # and nothing else: no setting is written a second time in either.
    handler = {f.name: f.default for f in fields(HandlerConfig)}
    shared = {f.name for f in fields(PipelineConfig)} & {f.name for f in fields(Settings)}
    assert shared == set(handler)
    assert {f.name: f.default for f in fields(Settings) if f.name in handler} == handler
    for cls in (PipelineConfig, Settings):
        assert not set(cls.__dict__.get("__annotations__", {})) & set(handler), cls
    names = [name for name, _, _ in HANDLER_VARIABLES]
    assert names == list(handler)
    assert [v for _, v, _ in HANDLER_VARIABLES] == [f"FANOUT_{n.upper()}" for n in names]
    # A kind is its default's type: every field's default must be of its declared type,
    # and one from_env can parse (a 60 for a float, a bool or None would read wrongly)
    for f, (_, _, kind) in zip(fields(HandlerConfig), HANDLER_VARIABLES, strict=True):
        assert kind in (int, float, str) and f.type == kind.__name__, (f.name, f.type, kind)
    # and every one of them travels: config -> settings -> the Lambda's environment -> settings
    # (each moved off its default: a number by 3 and a half, a prefix by a word)
    config = replace(DEFAULT_CONFIG, **{
        name: kind(getattr(DEFAULT_CONFIG, name) * 3.5) if kind in (int, float)
        else f"moved-{getattr(DEFAULT_CONFIG, name)}" for name, _, kind in HANDLER_VARIABLES})
    built = Settings.for_pipeline(config, Spec.default(), table_name="t", ledger_table_name="l",
                                  rows_queue_url="q", dlq_url="d", bucket="b", topic_arn="a")
    assert all(getattr(built, name) == getattr(config, name) != getattr(DEFAULT_CONFIG, name)
               for name in names)
    assert Settings.from_env(built.to_env()) == built
