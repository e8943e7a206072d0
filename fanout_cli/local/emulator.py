"""An embedded AWS emulator: moto in-process, or a moto server on 127.0.0.1."""

from __future__ import annotations

import os
import threading
from typing import Any

from fanout.aws import Clients, client
from fanout_cli.target import endpoint_variables

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class Emulator:
    """`with Emulator() as emu:` gives clients that talk to moto and nothing else.

    mode "inprocess" patches botocore in this process (fastest, no port); mode "server"
    starts a ThreadedMotoServer on 127.0.0.1 (a free port unless one is given), which
    other processes such as the AWS CLI can reach at `emu.endpoint_url`.
    """

    def __init__(self, mode: str = "inprocess", *, port: int = 0, region: str = "us-east-1") -> None:
        if mode not in ("inprocess", "server"):
            raise ValueError(f"unknown emulator mode {mode!r}")
        self.mode = mode
        self.port = port
        self.region = region
        self.endpoint_url: str | None = None
        self._mock: Any = None
        self._server: Any = None
        self._saved_env: dict[str, str | None] = {}

    def __enter__(self) -> Emulator:
        # Fake credentials, so that nothing can reach a real account and a fresh machine
        # without an AWS profile works.
        for name, value in FAKE_CREDENTIALS.items():
            self._saved_env[name] = os.environ.get(name)
            os.environ[name] = value
        # An exported AWS_ENDPOINT_URL (`fanout serve`'s banner) would send boto3 past moto to
        # that endpoint, and leave this run's tables in someone else's emulator: hidden
        # until the emulator stops (fanout_cli/target.py says so to the user).
        for name in endpoint_variables(os.environ):
            self._saved_env[name] = os.environ.pop(name)
        if self.mode == "inprocess":
            from moto import mock_aws
            from moto.core.models import botocore_stubber

            self._mock = mock_aws()
            self._mock.start()
            # moto's in-process backends are not thread-safe (seen: "Set changed size during
            # iteration" inside SQS ReceiveMessage with four writer threads, and a message
            # lost with it). The local runtime's threads stand for separate Lambda
            # invocations, so each emulated AWS request runs alone, as it would in AWS.
            process = botocore_stubber.process_request
            lock = threading.RLock()

            def one_at_a_time(request: Any) -> Any:
                with lock:
                    return process(request)

            botocore_stubber.process_request = one_at_a_time  # type: ignore[method-assign]
        else:
            from moto.server import ThreadedMotoServer

            self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
            self._server.start()
            host, port = self._server.get_host_and_port()
            self.endpoint_url = f"http://{host}:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._mock is not None:
            from moto.core.models import botocore_stubber

            self._mock.stop()
            self._mock = None
            vars(botocore_stubber).pop("process_request", None)
        if self._server is not None:
            self._server.stop()
            self._server = None
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    def clients(self) -> Clients:
        return Clients.create(endpoint_url=self.endpoint_url, region=self.region)

    def client(self, service: str) -> Any:
        return client(service, endpoint_url=self.endpoint_url, region=self.region)
