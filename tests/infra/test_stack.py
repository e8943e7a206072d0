"""The default stack: what matters for correctness, safety and least privilege."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Match

from fanout.mapping import Spec
from fanout.settings import DEFAULT_CONFIG
from fanout_stack.config import (
    DEFAULT_ROWS_PER_WRITER_S,
    DEFAULT_WRITE_BUDGET,
    DEFAULT_WRITER_MEMORY_MB,
    writer_concurrency,
)
from fanout_stack.layer import build_layer_dir
from tests.infra.conftest import REPO_ROOT, Synth


def statements(synth: Synth, role: Any) -> list[dict[str, Any]]:
    """Every statement of the policies attached to one role."""
    role_id = synth.logical_id(role)
    found = []
    for policy in synth.resources("AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            found.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    return found


def actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return [action] if isinstance(action, str) else list(action)


def resources(statement: dict[str, Any]) -> list[Any]:
    resource = statement["Resource"]
    return resource if isinstance(resource, list) else [resource]


def grants(synth: Synth, role: Any) -> dict[str, list[Any]]:
    """action -> resources it is allowed on, for one role."""
    out: dict[str, list[Any]] = {}
    for statement in statements(synth, role):
        assert statement["Effect"] == "Allow"
        for action in actions(statement):
            out.setdefault(action, []).extend(resources(statement))
    return out


def att(logical_id: str) -> dict[str, Any]:
    return {"Fn::GetAtt": [logical_id, "Arn"]}


def object_arn(bucket_id: str, prefix: str) -> dict[str, Any]:
    return {"Fn::Join": ["", [att(bucket_id), f"/{prefix}*"]]}


# ----------------------------------------------------------------------------- queues

def test_rows_queue_redrives_to_the_dlq_after_max_receive_count(default_stack: Synth) -> None:
    messaging = default_stack.stack.messaging
    rows_id, dlq_id = (default_stack.logical_id(q) for q in (messaging.rows_queue, messaging.dlq))
    rows = default_stack.json["Resources"][rows_id]["Properties"]
    assert rows["RedrivePolicy"] == {
        "deadLetterTargetArn": att(dlq_id),
        "maxReceiveCount": DEFAULT_CONFIG.max_receive_count,
    }
    # Same numbers the local runtime uses (fanout_cli.local.resources.rows_queue_attributes).
    assert rows["VisibilityTimeout"] == DEFAULT_CONFIG.visibility_timeout_s
    assert rows["VisibilityTimeout"] >= 6 * DEFAULT_CONFIG.writer_timeout_s
    assert rows["MessageRetentionPeriod"] == DEFAULT_CONFIG.retention_days * 86400
    assert rows["SqsManagedSseEnabled"] is True
    dlq = default_stack.json["Resources"][dlq_id]["Properties"]
    # A message moved to the DLQ keeps its first enqueue time: the DLQ keeps it longer
    # than the rows queue did (14 days, SQS's maximum), so it never expires on arrival.
    assert dlq["MessageRetentionPeriod"] == DEFAULT_CONFIG.dlq_retention_days * 86400 == 14 * 86400
    assert dlq["MessageRetentionPeriod"] > rows["MessageRetentionPeriod"]
    assert "RedrivePolicy" not in dlq
    # Only the rows queue may send its dead letters here: named by its (fixed) name.
    assert rows["QueueName"] == "fanout-rows"
    assert dlq["RedriveAllowPolicy"] == {
        "redrivePermission": "byQueue",
        "sourceQueueArns": [{"Fn::Join": ["", [
            "arn:", {"Ref": "AWS::Partition"}, ":sqs:", {"Ref": "AWS::Region"}, ":",
            {"Ref": "AWS::AccountId"}, ":fanout-rows"]]}]}
    failures = default_stack.json["Resources"][default_stack.logical_id(
        messaging.splitter_failures)]["Properties"]
    assert failures["MessageRetentionPeriod"] == 14 * 86400


def test_queues_refuse_plain_http(default_stack: Synth) -> None:
    policies = default_stack.resources("AWS::SQS::QueuePolicy")
    assert len(policies) == 3  # rows queue, DLQ, splitter failures
    for policy in policies.values():
        denies = [s for s in policy["Properties"]["PolicyDocument"]["Statement"]
                  if s["Effect"] == "Deny"]
        assert denies and denies[0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


# ------------------------------------------------------------------ event source mapping

def test_writer_mapping_reports_batch_item_failures_with_bounded_concurrency(
    default_stack: Synth,
) -> None:
    functions, messaging = default_stack.stack.functions, default_stack.stack.messaging
    default_stack.template.has_resource_properties("AWS::Lambda::EventSourceMapping", {
        "FunctionName": {"Ref": default_stack.logical_id(functions.writer)},
        "EventSourceArn": att(default_stack.logical_id(messaging.rows_queue)),
        "FunctionResponseTypes": ["ReportBatchItemFailures"],
        "BatchSize": DEFAULT_CONFIG.batch_size,
        "MaximumBatchingWindowInSeconds": DEFAULT_CONFIG.max_batching_window_s,
        "ScalingConfig": {"MaximumConcurrency": writer_concurrency(DEFAULT_WRITE_BUDGET,
                                                                     DEFAULT_ROWS_PER_WRITER_S)},
    })
    default_stack.template.resource_count_is("AWS::Lambda::EventSourceMapping", 1)


def test_concurrency_formula_divides_the_budget_and_clamps() -> None:
    assert writer_concurrency(4000, 400) == 10
    assert writer_concurrency(4001, 400) == 11  # ceil, never under the budget's need
    assert writer_concurrency(100, 400) == 2  # ESM minimum
    assert writer_concurrency(10_000_000, 400) == 1000  # ESM maximum


# ------------------------------------------------------------------------ S3 trigger

def test_only_csv_uploads_under_the_prefix_trigger_the_splitter(default_stack: Synth) -> None:
    _, notifications = default_stack.one("Custom::S3BucketNotifications")
    configs = notifications["Properties"]["NotificationConfiguration"][
        "LambdaFunctionConfigurations"]
    assert len(configs) == 1
    (config,) = configs
    assert config["Events"] == ["s3:ObjectCreated:*"]
    assert config["LambdaFunctionArn"] == att(
        default_stack.logical_id(default_stack.stack.functions.splitter))
    rules = {r["Name"]: r["Value"] for r in config["Filter"]["Key"]["FilterRules"]}
    assert rules == {"prefix": DEFAULT_CONFIG.upload_prefix, "suffix": ".csv"}
    # The pipeline's outputs live outside the watched prefix, so they can never re-trigger it.
    for own in (DEFAULT_CONFIG.errors_prefix, DEFAULT_CONFIG.json_copy_prefix):
        assert not own.startswith(rules["prefix"])


def test_bucket_is_private_encrypted_tls_only_logged_and_expires_outputs(
    default_stack: Synth,
) -> None:
    bucket_id = default_stack.logical_id(default_stack.stack.storage.bucket)
    props = default_stack.json["Resources"][bucket_id]["Properties"]
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "BlockPublicPolicy": True,
        "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"] == [
        {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
    assert props["LoggingConfiguration"]["DestinationBucketName"] == {
        "Ref": default_stack.logical_id(default_stack.stack.storage.access_logs)}
    expiring = {r.get("Prefix"): r["ExpirationInDays"]
                for r in props["LifecycleConfiguration"]["Rules"] if "ExpirationInDays" in r}
    assert set(expiring) == {DEFAULT_CONFIG.errors_prefix, DEFAULT_CONFIG.json_copy_prefix}
    default_stack.template.has_resource_properties("AWS::S3::BucketPolicy", {
        "Bucket": {"Ref": bucket_id},
        "PolicyDocument": {"Statement": Match.array_with([Match.object_like({
            "Effect": "Deny",
            "Condition": {"Bool": {"aws:SecureTransport": "false"}}})])},
    })


# ---------------------------------------------------------------------------- tables

def test_items_table_key_schema_comes_from_the_default_spec(default_stack: Synth) -> None:
    items_id = default_stack.logical_id(default_stack.stack.storage.items_table)
    props = default_stack.json["Resources"][items_id]["Properties"]
    spec = Spec.default()
    assert props["KeySchema"] == [
        {"AttributeName": spec.partition_key.name, "KeyType": "HASH"},
        {"AttributeName": spec.sort_key.name, "KeyType": "RANGE"},
    ]
    assert props["AttributeDefinitions"] == [
        {"AttributeName": name, "AttributeType": type_} for name, type_ in spec.key_schema()]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert "TableName" not in props  # generated, so two stacks never collide
    assert default_stack.json["Resources"][items_id]["DeletionPolicy"] == "Retain"


def test_ledger_table_is_pk_sk_strings_on_demand(default_stack: Synth) -> None:
    ledger_id = default_stack.logical_id(default_stack.stack.storage.ledger_table)
    props = default_stack.json["Resources"][ledger_id]["Properties"]
    assert props["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"},
                                  {"AttributeName": "sk", "KeyType": "RANGE"}]
    assert props["AttributeDefinitions"] == [{"AttributeName": "pk", "AttributeType": "S"},
                                             {"AttributeName": "sk", "AttributeType": "S"}]
    assert props["BillingMode"] == "PAY_PER_REQUEST"


# ------------------------------------------------------------------------- functions

def function_props(synth: Synth, function: Any) -> dict[str, Any]:
    return synth.json["Resources"][synth.logical_id(function)]["Properties"]


def test_functions_are_arm64_python313_traced_with_the_powertools_layer(
    default_stack: Synth,
) -> None:
    functions = default_stack.stack.functions
    for function, handler, memory, timeout in (
        (functions.splitter, "splitter.handler.lambda_handler", 512,
         DEFAULT_CONFIG.splitter_timeout_s),
        (functions.writer, "writer.handler.lambda_handler", DEFAULT_WRITER_MEMORY_MB,
         DEFAULT_CONFIG.writer_timeout_s),
    ):
        props = function_props(default_stack, function)
        assert props["Handler"] == handler
        assert props["Runtime"] == "python3.13"
        assert props["Architectures"] == ["arm64"]
        assert props["MemorySize"] == memory
        assert props["Timeout"] == timeout
        assert props["TracingConfig"] == {"Mode": "Active"}
        (layer,) = props["Layers"]
        layer_id, layer_resource = default_stack.one("AWS::Lambda::LayerVersion")
        assert layer == {"Ref": layer_id}
    # The layer the stack ships is the Powertools release pyproject.toml pins.
    assert layer_resource["Properties"]["CompatibleArchitectures"] == ["arm64"]
    assert layer_resource["Properties"]["CompatibleRuntimes"] == ["python3.13"]
    assert f"aws-lambda-powertools[tracer]=={pinned_powertools()} " in \
        layer_resource["Properties"]["Description"]


def pinned_powertools() -> str:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    (pin,) = [d for d in project["dependencies"] if d.startswith("aws-lambda-powertools")]
    return pin.split("==")[1]


def test_the_layer_holds_the_pinned_powertools_and_no_compiled_code() -> None:
    folder = build_layer_dir()
    python = folder / "python"
    (dist_info,) = python.glob("aws_lambda_powertools-*.dist-info")
    assert dist_info.name == f"aws_lambda_powertools-{pinned_powertools()}.dist-info"
    assert (python / "aws_lambda_powertools" / "tracing" / "tracer.py").is_file()
    assert (python / "aws_xray_sdk").is_dir()  # the [tracer] extra
    assert not (python / "boto3").exists() and not (python / "botocore").exists()  # the runtime's
    assert not [f for f in python.rglob("*") if f.suffix in (".so", ".pyd", ".pyc")]


def test_functions_get_the_settings_and_the_spec_they_read(default_stack: Synth) -> None:
    stack = default_stack.stack
    for function, service in ((stack.functions.splitter, "fanout-splitter"),
                              (stack.functions.writer, "fanout-writer")):
        env = function_props(default_stack, function)["Environment"]["Variables"]
        assert env["FANOUT_TABLE"] == {"Ref": default_stack.logical_id(stack.storage.items_table)}
        assert env["FANOUT_LEDGER_TABLE"] == {
            "Ref": default_stack.logical_id(stack.storage.ledger_table)}
        assert env["FANOUT_ROWS_QUEUE_URL"] == {
            "Ref": default_stack.logical_id(stack.messaging.rows_queue)}
        assert env["FANOUT_DLQ_URL"] == {"Ref": default_stack.logical_id(stack.messaging.dlq)}
        assert env["FANOUT_BUCKET"] == {"Ref": default_stack.logical_id(stack.storage.bucket)}
        assert env["FANOUT_TOPIC_ARN"] == {"Ref": default_stack.logical_id(stack.messaging.topic)}
        assert env["FANOUT_RANGE_BYTES"] == str(DEFAULT_CONFIG.range_bytes)
        assert env["FANOUT_ERRORS_PREFIX"] == DEFAULT_CONFIG.errors_prefix
        assert Spec.from_dict(json.loads(env["FANOUT_SPEC_JSON"])) == Spec.default()
        assert env["POWERTOOLS_SERVICE_NAME"] == service
        assert env["POWERTOOLS_METRICS_NAMESPACE"] == "fanout"
        assert len(json.dumps(env)) < 4096  # Lambda's environment size limit


def code_assets(synth: Synth) -> tuple[dict[str, Path], Path]:
    """({"splitter": asset folder, "writer": asset folder}, the layer's python/ folder)."""
    assets = [p for p in synth.outdir.iterdir() if p.name.startswith("asset.")]
    (layer,) = [p / "python" for p in assets if (p / "python").is_dir()]
    code = {}
    for asset in assets:
        lambdas = {p.name for p in asset.iterdir()} - {"fanout", "python"}
        if lambdas:
            (package,) = lambdas
            code[package] = asset
    return code, layer


def test_each_code_asset_is_the_core_plus_its_own_lambda(default_stack: Synth) -> None:
    code, _ = code_assets(default_stack)
    assert sorted(code) == ["splitter", "writer"]
    for package, asset in code.items():
        assert {p.name for p in asset.iterdir()} == {"fanout", package}
        files = {str(p.relative_to(asset)) for p in asset.rglob("*") if p.is_file()}
        assert f"{package}/handler.py" in files and "fanout/ledger/__init__.py" in files
        assert not any("__pycache__" in f or not f.endswith(".py") for f in files)
    # The template points each function at its own asset.
    functions = default_stack.template.find_resources("AWS::Lambda::Function")
    handlers = {f["Properties"]["Handler"]: f["Properties"]["Code"]["S3Key"]
                for f in functions.values()
                if f["Properties"].get("Handler", "").endswith(".handler.lambda_handler")}
    assert handlers == {  # asset.<hash> is uploaded as <hash>.zip
        "splitter.handler.lambda_handler": code["splitter"].name.removeprefix("asset.") + ".zip",
        "writer.handler.lambda_handler": code["writer"].name.removeprefix("asset.") + ".zip"}


@pytest.mark.parametrize("package", ["splitter", "writer"])
def test_each_code_asset_imports_its_handler_on_its_own(default_stack: Synth, package: str) -> None:
    """What Lambda will do: import the handler from its asset alone, with boto3 (runtime)
    and Powertools from the stack's layer, but without the repo checkout, the other Lambda,
    the tool layer or moto."""
    code, layer = code_assets(default_stack)
    asset = code[package]
    other = "writer" if package == "splitter" else "splitter"
    site_packages = sysconfig.get_paths()["purelib"]
    # -S: no site processing, so the editable install of this repo is not on the path; the
    # layer comes before site-packages (which stands in for the runtime's boto3), as in Lambda.
    script = (f"import sys, importlib.util; sys.path[:0] = [{str(asset)!r}, {str(layer)!r}, "
              f"{site_packages!r}]; import {package}.handler, fanout, aws_lambda_powertools; "
              f"assert fanout.__file__.startswith({str(asset)!r}), fanout.__file__; "
              f"assert aws_lambda_powertools.__file__.startswith({str(layer)!r}); "
              f"assert importlib.util.find_spec({other!r}) is None; "
              "assert importlib.util.find_spec('fanout_cli') is None; "
              "assert not any(m.startswith(('fanout_cli', 'moto')) for m in sys.modules)")
    env = {**os.environ, "POWERTOOLS_TRACE_DISABLED": "true", "AWS_DEFAULT_REGION": "us-east-1"}
    result = subprocess.run([sys.executable, "-S", "-c", script], capture_output=True, text=True,
                            env=env, cwd=str(asset), timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]


# ------------------------------------------------------------------------ reconciler

def test_a_schedule_runs_the_reconciler_in_the_writer(default_stack: Synth) -> None:
    from fanout.contract import RECONCILE_EVENT, is_reconcile_event

    stack = default_stack.stack
    writer_id = default_stack.logical_id(stack.functions.writer)
    rule_id, rule = default_stack.one("AWS::Events::Rule")
    props = rule["Properties"]
    # Every reconcile_every_s (60 s: rate(1 minute)), the writer with the constant input
    # that its handler tells from an SQS batch
    assert props["ScheduleExpression"] == "rate(1 minute)" and props["State"] == "ENABLED"
    assert DEFAULT_CONFIG.reconcile_every_s == 60
    (target,) = props["Targets"]
    assert target["Arn"] == att(writer_id)
    assert json.loads(target["Input"]) == RECONCILE_EVENT and is_reconcile_event(json.loads(target["Input"]))
    assert target["RetryPolicy"] == {"MaximumRetryAttempts": 0, "MaximumEventAgeInSeconds": 60}
    # EventBridge may invoke the writer, from this rule only
    permissions = [p["Properties"] for p in default_stack.resources("AWS::Lambda::Permission").values()
                   if p["Properties"]["Principal"] == "events.amazonaws.com"]
    assert permissions == [{"Action": "lambda:InvokeFunction", "FunctionName": att(writer_id),
                            "Principal": "events.amazonaws.com", "SourceArn": att(rule_id)}]
    # A failed run is not retried by Lambda either: the next one comes within the minute
    default_stack.template.has_resource_properties("AWS::Lambda::EventInvokeConfig", {
        "FunctionName": {"Ref": writer_id}, "MaximumRetryAttempts": 0,
        "MaximumEventAgeInSeconds": 60})
    # And the writer stalls a job after stall_after_s without progress
    env = default_stack.json["Resources"][writer_id]["Properties"]["Environment"]["Variables"]
    assert env["FANOUT_STALL_AFTER_S"] == str(DEFAULT_CONFIG.stall_after_s)


# ------------------------------------------------------------------------------- IAM

def test_splitter_may_only_read_uploads_send_rows_use_the_ledger_and_publish(
    default_stack: Synth,
) -> None:
    stack = default_stack.stack
    bucket_id = default_stack.logical_id(stack.storage.bucket)
    ledger = att(default_stack.logical_id(stack.storage.ledger_table))
    granted = grants(default_stack, stack.functions.splitter_role)
    assert granted.pop("s3:GetObject") == [object_arn(bucket_id, DEFAULT_CONFIG.upload_prefix)]
    # The rows queue, and the on-failure destination of its own async invocations.
    assert sorted(map(json.dumps, granted.pop("sqs:SendMessage"))) == sorted(map(json.dumps, [
        att(default_stack.logical_id(stack.messaging.rows_queue)),
        att(default_stack.logical_id(stack.messaging.splitter_failures))]))
    failures = [att(default_stack.logical_id(stack.messaging.splitter_failures))]
    assert granted.pop("sqs:GetQueueAttributes") == failures  # the destination's own grant
    assert granted.pop("sqs:GetQueueUrl") == failures
    for action in ("dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:GetItem",
                   "dynamodb:BatchGetItem", "dynamodb:ConditionCheckItem", "dynamodb:Query",
                   "dynamodb:DeleteItem"):  # a failed job leaves the active index
        assert granted.pop(action) == [ledger]
    assert granted.pop("sns:Publish") == [{"Ref": default_stack.logical_id(stack.messaging.topic)}]
    # The continuation: invoking itself, and no other function.
    (invoke,) = granted.pop("lambda:InvokeFunction")
    assert f":function:{stack.functions.splitter_name}" in json.dumps(invoke)
    splitter = default_stack.resources("AWS::Lambda::Function")[
        default_stack.logical_id(stack.functions.splitter)]
    assert splitter["Properties"]["FunctionName"] == stack.functions.splitter_name
    logs = att(default_stack.logical_id(stack.functions.splitter_logs))
    for action in ("logs:CreateLogStream", "logs:PutLogEvents"):
        assert granted.pop(action) == [logs, {"Fn::Join": ["", [logs, ":*"]]}]
    assert granted.pop("xray:PutTraceSegments") == ["*"]
    assert granted.pop("xray:PutTelemetryRecords") == ["*"]
    assert granted == {}, f"unexpected splitter permissions: {sorted(granted)}"


def test_writer_may_only_batch_write_items_use_the_ledger_reject_report_and_consume(
    default_stack: Synth,
) -> None:
    stack = default_stack.stack
    bucket_id = default_stack.logical_id(stack.storage.bucket)
    rows_queue = att(default_stack.logical_id(stack.messaging.rows_queue))
    granted = grants(default_stack, stack.functions.writer_role)
    items = att(default_stack.logical_id(stack.storage.items_table))
    assert granted.pop("dynamodb:BatchWriteItem") == [items]  # puts and deletes
    ledger = att(default_stack.logical_id(stack.storage.ledger_table))
    # The insert and update write modes: one PutItem / UpdateItem a row on the items table
    # (and the ledger's own); no DeleteItem on the items table (deletes go by
    # BatchWriteItem), only on the ledger: a job's entry in the active index, removed by
    # the reconciler and by the transaction that announces the job's end.
    for action in ("dynamodb:PutItem", "dynamodb:UpdateItem"):
        assert granted.pop(action) == [items, ledger]
    # The same modes by PartiQL (writer/statements.py): INSERT and UPDATE statements, and
    # the read-back of the keys an insert found, on the items table alone.
    for action in ("dynamodb:PartiQLInsert", "dynamodb:PartiQLUpdate"):
        assert granted.pop(action) == [items]
    assert sorted(granted.pop("dynamodb:BatchGetItem"), key=json.dumps) == sorted(
        [items, ledger], key=json.dumps)
    for action in ("dynamodb:GetItem", "dynamodb:ConditionCheckItem",
                   "dynamodb:Query", "dynamodb:DeleteItem"):
        assert granted.pop(action) == [ledger]
    assert granted.pop("sqs:SendMessage") == [att(default_stack.logical_id(stack.messaging.dlq))]
    assert granted.pop("s3:PutObject") == [
        object_arn(bucket_id, DEFAULT_CONFIG.errors_prefix),
        object_arn(bucket_id, DEFAULT_CONFIG.json_copy_prefix)]
    assert granted.pop("sns:Publish") == [{"Ref": default_stack.logical_id(stack.messaging.topic)}]
    # The event source mapping's consume permissions, on the rows queue only.
    for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
                   "sqs:GetQueueAttributes", "sqs:GetQueueUrl"):
        assert granted.pop(action) == [rows_queue]
    for action in ("logs:CreateLogStream", "logs:PutLogEvents", "xray:PutTraceSegments",
                   "xray:PutTelemetryRecords"):
        granted.pop(action)
    assert granted == {}, f"unexpected writer permissions: {sorted(granted)}"


def test_no_statement_allows_every_action_and_no_function_role_uses_managed_policies(
    default_stack: Synth,
) -> None:
    for policy in default_stack.resources("AWS::IAM::Policy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            assert not any(a == "*" or a.endswith(":*") for a in actions(statement)), statement
            if resources(statement) == ["*"]:
                assert all(a.startswith("xray:") for a in actions(statement)), statement
    for role in (default_stack.stack.functions.splitter_role,
                 default_stack.stack.functions.writer_role):
        props = default_stack.json["Resources"][default_stack.logical_id(role)]["Properties"]
        assert "ManagedPolicyArns" not in props


# ---------------------------------------------------------------------- observability

def test_alarms_watch_the_dlq_backlog_errors_and_throttling(default_stack: Synth) -> None:
    stack = default_stack.stack
    alarm_topic = {"Ref": default_stack.logical_id(stack.observability.alarm_topic)}
    alarms = default_stack.resources("AWS::CloudWatch::Alarm").values()
    by_metric = {(a["Properties"]["Namespace"], a["Properties"]["MetricName"]): a["Properties"]
                 for a in alarms}
    depth_alarms = {a["Properties"]["Dimensions"][0]["Value"]["Fn::GetAtt"][0]: a["Properties"]
                    for a in alarms
                    if a["Properties"]["MetricName"] == "ApproximateNumberOfMessagesVisible"}
    for queue in (stack.messaging.dlq, stack.messaging.splitter_failures):
        depth = depth_alarms[default_stack.logical_id(queue)]
        assert depth["Threshold"] == 0 and depth["ComparisonOperator"] == "GreaterThanThreshold"
    age = by_metric[("AWS/SQS", "ApproximateAgeOfOldestMessage")]
    assert age["Dimensions"][0]["Value"] == {
        "Fn::GetAtt": [default_stack.logical_id(stack.messaging.rows_queue), "QueueName"]}
    assert ("AWS/Lambda", "Errors") in by_metric
    # A batch whose every message failed is no Lambda error: its own metric has an alarm.
    whole = by_metric[("fanout", "BatchesFailedWhole")]
    assert whole["Dimensions"] == [{"Name": "service", "Value": "writer"}]
    assert (whole["Threshold"], whole["Statistic"], whole["Period"]) == (0, "Sum", 60)
    assert ("AWS/DynamoDB", "WriteThrottleEvents") in by_metric
    throttled = by_metric[("AWS/DynamoDB", "ThrottledRequests")]
    assert {"Name": "Operation", "Value": "BatchWriteItem"} in throttled["Dimensions"]
    for alarm in alarms:
        assert alarm["Properties"]["AlarmActions"] == [alarm_topic]
    lambda_errors = [a for a in alarms if a["Properties"]["MetricName"] == "Errors"]
    assert {a["Properties"]["Dimensions"][0]["Value"]["Ref"] for a in lambda_errors} == {
        default_stack.logical_id(stack.functions.writer),
        default_stack.logical_id(stack.functions.splitter)}


def test_a_stalled_job_raises_an_alarm_that_says_what_to_do(default_stack: Synth) -> None:
    stack = default_stack.stack
    stalled = [a["Properties"] for a in default_stack.resources("AWS::CloudWatch::Alarm").values()
               if a["Properties"]["MetricName"] == "JobsStalled"]
    (alarm,) = stalled
    # The writer's Powertools metric (namespace fanout, service writer), any stall at all
    assert (alarm["Namespace"], alarm["Dimensions"]) == (
        "fanout", [{"Name": "service", "Value": "writer"}])
    assert (alarm["Statistic"], alarm["Period"], alarm["Threshold"], alarm["ComparisonOperator"]) == (
        "Sum", 60, 0, "GreaterThanThreshold")
    assert alarm["AlarmActions"] == [{"Ref": default_stack.logical_id(stack.observability.alarm_topic)}]
    for needle in ("fanout status JOB", "dlq-replayer redrive", str(DEFAULT_CONFIG.stall_after_s)):
        assert needle in alarm["AlarmDescription"], needle


def test_dashboard_shows_rows_per_minute_queue_depth_and_concurrency(default_stack: Synth) -> None:
    _, dashboard = default_stack.one("AWS::CloudWatch::Dashboard")
    body = json.dumps(default_stack.stack.resolve(dashboard["Properties"]["DashboardBody"]))
    for needle in ('\\"fanout\\",\\"RowsWritten\\",\\"service\\",\\"writer\\"',
                   '\\"fanout\\",\\"RowsRejected\\",\\"service\\",\\"writer\\"',
                   '\\"fanout\\",\\"RowsRead\\",\\"service\\",\\"splitter\\"',
                   "ApproximateNumberOfMessagesVisible", "ConcurrentExecutions"):
        assert needle in body, needle


def test_outputs_name_what_the_cli_and_the_replayer_read(default_stack: Synth) -> None:
    outputs = default_stack.json["Outputs"]
    for name in ("BucketName", "UploadPrefix", "TableName", "LedgerTableName", "RowsQueueUrl",
                 "DlqUrl", "TopicArn", "SplitterFunctionName", "WriterFunctionName"):
        assert name in outputs, name
    assert outputs["UploadPrefix"]["Value"] == DEFAULT_CONFIG.upload_prefix
    assert outputs["DlqUrl"]["Value"] == {
        "Ref": default_stack.logical_id(default_stack.stack.messaging.dlq)}
