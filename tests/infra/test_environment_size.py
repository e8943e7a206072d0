"""A spec too large for Lambda's 4 KB environment fails at synth, saying why and what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from fanout_stack.functions import (
    LAMBDA_ENVIRONMENT_LIMIT_BYTES,
    EnvironmentTooLarge,
    check_environment_size,
)
from tests.infra.conftest import synth


def test_a_spec_of_130_typed_columns_fails_at_synth_with_its_size_and_a_way_out(
        synth_root: Path) -> None:
    spec = synth_root / "wide.toml"
    types = ", ".join(f'measurement_column_{i:03d} = "N"' for i in range(130))
    spec.write_text(f'[table]\npartition_key = "id"\n[columns]\ntypes = {{ {types} }}\n')
    with pytest.raises(EnvironmentTooLarge) as error:
        synth(synth_root, spec=str(spec), stack_name="fanout-wide")
    message = str(error.value)
    assert "over Lambda's limit of 4,096 (4 KB)" in message
    assert f"the mapping spec ({spec})" in message
    assert 'columns.default_type = "infer"' in message and "SSM Parameter Store" in message


def test_the_check_counts_unresolved_names_at_their_longest() -> None:
    from aws_cdk import App, Stack
    from aws_cdk import aws_sqs as sqs

    queue = sqs.Queue(Stack(App(), "s"), "q")
    spec = "x" * (LAMBDA_ENVIRONMENT_LIMIT_BYTES - 400)
    # Within the limit with the token counted short, over it once counted as a real URL.
    env = {"FANOUT_SPEC_JSON": spec, **{f"URL_{i}": queue.queue_url for i in range(3)}}
    with pytest.raises(EnvironmentTooLarge):
        check_environment_size(env, "spec.toml")
    check_environment_size({"FANOUT_SPEC_JSON": spec}, "spec.toml")  # fits alone
