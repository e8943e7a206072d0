"""A spec too large for Lambda's 4 KB environment fails at synth, saying why and what to do."""

from __future__ import annotations

import json
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
    assert 'columns.default_type = "infer"' in message and "-c spec_in_s3=true" in message


def test_with_spec_in_s3_the_same_spec_deploys_and_each_lambda_may_read_it(
        synth_root: Path) -> None:
    spec = synth_root / "wide-s3.toml"
    types = ", ".join(f'measurement_column_{i:03d} = "N"' for i in range(130))
    spec.write_text(f'[table]\npartition_key = "id"\n[columns]\ntypes = {{ {types} }}\n')
    synthed = synth(synth_root, spec=str(spec), stack_name="fanout-wide-s3", spec_in_s3="true")
    functions = synthed.stack.functions
    asset = functions.spec_asset
    assert asset is not None
    # The asset holds the spec, whole, as the Lambdas will read it.
    staged = json.loads((synthed.outdir / f"asset.{asset.asset_hash}.json").read_text())
    assert len(staged["columns"]["types"]) == 130
    resolved = synthed.stack.resolve
    for function, role in ((functions.splitter, functions.splitter_role),
                           (functions.writer, functions.writer_role)):
        props = synthed.resources("AWS::Lambda::Function")[synthed.logical_id(function)]
        env = props["Properties"]["Environment"]["Variables"]
        assert "FANOUT_SPEC_JSON" not in env
        assert resolved(asset.s3_object_url) == env["FANOUT_SPEC_S3"]
        statements = [s for _, p in synthed.resources("AWS::IAM::Policy").items()
                      if p["Properties"]["Roles"] == [{"Ref": synthed.logical_id(role)}]
                      for s in p["Properties"]["PolicyDocument"]["Statement"]]
        # Exactly the spec object: no other asset of the account's assets bucket, no
        # listing, no bucket-level action.
        reads = [s for s in statements if s.get("Sid") == "ReadSpec"]
        assert [(r["Action"], r["Resource"]) for r in reads] == [
            ("s3:GetObject", resolved(asset.bucket.arn_for_objects(asset.s3_object_key)))], \
            f"{role.node.id} cannot read the spec asset, or reads more than it"
        assert asset.s3_object_key.endswith(".json") and "*" not in json.dumps(reads)
        others = [s for s in statements if s.get("Sid") != "ReadSpec"
                  and json.dumps(resolved(asset.bucket.bucket_arn))[1:-1] in json.dumps(s)]
        assert others == [], f"{role.node.id} is granted more of the assets bucket"
    # cdk-nag passes it, with no suppression for the assets bucket.
    from aws_cdk.assertions import Match
    errors = synthed.annotations.find_error("*", Match.string_like_regexp("AwsSolutions-.*"))
    assert errors == [], "\n".join(str(e.entry.data)[:300] for e in errors)


def test_a_lambda_reads_its_spec_from_s3_at_cold_start(monkeypatch) -> None:
    import boto3
    from moto import mock_aws

    from fanout.runtime import Runtime
    from fanout.settings import WRITER_REQUIRED, SettingsError

    env = {"FANOUT_TABLE": "t", "FANOUT_LEDGER_TABLE": "l", "FANOUT_DLQ_URL": "https://d",
           "FANOUT_BUCKET": "b", "FANOUT_TOPIC_ARN": "arn:t", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("FANOUT_SPEC_JSON", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="assets")
        s3.put_object(Bucket="assets", Key="spec.json", Body=json.dumps(
            {"table": {"partition_key": {"name": "pk"}}, "columns": {"types": {"n": "N"}}}))
        monkeypatch.setenv("FANOUT_SPEC_S3", "s3://assets/spec.json")
        runtime = Runtime.from_env(required=WRITER_REQUIRED)
        assert runtime.spec.partition_key.name == "pk" and runtime.spec.types == {"n": "N"}
        monkeypatch.setenv("FANOUT_SPEC_S3", "s3://assets/missing.json")
        with pytest.raises(Exception, match="NoSuchKey"):
            Runtime.from_env(required=WRITER_REQUIRED)
        monkeypatch.setenv("FANOUT_SPEC_S3", "not-a-url")
        with pytest.raises(SettingsError, match="FANOUT_SPEC_S3: 'not-a-url' is not an s3://"):
            Runtime.from_env(required=WRITER_REQUIRED)


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
