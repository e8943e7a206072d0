"""One owner for the Lambdas' settings: the stack's environment and the local runtime's
Settings both come from `Settings.for_pipeline`, so they hold the same variables with the
same values (bar the names of what each created)."""

from __future__ import annotations

from typing import Any

import pytest
from moto import mock_aws

from fanout.aws import Clients
from fanout.mapping import Spec
from fanout.settings import ResourceNames, Settings
from fanout_cli.local.resources import create_resources
from tests.infra.conftest import Synth

# What each side points at its own resources (a CloudFormation Ref, a moto URL).
RESOURCES = {"FANOUT_TABLE", "FANOUT_LEDGER_TABLE", "FANOUT_ROWS_QUEUE_URL", "FANOUT_DLQ_URL",
             "FANOUT_BUCKET", "FANOUT_TOPIC_ARN"}


def fanout_variables(env: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in env.items() if k.startswith("FANOUT_")}


@pytest.mark.parametrize("stack_name", ["default_stack", "custom_stack"])
def test_the_stack_and_the_local_runtime_give_the_lambdas_the_same_settings(
        stack_name: str, request: pytest.FixtureRequest) -> None:
    synth: Synth = request.getfixturevalue(stack_name)
    stack = synth.stack
    # Given the stack's pipeline config and spec, run locally
    with mock_aws():
        local = create_resources(Clients.create(), stack.config.spec,
                                 config=stack.config.pipeline, names=ResourceNames())
    local_env = local.settings.to_env()
    for function in (stack.functions.splitter, stack.functions.writer):
        deployed = fanout_variables(synth.json["Resources"][synth.logical_id(function)]
                                    ["Properties"]["Environment"]["Variables"])
        # Then the function gets every variable the local runtime has, and the same value
        # for each one that is not a resource's name; the spec travels in the environment
        # (the local runtime hands the Spec in)
        assert set(deployed) - {"FANOUT_SPEC_JSON", "FANOUT_SPEC_S3"} == set(local_env)
        assert set(local_env) >= RESOURCES
        assert {k: v for k, v in deployed.items() if k in local_env and k not in RESOURCES} == {
            k: v for k, v in local_env.items() if k not in RESOURCES}
        assert Settings.from_env({**deployed, **{k: "x" for k in RESOURCES}}) == Settings.from_env(
            {**local_env, **{k: "x" for k in RESOURCES}, "FANOUT_SPEC_JSON": deployed.get(
                "FANOUT_SPEC_JSON", ""), "FANOUT_SPEC_S3": deployed.get("FANOUT_SPEC_S3", "")})


def test_the_settings_take_every_number_from_the_config_and_the_keys_from_the_spec() -> None:
    from dataclasses import fields, replace

    from fanout.settings import DEFAULT_CONFIG

    # Every config field that is also a setting, moved off its default
    shared = {f.name for f in fields(Settings)} & {f.name for f in fields(DEFAULT_CONFIG)}
    moved = replace(DEFAULT_CONFIG, **{
        name: (getattr(DEFAULT_CONFIG, name) + "x/" if isinstance(getattr(DEFAULT_CONFIG, name), str)
               else getattr(DEFAULT_CONFIG, name) * 2) for name in shared})
    spec = Spec.default("pk", None)
    settings = Settings.for_pipeline(moved, spec, table_name="t", ledger_table_name="l",
                                     rows_queue_url="q", dlq_url="d", bucket="b", topic_arn="a")
    assert {name: getattr(settings, name) for name in shared} == {
        name: getattr(moved, name) for name in shared}
    assert (settings.partition_key, settings.sort_key) == ("pk", None)
    assert Settings.from_env(settings.to_env()) == settings
