"""`fanout check FILE`: a dry run with no emulator and no table.

The splitter's own path (`splitter.split.cut_object`: detection, the check, the cut into
25-record messages, the message encoding) runs over the local file through a file-backed
S3 stand-in, and each message goes, instead of to SQS, to the writer's own decoding and
mapping (`writer.load.map_rows`). Nothing is written anywhere. What DynamoDB alone can
refuse (`dynamodb_validation`) cannot be foreseen; everything the mapping rejects is.

The spec's write mode is the job's: a delete job's rows would be deleted (only their key
columns are read, as the writer reads them), an update's would be written. An insert's
rows would be written or, where the table already holds the key, skipped: with no table,
the dry run cannot tell which, and says so.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fanout.aws import Clients
from fanout.contract import (
    KIND_REJECTED,
    MODE_DELETE,
    MODE_INSERT,
    MODE_PUT,
    Rejection,
    as_replay,
    decode,
    job_id_for,
)
from fanout.mapping import Spec
from fanout.runtime import Runtime
from fanout.settings import DEFAULT_CONFIG, Settings
from fanout_cli.failures import logs_to_stderr
from fanout_cli.local.file_s3 import FileS3
from fanout_cli.progress import read_as
from splitter.errors import InputError
from splitter.range_reader import head
from splitter.source import SourceError, open_source, with_delimiter_hint, with_hint
from splitter.split import Checkpoint, NoProgress, cut_object
from splitter.split import log as splitter_log
from writer.load import log as writer_log
from writer.load import map_rows

SAMPLE_REJECTIONS = 5
CHECK_BUCKET = "local"


class CheckError(ValueError):
    """The file fails as the job would: the message names the file, the line and the reason."""


@dataclass
class CheckResult:
    file: str
    source_format: str = ""  # how the file was read (`fanout.dialect.Dialect.describe`)
    rows_read: int = 0
    rows_padded: int = 0  # of rows_read: fewer fields than the header, padded with empties
    columns_named: list[str] = field(default_factory=list)  # Spec.header_notes
    messages: int = 0
    written: int = 0  # would be written (an insert's: written or skipped as existing)
    superseded: int = 0
    deleted: int = 0  # would be deleted
    mode: str = MODE_PUT
    rejected: Counter[str] = field(default_factory=Counter)
    samples: list[Rejection] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def rows_rejected(self) -> int:
        return sum(self.rejected.values())

    @property
    def exit_code(self) -> int:
        """As `fanout ingest`: 0 every row would land, 3 some would be rejected."""
        return 3 if self.rows_rejected else 0

    def summary(self) -> dict[str, Any]:
        """What `--json` prints: a put's fields as before write modes; another mode adds
        `mode` and its own outcome (an insert's written and skipped rows in one count)."""
        mode_fields: dict[str, Any] = {"rows_written": self.written}
        if self.mode == MODE_INSERT:
            mode_fields = {"rows_written_or_skipped_existing": self.written}
        elif self.mode == MODE_DELETE:
            mode_fields["rows_deleted"] = self.deleted
        return {
            "file": self.file, "source_format": self.source_format,
            **({"mode": self.mode} if self.mode != MODE_PUT else {}),
            "columns_named": self.columns_named,
            "rows_read": self.rows_read, "rows_padded": self.rows_padded,
            **mode_fields, "rows_rejected": self.rows_rejected,
            "rows_superseded": self.superseded, "messages": self.messages,
            "rejected_by_reason": dict(sorted(self.rejected.items())),
            "first_rejected": [r.as_dict() for r in self.samples],
            "elapsed_s": round(self.elapsed_s, 3),
            "rows_per_s": round(self.rows_read / self.elapsed_s) if self.elapsed_s else 0,
        }


class MappingSink:
    """Takes the splitter's messages as the rows queue would, and maps each as the writer
    would: counts what would be written, superseded and rejected (by reason)."""

    def __init__(self, spec: Spec, result: CheckResult) -> None:
        self.spec, self.result = spec, result

    def send(self, body: str, size: int | None = None) -> None:
        message = decode(body)
        if message.kind == KIND_REJECTED:  # pragma: no cover - the splitter sends rows only
            message = as_replay(message)
        items, _lines, rejections, superseded = map_rows(message, self.spec)
        result = self.result
        result.messages += 1
        if message.mode == MODE_DELETE:
            result.deleted += len(items)
        else:
            result.written += len(items)
        result.superseded += superseded
        for rejection in [*message.rejections, *rejections]:
            result.rejected[rejection.reason] += 1
            if len(result.samples) < SAMPLE_REJECTIONS:
                result.samples.append(rejection)

    def drain(self) -> int:
        return 0


def check_file(path: Path, spec: Spec, *, range_bytes: int | None = None) -> CheckResult:
    """Run the splitter's cut and the writer's mapping over `path`; raise CheckError where
    the job itself would fail."""
    logs_to_stderr(splitter_log, writer_log)
    started = time.perf_counter()
    s3 = FileS3(path)
    try:
        settings = Settings(table_name="(dry run)", ledger_table_name="(dry run)",
                            range_bytes=range_bytes or DEFAULT_CONFIG.range_bytes)
        runtime = Runtime(settings, spec, Clients(s3=s3, sqs=None, dynamodb=None))
        info = head(s3, CHECK_BUCKET, path.name)
        result = CheckResult(file=str(path), mode=spec.mode)
        try:
            runtime, info = open_source(runtime, info)
            sink = MappingSink(runtime.spec, result)
            checkpoint = Checkpoint()
            cut_object(runtime, info, job_id_for(info.source), settings.range_bytes, checkpoint,
                       sink=sink, progress=NoProgress())
        except (InputError, SourceError) as exc:
            raise CheckError(f"{path}: "
                             f"{with_delimiter_hint(runtime, info, with_hint(str(exc)))}") from None
        result.rows_read, result.rows_padded = checkpoint.rows_read, checkpoint.rows_padded
        result.columns_named = runtime.spec.header_notes(checkpoint.header or [])
    finally:
        s3.close()
    result.elapsed_s = time.perf_counter() - started
    assert result.rows_read == (result.written + result.deleted + result.rows_rejected
                                + result.superseded), "every row is counted once"
    return result


def print_result(result: CheckResult) -> None:
    """The dry run's summary, as `fanout ingest` prints its own."""
    print(f"file        {result.file}")
    print(f"read as     {read_as(result.source_format, result.columns_named)}")
    if result.mode != MODE_PUT:
        print(f"mode        {result.mode}")
    print(f"rows read   {result.rows_read:,}"
          + (f" ({result.rows_padded:,} padded: fewer fields than the header)"
             if result.rows_padded else ""))
    if result.mode == MODE_DELETE:
        print(f"  would delete {result.deleted:,} (a key the table does not hold counts too)")
    elif result.mode == MODE_INSERT:
        print(f"  would write or skip {result.written:,} (skipped where the table already holds "
              "the key: a dry run has no table to tell)")
    else:
        print(f"  would write  {result.written:,}")
    print(f"  superseded   {result.superseded:,}")
    print(f"  rejected     {result.rows_rejected:,}")
    for reason, count in sorted(result.rejected.items()):
        print(f"    {reason:<20} {count:,}")
    for rejection in result.samples:
        print(f"  line {rejection.line}: {rejection.reason}: {rejection.detail}")
    rate = result.rows_read / result.elapsed_s if result.elapsed_s else 0
    print(f"messages    {result.messages:,}")
    print(f"elapsed     {result.elapsed_s:.2f} s ({rate:,.0f} rows/s); nothing was written")
