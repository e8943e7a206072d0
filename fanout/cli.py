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

    serve = commands.add_parser(
        "serve", help="run the pipeline as a local stack on 127.0.0.1 until Ctrl-C",
        description="Start a moto server with the bucket, queues, DLQ, table and ledger, and "
                    "run the splitter and writer behind them; upload with the AWS CLI.")
    serve.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    serve.add_argument("--spec", type=Path, help="mapping spec (TOML): keys, types, transforms")
    serve.add_argument("--partition-key", metavar="T", help="partition key template")
    serve.add_argument("--sort-key", metavar="T", help="sort key template; '' for none")
    serve.add_argument("--concurrency", type=_positive, default=4,
                       help="concurrent writer invocations (default 4)")

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

    try:
        spec = resolve_spec(args.spec, args.partition_key, args.sort_key)
    except SpecError as exc:
        print(f"fanout serve: error: spec: {exc}", file=sys.stderr)
        return 2
    return serve_forever(spec, port=args.port, concurrency=args.concurrency)


def _ingest(args: argparse.Namespace) -> int:
    from fanout.local.ingest import EXIT_FAILED, EXIT_USAGE, IngestOptions, ingest, print_summary

    if not args.file.is_file():
        print(f"fanout ingest: error: {args.file}: no such file", file=sys.stderr)
        return EXIT_USAGE
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
