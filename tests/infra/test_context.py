"""CDK context changes the stack: a spec file, names, prefix, budget, an existing table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from app import build_app

from fanout.mapping import SpecError, load_spec
from fanout_stack.config import StackConfig
from tests.infra.conftest import Synth


def test_spec_file_sets_the_items_table_key_schema_and_name(
    custom_stack: Synth, spec_file: Path,
) -> None:
    items_id = custom_stack.logical_id(custom_stack.stack.storage.items_table)
    props = custom_stack.json["Resources"][items_id]["Properties"]
    assert props["TableName"] == "offers-test"
    assert props["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"},
                                  {"AttributeName": "offer_id", "KeyType": "RANGE"}]
    assert props["AttributeDefinitions"] == [{"AttributeName": "pk", "AttributeType": "S"},
                                             {"AttributeName": "offer_id", "AttributeType": "N"}]
    # The Lambdas get the same spec inline, templates and types included.
    env = custom_stack.json["Resources"][custom_stack.logical_id(
        custom_stack.stack.functions.writer)]["Properties"]["Environment"]["Variables"]
    assert json.loads(env["FANOUT_SPEC_JSON"]) == load_spec(spec_file).to_dict()
    assert env["FANOUT_PARTITION_KEY"] == "pk"


def test_upload_prefix_and_gzip_shape_the_notifications(custom_stack: Synth) -> None:
    _, notifications = custom_stack.one("Custom::S3BucketNotifications")
    configs = notifications["Properties"]["NotificationConfiguration"][
        "LambdaFunctionConfigurations"]
    filters = sorted(
        tuple(sorted((r["Name"], r["Value"]) for r in c["Filter"]["Key"]["FilterRules"]))
        for c in configs)
    assert filters == [(("prefix", "incoming/csv/"), ("suffix", ".csv")),
                       (("prefix", "incoming/csv/"), ("suffix", ".csv.gz"))]
    assert custom_stack.json["Outputs"]["UploadPrefix"]["Value"] == "incoming/csv/"


def test_splitter_reads_only_the_configured_prefix_and_versions_when_versioned(
    custom_stack: Synth,
) -> None:
    bucket_id = custom_stack.logical_id(custom_stack.stack.storage.bucket)
    reads = [s for p in custom_stack.resources("AWS::IAM::Policy").values()
             for s in p["Properties"]["PolicyDocument"]["Statement"] if s.get("Sid") == "ReadUploads"]
    (read,) = reads
    assert sorted(read["Action"]) == ["s3:GetObject", "s3:GetObjectVersion"]
    assert read["Resource"] == {"Fn::Join": ["", [{"Fn::GetAtt": [bucket_id, "Arn"]},
                                                  "/incoming/csv/*"]]}


def test_write_budget_sets_maximum_concurrency(custom_stack: Synth) -> None:
    from fanout_stack.config import DEFAULT_ROWS_PER_WRITER_S

    # ceil(10000 WCU/s / rows/s per writer), at least the ESM's minimum of 2
    wanted = max(2, -(-10_000 // DEFAULT_ROWS_PER_WRITER_S))
    custom_stack.template.has_resource_properties("AWS::Lambda::EventSourceMapping", {
        "ScalingConfig": {"MaximumConcurrency": wanted}})
    assert custom_stack.json["Outputs"]["WriterMaxConcurrency"]["Value"] == str(wanted)


def test_names_from_context(custom_stack: Synth) -> None:
    template = custom_stack.template
    template.has_resource_properties("AWS::S3::Bucket", {"BucketName": "fanout-custom-uploads"})
    template.has_resource_properties("AWS::DynamoDB::Table", {"TableName": "fanout-custom-jobs"})
    template.has_resource_properties("AWS::Lambda::Function",
                                     {"FunctionName": "fanout-custom-splitter"})
    template.has_resource_properties("AWS::Lambda::Function",
                                     {"FunctionName": "fanout-custom-writer"})
    template.has_resource_properties("AWS::IAM::Role", {"RoleName": "fanout-custom-splitter-role"})
    template.has_resource_properties("AWS::IAM::Role", {"RoleName": "fanout-custom-writer-role"})
    assert custom_stack.stack.stack_name == "fanout-custom"


def test_existing_table_is_imported_not_created_and_granted_only_item_writes(
    existing_table_stack: Synth,
) -> None:
    synth = existing_table_stack
    tables = synth.resources("AWS::DynamoDB::Table")
    assert len(tables) == 1, "only the ledger is created"
    (ledger,) = tables.values()
    assert ledger["Properties"]["KeySchema"][0]["AttributeName"] == "pk"
    writes = [s for p in synth.resources("AWS::IAM::Policy").values()
              for s in p["Properties"]["PolicyDocument"]["Statement"]
              if s.get("Sid") == "WriteItems"]
    (write,) = writes
    # BatchWriteItem (put, delete); PutItem and UpdateItem for the insert and update modes
    assert write["Action"] == ["dynamodb:BatchWriteItem", "dynamodb:PutItem",
                               "dynamodb:UpdateItem"]
    arn = json.dumps(write["Resource"])
    assert ":table/legacy-offers" in arn and "AWS::Region" in arn and "AWS::AccountId" in arn
    assert synth.json["Outputs"]["TableName"]["Value"] == "legacy-offers"
    env = synth.json["Resources"][synth.logical_id(synth.stack.functions.writer)][
        "Properties"]["Environment"]["Variables"]
    assert env["FANOUT_TABLE"] == "legacy-offers"
    # The throttling alarms follow the imported table.
    alarms = synth.resources("AWS::CloudWatch::Alarm").values()
    ddb = [a for a in alarms if a["Properties"]["Namespace"] == "AWS/DynamoDB"]
    assert ddb and all({"Name": "TableName", "Value": "legacy-offers"}
                       in a["Properties"]["Dimensions"] for a in ddb)


def context_getter(**values: str):
    return values.get


def test_upload_prefix_under_the_pipeline_outputs_is_refused() -> None:
    with pytest.raises(ValueError, match="trigger itself"):
        StackConfig.from_context(context_getter(upload_prefix="errors/in"))


def test_a_bad_spec_file_fails_synth_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[table]\nsort_key = { name = "x" }\n')
    with pytest.raises(SpecError, match="partition_key"):
        StackConfig.from_context(context_getter(spec=str(bad)))


def test_relative_spec_paths_resolve_from_the_infra_folder(tmp_path: Path) -> None:
    (tmp_path / "offers.toml").write_text('[table]\npartition_key = { name = "id" }\n')
    config = StackConfig.from_context(context_getter(spec="offers.toml"), base_dir=tmp_path)
    assert config.spec.key_schema() == [("id", "S")]


def test_pipeline_waits_and_range_sizes_come_from_context() -> None:
    config = StackConfig.from_context(context_getter(
        writer_timeout_s="30", visibility_timeout_s="91", max_receive_count="2",
        range_bytes="131072", parallel_threshold_bytes="600000", parallel_range_bytes="250000"))
    pipeline = config.pipeline
    assert (pipeline.writer_timeout_s, pipeline.visibility_timeout_s, pipeline.max_receive_count) == (30, 91, 2)
    assert (pipeline.range_bytes, pipeline.parallel_threshold_bytes,
            pipeline.parallel_range_bytes) == (131072, 600000, 250000)


@pytest.mark.parametrize("writer_s, visibility_s, minimum", [
    ("60", "30", 151),  # below the writer timeout (AWS refuses it too)
    ("60", "60", 151),  # equal: AWS takes it, the ledger cannot finish a job with it
    ("30", "90", 91),  # the boundary: the rule is strict
])
def test_synth_refuses_a_visibility_timeout_the_ledger_cannot_finish_with(writer_s, visibility_s,
                                                                          minimum) -> None:
    # The ledger voids a dead writer's hole one writer timeout + 30 s after its ticket, and
    # that ticket may come one writer timeout after the batch was received: its redelivery
    # must come later than both.
    with pytest.raises(ValueError) as raised:
        build_app({"writer_timeout_s": writer_s, "visibility_timeout_s": visibility_s}, nag=False)
    assert str(raised.value) == (
        f"visibility_timeout_s ({visibility_s}) must be more than 2 × writer_timeout_s ({writer_s}) "
        f"+ 30 s = {2 * int(writer_s) + 30}: set it to at least {minimum}")


def test_the_reconciler_interval_and_the_stall_time_come_from_context(synth_root: Path) -> None:
    from tests.infra.conftest import synth

    # Given reconciler options beside the local stack's short waits
    local = synth(synth_root, reconcile_every_s="120", stall_after_s="150", writer_timeout_s="30",
                  visibility_timeout_s="91", stack_name="fanout-recon")
    # Then the rule runs every 2 minutes and the writer stalls a job after 150 s
    (rule,) = local.resources("AWS::Events::Rule").values()
    assert rule["Properties"]["ScheduleExpression"] == "rate(2 minutes)"
    env = local.json["Resources"][local.logical_id(local.stack.functions.writer)][
        "Properties"]["Environment"]["Variables"]
    assert env["FANOUT_STALL_AFTER_S"] == "150"


@pytest.mark.parametrize("context, refused", [
    ({"reconcile_every_s": "90"}, "whole number of minutes"),
    ({"reconcile_every_s": "0"}, "whole number of minutes"),
    # no longer than a redelivery (the visibility timeout, itself longer than a dead
    # writer's ticket takes to be voided: the timing rule)
    ({"stall_after_s": "360"}, "must be more than 360 s"),
    ({"writer_timeout_s": "40", "visibility_timeout_s": "111", "stall_after_s": "111"},
     "must be more than 111 s"),
])
def test_a_schedule_eventbridge_cannot_run_or_a_stall_time_too_short_is_refused(
        context: dict[str, str], refused: str) -> None:
    with pytest.raises(ValueError, match=refused):
        StackConfig.from_context(context_getter(**context))


def test_a_visibility_timeout_below_the_writer_timeout_is_refused() -> None:
    with pytest.raises(ValueError, match="visibility_timeout_s"):
        StackConfig.from_context(context_getter(writer_timeout_s="60", visibility_timeout_s="30"))


def test_a_layer_arn_from_context_replaces_the_public_layer() -> None:
    arn = "arn:aws:lambda:us-east-1:000000000000:layer:fanout-powertools:1"
    assert StackConfig.from_context(context_getter(powertools_layer_arn=arn)).powertools_layer_arn == arn


def test_the_public_layer_is_used_only_when_a_version_is_asked_for() -> None:
    assert StackConfig.from_context(context_getter()).powertools_layer_version is None
    assert StackConfig.from_context(context_getter(powertools_layer_version="27")).powertools_layer_version == 27
