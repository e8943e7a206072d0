"""The splitter and writer Lambdas: code asset, Powertools layer, least-privilege roles,
the S3 trigger and the SQS event source mapping."""

from __future__ import annotations

import hashlib

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack, Token
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_s3_notifications as s3n
from constructs import Construct

from fanout.settings import Settings
from fanout_stack.code import BUILD_ROOT, build_code_dir
from fanout_stack.config import DEFAULT_WRITER_MEMORY_MB, POWERTOOLS_ACCOUNT, StackConfig
from fanout_stack.layer import POWERTOOLS, build_layer_dir, powertools_version
from fanout_stack.queues import Messaging
from fanout_stack.storage import Storage

# Each Lambda's code asset is the core plus its own package (code.py); boto3 is in the
# runtime and Powertools comes from a layer built from the installed package (layer.py),
# so no bundling (and no Docker) is needed.
# Memory: the splitter holds one range read (8 MiB by default) plus the csv parser and
# a send buffer of 10 messages; 512 MB also buys proportionally more CPU for parsing,
# which is its bottleneck. The writer's is the model's (config.py).
SPLITTER_MEMORY_MB = 512
WRITER_MEMORY_MB = DEFAULT_WRITER_MEMORY_MB
LOG_RETENTION = logs.RetentionDays.ONE_MONTH
# Lambda allows 4 KB for all of a function's environment variables, names and values.
LAMBDA_ENVIRONMENT_LIMIT_BYTES = 4 * 1024
# A name, URL or ARN CloudFormation fills in at deploy is a short token at synth: count it
# as the longest it can reasonably be (an SQS URL with a generated 80-character name).
RESOLVED_TOKEN_BYTES = 160


class EnvironmentTooLarge(ValueError):
    """The functions' environment cannot fit Lambda's limit (raised at synth)."""


def check_environment_size(environment: dict[str, str], spec_source: str) -> None:
    """Fail at synth, with the size and what to do, rather than at deploy."""
    size = sum(len(name) + (RESOLVED_TOKEN_BYTES if Token.is_unresolved(value)
                            else len(value.encode())) for name, value in environment.items())
    if size <= LAMBDA_ENVIRONMENT_LIMIT_BYTES:
        return
    spec = len(environment["FANOUT_SPEC_JSON"].encode())
    raise EnvironmentTooLarge(
        f"the Lambda environment would be about {size:,} bytes, over Lambda's limit of "
        f"{LAMBDA_ENVIRONMENT_LIMIT_BYTES:,} (4 KB); the mapping spec ({spec_source}) is "
        f"{spec:,} of them. Make the spec smaller: columns.default_type = \"infer\" types "
        "numbers and booleans from their values, so only the columns that need another type "
        "(N for ids, JSON, SS, B) must be listed in columns.types. Or deploy with "
        "-c spec_in_s3=true: the stack then ships the spec as an S3 asset that each Lambda "
        "reads once, at cold start.")


def spec_asset(scope: Construct, spec_json: str) -> s3_assets.Asset:
    """The spec as a file asset (content-addressed, so it changes only with the spec)."""
    BUILD_ROOT.mkdir(parents=True, exist_ok=True)
    path = BUILD_ROOT / f"spec-{hashlib.sha256(spec_json.encode()).hexdigest()[:16]}.json"
    if not path.exists():
        path.write_text(spec_json, encoding="utf-8")
    return s3_assets.Asset(scope, "SpecAsset", path=str(path))


def powertools_layer(scope: Construct, version: int) -> lambda_.ILayerVersion:
    """The public Powertools v3 layer for arm64/python3.13 in the stack's region.

    Chosen over vendoring Powertools into the asset because it needs no bundling step
    (no Docker here), keeps the asset to our own code, and is published and patched by
    AWS in every commercial region. Region and partition are tokens, so one template
    deploys anywhere.
    """
    stack = Stack.of(scope)
    return lambda_.LayerVersion.from_layer_version_arn(
        scope, "PowertoolsLayer",
        f"arn:{stack.partition}:lambda:{stack.region}:{POWERTOOLS_ACCOUNT}:layer:"
        f"AWSLambdaPowertoolsPythonV3-python313-arm64:{version}",
    )


def function_role(scope: Construct, construct_id: str, *, role_name: str | None,
                  log_group: logs.ILogGroup, description: str) -> iam.Role:
    """A role that may only write to its own log group (instead of the managed
    AWSLambdaBasicExecutionRole, whose logs:* actions apply to every log group)."""
    role = iam.Role(
        scope, construct_id,
        role_name=role_name,
        description=description,
        assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
    )
    role.add_to_policy(iam.PolicyStatement(
        sid="OwnLogGroupOnly",
        actions=["logs:CreateLogStream", "logs:PutLogEvents"],
        resources=[log_group.log_group_arn, f"{log_group.log_group_arn}:*"],
    ))
    return role


def ledger_statement(storage: Storage) -> iam.PolicyStatement:
    """fanout.ledger: put_item, update_item, get_item, batch_get_item (the job's count
    shards), a transaction's condition check, a query on the job's items (and on the
    active index), and delete_item of a job's entry in the active index (alone, or in
    the transaction that announces the job's end)."""
    return iam.PolicyStatement(
        sid="JobsLedger",
        actions=["dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem",
                 "dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:ConditionCheckItem",
                 "dynamodb:Query"],
        resources=[storage.ledger_table.table_arn],
    )


class Functions(Construct):
    """The splitter (S3-triggered) and the writer (SQS event source mapping)."""

    def __init__(self, scope: Construct, construct_id: str, *, config: StackConfig,
                 storage: Storage, messaging: Messaging) -> None:
        super().__init__(scope, construct_id)
        pipeline = config.pipeline
        spec = config.spec
        settings = Settings.for_pipeline(
            pipeline, spec,
            table_name=storage.items_table.table_name,
            ledger_table_name=storage.ledger_table.table_name,
            rows_queue_url=messaging.rows_queue.queue_url,
            dlq_url=messaging.dlq.queue_url,
            bucket=storage.bucket.bucket_name,
            topic_arn=messaging.topic.topic_arn,
        )
        # The mapping spec travels inline, or (-c spec_in_s3=true) as an S3 asset.
        self.spec_asset = spec_asset(self, config.spec_json) if config.spec_in_s3 else None
        common_env = {
            **settings.to_env(),
            **({"FANOUT_SPEC_S3": self.spec_asset.s3_object_url} if self.spec_asset
               else {"FANOUT_SPEC_JSON": config.spec_json}),
            "POWERTOOLS_METRICS_NAMESPACE": "fanout",
            "POWERTOOLS_LOG_LEVEL": "INFO",
        }
        check_environment_size({**common_env, "POWERTOOLS_SERVICE_NAME": "fanout-splitter"},
                               config.spec_source)
        layer = self._powertools_layer(config)

        # A fixed name, so the splitter's role can allow invoking exactly this function
        # (the continuation) without a reference cycle between the role and the function.
        stack_name = Stack.of(self).stack_name
        self.splitter_name = config.splitter_function_name or f"{stack_name}-splitter"
        # Named log groups, so `aws logs tail /aws/fanout/<stack>/splitter` works without
        # looking up a generated name (the names are also stack outputs).
        self.splitter_logs = logs.LogGroup(self, "SplitterLogs", retention=LOG_RETENTION,
                                           log_group_name=f"/aws/fanout/{stack_name}/splitter",
                                           removal_policy=RemovalPolicy.DESTROY)
        self.writer_logs = logs.LogGroup(self, "WriterLogs", retention=LOG_RETENTION,
                                         log_group_name=f"/aws/fanout/{stack_name}/writer",
                                         removal_policy=RemovalPolicy.DESTROY)
        self.splitter_role = function_role(
            self, "SplitterRole", role_name=config.splitter_role_name,
            log_group=self.splitter_logs, description="fanout splitter: S3 -> rows queue")
        self.writer_role = function_role(
            self, "WriterRole", role_name=config.writer_role_name,
            log_group=self.writer_logs, description="fanout writer: rows queue -> DynamoDB")

        self.splitter = lambda_.Function(
            self, "Splitter",
            function_name=self.splitter_name,
            description="fanout: range-reads an uploaded CSV into 25-row SQS messages",
            runtime=lambda_.Runtime.PYTHON_3_13,
            architecture=lambda_.Architecture.ARM_64,
            handler="splitter.handler.lambda_handler",
            code=lambda_.Code.from_asset(str(build_code_dir("splitter"))),
            layers=[layer],
            role=self.splitter_role,
            log_group=self.splitter_logs,
            memory_size=SPLITTER_MEMORY_MB,
            timeout=Duration.seconds(pipeline.splitter_timeout_s),
            tracing=lambda_.Tracing.ACTIVE,
            environment={**common_env, "POWERTOOLS_SERVICE_NAME": "fanout-splitter"},
            # The splitter continues a long split by invoking itself; Lambda's recursive
            # loop detection would stop that chain after about 16 hops. The loop is
            # deliberate and bounded by a guard of our own: a split resumed more often than
            # its file can need fails (splitter/split.py, `max_split_resumes`).
            recursive_loop=lambda_.RecursiveLoop.ALLOW,
            # -c splitter_concurrency=N: at most N splitters at once (a parallel split's
            # steps then wait, as throttled asynchronous events Lambda retries).
            reserved_concurrent_executions=config.splitter_concurrency,
        )
        self.writer = lambda_.Function(
            self, "Writer",
            function_name=config.writer_function_name,
            description="fanout: writes 25-row messages to DynamoDB with BatchWriteItem",
            runtime=lambda_.Runtime.PYTHON_3_13,
            architecture=lambda_.Architecture.ARM_64,
            handler="writer.handler.lambda_handler",
            code=lambda_.Code.from_asset(str(build_code_dir("writer"))),
            layers=[layer],
            role=self.writer_role,
            log_group=self.writer_logs,
            memory_size=WRITER_MEMORY_MB,
            timeout=Duration.seconds(pipeline.writer_timeout_s),
            tracing=lambda_.Tracing.ACTIVE,
            environment={**common_env, "POWERTOOLS_SERVICE_NAME": "fanout-writer"},
        )

        self.splitter.configure_async_invoke(
            on_failure=destinations.SqsDestination(messaging.splitter_failures),
            retry_attempts=2,
        )
        self._grant_splitter(config, storage, messaging)
        self._grant_writer(config, storage, messaging)
        if self.spec_asset:
            # The one spec object, not the assets bucket (which holds every CDK asset of the
            # account and region). Its key is the content hash, known at synth.
            for role in (self.splitter_role, self.writer_role):
                role.add_to_policy(iam.PolicyStatement(
                    sid="ReadSpec", actions=["s3:GetObject"],
                    resources=[self.spec_asset.bucket.arn_for_objects(
                        self.spec_asset.s3_object_key)]))
        if config.kms_key_arns:
            # -c kms_key_arns: source buckets or an existing table encrypted with customer
            # managed keys. Reading an SSE-KMS object needs kms:Decrypt; writing to a table
            # (or an object) under such a key needs kms:GenerateDataKey as well.
            for role in (self.splitter_role, self.writer_role):
                role.add_to_policy(iam.PolicyStatement(
                    sid="UseCustomerKeys", actions=["kms:Decrypt", "kms:GenerateDataKey"],
                    resources=list(config.kms_key_arns)))
        self._trigger_splitter(config, storage.bucket)
        self.writer_source = sources.SqsEventSource(
            messaging.rows_queue,
            batch_size=pipeline.batch_size,
            max_batching_window=Duration.seconds(pipeline.max_batching_window_s),
            report_batch_item_failures=True,
            # ceil(write_budget / rows_per_writer_s), clamped 2..1000: see config.py.
            max_concurrency=config.writer_max_concurrency,
        )
        # Grants the writer ReceiveMessage/DeleteMessage/ChangeMessageVisibility/
        # GetQueueAttributes/GetQueueUrl on the rows queue only.
        self.writer.add_event_source(self.writer_source)

    def _powertools_layer(self, config: StackConfig) -> lambda_.ILayerVersion:
        """The layer built from the installed pinned Powertools (layer.py), unless context
        names another: a layer ARN, or a version of the public layer."""
        if config.powertools_layer_arn:
            return lambda_.LayerVersion.from_layer_version_arn(self, "PowertoolsLayer",
                                                               config.powertools_layer_arn)
        if config.powertools_layer_version is not None:
            return powertools_layer(self, config.powertools_layer_version)
        return lambda_.LayerVersion(
            self, "PowertoolsLayer",
            code=lambda_.Code.from_asset(str(build_layer_dir())),
            compatible_runtimes=[lambda_.Runtime.PYTHON_3_13],
            compatible_architectures=[lambda_.Architecture.ARM_64],
            description=f"{POWERTOOLS}[tracer]=={powertools_version()} (the pinned package)",
            removal_policy=RemovalPolicy.DESTROY,
        )

    def _grant_splitter(self, config: StackConfig, storage: Storage, messaging: Messaging) -> None:
        pipeline = config.pipeline
        # HeadObject is authorised by s3:GetObject. With versioning on, S3 events carry a
        # versionId and the splitter pins its reads to it, which needs GetObjectVersion.
        read_actions = ["s3:GetObject"] + (["s3:GetObjectVersion"] if config.versioned else [])
        for statement in (
            iam.PolicyStatement(
                sid="ReadUploads", actions=read_actions,
                resources=[storage.bucket.arn_for_objects(f"{pipeline.upload_prefix}*")]),
            # SendMessageBatch is authorised by sqs:SendMessage.
            iam.PolicyStatement(
                sid="SendRows", actions=["sqs:SendMessage"],
                resources=[messaging.rows_queue.queue_arn]),
            ledger_statement(storage),
            iam.PolicyStatement(
                sid="PublishSummary", actions=["sns:Publish"],
                resources=[messaging.topic.topic_arn]),
            *self._source_bucket_reads(config),
            # Near its time limit the splitter invokes itself (asynchronously) to continue.
            iam.PolicyStatement(
                sid="ContinueSplit", actions=["lambda:InvokeFunction"],
                resources=[Stack.of(self).format_arn(
                    service="lambda", resource="function", resource_name=self.splitter_name,
                    arn_format=ArnFormat.COLON_RESOURCE_NAME)]),
        ):
            self.splitter_role.add_to_policy(statement)

    def _source_bucket_reads(self, config: StackConfig) -> list[iam.PolicyStatement]:
        """`-c source_buckets=a,b`: the splitter may read every object (any version) of those
        buckets, for `fanout ingest s3://BUCKET/PREFIX`; nothing else of them, and the
        writer nothing at all (reports still go to the stack's own bucket)."""
        if not config.source_buckets:
            return []
        partition = Stack.of(self).partition
        return [iam.PolicyStatement(
            sid="ReadSourceBuckets", actions=["s3:GetObject", "s3:GetObjectVersion"],
            resources=[f"arn:{partition}:s3:::{name}/*" for name in config.source_buckets])]

    def _grant_writer(self, config: StackConfig, storage: Storage, messaging: Messaging) -> None:
        pipeline = config.pipeline
        for statement in (
            # BatchWriteItem puts and deletes; PutItem (insert) and UpdateItem (update)
            # write one row a call. No DeleteItem: deletes go by BatchWriteItem.
            iam.PolicyStatement(
                sid="WriteItems",
                actions=["dynamodb:BatchWriteItem", "dynamodb:PutItem", "dynamodb:UpdateItem"],
                resources=[storage.items_table.table_arn]),
            # The insert and update modes by PartiQL BatchExecuteStatement (its INSERT and
            # UPDATE statements each need their own action), and the consistent read-back
            # of the keys an insert found in the table (writer/statements.py).
            iam.PolicyStatement(
                sid="WriteStatements",
                actions=["dynamodb:PartiQLInsert", "dynamodb:PartiQLUpdate",
                         "dynamodb:BatchGetItem"],
                resources=[storage.items_table.table_arn]),
            ledger_statement(storage),
            # Rejected rows are sent to the DLQ for the replayer.
            iam.PolicyStatement(
                sid="SendRejected", actions=["sqs:SendMessage"],
                resources=[messaging.dlq.queue_arn]),
            iam.PolicyStatement(
                sid="WriteReports", actions=["s3:PutObject"],
                resources=[storage.bucket.arn_for_objects(f"{pipeline.errors_prefix}*"),
                           storage.bucket.arn_for_objects(f"{pipeline.json_copy_prefix}*")]),
            iam.PolicyStatement(
                sid="PublishSummary", actions=["sns:Publish"],
                resources=[messaging.topic.topic_arn]),
        ):
            self.writer_role.add_to_policy(statement)

    def _trigger_splitter(self, config: StackConfig, bucket: s3.Bucket) -> None:
        """ObjectCreated under the upload prefix with a CSV suffix only: the pipeline's
        own outputs (errors/, json-copy/) can never re-trigger the splitter. The suffix
        only chooses which uploads trigger: the splitter tells gzip by the object's first
        bytes, so a gzip file named .csv loads too; `gzip` adds .csv.gz to the names."""
        suffixes = [config.pipeline.upload_suffix] + ([".csv.gz"] if config.gzip else [])
        destination = s3n.LambdaDestination(self.splitter)
        for suffix in suffixes:
            bucket.add_event_notification(
                s3.EventType.OBJECT_CREATED, destination,
                s3.NotificationKeyFilter(prefix=config.pipeline.upload_prefix, suffix=suffix),
            )
