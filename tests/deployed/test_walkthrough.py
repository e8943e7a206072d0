"""A real `fanout serve`, as a user runs it: the local-stack walkthrough of the tutorial
(docs/tutorial.md, its block marked `<!-- run: deployed -->`) typed into one shell with the
exports its banner prints, line by line; and a second
serve on its port fails at once, naming the port and its holder, without deploying
into the first one's MiniStack or writing its log."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fanout_cli.local import ministack
from tests.deployed.helpers import BIN

REPO = Path(__file__).resolve().parents[2]
TUTORIAL = REPO / "docs" / "tutorial.md"


def walkthrough() -> str:
    """The tutorial's walkthrough, less the two lines a user types to set up the shell (the
    test's shell has the commands on PATH and the banner's own export line)."""
    from tests.docs.test_docs import blocks

    (body,) = [body for _, body, marker, _ in blocks(TUTORIAL) if marker == "run: deployed"]
    lines = body.splitlines()
    assert lines[0] == "source .venv/bin/activate" and lines[1].startswith("export AWS_ENDPOINT_URL=")
    return "\n".join(lines[2:]) + "\n"
DEPLOY_TIMEOUT_S = 420


@dataclass
class Serve:
    process: subprocess.Popen[str]
    port: int
    output: Path
    exports: str  # the banner's `export ...` line
    bin: Path  # `fanout` and `dlq-replayer` of this checkout, and the pinned `aws`

    def text(self) -> str:
        return self.output.read_text()


def commands(folder: Path) -> Path:
    """`fanout`, `dlq-replayer` and `aws` as `source .venv/bin/activate` gives them, running
    this checkout's code (the virtualenv's console scripts may point at another)."""
    folder.mkdir()
    for name, module in (("fanout", "fanout_cli.cli"), ("dlq-replayer", "dlq_replayer")):
        script = folder / name
        script.write_text(f'#!/bin/sh\nPYTHONPATH="{REPO}" exec "{sys.executable}" -m {module} "$@"\n')
        script.chmod(0o755)
    (folder / "aws").symlink_to(BIN / "aws")
    return folder


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    folder = tmp_path_factory.mktemp("serve")
    port = ministack.free_port()
    output = folder / "serve.out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | {"PYTHONPATH": str(REPO)}
    with open(output, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "fanout_cli.cli", "serve", "--port", str(port)],
                                   stdout=out, stderr=subprocess.STDOUT, text=True, cwd=folder, env=env)
    try:
        deadline = time.monotonic() + DEPLOY_TIMEOUT_S
        while "Ctrl-C stops MiniStack" not in output.read_text():
            assert process.poll() is None, output.read_text()[-3000:]
            assert time.monotonic() < deadline, f"no banner in {DEPLOY_TIMEOUT_S} s: {output.read_text()[-3000:]}"
            time.sleep(1)
        exports = next(line.strip() for line in output.read_text().splitlines()
                       if line.strip().startswith("export AWS_ENDPOINT_URL="))
        yield Serve(process, port, output, exports, commands(folder / "bin"))
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def test_the_local_stack_walkthrough_works_line_by_line(serve: Serve, tmp_path: Path):
    # Given a shell with the banner's exports and the commands on PATH, no AWS profile
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PATH"] = f"{serve.bin}{os.pathsep}{env.get('PATH', '')}"
    script = f"set -euo pipefail\n{serve.exports}\n{walkthrough()}"
    # When the walkthrough is typed into it, each line echoed (bash -x) as it runs
    done = subprocess.run(["bash", "-x", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=900, check=False)
    log = done.stdout[-4000:] + done.stderr[-6000:]
    # Then every line worked
    assert done.returncode == 0, log
    err, out = done.stderr, done.stdout
    endpoint = f"http://127.0.0.1:{serve.port}"
    # the embedded runtime said it ignored the exported endpoint, and left nothing there
    assert ("target: the embedded runtime (moto in this process); AWS_ENDPOINT_URL ignored (add --stack "
            "NAME to load into that stack)") in err
    assert "Table already exists" not in log
    # each stack command named its target: the stack, the endpoint and where it came from
    assert f"target: stack 'fanout' at {endpoint}, us-east-1 (AWS_ENDPOINT_URL)" in err
    assert f"target: stack 'fanout' at {endpoint}, us-east-1 (--endpoint-url)" in err
    assert f"target     stack 'fanout' at {endpoint}, us-east-1" in out
    # the same content again started no job, and said which job loaded it
    assert re.search(r"already loaded as job data\.csv-[0-9a-f]+ \(the same content; no new job started\)",
                     err), err[-3000:]
    # status by endpoint alone found the job; the replayer sent the fixed row once
    assert '"ledger_table"' in out and '"stack": "fanout"' in out
    assert "redrive: would send 1 row(s) (1 fixed) from 1 DLQ message(s) back to the rows queue" in out
    assert "redrive: sent 1 row(s) (1 fixed) from 1 DLQ message(s) back to the rows queue" in out
    assert "came back" not in out
    # And the serve console said what happened, including the upload that started no job
    console = serve.text()
    assert "uploads/data.csv" in console and "already loaded as job" in console
    assert "uploads/copy.csv" in console
    assert re.search(r"uploads/DATA\.CSV \([\d,]+ bytes\): no job: the upload filter is case-sensitive "
                     r"\(\.csv\): name it DATA\.csv", console), console[-3000:]


def test_a_second_serve_on_the_same_port_fails_and_leaves_the_first_alone(serve: Serve, tmp_path: Path):
    first = ministack.local_client("cloudformation", f"http://127.0.0.1:{serve.port}")
    stacks_before = sorted(s["StackName"] for s in first.describe_stacks()["Stacks"])
    # When another `fanout serve` is started on the first one's port, with another stack name
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "fanout_cli.cli", "serve", "--port", str(serve.port),
                           "--stack-name", "intruder"], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env=os.environ | {"PYTHONPATH": str(REPO)}, check=False)
    # Then it fails at once with one line naming the port and the MiniStack holding it
    assert done.returncode == 1 and time.monotonic() - started < 60
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"fanout serve: error: port {serve.port} is in use by pid "), done.stderr
    assert "ministack" in done.stderr
    # And it deployed nothing into the first one's MiniStack, which still answers
    assert sorted(s["StackName"] for s in first.describe_stacks()["Stacks"]) == stacks_before
    assert "intruder" not in stacks_before
    assert serve.process.poll() is None
