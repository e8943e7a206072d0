"""`-c source_buckets=a,b`: the splitter (only) may read those buckets' objects, for
`fanout ingest s3://BUCKET/PREFIX`; by default it may read no bucket but its own uploads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Match
from cfnlint.api import lint

from fanout_stack.config import StackConfig
from tests.infra.conftest import Synth, synth
from tests.infra.test_stack import grants, statements

SOURCES = ("lake-raw", "exports.example.com")


@pytest.fixture(scope="module")
def sourced_stack(synth_root: Path) -> Synth:
    return synth(synth_root, source_buckets=",".join(SOURCES), stack_name="fanout-sourced")


def object_arns(*names: str) -> list[dict[str, Any]]:
    return [{"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, f":s3:::{name}/*"]]}
            for name in names]


def test_the_splitter_may_read_every_object_and_version_of_the_named_buckets(
        sourced_stack: Synth) -> None:
    functions = sourced_stack.stack.functions
    (read,) = [s for s in statements(sourced_stack, functions.splitter_role)
               if s.get("Sid") == "ReadSourceBuckets"]
    assert read["Effect"] == "Allow"
    assert sorted(read["Action"]) == ["s3:GetObject", "s3:GetObjectVersion"]
    # In any order (the minimizePolicies feature flag sorts them).
    assert sorted(map(json.dumps, read["Resource"])) == sorted(map(json.dumps, object_arns(*SOURCES)))
    # Nothing else on them: no listing, no writing, and the writer gets none of it
    splitter = grants(sourced_stack, functions.splitter_role)
    on_sources = {action for action, arns in splitter.items()
                  if any(arn in object_arns(*SOURCES) for arn in arns)}
    assert on_sources == {"s3:GetObject", "s3:GetObjectVersion"}
    writer = json.dumps(statements(sourced_stack, functions.writer_role))
    assert not any(name in writer for name in SOURCES)
    assert sourced_stack.json["Outputs"]["SourceBuckets"]["Value"] == ",".join(SOURCES)


def test_by_default_no_other_bucket_is_granted_and_no_output_names_one(default_stack: Synth) -> None:
    functions = default_stack.stack.functions
    for role in (functions.splitter_role, functions.writer_role):
        assert not [s for s in statements(default_stack, role) if s.get("Sid") == "ReadSourceBuckets"]
        assert ":s3:::" not in json.dumps(statements(default_stack, role))
    assert "SourceBuckets" not in default_stack.json["Outputs"]


def test_the_grant_passes_cdk_nag_and_cfn_lint(sourced_stack: Synth) -> None:
    findings = (sourced_stack.annotations.find_error("*", Match.string_like_regexp("AwsSolutions-.*"))
                + sourced_stack.annotations.find_warning("*", Match.string_like_regexp("AwsSolutions-.*")))
    assert findings == [], "\n".join(str(f.entry.data)[:300] for f in findings)
    errors = [m for m in lint(json.dumps(sourced_stack.json), regions=["us-east-1"])
              if m.rule.id.startswith("E")]
    assert errors == [], "\n".join(str(m) for m in errors)


def test_source_bucket_names_are_checked_and_deduplicated() -> None:
    def config(value: Any) -> StackConfig:
        return StackConfig.from_context({"source_buckets": value}.get)

    assert config(" a-1 , b.c,a-1,").source_buckets == ("a-1", "b.c")
    assert config(["x-y", "z12"]).source_buckets == ("x-y", "z12")  # a list in cdk.json
    assert config(None).source_buckets == ()
    for bad in ("s3://lake", "Lake", "ab", "arn:aws:s3:::lake", "a..b", "-lake"):
        with pytest.raises(ValueError, match="not an S3 bucket name"):
            config(bad)
