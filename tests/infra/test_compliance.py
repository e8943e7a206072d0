"""cdk-nag (AWS Solutions) and cfn-lint over the synthesized templates."""

from __future__ import annotations

import json

import pytest
from aws_cdk.assertions import Match
from cfnlint.api import lint

from tests.infra.conftest import Synth

VARIANTS = ("default_stack", "custom_stack", "existing_table_stack")


@pytest.fixture(scope="module", params=VARIANTS)
def any_stack(request: pytest.FixtureRequest) -> Synth:
    return request.getfixturevalue(request.param)


def test_cdk_nag_aws_solutions_has_no_unsuppressed_errors(any_stack: Synth) -> None:
    errors = any_stack.annotations.find_error("*", Match.string_like_regexp("AwsSolutions-.*"))
    assert errors == [], "\n".join(str(e.entry.data)[:300] for e in errors)


def test_cdk_nag_has_no_warnings_either(any_stack: Synth) -> None:
    warnings = any_stack.annotations.find_warning("*", Match.string_like_regexp("AwsSolutions-.*"))
    assert warnings == [], "\n".join(str(w.entry.data)[:300] for w in warnings)


def test_every_suppression_carries_a_reason(any_stack: Synth) -> None:
    suppressions = [
        rule
        for resource in any_stack.json["Resources"].values()
        for rule in resource.get("Metadata", {}).get("cdk_nag", {}).get("rules_to_suppress", [])
    ]
    assert suppressions, "the stack is expected to carry its reviewed suppressions"
    for rule in suppressions:
        assert len(rule.get("reason", "")) >= 40, rule
    # Wildcard IAM findings are suppressed one resource at a time, never wholesale.
    for rule in suppressions:
        if rule["id"] in ("AwsSolutions-IAM5", "AwsSolutions-IAM4"):
            assert rule.get("applies_to"), rule


def test_cfn_lint_finds_no_errors(any_stack: Synth) -> None:
    matches = lint(json.dumps(any_stack.json), regions=["us-east-1"])
    errors = [m for m in matches if m.rule.id.startswith("E")]
    assert errors == [], "\n".join(str(m) for m in errors)
