"""cdk-nag (AwsSolutions) suppressions: each one names exactly what it covers and why.

Suppressions are granular (`applies_to` the specific finding) wherever cdk-nag allows,
so a new wildcard added later still fails the check.
"""

from __future__ import annotations

from aws_cdk import CfnResource, Stack, Token
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import IConstruct

XRAY_REASON = (
    "xray:PutTraceSegments and xray:PutTelemetryRecords (added by Tracing.ACTIVE) do not "
    "support resource-level permissions; AWS documents Resource '*' for them."
)
LOG_STREAM_REASON = (
    "Log streams inside the function's own log group: Lambda names each stream per "
    "execution environment, so the ':*' suffix on this one log group's ARN is the "
    "narrowest grant possible."
)
RUNTIME_REASON = (
    "python3.13 is pinned on purpose: the public Powertools v3 layer is published per "
    "Python version (AWSLambdaPowertoolsPythonV3-python313-arm64), and the runtime, the "
    "layer and the tested code move together in one change, not when a new runtime ships."
)
NOTIFICATIONS_HANDLER_REASON = (
    "BucketNotificationsHandler is aws-cdk-lib's singleton custom resource that writes the "
    "bucket's notification configuration at deploy time; its role is created by the "
    "library (not configurable) and uses AWSLambdaBasicExecutionRole only to write its own "
    "logs. It holds s3:PutBucketNotification on the uploads bucket alone."
)


def _logical_id(stack: Stack, construct: IConstruct) -> str:
    child = construct.node.default_child
    assert isinstance(child, CfnResource)
    return str(stack.resolve(stack.get_logical_id(child)))


def _for(construct: IConstruct, reason: str) -> str:
    """The reason, naming what it covers: the construct's path in the stack (a reviewer
    finds it in `cdk synth` output as the resources' aws:cdk:path)."""
    path = construct.node.path.split("/", 1)[1]
    return f"{path}: {reason}"


def suppress_findings(stack: Stack) -> None:
    """Attach the reviewed suppressions to the stack's constructs."""
    # Imported lazily: these modules import nothing from here, and the stack passes itself.
    from fanout_stack.stack import FanoutStack

    assert isinstance(stack, FanoutStack)
    config, storage, functions = stack.config, stack.storage, stack.functions
    bucket_id = _logical_id(stack, storage.bucket)
    pipeline = config.pipeline

    def object_prefix(prefix: str) -> str:
        return f"Resource::<{bucket_id}.Arn>/{prefix}*"

    def log_streams(log_group: IConstruct) -> str:
        return f"Resource::<{_logical_id(stack, log_group)}.Arn>:*"

    prefix_reason = (
        "Objects under one key prefix of the pipeline's own bucket: object keys are "
        "chosen by uploaders (uploads/) or derived from job ids (errors/, json-copy/), so "
        "a prefix wildcard is the narrowest grant that works."
    )
    role = functions.splitter_role
    NagSuppressions.add_resource_suppressions(role, [
        NagPackSuppression(id="AwsSolutions-IAM5", reason=_for(role, XRAY_REASON),
                           applies_to=["Resource::*"]),
        NagPackSuppression(id="AwsSolutions-IAM5", reason=_for(role, LOG_STREAM_REASON),
                           applies_to=[log_streams(functions.splitter_logs)]),
        NagPackSuppression(id="AwsSolutions-IAM5", reason=_for(role, prefix_reason),
                           applies_to=[object_prefix(pipeline.upload_prefix)]),
    ], apply_to_children=True)
    if config.source_buckets:
        # As the grant spells it: a token without a region, "aws" once the cdk CLI knows
        # the account and region (the enablePartitionLiterals feature flag).
        partition = ("<AWS::Partition>" if Token.is_unresolved(stack.partition)
                     else stack.partition)
        NagSuppressions.add_resource_suppressions(role, [
            NagPackSuppression(
                id="AwsSolutions-IAM5",
                reason=_for(role, "-c source_buckets: objects of buckets the deployer named "
                            "for `fanout ingest s3://BUCKET/PREFIX`, whose keys are theirs, so "
                            "every object of each named bucket is the narrowest grant that "
                            "works."),
                applies_to=[f"Resource::arn:{partition}:s3:::{name}/*"
                            for name in config.source_buckets]),
        ], apply_to_children=True)
    role = functions.writer_role
    NagSuppressions.add_resource_suppressions(role, [
        NagPackSuppression(id="AwsSolutions-IAM5", reason=_for(role, XRAY_REASON),
                           applies_to=["Resource::*"]),
        NagPackSuppression(id="AwsSolutions-IAM5", reason=_for(role, LOG_STREAM_REASON),
                           applies_to=[log_streams(functions.writer_logs)]),
        NagPackSuppression(id="AwsSolutions-IAM5", reason=_for(role, prefix_reason),
                           applies_to=[object_prefix(pipeline.errors_prefix),
                                       object_prefix(pipeline.json_copy_prefix)]),
    ], apply_to_children=True)
    failures = stack.messaging.splitter_failures
    NagSuppressions.add_resource_suppressions(failures, [
        NagPackSuppression(
            id="AwsSolutions-SQS3",
            reason=_for(failures, "This queue is itself a dead-letter destination: the splitter's on-failure "
                   "destination for S3 events that failed all of Lambda's async retries.")),
    ])
    for function in (functions.splitter, functions.writer):
        NagSuppressions.add_resource_suppressions(function, [
            NagPackSuppression(id="AwsSolutions-L1", reason=_for(function, RUNTIME_REASON)),
        ])
    # The handler's path is fixed by aws-cdk-lib (one per stack, hashed id).
    for child in stack.node.children:
        if child.node.id.startswith("BucketNotificationsHandler"):
            NagSuppressions.add_resource_suppressions(child, [
                NagPackSuppression(
                    id="AwsSolutions-IAM4", reason=_for(child, NOTIFICATIONS_HANDLER_REASON),
                    applies_to=["Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                                "AWSLambdaBasicExecutionRole"]),
            ], apply_to_children=True)
