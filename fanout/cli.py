"""The `fanout` command: ingest, make-csv, status (and serve)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fanout.mapping import Spec, SpecError, load_spec

INGEST_EPILOG = """\
exit status:
  0  every row landed (written or superseded by a later row with the same key)
  1  the pipeline itself failed (bad input file, emulator or handler failure)
  2  usage error (bad arguments or spec)
  3  the run finished, but some rows were rejected (see rejected.jsonl)

key templates: a column name (account), or text mixing literals and {column}
references ('A_{DOL Vehicle ID}', '{carrier}#{flight}'); {_line} is the row's source
line. Prefix NAME= to name the attribute (and NAME:N= to make it a number):
  --partition-key 'pk=A_{DOL Vehicle ID}' --sort-key 'line:N={_line}'
"""


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fanout", description="Load CSV files into DynamoDB through S3, SQS and Lambda.")
    commands = parser.add_subparsers(dest="command", required=True)

    ingest = commands.add_parser(
        "ingest", help="load a CSV through the pipeline on an embedded AWS emulator",
        description="Run FILE through the real splitter and writer handlers on an embedded "
                    "AWS emulator (moto): no AWS account needed.",
        epilog=INGEST_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    ingest.add_argument("file", type=Path, help="the CSV file to load")
    ingest.add_argument("--spec", type=Path, help="mapping spec (TOML): keys, types, transforms")
    ingest.add_argument("--partition-key", metavar="T",
                        help="partition key template (default: account, or the spec's)")
    ingest.add_argument("--sort-key", metavar="T",
                        help="sort key template (default: offer_id, or the spec's); '' for none")
    ingest.add_argument("--out", type=Path, metavar="DIR",
                        help="output folder (default: ./fanout-out/<file stem>)")
    ingest.add_argument("--range-bytes", type=_positive, metavar="N",
                        help="bytes per ranged S3 read in the splitter (default 8 MiB)")
    ingest.add_argument("--concurrency", type=_positive, default=4,
                        help="concurrent writer invocations (default 4)")
    ingest.add_argument("--emulator", choices=("inprocess", "server"), default="inprocess",
                        help="moto in this process (default) or a moto server on 127.0.0.1")
    ingest.add_argument("--json-copy", action="store_true",
                        help="also back up written items as JSON lines under json-copy/ in the bucket")
    ingest.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_stack_arguments(ingest)

    status = commands.add_parser(
        "status", help="show a job from the jobs ledger",
        description="Show a job: from a running `fanout serve` (--endpoint-url), a deployed "
                    "stack (--stack), or the summary.json files of local runs under ./fanout-out.")
    status.add_argument("job", help="the job id (printed by ingest, in summary.json)")
    where = status.add_mutually_exclusive_group()
    where.add_argument("--endpoint-url", help="a local stack started by `fanout serve`")
    where.add_argument("--stack", help="a deployed CloudFormation stack name")
    status.add_argument("--ledger-table", default=None, help="ledger table name (default fanout-jobs)")
    status.add_argument("--out-root", type=Path, default=Path("fanout-out"),
                        help="where local runs keep their outputs (default ./fanout-out)")
    status.add_argument("--follow", action="store_true",
                        help="with --stack: follow the job with a progress display until it ends")

    add_serve_parser(commands)

    make = commands.add_parser(
        "make-csv", help="generate test data (the old make-csv.py's columns)",
        description="Generate a CSV with columns account, offer_id, catalog_id, "
                    "account_type_code, offer_type_id, created, expire, risk.")
    make.add_argument("--rows", type=int, default=1000, help="rows to generate (default 1000)")
    make.add_argument("--accounts", type=int, default=20, help="distinct accounts (default 20)")
    make.add_argument("--output", type=Path, default=Path("data.csv"),
                      help="output file (default data.csv)")
    make.add_argument("--seed", type=int, help="random seed: the same seed gives the same file")
    return parser


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


def add_stack_arguments(ingest: argparse.ArgumentParser) -> None:
    ingest.add_argument("--stack", metavar="NAME",
                        help="load into this deployed stack (local `fanout serve` or AWS) instead "
                             "of the embedded emulator: upload under its prefix and follow the job")
    ingest.add_argument("--endpoint-url", metavar="URL",
                        help="with --stack: the stack's endpoint (default: AWS_ENDPOINT_URL, else AWS)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "make-csv":
        return _make_csv(args)
    if args.command == "ingest":
        return _ingest(args)
    if args.command == "serve":
        return _serve(args)
    if args.command == "status":
        return _status(args)
    return 2  # pragma: no cover - argparse enforces the choices


def _make_csv(args: argparse.Namespace) -> int:
    from fanout.makecsv import MakeCsvError, make_csv

    try:
        make_csv(args.rows, args.accounts, args.output, seed=args.seed)
    except MakeCsvError as exc:
        print(f"fanout make-csv: error: {exc}", file=sys.stderr)
        return 2
    return 0


def resolve_spec(spec_path: Path | None, partition_key: str | None, sort_key: str | None) -> Spec:
    spec = load_spec(spec_path) if spec_path else Spec.default()
    return spec.with_keys(partition_key, sort_key)


def _serve(args: argparse.Namespace) -> int:
    from fanout.local.serve import serve_forever

    context = dict(item.partition("=")[::2] for item in args.context)
    if args.spec:
        if not args.spec.is_file():
            print(f"fanout serve: error: {args.spec}: no such file", file=sys.stderr)
            return 2
        context["spec"] = str(args.spec.resolve())
    if args.ingest and not args.ingest.is_file():
        print(f"fanout serve: error: {args.ingest}: no such file", file=sys.stderr)
        return 2
    return serve_forever(port=args.port, stack_name=args.stack_name, context=context,
                         ingest=args.ingest)


def _ingest_stack(args: argparse.Namespace) -> int:
    from fanout.local.stack import StackError, ingest_to_stack

    try:
        return ingest_to_stack(args.file, args.stack, endpoint_url=args.endpoint_url,
                               as_json=args.json)
    except StackError as exc:
        print(f"fanout ingest: error: {exc}", file=sys.stderr)
        return 1


def _status_follow(args: argparse.Namespace) -> int:
    import time

    from fanout.local.stack import StackError, find_stack, follow_and_report

    try:
        stack = find_stack(args.stack, args.endpoint_url)
        return follow_and_report(stack, args.job, started=time.monotonic(), as_json=False,
                                 label=f"job {args.job}")
    except StackError as exc:
        print(f"fanout status: error: {exc}", file=sys.stderr)
        return 1


def _ingest(args: argparse.Namespace) -> int:
    from fanout.local.ingest import EXIT_FAILED, EXIT_USAGE, IngestOptions, ingest, print_summary

    if not args.file.is_file():
        print(f"fanout ingest: error: {args.file}: no such file", file=sys.stderr)
        return EXIT_USAGE
    if args.stack:
        return _ingest_stack(args)
    try:
        spec = resolve_spec(args.spec, args.partition_key, args.sort_key)
    except SpecError as exc:
        print(f"fanout ingest: error: spec: {exc}", file=sys.stderr)
        return EXIT_USAGE
    out = args.out or Path("fanout-out") / args.file.stem
    try:
        result = ingest(IngestOptions(
            file=args.file, spec=spec, out_dir=out, range_bytes=args.range_bytes,
            concurrency=args.concurrency, emulator=args.emulator, progress=sys.stderr,
            json_copy=args.json_copy))
    except Exception as exc:  # the pipeline itself failed: say so, exit 1
        print(f"fanout ingest: pipeline failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(result.summary, indent=2))
    else:
        print_summary(result.summary)
    return result.exit_code


def _status(args: argparse.Namespace) -> int:
    from fanout import ledger
    from fanout.settings import ResourceNames

    if args.follow:
        if not args.stack:
            print("fanout status: error: --follow needs --stack NAME", file=sys.stderr)
            return 2
        return _status_follow(args)
    if args.endpoint_url or args.stack:
        from fanout.aws import client

        table = args.ledger_table or ResourceNames().ledger_table
        if args.stack:
            cloudformation = client("cloudformation")
            outputs = cloudformation.describe_stacks(StackName=args.stack)["Stacks"][0].get("Outputs", [])
            table = {o["OutputKey"]: o["OutputValue"] for o in outputs}.get("LedgerTableName", table)
        ddb = client("dynamodb", endpoint_url=args.endpoint_url)
        job = ledger.get_job(ddb, table, args.job)
        if job is None:
            print(f"fanout status: no job {args.job!r} in {table}", file=sys.stderr)
            return 1
        if job.get("status") != ledger.COMPLETE and "messages_total" in job:
            counts = ledger.totals(ledger.read_message_counts(ddb, table, args.job))
            job |= {"rows_written": counts.written, "rows_rejected": counts.rejected,
                    "rows_superseded": counts.superseded}
        job.pop("sk", None)
        job["job_id"] = job.pop("pk")
        print(json.dumps(job, indent=2, default=str))
        return 0
    for path in sorted(args.out_root.glob("*/summary.json")):
        summary = json.loads(path.read_text())
        if summary.get("job_id") == args.job:
            print(json.dumps(summary, indent=2))
            return 0
    print(f"fanout status: no job {args.job!r} under {args.out_root}/ (use --endpoint-url or --stack "
          "for a running or deployed stack)", file=sys.stderr)
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
