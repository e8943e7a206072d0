"""The deploy section's commands, run as written: `make bootstrap`, then the README's
`make deploy CDK_ARGS='-c spec=... -c alarm_email=...'` with a spec `fanout spec infer`
wrote, against a MiniStack that evaluates IAM (`AUTH=true`, over TLS), with only what a
user exports to reach an endpoint (AWS_ENDPOINT_URL, credentials, a region).

It proves: a non-interactive `make deploy` stops at the IAM approval unless it is given
`--require-approval never`, and deploys with it; the stack's outputs name the dashboard;
the deployed alarm topic's policy lets CloudWatch of this account publish; the DLQ keeps
messages longer than the rows queue and takes dead letters from it alone. What MiniStack
1.5.33 cannot show the template assertions in tests/infra/test_real_account.py stand in
for: alarm delivery, Lambda's recursive-loop detection (its CloudFormation does not pass
`RecursiveLoop` on) and the ledger table's TTL (it ignores `TimeToLiveSpecification`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fanout_cli.cli import main
from fanout_cli.local import ministack

STACK = "fanout"  # the README's: `make deploy` deploys the default stack name
MAKE_TIMEOUT_S = 600
# The local waits (the deployed tier's), so the stack matches the other deployed tests.
WAITS = " ".join(f"-c {k}={v}" for k, v in ministack.LOCAL_CONTEXT.items())


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ministack.MiniStack]:
    folder = tmp_path_factory.mktemp("ministack-make")
    with ministack.MiniStack(log_path=folder / "ministack.log", auth=True) as running:
        yield running


def make(target: str, emulator: ministack.MiniStack, cdk_args: str, log: Path
         ) -> subprocess.CompletedProcess[str]:
    """`make TARGET CDK_ARGS=...` from the repo root, with what a user exports for an
    endpoint. The virtualenv is this one (`make setup` made it; `-o` keeps make from
    redoing it)."""
    venv = Path(sys.prefix)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "CDK_"))} | ministack.client_env(
               emulator.endpoint_url, ca_bundle=emulator.ca_bundle)
    command = ["make", "--no-print-directory", f"VENV={venv}", "-o", f"{venv}/bin/fanout", target,
               f"CDK_ARGS={cdk_args}"]
    done = subprocess.run(command, cwd=ministack.REPO_ROOT, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=MAKE_TIMEOUT_S, check=False)
    log.write_text(f"$ {' '.join(command)}\n{done.stdout}\n{done.stderr}")
    return done


def test_make_bootstrap_and_a_non_interactive_make_deploy_as_the_docs_say(
        emulator: ministack.MiniStack, tmp_path: Path) -> None:
    # The README's spec: `fanout spec infer data.csv --out spec.toml` on a sample.
    (tmp_path / "data.csv").write_text("sku,name,price\nA-1,kettle,19.5\nA-2,toaster,24\n")
    assert main(["spec", "infer", str(tmp_path / "data.csv"), "--out",
                 str(tmp_path / "spec.toml")]) == 0
    readme = f"-c spec={tmp_path / 'spec.toml'} -c alarm_email=you@example.com"
    # The spec's path is absolute (the README's `../spec.toml` is the same file seen from
    # infra/, where cdk runs; a spec.toml at the repo root would be shared by every test).
    # Added to the README's CDK_ARGS: each synthesizes into a folder of its own
    # (`--output`), not infra/cdk.out, which other tests and a running `fanout serve` may
    # use; and the deployed tier's short waits (WAITS), as in the other deployed tests.
    out = f"--output {tmp_path / 'cdk.out'}"
    bootstrap = make("bootstrap", emulator, out, tmp_path / "bootstrap.log")
    assert bootstrap.returncode == 0, bootstrap.stdout[-2000:] + bootstrap.stderr[-2000:]

    # No terminal to approve the IAM changes: cdk refuses, and says so.
    asked = make("deploy", emulator, f"{readme} {out} {WAITS}", tmp_path / "deploy-asked.log")
    assert asked.returncode != 0
    assert "(TTY) is not attached so we are unable to get a confirmation" in asked.stderr

    deployed = make("deploy", emulator, f"{readme} --require-approval never {out} {WAITS}",
                    tmp_path / "deploy.log")
    assert deployed.returncode == 0, deployed.stdout[-2000:] + deployed.stderr[-2000:]

    outputs = ministack.stack_outputs(emulator.endpoint_url, STACK, ca_bundle=emulator.ca_bundle)
    assert outputs["DashboardName"] == STACK

    def client(service: str):  # type: ignore[no-untyped-def]
        return ministack.local_client(service, emulator.endpoint_url, ca_bundle=emulator.ca_bundle)

    # The spec reached the functions, and the alarm e-mail is subscribed to the alarm topic.
    splitter = client("lambda").get_function_configuration(FunctionName=outputs["SplitterFunctionName"])
    deployed_spec = json.loads(splitter["Environment"]["Variables"]["FANOUT_SPEC_JSON"])
    assert deployed_spec["table"]["partition_key"] == {"name": "sku", "type": "S"}, deployed_spec
    subscribed = client("sns").list_subscriptions_by_topic(TopicArn=outputs["AlarmTopicArn"])
    assert [(s["Protocol"], s["Endpoint"]) for s in subscribed["Subscriptions"]] == [
        ("email", "you@example.com")]

    policy = json.loads(client("sns").get_topic_attributes(
        TopicArn=outputs["AlarmTopicArn"])["Attributes"]["Policy"])
    (allow,) = [s for s in policy["Statement"] if s["Effect"] == "Allow"]
    assert allow["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert allow["Condition"]["StringEquals"] == {"aws:SourceAccount": ministack.ACCOUNT}

    sqs = client("sqs")
    rows = sqs.get_queue_attributes(QueueUrl=outputs["RowsQueueUrl"], AttributeNames=["All"])
    dlq = sqs.get_queue_attributes(QueueUrl=outputs["DlqUrl"], AttributeNames=["All"])
    assert int(dlq["Attributes"]["MessageRetentionPeriod"]) == 14 * 86400
    assert int(rows["Attributes"]["MessageRetentionPeriod"]) == 7 * 86400
    allowed = json.loads(dlq["Attributes"]["RedriveAllowPolicy"])
    assert allowed == {"redrivePermission": "byQueue",
                       "sourceQueueArns": [rows["Attributes"]["QueueArn"]]}
