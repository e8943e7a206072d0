"""What `fanout serve` is made of, on the running MiniStack: stopping it stops its Lambda
workers, the activity it prints, and the banner's commands."""

from __future__ import annotations

import io
import json
import os
import subprocess
import zipfile
from pathlib import Path

from fanout_cli.local import ministack
from fanout_cli.local.serve import Activity, banner
from fanout_cli.local.stack import find_stack
from tests.deployed.conftest import Local
from tests.deployed.helpers import BIN, wait_until, write_csv


def test_stopping_ministack_stops_its_lambda_workers(tmp_path: Path):
    # Given a MiniStack of its own with a warm Python Lambda worker
    emulator = ministack.MiniStack(log_path=tmp_path / "ministack.log").start()
    try:
        code = io.BytesIO()
        with zipfile.ZipFile(code, "w") as archive:
            archive.writestr("probe.py", "import os\ndef handler(event, context):\n"
                                         "    return {'pid': os.getpid()}\n")
        functions = ministack.local_client("lambda", emulator.endpoint_url)
        functions.create_function(FunctionName="probe", Runtime="python3.13", Handler="probe.handler",
                                  Role="arn:aws:iam::000000000000:role/probe",
                                  Code={"ZipFile": code.getvalue()})
        answer = functions.invoke(FunctionName="probe")["Payload"].read()
        worker = int(json.loads(answer)["pid"])
        assert worker != emulator.process.pid and os.getpgid(worker) == emulator.process.pid
        scratch = emulator.scratch
        assert scratch is not None and any(scratch.iterdir())  # the worker unpacked its code here
    finally:
        group = emulator.process.pid if emulator.process else None
        emulator.stop()
    # Then nothing of its process group is left, the worker included, and the port is free
    assert group is not None
    try:
        os.killpg(group, 0)
        raise AssertionError(f"process group {group} still has processes")
    except ProcessLookupError:
        pass
    assert not emulator.healthy()
    assert scratch is not None and not scratch.exists()  # the workers' unpacked code went too


def test_activity_shows_uploads_jobs_and_rows_per_second(local: Local, stack: ministack.Deployment,
                                                         tmp_path: Path):
    out = io.StringIO()
    deployed = find_stack(stack.stack_name, local.endpoint_url)
    activity = Activity(deployed, out)
    activity.poll()  # what was uploaded before is reported once, now
    out.seek(0)
    out.truncate()
    data = tmp_path / "watched.csv"
    write_csv(data, 50, tag="w")
    deployed.s3.upload_file(str(data), deployed.bucket, "uploads/watched.csv")

    def complete() -> bool:
        activity.poll()
        return "watched.csv" in out.getvalue() and "COMPLETE" in out.getvalue()
    wait_until(complete, timeout_s=90, what="the activity to report the job complete")
    lines = out.getvalue().splitlines()
    assert any("upload  s3://" in line and "uploads/watched.csv" in line for line in lines)
    done = next(line for line in lines if "COMPLETE" in line)
    assert "50 rows read, 50 written, 0 rejected, 0 superseded" in done and "rows/s" in done
    assert "HTTP" not in out.getvalue() and "GET /" not in out.getvalue()


def test_the_banner_says_what_to_export_and_run(local: Local, stack: ministack.Deployment,
                                                tmp_path: Path):
    text = banner(stack, tmp_path / "m.log", tmp_path / "c.log")
    assert f"export AWS_ENDPOINT_URL={local.endpoint_url} AWS_ACCESS_KEY_ID=test" in text
    # The AWS CLI lines pass the endpoint: the pinned v1 ignores AWS_ENDPOINT_URL for sqs
    aws = 'aws --endpoint-url "$AWS_ENDPOINT_URL"'
    assert f"{aws} s3 cp data.csv s3://{stack.outputs['BucketName']}/uploads/" in text
    assert f"fanout ingest data.csv --stack {stack.stack_name} --endpoint-url {local.endpoint_url}" in text
    assert f"fanout status JOB --stack {stack.stack_name} --endpoint-url {local.endpoint_url}" in text
    assert f"{aws} logs filter-log-events --log-group-name /aws/fanout/{stack.stack_name}/writer" in text
    assert f"(target: stack '{stack.stack_name}' at {local.endpoint_url}, us-east-1 (--endpoint-url))" in text


def test_the_tools_are_the_pinned_versions():
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    pins = dict(line.split(" := ", 1) for line in makefile.splitlines() if " := " in line)
    assert pins["MINISTACK_VERSION"] == ministack.MINISTACK_VERSION
    installed = subprocess.run(
        [str(ministack.ministack_python()), "-c",
         "import importlib.metadata as m; print(m.version('ministack'))"],
        capture_output=True, text=True, check=True).stdout.strip()
    assert installed == ministack.MINISTACK_VERSION
    cdk = subprocess.run([str(ministack.cdk_cli()), "--version"], capture_output=True, text=True,
                         check=True, env=ministack.cdk_env("http://127.0.0.1:1")).stdout
    assert cdk.startswith(pins["CDK_CLI_VERSION"] + " ")


def test_fanout_serve_ingest_deploys_loads_and_stops(tmp_path: Path):
    """`make demo`'s command, whole: its own MiniStack, bootstrap, deploy, the load, the
    summary, exit 0, and nothing left running."""
    data = tmp_path / "demo.csv"
    write_csv(data, 75, tag="demo")
    port = ministack.free_port()
    done = subprocess.run([str(BIN / "fanout"), "serve", "--port", str(port), "--ingest", str(data)],
                          capture_output=True, text=True, timeout=400, check=False, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "status     COMPLETE" in done.stdout and "rows read  75" in done.stdout
    assert "  written    75" in done.stdout
    assert not ministack.MiniStack(port=port).healthy()  # stopped with it
