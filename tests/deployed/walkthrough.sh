# The local-stack walkthrough, typed into one shell with the exports `fanout serve` prints
# (tests/deployed/test_walkthrough.py runs it line by line against a real `fanout serve`).
# First terminal: fanout serve. Second terminal, in the project's folder:
#   source .venv/bin/activate
#   export AWS_ENDPOINT_URL=http://127.0.0.1:PORT AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1
# (the test runs it under `set -euo pipefail`: each line must succeed, or exit with the
# documented code its `|| test $? -eq 3` accepts)

fanout make-csv --rows 2000 --seed 1 --output data.csv

# Without --stack: the embedded runtime, whatever AWS_ENDPOINT_URL says (it says it ignored it).
fanout ingest data.csv

# Into the running stack: the target line names the stack, the endpoint and the region.
fanout ingest data.csv --stack fanout
fanout ingest data.csv --stack fanout --endpoint-url "$AWS_ENDPOINT_URL"   # the same target, said explicitly
# (the second upload of the same content starts no job: "already loaded as job ...")

# The AWS CLI (the pinned v1 does not read AWS_ENDPOINT_URL for sqs: pass --endpoint-url to every aws command)
out() { aws --endpoint-url "$AWS_ENDPOINT_URL" cloudformation describe-stacks --stack-name fanout \
          --query "Stacks[0].Outputs[?OutputKey=='$1'].OutputValue" --output text; }
aws --endpoint-url "$AWS_ENDPOINT_URL" s3 cp data.csv "s3://$(out BucketName)/uploads/copy.csv"
aws --endpoint-url "$AWS_ENDPOINT_URL" s3 cp data.csv "s3://$(out BucketName)/uploads/DATA.CSV"  # no job: the serve console says why
aws --endpoint-url "$AWS_ENDPOINT_URL" s3 ls "s3://$(out BucketName)/uploads/"
aws --endpoint-url "$AWS_ENDPOINT_URL" sqs get-queue-attributes --queue-url "$(out DlqUrl)" \
    --attribute-names ApproximateNumberOfMessages
aws --endpoint-url "$AWS_ENDPOINT_URL" logs filter-log-events --log-group-name "$(out WriterLogGroup)" \
    --limit 5 --query 'events[].message' --output text > /dev/null

# A file with a row the writer rejects (an empty key): exit 3, the rows wait in the DLQ.
printf 'account,offer_id,risk\nacct-1,o1,low\n,o2,high\nacct-3,o3,low\n' > bad.csv
fanout ingest bad.csv --stack fanout --json > bad.json || test $? -eq 3
JOB=$(python3 -c 'import json; print(json.load(open("bad.json"))["job_id"])')
fanout status "$JOB" --endpoint-url "$AWS_ENDPOINT_URL"       # the stack `fanout` at that endpoint
fanout status "$JOB" --stack fanout --follow || test $? -eq 3  # ends at once (3: a row was rejected)

dlq-replayer inspect --stack fanout                            # what did not land, and why
dlq-replayer export --stack fanout --out rejected.csv
# Fix the rows (a spreadsheet does as well): here, fill the empty account.
python3 -c 'import csv; rows = list(csv.DictReader(open("rejected.csv")))
for row in rows: row["account"] = row["account"] or "acct-2"
w = csv.DictWriter(open("rejected.csv", "w", newline=""), fieldnames=list(rows[0])); w.writeheader(); w.writerows(rows)'
dlq-replayer redrive --stack fanout --fixes rejected.csv --dry-run
dlq-replayer redrive --stack fanout --fixes rejected.csv
dlq-replayer inspect --stack fanout || test $? -eq 3           # 3: nothing waits
