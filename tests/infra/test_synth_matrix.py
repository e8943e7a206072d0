"""Every documented context option synthesizes, alone and in the combinations the docs
show: no unsuppressed cdk-nag finding, no cfn-lint error, an environment inside Lambda's
4 KB, and every suppression's reason names the resource it covers.

Synthesized in-process through the app (`build_app`), as the other infra tests do, for an
account and region as the cdk CLI does with credentials; each case once per session
(conftest's cache), shared by the tests below.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import CfnElement
from aws_cdk.assertions import Match
from cfnlint.api import lint

from fanout_stack.functions import LAMBDA_ENVIRONMENT_LIMIT_BYTES, RESOLVED_TOKEN_BYTES
from tests.infra.conftest import Synth, synth

KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
SPEC = "{spec}"  # replaced by the session's spec file

# One case per documented option, with a value a deployer would pass.
ALONE: dict[str, dict[str, str]] = {
    "stack_name": {"stack_name": "fanout-matrix"},
    "spec": {"spec": SPEC},
    "spec_in_s3": {"spec_in_s3": "true"},
    "existing_table": {"existing_table": "legacy-offers"},
    "write_budget": {"write_budget": "40000"},
    "rows_per_writer_s": {"rows_per_writer_s": "2000"},
    "upload_prefix": {"upload_prefix": "incoming/csv"},
    "gzip": {"gzip": "true"},
    "versioned": {"versioned": "true"},
    "source_buckets": {"source_buckets": "lake,elsewhere"},
    "bucket_name": {"bucket_name": "fanout-matrix-uploads"},
    "table_name": {"table_name": "fanout-matrix-items"},
    "ledger_table_name": {"ledger_table_name": "fanout-matrix-jobs"},
    "splitter_function_name": {"splitter_function_name": "fanout-matrix-splitter"},
    "writer_function_name": {"writer_function_name": "fanout-matrix-writer"},
    "splitter_role_name": {"splitter_role_name": "fanout-matrix-splitter-role"},
    "writer_role_name": {"writer_role_name": "fanout-matrix-writer-role"},
    "alarm_email": {"alarm_email": "ops@example.com"},
    "powertools_layer_version": {"powertools_layer_version": "27"},
    "powertools_layer_arn": {"powertools_layer_arn":
                             "arn:aws:lambda:us-east-1:123456789012:layer:powertools:3"},
    "writer_timeout_s": {"writer_timeout_s": "30"},
    "visibility_timeout_s": {"visibility_timeout_s": "600"},
    "max_receive_count": {"max_receive_count": "10"},
    "range_bytes": {"range_bytes": str(16 * 1024 * 1024)},
    "parallel_threshold_bytes": {"parallel_threshold_bytes": str(1024 ** 3)},
    "parallel_range_bytes": {"parallel_range_bytes": str(256 * 1024 ** 2)},
    "reconcile_every_s": {"reconcile_every_s": "300"},
    "stall_after_s": {"stall_after_s": "7200"},
    "kms_key_arns": {"kms_key_arns": KEY},
    "deletion_protection": {"deletion_protection": "true"},
    "splitter_concurrency": {"splitter_concurrency": "10"},
}

# The combinations the docs show.
COMBINED: dict[str, dict[str, str]] = {
    "README deploy: spec and alarm e-mail": {"spec": SPEC, "alarm_email": "you@example.com"},
    "deploy gzip and budget": {"gzip": "true", "write_budget": "2000"},
    "deploy spec and budget": {"spec": SPEC, "write_budget": "2000"},
    "local waits (fanout serve)": {"writer_timeout_s": "30", "visibility_timeout_s": "91",
                                   "stall_after_s": "120", "reconcile_every_s": "60"},
    "data already in S3, customer keys": {"source_buckets": "lake", "kms_key_arns": KEY},
    "existing table under a customer key": {"existing_table": "legacy-offers",
                                            "kms_key_arns": KEY},
    "large spec, versioned, protected": {"spec": SPEC, "spec_in_s3": "true",
                                         "versioned": "true", "deletion_protection": "true",
                                         "splitter_concurrency": "20"},
}

CASES = {**{f"-c {name}": context for name, context in ALONE.items()}, **COMBINED}
# Synthesized as `cdk deploy` with credentials does: for an account and region, so the
# partition is the literal "aws" (the enablePartitionLiterals feature flag), not a token.
# (tests/infra/test_compliance.py checks the template without them.)
ACCOUNT_REGION = ("123456789012", "us-east-1")


def test_every_documented_option_has_a_case() -> None:
    """The matrix follows the options StackConfig reads: a new option without a case fails."""
    from fanout_stack.config import PIPELINE_CONTEXT_KEYS, StackConfig

    read: list[str] = []
    StackConfig.from_context(lambda key: read.append(key))
    assert set(read) | set(PIPELINE_CONTEXT_KEYS) == set(ALONE)


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request: pytest.FixtureRequest, synth_root: Path, spec_file: Path) -> Synth:
    context = {k: v.replace(SPEC, str(spec_file)) for k, v in CASES[request.param].items()}
    return synth(synth_root, env=ACCOUNT_REGION, **context)


def test_no_unsuppressed_cdk_nag_finding(case: Synth) -> None:
    rule = Match.string_like_regexp("AwsSolutions-.*")
    found = case.annotations.find_error("*", rule) + case.annotations.find_warning("*", rule)
    assert found == [], "\n".join(str(f.entry.data)[:300] for f in found)


def test_no_cfn_lint_error(case: Synth) -> None:
    errors = [m for m in lint(json.dumps(case.json), regions=["us-east-1"])
              if m.rule.id.startswith("E")]
    assert errors == [], "\n".join(str(m) for m in errors)


def environment_bytes(variables: dict[str, Any]) -> int:
    """As Lambda counts it (names and values), a deploy-time value at its longest."""
    return sum(len(name) + (len(value.encode()) if isinstance(value, str) else RESOLVED_TOKEN_BYTES)
               for name, value in variables.items())


def test_each_functions_environment_fits_lambdas_4_kb(case: Synth) -> None:
    functions = [r for r in case.resources("AWS::Lambda::Function").values()
                 if "Environment" in r["Properties"]]
    assert len(functions) >= 2  # the splitter and the writer
    for function in functions:
        size = environment_bytes(function["Properties"]["Environment"]["Variables"])
        assert size < LAMBDA_ENVIRONMENT_LIMIT_BYTES, size


def test_every_suppression_names_the_resource_it_covers(case: Synth) -> None:
    stack = case.stack
    paths = {str(stack.resolve(stack.get_logical_id(c))): c.node.path
             for c in stack.node.find_all() if isinstance(c, CfnElement)}
    suppressed = 0
    for logical_id, resource in case.json["Resources"].items():
        for rule in resource.get("Metadata", {}).get("cdk_nag", {}).get("rules_to_suppress", []):
            named, _, why = rule["reason"].partition(": ")
            assert len(why) >= 40, rule
            assert paths[logical_id].startswith(f"{stack.stack_name}/{named}/"), (
                f"{logical_id} ({paths[logical_id]}): the reason names {named!r}")
            suppressed += 1
    assert suppressed > 0
