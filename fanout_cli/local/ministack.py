"""The real CDK app deployed into MiniStack on 127.0.0.1: start, bootstrap, layer, deploy, stop.

MiniStack (PyPI `ministack`, pinned in the Makefile) is the emulator: it serves the AWS
APIs, runs CloudFormation, delivers S3 notifications to the splitter, runs the writer's
SQS event source mapping and starts Python Lambdas as worker subprocesses of its own
interpreter. What is ours: starting it in its own process group on a free loopback port
(so stopping it stops its Lambda workers too), and `cdk bootstrap` / `cdk deploy` of
`infra/app.py` (whose Powertools layer is built from the installed pinned package, as
for AWS) with the context options that shorten its waits.

MiniStack lives in its own virtualenv (`.venv/ministack`, made by `make setup`): it pins a
botocore of its own, and its interpreter stands in for the Lambda runtime (boto3, no
Powertools: that comes from the layer, as in AWS). The cdk CLI is the pinned npm package
in `.venv/cdk`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from fanout.aws import CLIENT_CONFIG
from fanout.settings import min_visibility_timeout_s

# The pinned MiniStack; `make setup` installs this version into .venv/ministack.
MINISTACK_VERSION = "1.5.33"
ACCOUNT = "000000000000"  # MiniStack's default account
REGION = "us-east-1"
# Any credentials work with AUTH off; these are the ones the banner tells users to export.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
               "AWS_DEFAULT_REGION": REGION}
REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA_DIR = REPO_ROOT / "infra"
# The stack's waits, shortened for a local run. MiniStack counts a worker's start
# (interpreter, boto3, Powertools: seconds on a busy two-core machine) against the
# invocation's timeout, so the writer keeps 30 s; the visibility timeout is the shortest
# the ledger's timing rule allows with it (91 s: a failed writer message is received again
# after that instead of 6 minutes, and a writer that died, say at its timeout, finds its
# hole voidable then). The reconciler (an EventBridge rule, which MiniStack fires) runs
# every minute, EventBridge's shortest rate, as in AWS; it stalls a job after 2 minutes
# without progress instead of an hour: more than what can still move a job with these
# waits (a redelivery after 91 s, a dead writer's ticket voided 2 x 30 s + 30 s after it
# was taken), so a job whose messages went to the DLQ or whose split died ends STALLED
# within about 3 minutes. Everything else is the template AWS gets.
LOCAL_WRITER_TIMEOUT_S = 30
LOCAL_CONTEXT = {"writer_timeout_s": str(LOCAL_WRITER_TIMEOUT_S),
                 "visibility_timeout_s": str(min_visibility_timeout_s(LOCAL_WRITER_TIMEOUT_S)),
                 "stall_after_s": "120", "reconcile_every_s": "60"}
START_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0


class MiniStackError(RuntimeError):
    """MiniStack, the cdk CLI or a deployment failed; the message says what and where."""


def tool(env_name: str, default: Path, what: str) -> Path:
    """A pinned tool that `make setup` installs next to the project's virtualenv."""
    path = Path(os.environ.get(env_name) or default)
    if not path.exists():
        raise MiniStackError(f"{what} not found at {path}: run `make setup` (or set {env_name})")
    return path


def ministack_python() -> Path:
    return tool("FANOUT_MINISTACK_PYTHON", Path(sys.prefix) / "ministack" / "bin" / "python",
                "MiniStack's interpreter")


def cdk_cli() -> Path:
    return tool("FANOUT_CDK", Path(sys.prefix) / "cdk" / "node_modules" / ".bin" / "cdk",
                "the cdk CLI")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_holder(port: int, host: str = "127.0.0.1") -> str | None:
    """None if this process can listen on host:port; else who holds it, as well as Linux's
    /proc tells (`pid 4242: python -m ministack`), or `another process`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closed one's TIME_WAIT is free
        try:
            s.bind((host, port))
            return None
        except OSError:
            pass
    return _listener(port) or "another process"


def _listener(port: int) -> str | None:
    """The process listening on TCP `port`, from /proc (Linux; None elsewhere or unseen)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # local address HEX:PORT, state 0A = LISTEN, inode in column 10
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if any(os.readlink(fd) in wanted for fd in (proc / "fd").iterdir()):
                command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                return f"pid {proc.name} ({' '.join(command.split())[:120]})"
        except OSError:  # gone, or another user's
            continue
    return None


def local_client(service: str, endpoint_url: str, *, ca_bundle: Path | None = None) -> Any:
    """A boto3 client for the emulator with its credentials (and, for an `auth` MiniStack,
    its certificate to trust)."""
    return boto3.session.Session(
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"], region_name=REGION,
    ).client(service, endpoint_url=endpoint_url, config=CLIENT_CONFIG,
             verify=str(ca_bundle) if ca_bundle else None)


def client_env(endpoint_url: str, *, ca_bundle: Path | None = None) -> dict[str, str]:
    """What a second terminal exports to reach the local stack (the AWS CLI, boto3, cdk;
    botocore and node read the certificate an `auth` MiniStack serves from these two)."""
    trust = {"AWS_CA_BUNDLE": str(ca_bundle), "NODE_EXTRA_CA_CERTS": str(ca_bundle)} if ca_bundle else {}
    return {"AWS_ENDPOINT_URL": endpoint_url, **CREDENTIALS, **trust}


class MiniStack:
    """`python -m ministack` on 127.0.0.1:PORT in its own process group.

    Its Lambda workers are its children in that group, so `stop()` (SIGTERM to the group,
    then SIGKILL after a grace period) leaves no process behind.

    `auth=True` (opt-in, for the least-privilege test) starts it with `AUTH=true`, so it
    evaluates IAM policies (each Lambda worker gets its execution role's session), and
    `USE_SSL=1`, so requests carry `aws:SecureTransport` and the buckets' TLS-only policies
    admit them: the endpoint is https and `ca_bundle` is the self-signed certificate
    MiniStack generates under its TMPDIR, which every client and CLI must trust."""

    def __init__(self, *, port: int = 0, log_path: Path | None = None, auth: bool = False) -> None:
        self.port = port or free_port()
        self.auth = auth
        self.endpoint_url = f"{'https' if auth else 'http'}://127.0.0.1:{self.port}"
        # One log per MiniStack (its port and this process): two serves never share one.
        self.log_path = log_path or Path(tempfile.gettempdir()) / \
            f"fanout-ministack-{self.port}-{os.getpid()}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.scratch: Path | None = None

    @property
    def ca_bundle(self) -> Path | None:
        """The certificate an `auth` MiniStack serves (core/tls.py resolve_tls_material)."""
        if not self.auth or self.scratch is None:
            return None
        return self.scratch / "ministack-tls" / "server.crt"

    def start(self, timeout_s: float = START_TIMEOUT_S) -> MiniStack:
        python = ministack_python()
        # Its own port or nothing: a MiniStack already there would answer the health check
        # below while ours dies, and everything would go into that one.
        holder = port_holder(self.port)
        if holder is not None:
            raise MiniStackError(f"port {self.port} is in use by {holder}: pick another --port "
                                 "(or none, for a free one), or stop that process")
        env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
        # Each Lambda worker unpacks its code and layers (~10 MB) under TMPDIR, and a worker
        # killed with the emulator leaves them: give MiniStack a folder removed at stop().
        self.scratch = Path(tempfile.mkdtemp(prefix=f"fanout-ministack-{self.port}-"))
        # Lambda workers inherit MiniStack's environment: keep it to what they need.
        env |= {"GATEWAY_PORT": str(self.port), "BIND_HOST": "127.0.0.1", "TMPDIR": str(self.scratch),
                "MINISTACK_REGION": REGION, "LOG_LEVEL": "WARNING", **CREDENTIALS}
        if self.auth:
            env |= {"AUTH": "true", "USE_SSL": "1"}
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child owns it until stop()
        try:
            self.process = subprocess.Popen([str(python), "-m", "ministack"], env=env,
                                            stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise MiniStackError(f"MiniStack exited with {self.process.returncode}: "
                                     f"{self.log_tail()}")
            if self.healthy():
                if self.process.poll() is not None:  # someone else answered: not ours
                    raise MiniStackError(f"MiniStack exited with {self.process.returncode}: "
                                         f"{self.log_tail()}")
                return self
            time.sleep(0.2)
        self.stop()
        raise MiniStackError(f"MiniStack did not answer on {self.endpoint_url} within "
                             f"{timeout_s:.0f} s: {self.log_tail()}")

    def healthy(self) -> bool:
        context = None
        if self.ca_bundle is not None:
            if not self.ca_bundle.exists():
                return False
            context = ssl.create_default_context(cafile=str(self.ca_bundle))
        try:
            with urllib.request.urlopen(f"{self.endpoint_url}/_ministack/health", timeout=2,
                                        context=context) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-lines:]) or f"(empty log {self.log_path})"

    def stop(self) -> None:
        """Stop MiniStack and every process of its group (its Lambda workers); idempotent."""
        process, self.process = self.process, None
        if process is None:
            return
        group = process.pid  # start_new_session: the group id is the leader's pid
        _signal_group(group, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_GRACE_S)
        # Workers that outlived their parent are still in the group.
        _signal_group(group, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        _wait_group_gone(group, timeout_s=5.0)
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None

    def __enter__(self) -> MiniStack:
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _wait_group_gone(group: int, *, timeout_s: float) -> None:
    """Until no process of the group is left: killed workers were re-parented to init,
    which reaps them a moment later (until then they still count as the group's)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.05)


def _signal_group(group: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, sig)


@dataclass
class Deployment:
    """A stack deployed into the emulator: its name and CloudFormation outputs."""

    endpoint_url: str
    stack_name: str
    outputs: dict[str, str]
    context: dict[str, str] = field(default_factory=dict)
    ca_bundle: Path | None = None


def cdk_env(endpoint_url: str, *, ca_bundle: Path | None = None) -> dict[str, str]:
    """The cdk CLI's environment: the emulator, its account, and this virtualenv first on
    PATH (infra/cdk.json runs `python3 app.py`, which needs aws-cdk-lib)."""
    env = dict(os.environ) | client_env(endpoint_url, ca_bundle=ca_bundle) | {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "CDK_DEFAULT_ACCOUNT": ACCOUNT, "CDK_DEFAULT_REGION": REGION,
        "CDK_DISABLE_VERSION_CHECK": "1", "CDK_DISABLE_CLI_TELEMETRY": "true",
        "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1",
        "JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION": "1",
    }
    env.pop("AWS_PROFILE", None)
    env.pop("AWS_SESSION_TOKEN", None)
    return env


def run_cdk(args: list[str], endpoint_url: str, *, log: Path, timeout_s: float = 600,
            cwd: Path = INFRA_DIR, ca_bundle: Path | None = None) -> None:
    """One cdk CLI command against the emulator; its output goes to `log`."""
    command = [str(cdk_cli()), *args, "--no-notices", "--ci"]
    with open(log, "ab") as out:
        out.write(f"$ {' '.join(command)}\n".encode())
        out.flush()
        try:
            done = subprocess.run(command, cwd=cwd, env=cdk_env(endpoint_url, ca_bundle=ca_bundle), stdout=out,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise MiniStackError(f"cdk {args[0]} took over {timeout_s:.0f} s; see {log}") from None
    if done.returncode != 0:
        tail = " | ".join(log.read_text(errors="replace").splitlines()[-15:])
        raise MiniStackError(f"cdk {args[0]} failed ({done.returncode}); see {log}: {tail}")


def bootstrap(endpoint_url: str, *, log: Path, ca_bundle: Path | None = None) -> None:
    """`cdk bootstrap` of the emulator's account, run outside infra/ so the CLI does not
    synthesize the app (nor lock infra/cdk.out) for it."""
    with tempfile.TemporaryDirectory(prefix="fanout-bootstrap-") as cwd:
        run_cdk(["bootstrap", f"aws://{ACCOUNT}/{REGION}"], endpoint_url, log=log, cwd=Path(cwd),
                ca_bundle=ca_bundle)


def context_args(context: Mapping[str, str]) -> list[str]:
    return [arg for key, value in context.items() for arg in ("-c", f"{key}={value}")]


def deploy(endpoint_url: str, *, stack_name: str = "fanout", log: Path,
           context: Mapping[str, str] | None = None, ca_bundle: Path | None = None) -> Deployment:
    """`cdk deploy` of infra/app.py into the emulator (the same template as for AWS, its
    Powertools layer included, with the local waits)."""
    full = {"stack_name": stack_name, **LOCAL_CONTEXT, **(context or {})}
    with tempfile.TemporaryDirectory(prefix="fanout-cdk-") as outdir:
        # Each deployment synthesizes into its own folder: `fanout serve` and the tests
        # may deploy at the same time.
        run_cdk(["deploy", stack_name, "--require-approval", "never", "--output", outdir,
                 *context_args(full)], endpoint_url, log=log, ca_bundle=ca_bundle)
    return Deployment(endpoint_url, stack_name,
                      stack_outputs(endpoint_url, stack_name, ca_bundle=ca_bundle), full, ca_bundle)


def destroy(deployment: Deployment, *, log: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="fanout-cdk-") as outdir:
        run_cdk(["destroy", deployment.stack_name, "--force", "--output", outdir,
                 *context_args(deployment.context)], deployment.endpoint_url, log=log,
                ca_bundle=deployment.ca_bundle)


def stack_outputs(endpoint_url: str, stack_name: str, *, ca_bundle: Path | None = None) -> dict[str, str]:
    cloudformation = local_client("cloudformation", endpoint_url, ca_bundle=ca_bundle)
    stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    return {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}


@contextlib.contextmanager
def local_stack(*, emulator: MiniStack | None = None, stack_name: str = "fanout",
                log: Path | None = None, context: Mapping[str, str] | None = None,
                ) -> Iterator[tuple[MiniStack, Deployment]]:
    """MiniStack started, bootstrapped and the stack deployed; all of it stopped on exit,
    whatever happened."""
    emulator = emulator or MiniStack()
    log = log or emulator.log_path.with_suffix(".cdk.log")
    with emulator:
        bootstrap(emulator.endpoint_url, log=log, ca_bundle=emulator.ca_bundle)
        yield emulator, deploy(emulator.endpoint_url, stack_name=stack_name, log=log,
                               context=context, ca_bundle=emulator.ca_bundle)
