"""The `fanout` command: ingest, make-csv, status, jobs, cancel (and serve).

Every failure ends with one line on stderr and a documented exit code, never a traceback:
`main` maps what a command cannot fix itself (AWS errors, no credentials, nothing at the
endpoint, a bad spec) to a line and a code, around whichever command runs.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fanout.keys import TemplateError
from fanout.mapping import Spec, SpecError, load_spec
from fanout_cli.failures import (
    DEBUG_VARIABLE,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    VERBOSE_VARIABLE,
    OneLineParser,
    describe,
    one_line,
    positive_int,
)
from fanout_cli.target import DEFAULT_STACK, Target, resolve

DEFAULT_CONCURRENCY = 4

MAIN_EPILOG = """\
exit status (every command):
  0  done
  1  failed: the pipeline failed (bad input file, emulator or handler failure), the job
     was not found, or AWS could not be reached (no credentials, nothing listening at
     --endpoint-url, no such --stack); one line on stderr says which and what to do
  2  usage error: bad arguments, a bad spec, or a file whose header does not fit the
     spec (found before anything starts)
  3  (ingest) the run finished, but some rows were rejected (see rejected.jsonl)
"""

INGEST_EPILOG = """\
exit status:
  0  every row landed (written or superseded by a later row with the same key)
  1  the pipeline itself failed (bad input file, emulator or handler failure)
  2  usage error (bad arguments or spec; a key or spec column not in the header, checked
     before the emulator starts)
  3  the run finished, but some rows were rejected (see rejected.jsonl)
  with s3://BUCKET/PREFIX: the worst of its jobs' codes (1 if nothing could be loaded);
  2 also when the stack may not read the bucket (deploy it with -c source_buckets=BUCKET)

data already in S3 (needs --stack; nothing is copied):
  fanout ingest s3://BUCKET/PREFIX --stack NAME [--endpoint-url URL] [--json]
  starts a job (an asynchronous splitter invoke with the object's S3 event) for each
  .csv / .csv.gz under the prefix whose current version (ETag, or version id) has no job
  in the ledger yet, follows them all with one progress display, and prints a line per
  object and a total. A re-run starts nothing new. Other objects are skipped with the
  reason. Needs lambda:InvokeFunction on the splitter, and the stack must be allowed to
  read the bucket: its own upload prefix, or -c source_buckets=BUCKET at deploy.

how the file is read (unless --delimiter, --encoding or the spec's [source] say):
  gzip       by its first bytes (1f 8b), whatever the file is called
  encoding   a byte order mark decides (UTF-8, UTF-16 LE/BE); no BOM: UTF-8. A Latin-1
             file is not detectable: give --encoding latin-1
  delimiter  the one of , tab ; | that splits the header line into the most fields;
             none of them: one column, read with ','

key templates: a column name (account), or text mixing literals and {column}
references ('A_{DOL Vehicle ID}', '{carrier}#{flight}'); {_line} is the row's source
line. Prefix NAME= to name the attribute (and NAME:N= to make it a number):
  --partition-key 'pk=A_{DOL Vehicle ID}' --sort-key 'line:N={_line}'
"""


INFER_EPILOG = """\
exit status:
  0  the spec was written
  1  the file cannot be read as CSV (the message says what to set)
  2  usage error (bad arguments, no such file, --out exists without --force)
"""

CHECK_EPILOG = """\
exit status (those of `fanout ingest`):
  0  every row would land (written, or superseded by a later row with the same key)
  1  the file would fail the job (the message names the file, the line and the reason)
  2  usage error (bad arguments or spec, no such file)
  3  some rows would be rejected (the reasons and the first lines are printed)
"""

STATUS_EPILOG = """\
exit status:
  0  the job was found (its status is in the JSON: SPLITTING, RUNNING, COMPLETE, FAILED
     or STALLED; seconds_since_progress says how long an unfinished job has not moved,
     and a STALLED one names what is missing: stall_reason, missing_messages,
     missing_seqs)
  1  no such job, or AWS could not be reached (no credentials, nothing listening at
     --endpoint-url, no such --stack): one line on stderr says which
  2  usage error
"""


def _add_file_and_mapping(parser: argparse.ArgumentParser, file_help: str,
                          file_type: Callable[[str], object] = Path) -> None:
    """FILE, the spec, the key flags and how the file is read (ingest and check alike)."""
    parser.add_argument("file", type=file_type, help=file_help)
    parser.add_argument("--spec", type=Path, help="mapping spec (TOML): keys, types, transforms")
    parser.add_argument("--partition-key", metavar="T",
                        help="partition key template (default: account, or the spec's)")
    parser.add_argument("--sort-key", metavar="T",
                        help="sort key template (default: offer_id, or the spec's); '' for none")
    _add_source_flags(parser)
    add_verbose(parser)


def add_verbose(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verbose", action="store_true",
                        help="also show the Lambdas' INFO logs on stderr (as FANOUT_DEBUG=1 does); "
                             "their warnings and errors show either way")


def _add_source_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--delimiter", metavar="C",
                        help="field delimiter: one character, or tab (default: the spec's, or "
                             "sniffed from the header line)")
    parser.add_argument("--encoding", choices=("utf-8", "utf-16", "latin-1"),
                        help="text encoding (default: the spec's, or the byte order mark's, "
                             "else utf-8)")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="fanout", description="Load CSV files into DynamoDB through S3, SQS and Lambda.",
        epilog=MAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    ingest = commands.add_parser(
        "ingest", help="load a CSV through the pipeline on an embedded AWS emulator",
        description="Run FILE through the real splitter and writer handlers on an embedded "
                    "AWS emulator (moto): no AWS account needed. With --stack, load FILE "
                    "into a deployed stack, or load objects already in S3 "
                    "(s3://BUCKET/PREFIX) where they are.",
        epilog=INGEST_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_file_and_mapping(ingest, "the CSV file to load, or s3://BUCKET/PREFIX (with --stack): "
                                  "the objects already there, loaded where they are",
                          file_or_s3_uri)
    ingest.add_argument("--out", type=Path, metavar="DIR",
                        help="output folder (default: ./fanout-out/<file stem>)")
    ingest.add_argument("--range-bytes", type=positive_int, metavar="N",
                        help="bytes per ranged S3 read in the splitter (default 8 MiB)")
    ingest.add_argument("--concurrency", type=positive_int,
                        help=f"concurrent writer invocations (default {DEFAULT_CONCURRENCY})")
    ingest.add_argument("--emulator", choices=("inprocess", "server"),
                        help="moto in this process (default) or a moto server on 127.0.0.1")
    ingest.add_argument("--json-copy", action="store_true",
                        help="also back up written items as JSON lines under json-copy/ in the bucket")
    ingest.add_argument("--json", action="store_true",
                        help="print the summary as JSON (and nothing else: no progress)")
    add_stack_arguments(ingest)

    check = commands.add_parser(
        "check", help="a dry run: what ingest would write and reject, with nothing written",
        description="Run FILE through the splitter's own cut (detection, the check, 25-record "
                    "messages) and the writer's own mapping, with no emulator and no table: "
                    "prints rows read, rows that would be written, superseded and rejected (by "
                    "reason, with the first rejected lines). Nothing is written anywhere. Only "
                    "what DynamoDB alone refuses (dynamodb_validation) cannot be foreseen.",
        epilog=CHECK_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_file_and_mapping(check, "the CSV file to check")
    check.add_argument("--range-bytes", type=positive_int, metavar="N",
                       help="bytes per ranged read (default 8 MiB, as the splitter)")
    check.add_argument("--json", action="store_true", help="print the result as JSON")

    status = commands.add_parser(
        "status", help="show a job from the jobs ledger",
        description="Show a job: from a running `fanout serve` (--endpoint-url), a deployed "
                    "stack (--stack), or the summary.json files of local runs under ./fanout-out.",
        epilog=STATUS_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    status.add_argument("job", help="the job id (printed by ingest, in summary.json)")
    _add_ledger_target(status)
    status.add_argument("--out-root", type=Path, default=Path("fanout-out"),
                        help="where local runs keep their outputs (default ./fanout-out)")
    status.add_argument("--follow", action="store_true",
                        help="with --stack: follow the job with a progress display until it ends")

    add_operator_parsers(commands)
    add_serve_parser(commands)

    spec = commands.add_parser(
        "spec", help="work with mapping specs: `fanout spec infer FILE`",
        description="Work with mapping specs (TOML).")
    spec_commands = spec.add_subparsers(dest="spec_command", required=True)
    infer = spec_commands.add_parser(
        "infer", help="write a commented spec inferred from a sample of FILE",
        description="Read the first rows of FILE (gzip, BOM and delimiter detected as the "
                    "splitter detects them) and write a commented, valid mapping spec: column "
                    "types (N, BOOL, JSON only where every sampled value converts), empty "
                    "handling, header normalisation, and a key unique in the sample.",
        epilog=INFER_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    infer.add_argument("file", type=Path, help="the CSV file to sample")
    infer.add_argument("--rows", type=positive_int, default=10_000, metavar="N",
                       help="data rows to sample (default 10,000, or the whole file if smaller)")
    infer.add_argument("--out", type=Path, metavar="FILE",
                       help="write the spec here (default: print it)")
    infer.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    infer.add_argument("--delimiter", help="the delimiter (default: sniffed from the header)")
    infer.add_argument("--encoding", help="utf-8, utf-16 or latin-1 (default: from the BOM, or utf-8)")

    make = commands.add_parser(
        "make-csv", help="generate test data (the old make-csv.py's columns)",
        description="Generate a CSV with columns account, offer_id, catalog_id, "
                    "account_type_code, offer_type_id, created, expire, risk.")
    make.add_argument("--rows", type=int, default=1000, help="rows to generate (default 1000)")
    make.add_argument("--accounts", type=int, default=20, help="distinct accounts (default 20)")
    make.add_argument("--output", type=Path, default=Path("data.csv"),
                      help="output file (default data.csv)")
    make.add_argument("--seed", type=int, help="random seed: the same seed gives the same file")
    make.add_argument("--json", action="store_true",
                      help="print what was written as JSON (and nothing else: no progress)")
    return parser


class CommandError(Exception):
    """A failure a command reports as one line (without its name) with an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


JOBS_EPILOG = """\
Reads the jobs index (one item per job, newest first): about --limit index items and as
many job items a page, never a scan of the ledger. A --status filter also reads the jobs it
skips. Jobs started before the index existed are not listed (`fanout status JOB` finds them).

exit status:
  0  listed (even none)
  1  the ledger could not be read (no such --stack, nothing at --endpoint-url)
  2  usage error (bad --since)
"""

CANCEL_EPILOG = """\
The job is CANCELLING at once: its splitter stops at its next checkpoint or range, and
its writers drop its remaining messages, counted under the outcome `cancelled` (a writer
learns of the cancel from its next ledger report, so each one may write one more batch).
It is CANCELLED once nothing more of it will be written, and its summary says so.

exit status:
  0  the job is CANCELLING now (or was cancelled already)
  1  the job had already ended (COMPLETE or FAILED: nothing changed), there is no such
     job, or the ledger could not be reached
"""


def _add_ledger_target(parser: argparse.ArgumentParser) -> None:
    """The target of a command that reads a stack's ledger (status, jobs, cancel): resolved
    by fanout_cli.target like every command's."""
    parser.add_argument("--stack", metavar="NAME",
                        help=f"a deployed stack (default with --endpoint-url: {DEFAULT_STACK})")
    parser.add_argument("--endpoint-url", metavar="URL",
                        help="the stack's endpoint, e.g. a local `fanout serve`'s (default: "
                             "AWS_ENDPOINT_URL with --stack, else AWS)")
    parser.add_argument("--ledger-table", default=None, metavar="NAME",
                        help="read this ledger table at the endpoint instead of a stack's")


def add_operator_parsers(commands: argparse._SubParsersAction) -> None:
    """`fanout jobs` and `fanout cancel` (fanout_cli/jobs.py)."""
    from fanout import ledger

    jobs = commands.add_parser(
        "jobs", help="list the jobs of a stack, newest first",
        description="List jobs newest first: id, status, source, rows read / written / "
                    "rejected, when each started, how long it took (or, with +, has run) and rows/s.",
        epilog=JOBS_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_ledger_target(jobs)
    jobs.add_argument("--status", action="append", default=[], metavar="STATUS",
                      choices=(ledger.SPLITTING, ledger.RUNNING, ledger.CANCELLING, ledger.COMPLETE,
                               ledger.FAILED, ledger.STALLED, ledger.CANCELLED),
                      help="only jobs in this status (repeatable): SPLITTING, RUNNING, CANCELLING, "
                           "COMPLETE, FAILED, STALLED, CANCELLED")
    jobs.add_argument("--since", metavar="WHEN",
                      help="only jobs started since: a duration back from now (24h, 30m, 7d) or a time")
    jobs.add_argument("--source", metavar="PREFIX",
                      help="only jobs whose source starts with this (s3://BUCKET/uploads/...)")
    jobs.add_argument("--limit", type=positive_int, default=20, metavar="N",
                      help="jobs a page (default 20)")
    jobs.add_argument("--after", metavar="TOKEN",
                      help="the next page: the token the previous page printed")
    jobs.add_argument("--json", action="store_true", help="print the page as JSON")

    cancel = commands.add_parser(
        "cancel", help="stop a job: no more of its rows are written",
        description="Cancel a job that is splitting, running or stalled.",
        epilog=CANCEL_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    cancel.add_argument("job", help="the job id (from `fanout jobs`)")
    _add_ledger_target(cancel)
    cancel.add_argument("--by", metavar="TEXT",
                        help="who cancels, as the ledger records it (default USER@HOST)")
    cancel.add_argument("--json", action="store_true", help="print the job as it is now, as JSON")


def add_serve_parser(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser(
        "serve", help="deploy the real stack into MiniStack on 127.0.0.1 and run it until Ctrl-C",
        description="Start MiniStack (a local AWS emulator) on a free loopback port, `cdk "
                    "bootstrap` and `cdk deploy` infra/app.py into it with a Powertools layer "
                    "built from the installed package, print the stack's outputs and what to "
                    "export, then show what the pipeline does until Ctrl-C or SIGTERM.")
    serve.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    serve.add_argument("--stack-name", default="fanout", help="stack name (default fanout)")
    serve.add_argument("--spec", type=Path, help="mapping spec (TOML) the stack is built from")
    serve.add_argument("-c", "--context", action="append", default=[], metavar="KEY=VALUE",
                       help="a CDK context option for the stack (repeatable), e.g. -c gzip=true")
    serve.add_argument("--ingest", type=Path, metavar="FILE",
                       help="load FILE through the stack (as `fanout ingest FILE --stack`), then "
                            "stop and exit with its status (`make demo`)")


def file_or_s3_uri(text: str) -> Path | str:
    """An argparse type: a local path, or an s3:// URI kept as written (a Path would fold
    its `//` and drop a trailing `/`, which is part of the prefix)."""
    return text if text.startswith("s3://") else Path(text)


def add_stack_arguments(ingest: argparse.ArgumentParser) -> None:
    ingest.add_argument("--stack", metavar="NAME",
                        help="load into this deployed stack (local `fanout serve` or AWS) instead "
                             "of the embedded emulator: upload FILE under its prefix and follow "
                             "the job; or, for s3://BUCKET/PREFIX, start a job for each object "
                             "not yet loaded in its current version and follow them all")
    ingest.add_argument("--endpoint-url", metavar="URL",
                        help="the stack's endpoint, e.g. a local `fanout serve`'s (default: "
                             f"AWS_ENDPOINT_URL with --stack, else AWS); alone: --stack {DEFAULT_STACK}")


def main(argv: list[str] | None = None) -> int:
    """Run one command; any failure ends with one line on stderr and its exit code."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # named by the command they were given to (`fanout ingest: error: ...`)
        command_parser(parser, args).error(f"unrecognized arguments: {' '.join(unknown)}")
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "make-csv": _make_csv, "ingest": _ingest, "serve": _serve, "status": _status,
        "spec": _spec_infer, "check": _check, "jobs": _jobs, "cancel": _cancel}
    name = f"fanout {args.command}" + (f" {args.spec_command}" if args.command == "spec" else "")
    if not getattr(args, "verbose", False):
        return run_command(name, commands[args.command], args)
    os.environ[VERBOSE_VARIABLE] = "1"  # read where the Lambdas' loggers are set up
    try:
        return run_command(name, commands[args.command], args)
    finally:
        os.environ.pop(VERBOSE_VARIABLE, None)


def command_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub)parser of the command `args` ran: `fanout ingest`, `fanout spec infer`."""
    for name in ("command", "spec_command"):
        chosen = getattr(args, name, None)
        subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if chosen is None or not subparsers:
            break
        parser = subparsers[0].choices[chosen]
    return parser


def run_command(name: str, command: Callable[[argparse.Namespace], int],
                args: argparse.Namespace) -> int:
    """`command(args)`, with what it raises turned into one line and an exit code."""
    try:
        return command(args)
    except CommandError as exc:
        return _fail(name, str(exc), exc.code)
    except (SpecError, TemplateError) as exc:  # a spec or a key that does not fit the file
        return _fail(name, str(exc), EXIT_USAGE)
    except KeyboardInterrupt:
        return _fail(name, "interrupted", 130)
    except Exception as exc:
        known = describe(exc)
        if known is None and os.environ.get(DEBUG_VARIABLE):
            traceback.print_exc()
        return _fail(name, known or f"failed: {type(exc).__name__}: {exc} (set "
                                    f"{DEBUG_VARIABLE}=1 for the traceback)", EXIT_FAILED)


def _fail(name: str, message: str, code: int) -> int:
    print(f"{name}: error: {one_line(message)}", file=sys.stderr)
    return code


def _make_csv(args: argparse.Namespace) -> int:
    from fanout_cli.makecsv import MakeCsvError, make_csv

    try:
        written = make_csv(args.rows, args.accounts, args.output, seed=args.seed,
                           stream=io.StringIO() if args.json else sys.stdout,
                           progress=None if args.json else sys.stderr)
    except MakeCsvError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    if args.json:
        print(json.dumps({"output": str(args.output), "rows": args.rows, "bytes": written}))
    return EXIT_OK


def _spec_infer(args: argparse.Namespace) -> int:
    from fanout_cli.infer import InferError, infer_file

    if not args.file.is_file():
        raise CommandError(f"{args.file}: no such file", EXIT_USAGE)
    if args.out and args.out.exists() and not args.force:
        raise CommandError(f"{args.out} exists: pass --force to overwrite it", EXIT_USAGE)
    try:
        inference = infer_file(args.file, max_rows=args.rows, delimiter=args.delimiter,
                               encoding=args.encoding)
    except InferError as exc:
        raise CommandError(str(exc), EXIT_FAILED) from None
    text = inference.to_toml(args.file.name)
    key = inference.key
    keys = key.partition + (f" + {key.sort}" if key.sort else "")
    if args.out:
        args.out.write_text(text, encoding="utf-8")
        print(f"wrote {args.out}: {inference.rows:,} rows sampled, key {keys}, "
              f"{len(inference.types)} typed column(s)", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    from fanout_cli.check import CheckError, check_file, print_result
    from fanout_cli.local.preflight import InputFileError, UsageError, preflight

    if not args.file.is_file():
        raise CommandError(f"{args.file}: no such file", EXIT_USAGE)
    spec = resolve_spec(args.spec, args.partition_key, args.sort_key, args.delimiter,
                        args.encoding)
    try:
        found = preflight(args.file, spec)  # as `fanout ingest`: a usage error exits 2
        result = check_file(args.file, spec, range_bytes=args.range_bytes)
    except UsageError as exc:
        raise CommandError(str(exc) + default_sort_key_hint(args, str(exc)), EXIT_USAGE) from None
    except (InputFileError, CheckError) as exc:
        raise CommandError(str(exc), EXIT_FAILED) from None
    result.source_format = found.describe()
    if args.json:
        print(json.dumps(result.summary(), indent=2))
    else:
        print_result(result)
    return result.exit_code


def default_sort_key_hint(args: argparse.Namespace, message: str) -> str:
    """`--partition-key a` alone keeps the default sort key (offer_id): say so when it is the
    one the header lacks."""
    if args.partition_key and args.sort_key is None and not args.spec and "'offer_id'" in message:
        return " (the default sort key is offer_id: pass --sort-key '' for none, or --sort-key COLUMN)"
    return ""


def resolve_spec(spec_path: Path | None, partition_key: str | None, sort_key: str | None,
                 delimiter: str | None = None, encoding: str | None = None) -> Spec:
    """The spec file (or the default spec), with the flags' keys and source settings."""
    spec = load_spec(spec_path) if spec_path else Spec.default()
    return spec.with_keys(partition_key, sort_key).with_source(delimiter, encoding)


def _serve(args: argparse.Namespace) -> int:
    from fanout_cli.local.serve import serve_forever

    context = dict(item.partition("=")[::2] for item in args.context)
    if args.spec:
        if not args.spec.is_file():
            raise CommandError(f"{args.spec}: no such file", EXIT_USAGE)
        context["spec"] = str(args.spec.resolve())
    if args.ingest and not args.ingest.is_file():
        raise CommandError(f"{args.ingest}: no such file", EXIT_USAGE)
    return serve_forever(port=args.port, stack_name=args.stack_name, context=context,
                         ingest=args.ingest)


# What a stack decides for itself, so a flag for it is refused with --stack: its splitter
# and writer read every object (an upload, or one already in S3) with the stack's spec,
# and its functions run as deployed.
SPEC_FLAGS = ("spec", "partition_key", "sort_key", "delimiter", "encoding")
RUNTIME_FLAGS = ("concurrency", "range_bytes", "out", "json_copy", "emulator")


def refuse_local_flags(args: argparse.Namespace, target: Target) -> None:
    """With a stack, the flags only the embedded runtime reads are refused, never ignored
    (`--sort-key ''` is given too)."""
    def given(names: tuple[str, ...]) -> list[str]:
        return [name for name in names
                if (getattr(args, name, None) is not None if name == "sort_key" else getattr(args, name, None))]

    spec, runtime = given(SPEC_FLAGS), given(RUNTIME_FLAGS)
    if not spec and not runtime:
        return
    reasons = []
    if spec:
        reasons.append("the stack reads every file with its own spec (keys, delimiter, encoding): "
                       "to change it, redeploy with a spec (`fanout serve --spec FILE`, or `cdk "
                       "deploy -c spec=FILE`; [source] in the spec for the delimiter and encoding)")
    if runtime:
        reasons.append("the stack runs as it was deployed (its writers' concurrency from -c "
                       "write_budget, its reads from -c range_bytes, its reports in its bucket)")
    flags = ", ".join(f"--{name.replace('_', '-')}" for name in spec + runtime)
    raise CommandError(f"{flags}: not with --stack {target.stack}: {'; '.join(reasons)}; or drop "
                       "--stack to load FILE in the embedded runtime", EXIT_USAGE)


def say_target(target: Target, args: argparse.Namespace) -> None:
    """The one line naming the target (on stderr: stdout is the summary's, or the JSON's)."""
    if not getattr(args, "json", False):
        print(target.line(), file=sys.stderr)


def _ingest_stack(args: argparse.Namespace, target: Target) -> int:
    from fanout_cli.local.stack import StackError, ingest_to_stack

    try:
        return ingest_to_stack(args.file, target.stack or DEFAULT_STACK,
                               endpoint_url=target.endpoint_url, region=target.region,
                               as_json=args.json, announce=target.line())
    except StackError as exc:
        raise CommandError(str(exc), EXIT_FAILED) from None


def _ingest_prefix(args: argparse.Namespace, target: Target) -> int:
    from fanout_cli.local.prefix import PrefixError, ingest_prefix
    from fanout_cli.local.stack import StackError

    if target.embedded:
        raise CommandError(f"{args.file}: objects in S3 are loaded by a deployed stack, which "
                           "reads them where they are: add --stack NAME (for a local one, run "
                           "`fanout serve` and pass --stack fanout)", EXIT_USAGE)
    try:
        return ingest_prefix(args.file, target.stack or DEFAULT_STACK,
                             endpoint_url=target.endpoint_url, as_json=args.json,
                             stderr=sys.stderr, announce=target.line())
    except PrefixError as exc:
        raise CommandError(str(exc), exc.code) from None
    except StackError as exc:
        raise CommandError(str(exc), EXIT_FAILED) from None


def _status_follow(args: argparse.Namespace, target: Target) -> int:
    import time

    from fanout import ledger
    from fanout_cli.local.stack import StackError, find_stack, follow_and_report

    try:
        stack = find_stack(target.stack or DEFAULT_STACK, target.endpoint_url, region=target.region)
        if ledger.get_job(stack.dynamodb, stack.ledger_table, args.job) is None:
            raise CommandError(f"no job {args.job!r} in stack {stack.name!r}'s ledger "
                               f"({stack.ledger_table}): check the job id (ingest printed it)")
        say_target(target, args)
        return follow_and_report(stack, args.job, started=time.monotonic(), as_json=False,
                                 label=f"job {args.job}")
    except StackError as exc:
        raise CommandError(str(exc), EXIT_FAILED) from None


def _ingest(args: argparse.Namespace) -> int:
    from fanout_cli.local.ingest import IngestOptions, PipelineError, ingest, print_summary
    from fanout_cli.local.preflight import InputFileError, UsageError

    target = resolve(stack=args.stack, endpoint_url=args.endpoint_url)
    if isinstance(args.file, str):
        if not target.embedded:
            refuse_local_flags(args, target)
        return _ingest_prefix(args, target)
    if args.file.is_dir():
        raise CommandError(f"{args.file}: a folder, not a file: give one CSV file (for many, "
                           "put them in S3 and use s3://BUCKET/PREFIX with --stack)", EXIT_USAGE)
    if not args.file.is_file():
        raise CommandError(f"{args.file}: no such file", EXIT_USAGE)
    if not target.embedded:
        refuse_local_flags(args, target)
        return _ingest_stack(args, target)
    if target.ignored:  # the one line that matters before the run; the summary names it too
        say_target(target, args)
    spec = resolve_spec(args.spec, args.partition_key, args.sort_key, args.delimiter,
                        args.encoding)
    out = args.out or Path("fanout-out") / args.file.stem
    try:
        result = ingest(IngestOptions(
            file=args.file, spec=spec, out_dir=out, range_bytes=args.range_bytes,
            concurrency=args.concurrency or DEFAULT_CONCURRENCY,
            emulator=args.emulator or "inprocess",
            progress=None if args.json else sys.stderr, json_copy=args.json_copy))
    except UsageError as exc:
        raise CommandError(str(exc) + default_sort_key_hint(args, str(exc)), EXIT_USAGE) from None
    except (InputFileError, PipelineError) as exc:
        raise CommandError(str(exc), EXIT_FAILED) from None
    except Exception as exc:  # the pipeline itself failed: say so, exit 1
        raise CommandError(describe(exc) or f"pipeline failed: {type(exc).__name__}: {exc}",
                           EXIT_FAILED) from None
    shown = result.summary | {"target": target.as_dict()}
    if args.json:
        print(json.dumps(shown, indent=2))
    else:
        print_summary(shown)
    return result.exit_code


def stack_outputs(target: Target) -> dict[str, str]:
    """The CloudFormation outputs of the target's stack; one that does not exist is one line."""
    from botocore.exceptions import ClientError

    from fanout.aws import client

    try:
        stacks = client("cloudformation", endpoint_url=target.endpoint_url,
                        region=target.region).describe_stacks(StackName=target.stack)["Stacks"]
    except ClientError as exc:
        if "does not exist" in str(exc):
            where = (f"at {target.endpoint_url} (check --stack, and the endpoint: the `fanout "
                     "serve` banner names both)" if target.endpoint_url else
                     f"in {target.region} (check --stack, AWS_PROFILE and AWS_DEFAULT_REGION)")
            raise CommandError(f"no stack {target.stack!r} {where}") from None
        raise
    return {o["OutputKey"]: o["OutputValue"] for o in (stacks[0].get("Outputs", []) if stacks else [])}


def _ledger_target(args: argparse.Namespace) -> tuple[Any, str, Target]:
    """The ledger a command reads: its client, its table (the stack's LedgerTableName output,
    or `--ledger-table` by name with no stack) and the target they are at."""
    from fanout.aws import client

    if args.ledger_table and args.stack:
        raise CommandError("--ledger-table reads a table by name, with no stack: drop one of "
                           "--stack and --ledger-table", EXIT_USAGE)
    target = resolve(stack=args.stack, endpoint_url=args.endpoint_url, embedded=False).use()
    if args.ledger_table:  # a table by name, no stack to look up
        target = Target(None, target.endpoint_url, target.region, target.endpoint_from)
        table = args.ledger_table
    else:
        table = stack_outputs(target).get("LedgerTableName") or args.ledger_table
        if not table:
            raise CommandError(f"stack {target.stack!r} has no LedgerTableName output: is it a "
                               "fanout stack?")
    return client("dynamodb", endpoint_url=target.endpoint_url, region=target.region), table, target


def ledger_target_dict(target: Target, table: str) -> dict[str, Any]:
    """The target of a command that read a ledger, as its JSON says it."""
    if target.stack is None:  # a table by name
        return {"runtime": "ledger_table", "stack": None, "endpoint_url": target.endpoint_url,
                "region": target.region, "ledger_table": table}
    return target.as_dict() | {"ledger_table": table}


def say_ledger_target(target: Target, table: str, args: argparse.Namespace) -> None:
    """The target line of a command that reads a ledger: its stack's, or the table by name."""
    if target.stack is not None:
        say_target(target, args)
    elif not getattr(args, "json", False):
        print(f"target: ledger table {table!r} at {target.endpoint_url or 'AWS'}, {target.region}",
              file=sys.stderr)


def _jobs(args: argparse.Namespace) -> int:
    from fanout import ledger
    from fanout_cli.jobs import SinceError, format_table, job_row, since_iso

    try:
        since = since_iso(args.since) if args.since else None
    except SinceError as exc:
        raise CommandError(str(exc), EXIT_USAGE) from None
    ddb, table, target = _ledger_target(args)
    say_ledger_target(target, table, args)
    page = ledger.list_jobs(ddb, table, limit=args.limit, after=args.after, since=since,
                            source_prefix=args.source, statuses=args.status)
    rows = [job_row(job) for job in page.jobs]
    if args.json:
        print(json.dumps({"jobs": rows, "next": page.next_token,
                          "target": ledger_target_dict(target, table)}, indent=2))
        return EXIT_OK
    print(format_table(rows) if rows else "no jobs" + (" match" if args.status or args.since
                                                       or args.source else ""))
    if page.next_token:
        print(f"more: add --after {page.next_token}", file=sys.stderr)
    return EXIT_OK


def _cancel(args: argparse.Namespace) -> int:
    from fanout import ledger
    from fanout_cli.jobs import cancel_message, who

    ddb, table, target = _ledger_target(args)
    say_ledger_target(target, table, args)
    outcome = ledger.cancel_job(ddb, table, args.job, by=args.by or who())
    if outcome.job is None:
        raise CommandError(f"no job {args.job!r} in {table}")
    ok, line = cancel_message(outcome, args.job)
    if not ok:
        raise CommandError(line)
    if args.json:
        print(json.dumps(outcome.job | {"target": ledger_target_dict(target, table)}, indent=2,
                         default=str))
    else:
        print(line)
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    from fanout import ledger

    if args.follow:
        if args.ledger_table:
            raise CommandError("--follow reads a stack, not --ledger-table: pass --stack NAME",
                               EXIT_USAGE)
        target = resolve(stack=args.stack, endpoint_url=args.endpoint_url, embedded=False).use()
        return _status_follow(args, target)
    if args.endpoint_url or args.stack or args.ledger_table:
        from fanout_cli.jobs import explain, replayer_target

        ddb, table, target = _ledger_target(args)
        job = ledger.get_job(ddb, table, args.job)
        if job is None:
            raise CommandError(f"no job {args.job!r} in {table}")
        why = explain(job, target=replayer_target(target.stack, args.endpoint_url))
        job.pop("sk", None)
        job["job_id"] = job.pop("pk")
        job["why"] = why
        if job.get("status") not in (ledger.COMPLETE, ledger.FAILED, ledger.CANCELLED):
            # How long it has not moved (for a STALLED job: since it last did).
            from fanout_cli.local.stack import seconds_since_progress

            job["seconds_since_progress"] = seconds_since_progress(job)
        job["target"] = ledger_target_dict(target, table)
        print(json.dumps(job, indent=2, default=str))
        return 0
    for path in sorted(args.out_root.glob("*/summary.json")):
        summary = json.loads(path.read_text())
        if summary.get("job_id") == args.job:
            print(json.dumps(summary, indent=2))
            return 0
    raise CommandError(f"no job {args.job!r} under {args.out_root}/ (local runs; for a stack: "
                       "--stack NAME, with --endpoint-url URL for a local `fanout serve`)")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
