"""What the stack is built from: CDK context (`-c key=value`) on top of the shared settings.

Every default lives in code (not in cdk.json) so `python app.py`, `cdk synth` and the
tests build the same template. Timeouts and queue behaviour come from
`fanout.settings.PipelineConfig`, the object the local runtime uses too.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fanout.mapping import Spec, load_spec
from fanout.settings import DEFAULT_CONFIG, PipelineConfig, timing_error

# The writer's defaults are what bench/model.py `writer_defaults` derives from the
# per-invocation bench (bench/invocation.py: batches of 100 messages, 10 ms per
# BatchWriteItem, 5% of calls half unprocessed, the CPU share of each memory size):
# the memory size with the lowest cost per 1M rows, and the rows/s one invocation
# sustains there, rounded down to 100. With items of at most 1 KB one row is one write
# request unit, so rows/s == WCU/s. tests/unit/test_bench_model.py checks these against
# the model and the recorded run; override with `-c rows_per_writer_s=N`.
DEFAULT_WRITER_MEMORY_MB = 512
DEFAULT_ROWS_PER_WRITER_S = 5_700
# A new on-demand table is pre-warmed to 4,000 writes/s (docs/costs.md).
DEFAULT_WRITE_BUDGET = 4000
# ScalingConfig.MaximumConcurrency must lie in 2..1000.
MIN_CONCURRENCY, MAX_CONCURRENCY = 2, 1000
# Public Powertools for AWS Lambda (Python) v3 layer, published by AWS in account
# 017000801446 in every commercial region. Not the default: its version 27 is Powertools
# 3.23.0 where the project pins 3.37.0, so by default the stack ships a layer built from
# the installed pinned package (fanout_stack/layer.py). `-c powertools_layer_version=N`
# uses public version N instead.
POWERTOOLS_ACCOUNT = "017000801446"
# Pipeline numbers a context option may override (whole numbers): the local stack shortens
# the writer's timeout and the queue's visibility timeout (as far as the ledger's timing
# rule lets it: `timing_error`), the reconciler's stall time, and the deployed tests lower
# the parallel-split threshold so a small file really fans out.
PIPELINE_CONTEXT_KEYS = ("writer_timeout_s", "visibility_timeout_s", "max_receive_count", "range_bytes",
                         "parallel_threshold_bytes", "parallel_range_bytes", "stall_after_s",
                         "reconcile_every_s")
# EventBridge schedules in whole minutes: rate(1 minute) is the shortest.
SCHEDULE_UNIT_S = 60


# S3's rules for a bucket name (general purpose buckets): 3-63 lowercase letters, digits,
# dots and hyphens, starting and ending with a letter or digit.
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def bucket_names(value: Any) -> tuple[str, ...]:
    """`-c source_buckets=a,b` (or a list in cdk.json): the names, each checked."""
    names = value if isinstance(value, list | tuple) else str(value or "").split(",")
    out = tuple(dict.fromkeys(str(n).strip() for n in names if str(n).strip()))
    for name in out:
        if not BUCKET_NAME.fullmatch(name) or ".." in name:
            raise ValueError(f"source_buckets: {name!r} is not an S3 bucket name (a bucket "
                             "name, not an s3:// URI or an ARN; several are comma-separated)")
    return out


# A KMS key ARN (not an alias: an IAM policy on an alias ARN authorises nothing).
KMS_KEY_ARN = re.compile(r"arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/[A-Za-z0-9-]+")


def kms_key_arns(value: Any) -> tuple[str, ...]:
    """`-c kms_key_arns=arn1,arn2` (or a list in cdk.json): the key ARNs, each checked."""
    arns = value if isinstance(value, list | tuple) else str(value or "").split(",")
    out = tuple(dict.fromkeys(str(a).strip() for a in arns if str(a).strip()))
    for arn in out:
        if not KMS_KEY_ARN.fullmatch(arn):
            raise ValueError(f"kms_key_arns: {arn!r} is not a KMS key ARN (expected "
                             "arn:aws:kms:REGION:ACCOUNT:key/KEY-ID; an alias ARN grants "
                             "nothing, and several ARNs are comma-separated)")
    return out


def writer_concurrency(write_budget: float, rows_per_writer_s: float) -> int:
    """MaximumConcurrency for the writer's event source mapping.

    concurrency = ceil(write budget in WCU/s / rows one invocation writes per second),
    clamped to the 2..1000 range the event source mapping accepts. Capping concurrency
    (not the table) keeps a large upload from throttling other users of the table: the
    backlog waits in SQS, which is cheap, instead of retrying throttled writes.
    """
    if write_budget <= 0 or rows_per_writer_s <= 0:
        raise ValueError("write_budget and rows_per_writer_s must be positive")
    wanted = math.ceil(write_budget / rows_per_writer_s)
    return max(MIN_CONCURRENCY, min(MAX_CONCURRENCY, wanted))


@dataclass(frozen=True, kw_only=True)
class StackConfig:
    """Everything that varies between deployments of the stack."""

    stack_name: str = "fanout"
    pipeline: PipelineConfig = DEFAULT_CONFIG
    spec: Spec = field(default_factory=Spec.default)
    spec_source: str = "default"
    write_budget: float = DEFAULT_WRITE_BUDGET
    rows_per_writer_s: float = DEFAULT_ROWS_PER_WRITER_S
    existing_table: str | None = None
    bucket_name: str | None = None
    table_name: str | None = None
    ledger_table_name: str | None = None
    splitter_function_name: str | None = None
    writer_function_name: str | None = None
    splitter_role_name: str | None = None
    writer_role_name: str | None = None
    gzip: bool = False
    versioned: bool = False
    # Other buckets whose objects the splitter may read (`fanout ingest s3://BUCKET/...`).
    source_buckets: tuple[str, ...] = ()
    # Ship the spec as an S3 asset each Lambda reads at cold start, instead of inline in the
    # environment (for a spec too large for Lambda's 4 KB environment).
    spec_in_s3: bool = False
    # None: the layer built from the installed pinned Powertools. Otherwise a version of
    # the public layer, or a layer ARN of your own.
    powertools_layer_version: int | None = None
    powertools_layer_arn: str | None = None
    alarm_email: str | None = None
    # Customer-managed KMS keys of the source buckets and/or the existing table: both roles
    # get kms:Decrypt and kms:GenerateDataKey on exactly these keys.
    kms_key_arns: tuple[str, ...] = ()
    # DeletionProtectionEnabled on the items table the stack creates.
    deletion_protection: bool = False
    # ReservedConcurrentExecutions for the splitter (None: none reserved, the splitter's
    # parallel fan-out is then bounded only by MAX_RANGES; see functions.py).
    splitter_concurrency: int | None = None

    @property
    def writer_max_concurrency(self) -> int:
        return writer_concurrency(self.write_budget, self.rows_per_writer_s)

    @property
    def items_table_name(self) -> str | None:
        """The name to give a new items table: context, then the spec's, else generated."""
        return self.table_name or self.spec.table_name

    @property
    def spec_json(self) -> str:
        """FANOUT_SPEC_JSON for the Lambdas (compact: Lambda env is limited to 4 KB)."""
        return json.dumps(self.spec.to_dict(), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_context(cls, get: Any, base_dir: Path | None = None) -> StackConfig:
        """Build from a context getter (`node.try_get_context`); `spec` paths are relative
        to `base_dir` (the infra/ folder, where cdk runs) when not absolute."""
        def text(key: str) -> str | None:
            value = get(key)
            return None if value is None or str(value).strip() == "" else str(value).strip()

        def flag(key: str) -> bool:
            value = get(key)
            if isinstance(value, bool):
                return value
            return str(value).strip().lower() in ("1", "true", "yes", "on") if value else False

        config = cls()
        pipeline = config.pipeline
        upload_prefix = text("upload_prefix")
        if upload_prefix:
            pipeline = replace(pipeline, upload_prefix=upload_prefix.lstrip("/").rstrip("/") + "/")
            if pipeline.upload_prefix.startswith((pipeline.errors_prefix,
                                                   pipeline.json_copy_prefix)):
                raise ValueError(f"upload_prefix {upload_prefix!r} lies under the pipeline's own "
                                 "outputs; the splitter would trigger itself")
        spec, spec_source = config.spec, "default"
        spec_path = text("spec")
        if spec_path:
            path = Path(spec_path)
            if not path.is_absolute() and base_dir is not None and not path.exists():
                path = base_dir / path
            spec, spec_source = load_spec(path), str(path)
        layer_version = text("powertools_layer_version")
        pipeline = replace(pipeline, **{
            key: int(value) for key in PIPELINE_CONTEXT_KEYS if (value := text(key)) is not None})
        # The ledger's timing rule (stronger than AWS's visibility >= function timeout).
        error = timing_error(pipeline.writer_timeout_s, pipeline.visibility_timeout_s)
        if error:
            raise ValueError(error)
        if pipeline.reconcile_every_s <= 0 or pipeline.reconcile_every_s % SCHEDULE_UNIT_S:
            raise ValueError(f"reconcile_every_s ({pipeline.reconcile_every_s}) must be a whole "
                             f"number of minutes (a multiple of {SCHEDULE_UNIT_S}): the reconciler "
                             "runs on an EventBridge rate() schedule")
        # A job is STALLED only once nothing that is still coming can move it: a redelivery
        # comes within the visibility timeout, which the timing rule above already holds
        # above the time a dead writer's ticket takes to be voided (2 × writer + margin).
        if pipeline.stall_after_s <= pipeline.visibility_timeout_s:
            raise ValueError(f"stall_after_s ({pipeline.stall_after_s}) must be more than "
                             f"{pipeline.visibility_timeout_s} s, the visibility timeout, which "
                             "is also longer than a dead writer's ticket takes to be voided")
        splitter_concurrency = None
        if (reserved := text("splitter_concurrency")) is not None:
            splitter_concurrency = int(reserved)
            if splitter_concurrency < 1:
                raise ValueError(f"splitter_concurrency ({reserved}) must be at least 1: it is "
                                 "the splitter's reserved concurrency (0 would stop every split)")
        if (existing_table_name := text("existing_table")) and flag("deletion_protection"):
            raise ValueError(f"deletion_protection applies to the items table the stack "
                             f"creates; the existing table {existing_table_name!r} is its "
                             "owner's to protect (aws dynamodb update-table "
                             "--deletion-protection-enabled)")
        return replace(
            config,
            stack_name=text("stack_name") or config.stack_name,
            pipeline=pipeline,
            spec=spec,
            spec_source=spec_source,
            write_budget=float(text("write_budget") or DEFAULT_WRITE_BUDGET),
            rows_per_writer_s=float(text("rows_per_writer_s") or DEFAULT_ROWS_PER_WRITER_S),
            existing_table=text("existing_table"),
            bucket_name=text("bucket_name"),
            table_name=text("table_name"),
            ledger_table_name=text("ledger_table_name"),
            splitter_function_name=text("splitter_function_name"),
            writer_function_name=text("writer_function_name"),
            splitter_role_name=text("splitter_role_name"),
            writer_role_name=text("writer_role_name"),
            gzip=flag("gzip"),
            versioned=flag("versioned"),
            source_buckets=bucket_names(get("source_buckets")),
            spec_in_s3=flag("spec_in_s3"),
            powertools_layer_version=int(layer_version) if layer_version else None,
            powertools_layer_arn=text("powertools_layer_arn"),
            alarm_email=text("alarm_email"),
            kms_key_arns=kms_key_arns(get("kms_key_arns")),
            deletion_protection=flag("deletion_protection"),
            splitter_concurrency=splitter_concurrency,
        )
