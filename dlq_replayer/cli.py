"""The `dlq-replayer` command (also `python -m dlq_replayer`)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from dlq_replayer.dlq import DEFAULT_VISIBILITY_S, DlqReader
from dlq_replayer.export import FixesError, export_rows, read_fixes
from dlq_replayer.inspect import format_text, read_selected, summarize
from dlq_replayer.plan import PURGE, REDRIVE, Filters
from dlq_replayer.redrive import CancelledJobs, Options, Outcome, run
from dlq_replayer.target import Target, TargetError, discover
from fanout_cli.failures import OneLineParser, describe, one_line, positive_int
from fanout_cli.target import resolve

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOTHING = 3
EXIT_PARTIAL = 4

EPILOG = """\
target (one of; a line on stderr names the one used):
  --stack NAME         a deployed stack (outputs DlqUrl, RowsQueueUrl, BucketName, TableName)
                       at --endpoint-url URL, else AWS_ENDPOINT_URL, else AWS
  --endpoint-url URL   alone: the stack `fanout` there (a local `fanout serve`'s default)
  --dlq-url U --rows-queue-url U   the queues themselves

exit status:
  0  done
  1  failure: queues or stack not found, AWS not reachable (no credentials, nothing
     listening at --endpoint-url), an AWS error, or no message could be completed;
     one line on stderr says which
  2  usage error (bad arguments, unreadable fixes file, purge without --yes off a terminal)
  3  nothing was done: nothing matched the filters (or purge was cancelled)
  4  partial run: some of it was done, but a message could not be sent back or deleted,
     rows of the fixes file were not found in the DLQ, or messages were held by another
     reader; run again to finish
"""


def add_target_arguments(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """Where the DLQ is, and --json. Taken before the command (`dlq-replayer --stack NAME
    inspect`) or after it (`dlq-replayer inspect --stack NAME`): the top-level parser holds
    the defaults, and a command's own copy sets a value only when it is given there."""
    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    where = parser.add_argument_group("target")
    where.add_argument("--endpoint-url", metavar="URL", default=default(None),
                       help="AWS endpoint, e.g. http://127.0.0.1:4566 of `fanout serve`")
    where.add_argument("--stack", metavar="NAME", default=default(None),
                       help="CloudFormation stack name")
    where.add_argument("--region", default=default(None), help="AWS region (default: us-east-1)")
    where.add_argument("--dlq-url", metavar="URL", default=default(None),
                       help="the dead-letter queue's URL")
    where.add_argument("--rows-queue-url", metavar="URL", default=default(None),
                       help="the rows queue's URL")
    where.add_argument("--visibility-timeout", type=positive_int,
                       default=default(DEFAULT_VISIBILITY_S), metavar="S",
                       help="seconds a read holds a DLQ message away from other readers "
                            f"(default {DEFAULT_VISIBILITY_S}); a killed run's messages "
                            "reappear after it")
    parser.add_argument("--json", action="store_true", default=default(False),
                        help="print the result as JSON")


def build_parser() -> argparse.ArgumentParser:
    common = OneLineParser(add_help=False)
    add_target_arguments(common, defaults=False)

    selection = OneLineParser(add_help=False)
    chosen = selection.add_argument_group("selection")
    chosen.add_argument("--job", action="append", default=[], metavar="ID",
                        help="only this job (repeatable)")
    chosen.add_argument("--reason", action="append", default=[], metavar="CODE",
                        help="only rows rejected for this reason, e.g. empty_key, bad_number, "
                             "retries_exhausted (repeatable)")

    parser = OneLineParser(
        prog="dlq-replayer",
        description="Inspect, export, fix and redrive what waits in fanout's dead-letter queue.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_target_arguments(parser, defaults=True)
    commands = parser.add_subparsers(dest="command", required=True)
    formatter = argparse.RawDescriptionHelpFormatter

    inspect = commands.add_parser(
        "inspect", parents=[common, selection], epilog=EPILOG, formatter_class=formatter,
        help="messages and rows waiting in the DLQ, by job and by reason",
        description="Show what waits in the DLQ, grouped by job and by reason, with samples. "
                    "Reads without consuming: every message is visible again afterwards.")
    inspect.add_argument("--samples", type=int, default=3, metavar="N",
                         help="sample rows per reason (default 3)")

    export = commands.add_parser(
        "export", parents=[common, selection], epilog=EPILOG, formatter_class=formatter,
        help="write every waiting row to a .csv or .jsonl file you can fix",
        description="Write every waiting row (one per CSV line) with its job, message, line, "
                    "reason and fields under the header's column names. Fix the fields, "
                    "then `redrive --fixes FILE`. Do not edit the _job/_message/_line columns.")
    export.add_argument("--out", type=Path, required=True, metavar="FILE",
                        help="output file: .csv (spreadsheet) or .jsonl")

    redrive = commands.add_parser(
        "redrive", parents=[common, selection], epilog=EPILOG, formatter_class=formatter,
        help="send waiting rows back to the rows queue (as they were, or fixed)",
        description="Send selected rows back to the rows queue and delete their DLQ messages "
                    "(only after SQS accepted the replacement). Messages that failed retries "
                    "go back unchanged; rejected rows go back as replayed rows messages "
                    "(useful after a spec fix). With --fixes, only the rows in FILE go back, "
                    "with the values in FILE; the other rows stay in the DLQ.")
    _action_options(redrive)
    redrive.add_argument("--fixes", type=Path, metavar="FILE",
                         help="an edited `export` file: send its rows back instead")
    redrive.add_argument("--rate", type=_positive_float, metavar="R",
                         help="at most R DLQ messages per second (default: no limit)")
    redrive.add_argument("--include-cancelled", action="store_true",
                         help="also send back rows of jobs that were cancelled (by default they "
                              "stay in the DLQ, with a note saying which jobs)")

    purge = commands.add_parser(
        "purge", parents=[common, selection], epilog=EPILOG, formatter_class=formatter,
        help="delete selected rows from the DLQ (asks first, or --yes)",
        description="Delete the selected rows from the DLQ for good. Rows of a message that "
                    "do not match stay in the DLQ.")
    _action_options(purge)
    purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    return parser


def _action_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true",
                        help="show what would be done; change nothing")
    parser.add_argument("--max", type=positive_int, metavar="N", dest="max_messages",
                        help="act on at most N DLQ messages")




def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number more than 0 (got {text!r})") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 (got {text})")
    return value


def main(argv: list[str] | None = None, *, stdout: TextIO | None = None,
         stderr: TextIO | None = None, stdin: TextIO | None = None,
         target: Target | None = None,
         hook: Callable[[str, Any], None] | None = None) -> int:
    """Run the command; tests pass their own streams, target and fault hook."""
    stdout, stderr, stdin = stdout or sys.stdout, stderr or sys.stderr, stdin or sys.stdin
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)

    def fail(code: int, text: str) -> int:
        print(f"dlq-replayer {args.command}: error: {one_line(text)}", file=stderr)
        return code

    try:
        return _run(args, fail, stdout, stderr, stdin, target, hook)
    except KeyboardInterrupt:
        return fail(130, "interrupted (messages it held reappear after their visibility timeout)")
    except Exception as exc:  # AWS errors, no credentials, nothing at the endpoint: one line
        return fail(EXIT_FAILED, describe(exc) or f"{type(exc).__name__}: {exc}")


def _run(args: argparse.Namespace, fail: Callable[[int, str], int], stdout: TextIO,
         stderr: TextIO, stdin: TextIO, target: Target | None,
         hook: Callable[[str, Any], None] | None) -> int:
    if target is None:
        if not (args.endpoint_url or args.stack or (args.dlq_url and args.rows_queue_url)):
            return fail(EXIT_USAGE, "say where: --stack NAME (with --endpoint-url URL for a "
                                    "local `fanout serve`), or --dlq-url and --rows-queue-url")
        # The queues by URL alone need no stack; otherwise the stack, resolved as every
        # command resolves it (fanout_cli/target.py).
        by_url = bool(args.dlq_url and args.rows_queue_url and not args.stack)
        where = resolve(stack=args.stack, endpoint_url=args.endpoint_url, embedded=False,
                        region=args.region)
        try:
            target = discover(endpoint_url=where.endpoint_url,
                              stack=None if by_url else where.stack, dlq_url=args.dlq_url,
                              rows_queue_url=args.rows_queue_url, region=where.region)
        except TargetError as exc:
            return fail(EXIT_FAILED, str(exc))
        if not args.json:
            stderr.write((f"target: the queues {target.dlq_url} and {target.rows_queue_url}"
                          if by_url else where.line()) + "\n")
    reader = DlqReader(target.sqs, target.dlq_url, visibility_s=args.visibility_timeout,
                       wait_s=target.wait_s)
    filters = Filters(frozenset(args.job), frozenset(args.reason))
    try:
        if args.command in ("inspect", "export"):
            return _read_only(args, reader, filters, stdout)
        fixes = None
        if args.command == REDRIVE and args.fixes:
            try:
                fixes = read_fixes(args.fixes)
            except (OSError, FixesError) as exc:
                return fail(EXIT_USAGE, f"fixes: {exc}")
        confirm = None
        if args.command == PURGE and not args.yes and not args.dry_run:
            if not stdin.isatty():
                return fail(EXIT_USAGE, "refusing to purge without --yes (not on a terminal)")
            confirm = _ask(stdin, stderr)
        outcome = run(target, Options(
            op=args.command, filters=filters, fixes=fixes, dry_run=args.dry_run,
            max_messages=args.max_messages, rate=getattr(args, "rate", None), confirm=confirm,
            hook=hook, progress=None if args.json else stderr,
            cancelled=CancelledJobs(target.ledger, target.ledger_table) if target.ledger else None,
            include_cancelled=getattr(args, "include_cancelled", False)), reader)
    except (OSError, FixesError) as exc:
        return fail(EXIT_FAILED, str(exc))
    _print_outcome(outcome, args.json, stdout, stderr)
    return exit_code(outcome)


def exit_code(outcome: Outcome) -> int:
    """0 done; 1 nothing could be completed; 3 nothing done; 4 partial (see EPILOG)."""
    if outcome.messages_failed and not outcome.messages_done:
        return EXIT_FAILED
    if outcome.cancelled or not outcome.matched:
        return EXIT_NOTHING
    if outcome.partial:
        return EXIT_PARTIAL
    return EXIT_OK


def _read_only(args: argparse.Namespace, reader: DlqReader, filters: Filters,
               stdout: TextIO) -> int:
    found = read_selected(reader, filters)
    try:
        if args.command == "inspect":
            summary = summarize(found, samples=args.samples)
            stdout.write(json.dumps(summary, indent=2) + "\n" if args.json
                         else format_text(summary))
            return EXIT_OK if summary["rows"] else EXIT_NOTHING
        count = export_rows(found.rows, args.out)
        result = {"rows": count, "out": str(args.out), "jobs": found.rows.jobs(),
                  "messages": found.messages}
    finally:
        found.rows.close()
    if args.json:
        stdout.write(json.dumps(result, indent=2) + "\n")
    else:
        stdout.write(f"exported {count:,} row(s) from {result['messages']:,} DLQ message(s) "
                     f"to {args.out}\n")
    return EXIT_OK if count else EXIT_NOTHING


def _ask(stdin: TextIO, stderr: TextIO) -> Callable[[dict[str, Any]], bool]:
    def confirm(summary: dict[str, Any]) -> bool:
        reasons = ", ".join(f"{r} {n:,}" for r, n in summary["by_reason"].items())
        stderr.write(f"Delete {summary['rows']:,} row(s) in {summary['messages']:,} DLQ "
                     f"message(s) for good [{reasons}]? Type 'yes' to confirm: ")
        stderr.flush()
        return stdin.readline().strip().lower() in ("y", "yes")
    return confirm


def _print_outcome(outcome: Outcome, as_json: bool, stdout: TextIO, stderr: TextIO) -> None:
    if as_json:
        stdout.write(json.dumps(outcome.as_dict(), indent=2) + "\n")
        return
    if outcome.cancelled:
        stdout.write("purge cancelled: nothing deleted\n")
        return
    sent, deleted = ("would send", "would delete") if outcome.dry_run else ("sent", "deleted")
    if not outcome.matched:
        stdout.write(f"{outcome.op}: nothing in the DLQ matches "
                     f"({outcome.messages_seen:,} message(s) looked at)\n")
    elif outcome.op == PURGE:
        stdout.write(f"purge: {deleted} {outcome.rows_purged:,} row(s) in "
                     f"{outcome.messages_done:,} DLQ message(s)\n")
    else:
        fixed = f" ({outcome.rows_fixed:,} fixed)" if outcome.rows_fixed else ""
        stdout.write(f"redrive: {sent} {outcome.rows_sent:,} row(s){fixed} from "
                     f"{outcome.messages_done:,} DLQ message(s) back to the rows queue\n")
    if outcome.rows_refused:
        stdout.write(f"  {outcome.rows_refused:,} row(s) of cancelled jobs stay in the DLQ "
                     "(--include-cancelled sends them too)\n")
    if outcome.rows_came_back:
        stdout.write(f"  {outcome.rows_came_back:,} row(s) came back to the DLQ during this run "
                     f"({outcome.messages_came_back:,} message(s): rejected again); they wait "
                     "for the next run (`dlq-replayer inspect` says why)\n")
    if outcome.rows_kept:
        stdout.write(f"  {outcome.rows_kept:,} other row(s) of those messages stay in the DLQ "
                     f"({outcome.remainders:,} remainder message(s))\n")
    if outcome.by_reason:
        reasons = ", ".join(f"{r} {n:,}" for r, n in outcome.by_reason.most_common())
        stdout.write(f"  by reason: {reasons}\n")
    for note in dict.fromkeys(outcome.notes):
        stderr.write(f"note: {note}\n")
    if outcome.messages_failed:
        stderr.write(f"{outcome.messages_failed:,} message(s) were not completed and stay in "
                     "the DLQ:\n")
        for error in outcome.errors[:10]:
            stderr.write(f"  {error}\n")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
