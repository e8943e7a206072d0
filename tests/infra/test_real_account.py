"""What a real account needs that an emulator does not check: the alarm topic lets
CloudWatch publish, the splitter may continue itself past Lambda's loop detection, the
DLQ outlives its source, customer-managed keys are granted exactly, and the options that
protect data. Template assertions: MiniStack cannot show alarm delivery or loop detection
from a CloudFormation deploy, so these stand in for it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from app import build_app

from tests.infra.conftest import Synth, synth

KEY_A = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
KEY_B = "arn:aws:kms:eu-west-1:123456789012:key/mrk-0123456789abcdef0123456789abcdef"


def props(s: Synth, construct: Any) -> dict[str, Any]:
    return s.json["Resources"][s.logical_id(construct)]["Properties"]  # type: ignore[no-any-return]


def role_statements(s: Synth, role: Any) -> list[dict[str, Any]]:
    return [st for p in s.resources("AWS::IAM::Policy").values()
            if p["Properties"]["Roles"] == [{"Ref": s.logical_id(role)}]
            for st in p["Properties"]["PolicyDocument"]["Statement"]]


def kms_statements(s: Synth) -> list[dict[str, Any]]:
    return [st for p in s.resources("AWS::IAM::Policy").values()
            for st in p["Properties"]["PolicyDocument"]["Statement"]
            if any(str(a).startswith("kms:") for a in
                   (st["Action"] if isinstance(st["Action"], list) else [st["Action"]]))]


@pytest.fixture(scope="module")
def keys_stack(synth_root: Path) -> Synth:
    return synth(synth_root, kms_key_arns=f"{KEY_A}, {KEY_B}", source_buckets="lake",
                 stack_name="fanout-keys")


@pytest.fixture(scope="module")
def protected_stack(synth_root: Path) -> Synth:
    return synth(synth_root, deletion_protection="true", versioned="true",
                 splitter_concurrency="10", stack_name="fanout-protected")


# ----------------------------------------------------------------------- alarms reach SNS

def test_the_alarm_topic_lets_cloudwatch_of_this_account_publish(default_stack: Synth) -> None:
    topic = default_stack.stack.observability.alarm_topic
    topic_id = default_stack.logical_id(topic)
    (policy,) = [p["Properties"] for p in default_stack.resources("AWS::SNS::TopicPolicy").values()
                 if p["Properties"]["Topics"] == [{"Ref": topic_id}]]
    allows = [s for s in policy["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]
    assert allows == [{
        "Sid": "CloudWatchAlarmsOfThisAccount",
        "Effect": "Allow",
        "Principal": {"Service": "cloudwatch.amazonaws.com"},
        "Action": "sns:Publish",
        "Resource": {"Ref": topic_id},
        "Condition": {
            "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
            "ArnLike": {"aws:SourceArn": {"Fn::Join": ["", [
                "arn:", {"Ref": "AWS::Partition"}, ":cloudwatch:", {"Ref": "AWS::Region"}, ":",
                {"Ref": "AWS::AccountId"}, ":alarm:*"]]}},
        },
    }]
    # The TLS-only Deny stays.
    assert any(s["Effect"] == "Deny" for s in policy["PolicyDocument"]["Statement"])
    # ...and every alarm notifies that topic.
    alarms = default_stack.resources("AWS::CloudWatch::Alarm")
    assert len(alarms) == 9
    for alarm in alarms.values():
        assert alarm["Properties"]["AlarmActions"] == [{"Ref": topic_id}]


def test_the_completion_topic_grants_nothing_to_cloudwatch(default_stack: Synth) -> None:
    topic_id = default_stack.logical_id(default_stack.stack.messaging.topic)
    for policy in default_stack.resources("AWS::SNS::TopicPolicy").values():
        if policy["Properties"]["Topics"] == [{"Ref": topic_id}]:
            assert all(s["Effect"] == "Deny"
                       for s in policy["Properties"]["PolicyDocument"]["Statement"])


# ---------------------------------------------------------------- the splitter's own loop

def test_the_splitter_may_continue_itself_past_loop_detection_the_writer_may_not(
        default_stack: Synth) -> None:
    functions = default_stack.stack.functions
    assert props(default_stack, functions.splitter)["RecursiveLoop"] == "Allow"
    assert props(default_stack, functions.writer).get("RecursiveLoop", "Terminate") == "Terminate"
    # No reserved concurrency unless asked for (a new account may have too little to spare).
    assert "ReservedConcurrentExecutions" not in props(default_stack, functions.splitter)


def test_splitter_concurrency_reserves_that_many(protected_stack: Synth) -> None:
    splitter = props(protected_stack, protected_stack.stack.functions.splitter)
    assert splitter["ReservedConcurrentExecutions"] == 10


@pytest.mark.parametrize("value", ["0", "-3"])
def test_splitter_concurrency_below_one_is_refused_at_synth(value: str) -> None:
    with pytest.raises(ValueError, match=rf"splitter_concurrency \({value}\) must be at least 1"):
        build_app({"splitter_concurrency": value}, nag=False)


# -------------------------------------------------------------------------- the DLQ

def test_the_dlq_keeps_messages_longer_than_the_rows_queue_and_takes_only_its(
        default_stack: Synth) -> None:
    messaging = default_stack.stack.messaging
    rows, dlq = props(default_stack, messaging.rows_queue), props(default_stack, messaging.dlq)
    assert dlq["MessageRetentionPeriod"] > rows["MessageRetentionPeriod"]
    assert dlq["MessageRetentionPeriod"] == 14 * 86400  # SQS's maximum
    policy = dlq["RedriveAllowPolicy"]
    assert policy["redrivePermission"] == "byQueue"
    (source,) = policy["sourceQueueArns"]
    assert source["Fn::Join"][1][-1] == ":" + rows["QueueName"]


def test_a_stack_name_too_long_for_the_rows_queues_name_is_refused() -> None:
    with pytest.raises(ValueError, match="SQS allows 80 characters; use at most 75"):
        build_app({"stack_name": "f" * 76}, nag=False)


# -------------------------------------------------------------- customer-managed keys

def test_no_kms_grant_without_keys(default_stack: Synth, existing_table_stack: Synth) -> None:
    assert kms_statements(default_stack) == []
    assert kms_statements(existing_table_stack) == []


def test_kms_key_arns_grant_decrypt_and_generate_data_key_on_exactly_those_keys(
        keys_stack: Synth) -> None:
    functions = keys_stack.stack.functions
    for role in (functions.splitter_role, functions.writer_role):
        grants = [s for s in role_statements(keys_stack, role) if s.get("Sid") == "UseCustomerKeys"]
        assert grants == [{"Sid": "UseCustomerKeys", "Effect": "Allow",
                           "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                           "Resource": sorted([KEY_A, KEY_B])}]
    assert len(kms_statements(keys_stack)) == 2  # nothing else names KMS


@pytest.mark.parametrize("value", [
    "alias/my-key",
    "arn:aws:kms:us-east-1:123456789012:alias/my-key",
    "1234abcd-12ab-34cd-56ef-1234567890ab",
])
def test_a_kms_alias_or_bare_key_id_is_refused_with_what_to_pass(value: str) -> None:
    with pytest.raises(ValueError, match=r"is not a KMS key ARN \(expected arn:aws:kms:REGION"):
        build_app({"kms_key_arns": value}, nag=False)


# ------------------------------------------------------------------ data outlives the stack

def test_deletion_protection_on_the_items_table_only_when_asked(
        default_stack: Synth, protected_stack: Synth) -> None:
    storage = default_stack.stack.storage
    assert "DeletionProtectionEnabled" not in props(default_stack, storage.items_table)
    protected = protected_stack.stack.storage
    assert props(protected_stack, protected.items_table)["DeletionProtectionEnabled"] is True
    # The ledger is operational state, deleted with the stack.
    assert "DeletionProtectionEnabled" not in props(protected_stack, protected.ledger_table)


def test_deletion_protection_with_an_existing_table_is_refused() -> None:
    with pytest.raises(ValueError, match="existing table 'legacy' is its owner's to protect"):
        build_app({"existing_table": "legacy", "deletion_protection": "true"}, nag=False)


def test_a_versioned_bucket_expires_noncurrent_versions_and_lone_delete_markers(
        default_stack: Synth, protected_stack: Synth) -> None:
    def rules(s: Synth) -> dict[str, dict[str, Any]]:
        bucket = props(s, s.stack.storage.bucket)
        return {r["Id"]: r for r in bucket["LifecycleConfiguration"]["Rules"]}

    assert "expire-noncurrent-versions" not in rules(default_stack)
    rule = rules(protected_stack)["expire-noncurrent-versions"]
    assert rule["NoncurrentVersionExpiration"] == {"NoncurrentDays": 30}
    assert rule["ExpiredObjectDeleteMarker"] is True
    assert rule["Status"] == "Enabled" and "Prefix" not in rule  # the whole bucket


# ------------------------------------------------------------------------- the dashboard

def test_the_dashboard_is_named_after_the_stack_and_output(
        default_stack: Synth, keys_stack: Synth) -> None:
    for s, name in ((default_stack, "fanout"), (keys_stack, "fanout-keys")):
        (dashboard,) = s.resources("AWS::CloudWatch::Dashboard").values()
        assert dashboard["Properties"]["DashboardName"] == name
        assert s.json["Outputs"]["DashboardName"]["Value"] == name


def test_the_ledger_table_expires_items_by_expires_at_the_items_table_never(
        default_stack: Synth) -> None:
    from fanout import ledger

    storage = default_stack.stack.storage
    assert props(default_stack, storage.ledger_table)["TimeToLiveSpecification"] == {
        "AttributeName": ledger.EXPIRES_AT, "Enabled": True}
    assert "TimeToLiveSpecification" not in props(default_stack, storage.items_table)


# -------------------------------------------------------------------------- feature flags

def test_cdk_json_sets_every_recommended_flag_of_the_pinned_aws_cdk_lib() -> None:
    """An upgrade of aws-cdk-lib that recommends a new flag fails here, so its template
    change is reviewed (and the flag set) instead of arriving silently."""
    import json
    import tarfile
    from importlib.metadata import version

    import aws_cdk
    from app import FEATURE_FLAGS, INFRA_DIR

    tarball = (Path(aws_cdk.__file__).parent / "_jsii"
               / f"aws-cdk-lib@{version('aws-cdk-lib')}.jsii.tgz")
    with tarfile.open(tarball) as archive:
        member = archive.extractfile("package/recommended-feature-flags.json")
        assert member is not None
        recommended = json.load(member)
    assert len(recommended) > 80
    assert json.loads((INFRA_DIR / "cdk.json").read_text())["context"] == recommended
    assert recommended == FEATURE_FLAGS  # what the app (and so every test) builds with
