"""Where data lives: the upload bucket (and its access-log bucket), the items table
(created from the mapping spec, or imported by name) and the jobs ledger table."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_s3 as s3
from constructs import Construct

from fanout import ledger
from fanout_stack.config import StackConfig

# The bucket holds uploads and error reports; keep noncurrent versions (when versioning
# is on) and the pipeline's own outputs only as long as someone may look at them.
OUTPUT_EXPIRY_DAYS = 30
ACCESS_LOG_EXPIRY_DAYS = 90
# With versioning on, an overwritten or deleted upload keeps its old version this long
# (for a look at what was loaded before), then S3 deletes it; a delete marker left with
# no version behind it is removed too.
NONCURRENT_VERSION_EXPIRY_DAYS = 30


def attribute(name: str, type_: str) -> dynamodb.Attribute:
    return dynamodb.Attribute(name=name, type=dynamodb.AttributeType(
        {"S": "STRING", "N": "NUMBER", "B": "BINARY"}[type_]))


class Storage(Construct):
    """Bucket, items table and ledger table."""

    def __init__(self, scope: Construct, construct_id: str, *, config: StackConfig) -> None:
        super().__init__(scope, construct_id)
        pipeline = config.pipeline

        # S3 server access logs go to their own bucket (AwsSolutions-S1): who uploaded
        # what is the audit trail for a loader that writes into a business table.
        self.access_logs = s3.Bucket(
            self, "AccessLogs",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[s3.LifecycleRule(id="expire-access-logs",
                                              expiration=Duration.days(ACCESS_LOG_EXPIRY_DAYS))],
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.bucket = s3.Bucket(
            self, "Uploads",
            bucket_name=config.bucket_name,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            versioned=config.versioned,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="uploads-bucket/",
            lifecycle_rules=[
                *([s3.LifecycleRule(
                    id="expire-noncurrent-versions",
                    noncurrent_version_expiration=Duration.days(NONCURRENT_VERSION_EXPIRY_DAYS),
                    expired_object_delete_marker=True)] if config.versioned else []),
                s3.LifecycleRule(id="expire-error-reports", prefix=pipeline.errors_prefix,
                                 expiration=Duration.days(OUTPUT_EXPIRY_DAYS)),
                s3.LifecycleRule(id="expire-json-copies", prefix=pipeline.json_copy_prefix,
                                 expiration=Duration.days(OUTPUT_EXPIRY_DAYS)),
                s3.LifecycleRule(id="abort-incomplete-uploads",
                                 abort_incomplete_multipart_upload_after=Duration.days(7)),
            ],
            # Uploads and error reports outlive the stack; `cdk destroy` leaves the bucket.
            removal_policy=RemovalPolicy.RETAIN,
        )

        if config.existing_table:
            # Load into a table someone else owns: import it by name; the stack grants the
            # writer only the item writes its modes use (functions.py `_grant_writer`) and
            # never changes or deletes the table.
            self.items_table: dynamodb.ITable = dynamodb.Table.from_table_name(
                self, "Items", config.existing_table)
            self.items_table_created = False
        else:
            keys = config.spec.key_schema()
            self.items_table = dynamodb.Table(
                self, "Items",
                table_name=config.items_table_name,
                partition_key=attribute(*keys[0]),
                sort_key=attribute(*keys[1]) if len(keys) > 1 else None,
                billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
                point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                    point_in_time_recovery_enabled=True),
                encryption=dynamodb.TableEncryption.AWS_MANAGED,
                # -c deletion_protection=true: DeleteTable fails until someone turns it off.
                deletion_protection=config.deletion_protection or None,
                # The loaded data is the point of the stack: `cdk destroy` keeps it.
                removal_policy=RemovalPolicy.RETAIN,
            )
            self.items_table_created = True

        # The jobs ledger: the key schema fanout.ledger owns (the local runtime uses it too).
        self.ledger_table = dynamodb.Table(
            self, "Ledger",
            table_name=config.ledger_table_name,
            partition_key=attribute(ledger.PARTITION_KEY, "S"),
            sort_key=attribute(ledger.SORT_KEY, "S"),
            # DynamoDB deletes a log record 30 days after it was written (ledger.LOG_EXPIRY_S),
            # long after the fold read it; job items, counts and shards never expire.
            time_to_live_attribute=ledger.EXPIRES_AT,
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True),
            # Job history is operational state, rebuilt by the next upload: destroyed
            # with the stack.
            removal_policy=RemovalPolicy.DESTROY,
        )
