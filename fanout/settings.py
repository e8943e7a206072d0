"""One typed settings object, read once, shared by the Lambdas, the local runtime and the CDK stack.

The CDK stack (infra/) and the local runtime (fanout_cli/local/) both build their queues,
tables and timeouts from `PipelineConfig`, so the three can never disagree about a
visibility timeout or a maxReceiveCount; and both get the Lambdas' settings from
`Settings.for_pipeline`, the one place a config becomes settings (the stack passes them
as the functions' environment, `to_env`; the local runtime hands them in).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fanout.mapping import Spec  # fanout.mapping imports this module

MIB = 1024 * 1024

# AWS limits the pipeline is built around (docs/costs.md lists them).
MAX_BATCH_WRITE_ITEMS = 25
MAX_SEND_BATCH = 10
MAX_SQS_MESSAGE_BYTES = 1_048_576
MAX_ITEM_BYTES = 400 * 1024
ROWS_PER_MESSAGE = 25

# The ledger voids a hole (a log ticket whose writer died before writing its record) only
# once that writer cannot be alive: past the writer timeout, plus this margin for clock
# differences between hosts and a request still in flight when the writer died
# (fanout.ledger.HolePolicy). It lives here, below the ledger, so that every place settings
# are made can check the timing rule with it (`timing_error`).
HOLE_MARGIN_S = 30.0


@dataclass(frozen=True, kw_only=True)
class HandlerConfig:
    """The part of the pipeline's config the Lambdas run with. Each field is spelled here
    once: `Settings` inherits it, and its Lambda environment variable is its name in capitals
    after FANOUT_ (`HANDLER_VARIABLES`), which `for_pipeline`, `from_env` and `to_env` loop over."""

    # The ledger voids no hole younger than one writer timeout (HOLE_MARGIN_S).
    writer_timeout_s: int = 60
    # AWS recommends a queue visibility timeout of 6x the function timeout; the ledger needs
    # more than 2x plus HOLE_MARGIN_S (`timing_error`).
    visibility_timeout_s: int = 6 * 60
    # BatchWriteItem calls one writer invocation keeps in flight at most (writer/batch_write.py
    # adapts below it when DynamoDB throttles; bench/invocation.py measured the default).
    writer_in_flight: int = 16
    range_bytes: int = 8 * MIB
    # The splitter saves a checkpoint each time it crosses a multiple of this many bytes
    # (and only there, so a resumed split cuts its messages exactly as the first try).
    checkpoint_bytes: int = 64 * MIB
    # A splitter with less than this left hands over to a fresh invocation.
    split_reserve_s: float = 60.0
    # Plain (not gzip, not UTF-16) objects at least this large are split in parallel byte
    # ranges of about parallel_range_bytes each (splitter/fan.py).
    parallel_threshold_bytes: int = 4 * 1024 * MIB
    parallel_range_bytes: int = 1024 * MIB
    # A job that made no progress for this long is STALLED by the reconciler: it names what
    # is missing instead of staying RUNNING.
    stall_after_s: int = 3600
    errors_prefix: str = "errors/"
    json_copy_prefix: str = "json-copy/"


@dataclass(frozen=True, kw_only=True)
class PipelineConfig(HandlerConfig):
    """Timeouts and queue behaviour: the numbers the stack and the local runtime share (the
    handlers' part, HandlerConfig, and what only the queues, the stack and the runtime use)."""

    splitter_timeout_s: int = 900
    max_receive_count: int = 5
    # 1,000 messages (25,000 rows) an invocation, gathered for up to 1 s: the ledger's two
    # writes and Lambda's request fee are paid per invocation, so at 1,000 they are ~0.01%
    # of the data writes (0.1% at 100; bench/model.py). With writes in flight an invocation
    # takes ~5 s for them, far inside the timeout; the ESM sends fewer when 1,000 would
    # pass Lambda's 6 MB payload.
    batch_size: int = 1000
    max_batching_window_s: int = 1
    # (The writer's MaximumConcurrency is not a setting here: the stack derives it from the
    # write budget, infra/fanout_stack/config.py `writer_concurrency`.)
    # The rows queue keeps a message 7 days; its DLQ 14 (SQS's maximum), longer, because a
    # message moved to a standard queue's DLQ keeps its first enqueue time: with equal
    # retentions it could expire from the DLQ as soon as it arrived.
    retention_days: int = 7
    dlq_retention_days: int = 14
    # How often the reconciler looks for stalled jobs (HandlerConfig.stall_after_s).
    reconcile_every_s: int = 60
    upload_prefix: str = "uploads/"
    upload_suffix: str = ".csv"


def min_visibility_timeout_s(writer_timeout_s: float) -> int:
    """The shortest visibility timeout (whole seconds, as SQS takes it) that meets the
    ledger's timing rule for this writer timeout (see `timing_error`)."""
    return math.floor(2 * writer_timeout_s + HOLE_MARGIN_S) + 1


def timing_error(writer_timeout_s: float, visibility_timeout_s: float) -> str | None:
    """Why this pair breaks the ledger's timing rule, in one line; None when it holds.

    The rule: visibility timeout > 2 x writer timeout + HOLE_MARGIN_S. A writer that dies
    between its log ticket and its record leaves a hole, and it may have taken that ticket
    up to one writer timeout after it received its batch; the hole is voided only once the
    writer cannot be alive, one writer timeout plus the margin after that ticket. SQS
    delivers the dead writer's batch again one visibility timeout after the receive, and
    that settle must find the hole voidable: nothing else comes back to finish the job.
    (The rule also covers AWS's own, visibility timeout >= function timeout.)"""
    floor = 2 * writer_timeout_s + HOLE_MARGIN_S
    if visibility_timeout_s > floor:
        return None
    return (f"visibility_timeout_s ({visibility_timeout_s:g}) must be more than 2 × writer_timeout_s "
            f"({writer_timeout_s:g}) + {HOLE_MARGIN_S:g} s = {floor:g}: set it to at least "
            f"{min_visibility_timeout_s(writer_timeout_s)}")


DEFAULT_CONFIG = PipelineConfig()

# The local runtime keeps every AWS behaviour but shortens the waits as far as the timing
# rule lets it. Locally nothing ends a writer at its timeout: it is the writer's time budget
# (10 s: a batch of 10 messages takes well under a second on moto) and the lifetime the
# ledger assumes, and it sets the visibility timeout to the shortest the rule allows, 51 s,
# so a reported failure reappears after 51 s instead of 6 minutes. Batches stay at 10 (one
# ReceiveMessage) so that an invocation finishes well inside the budget.
LOCAL_CONFIG = PipelineConfig(writer_timeout_s=10, visibility_timeout_s=min_visibility_timeout_s(10),
                              batch_size=10)


@dataclass(frozen=True, kw_only=True)
class ResourceNames:
    """Names of what the stack creates; the CDK app takes overrides from context."""

    bucket: str = "fanout-uploads"
    table: str = "fanout-items"
    ledger_table: str = "fanout-jobs"
    rows_queue: str = "fanout-rows"
    dlq: str = "fanout-rows-dlq"
    topic: str = "fanout-jobs"


class SettingsError(RuntimeError):
    """A missing or malformed setting: the Lambda fails its cold start with this message."""


# What every handler needs, and what each Lambda uses besides (validated at cold start, so
# a misconfigured function fails loudly instead of, say, dropping rejected rows).
BASE_REQUIRED = ("FANOUT_TABLE", "FANOUT_LEDGER_TABLE")
SPLITTER_REQUIRED = (*BASE_REQUIRED, "FANOUT_ROWS_QUEUE_URL", "FANOUT_BUCKET", "FANOUT_TOPIC_ARN")
WRITER_REQUIRED = (*BASE_REQUIRED, "FANOUT_DLQ_URL", "FANOUT_BUCKET", "FANOUT_TOPIC_ARN")


# Each HandlerConfig field as (its name, its Lambda environment variable, its kind): derived
# from the class, so a new field travels to the Lambdas with nothing else to write.
HANDLER_VARIABLES: tuple[tuple[str, str, type], ...] = tuple(
    (f.name, f"FANOUT_{f.name.upper()}", type(f.default)) for f in fields(HandlerConfig))


@dataclass(frozen=True, kw_only=True)
class Settings(HandlerConfig):
    """What a handler needs to run, built from the environment at cold start: the resources
    and the spec's key names here, and every number and prefix of HandlerConfig."""

    table_name: str
    ledger_table_name: str
    rows_queue_url: str = ""
    dlq_url: str = ""
    bucket: str = ""
    topic_arn: str = ""
    partition_key: str = "account"
    sort_key: str | None = "offer_id"
    spec_path: str | None = None
    spec_json: str | None = None  # FANOUT_SPEC_JSON: the spec inline, as the stack passes it
    spec_s3: str | None = None  # FANOUT_SPEC_S3: s3://bucket/key of the spec (-c spec_in_s3=true)
    json_copy: bool = False
    endpoint_url: str | None = None
    region: str = "us-east-1"

    @classmethod
    def for_pipeline(
        cls, config: PipelineConfig, spec: Spec, *, table_name: str, ledger_table_name: str,
        rows_queue_url: str, dlq_url: str, bucket: str, topic_arn: str,
        json_copy: bool = False, endpoint_url: str | None = None, region: str = "us-east-1",
    ) -> Settings:
        """What both Lambdas run with under `config` and `spec`, given the resources the
        stack (or the local runtime) created: every number from the config, the key names
        from the spec. The local runtime's overrides (a range size) go in `config`. A config
        that breaks the ledger's timing rule raises SettingsError (`timing_error`)."""
        error = timing_error(config.writer_timeout_s, config.visibility_timeout_s)
        if error:
            raise SettingsError(error)
        return cls(
            table_name=table_name, ledger_table_name=ledger_table_name,
            rows_queue_url=rows_queue_url, dlq_url=dlq_url, bucket=bucket, topic_arn=topic_arn,
            partition_key=spec.partition_key.name,
            sort_key=spec.sort_key.name if spec.sort_key else None,
            json_copy=json_copy, endpoint_url=endpoint_url, region=region,
            **{name: getattr(config, name) for name, _, _ in HANDLER_VARIABLES},
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None,
                 required: Sequence[str] = BASE_REQUIRED) -> Settings:
        """Build settings from FANOUT_* variables at cold start. Every variable in `required`
        (each Lambda passes what it uses) must be set, and every number must parse: a
        missing or malformed one raises SettingsError naming it, and so does a writer
        timeout and visibility timeout that break the ledger's timing rule (`timing_error`)."""
        env = os.environ if env is None else env
        missing = [n for n in required if not env.get(n)]
        if missing:
            raise SettingsError(f"missing required environment variable(s): {', '.join(missing)}"
                                " (the stack sets them; a function deployed otherwise must too)")

        def value(name: str, default: Any, kind: type) -> Any:
            if kind is str:  # as set, even empty
                return env.get(name, default)
            text = env.get(name)
            if text is None or text == "":
                return default
            try:
                parsed = kind(text)
            except ValueError:
                raise SettingsError(f"{name}={text!r}: not a "
                                    f"{'whole number' if kind is int else 'number'}") from None
            if parsed <= 0:
                raise SettingsError(f"{name}={text!r}: must be greater than 0")
            return parsed

        sort_key = env.get("FANOUT_SORT_KEY", "offer_id")
        settings = cls(
            table_name=env["FANOUT_TABLE"],
            ledger_table_name=env["FANOUT_LEDGER_TABLE"],
            rows_queue_url=env.get("FANOUT_ROWS_QUEUE_URL", ""),
            dlq_url=env.get("FANOUT_DLQ_URL", ""),
            bucket=env.get("FANOUT_BUCKET", ""),
            topic_arn=env.get("FANOUT_TOPIC_ARN", ""),
            partition_key=env.get("FANOUT_PARTITION_KEY", "account"),
            sort_key=sort_key or None,
            spec_path=env.get("FANOUT_SPEC") or None,
            spec_json=env.get("FANOUT_SPEC_JSON") or None,
            spec_s3=env.get("FANOUT_SPEC_S3") or None,
            json_copy=env.get("FANOUT_JSON_COPY", "").lower() in ("1", "true", "yes"),
            endpoint_url=env.get("FANOUT_ENDPOINT_URL") or None,
            region=env.get("AWS_REGION", env.get("AWS_DEFAULT_REGION", "us-east-1")),
            **{name: value(variable, getattr(DEFAULT_CONFIG, name), kind)
               for name, variable, kind in HANDLER_VARIABLES},
        )
        error = timing_error(settings.writer_timeout_s, settings.visibility_timeout_s)
        if error:
            raise SettingsError(error)
        return settings

    def to_env(self) -> dict[str, str]:
        """The environment a Lambda needs so that `from_env` rebuilds these settings."""
        env = {
            "FANOUT_TABLE": self.table_name,
            "FANOUT_LEDGER_TABLE": self.ledger_table_name,
            "FANOUT_ROWS_QUEUE_URL": self.rows_queue_url,
            "FANOUT_DLQ_URL": self.dlq_url,
            "FANOUT_BUCKET": self.bucket,
            "FANOUT_TOPIC_ARN": self.topic_arn,
            "FANOUT_PARTITION_KEY": self.partition_key,
            "FANOUT_SORT_KEY": self.sort_key or "",
            "FANOUT_JSON_COPY": "1" if self.json_copy else "",
            **{variable: str(getattr(self, name)) for name, variable, _ in HANDLER_VARIABLES},
        }
        if self.spec_path:
            env["FANOUT_SPEC"] = self.spec_path
        if self.endpoint_url:
            env["FANOUT_ENDPOINT_URL"] = self.endpoint_url
        return env
