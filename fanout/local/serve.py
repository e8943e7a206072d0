"""`fanout serve`: the whole pipeline as a long-running local stack on 127.0.0.1.

A moto server holds the bucket, the queues, the DLQ, the table and the jobs ledger (as
`create_resources` makes them for `fanout ingest`); the splitter and the writer run
behind them through the same event-source-mapping wiring. Anything that speaks AWS — the
AWS CLI, boto3, `dlq-replayer --endpoint-url` — can then upload and inspect.
"""

from __future__ import annotations

import signal
import sys
import threading
import urllib.request
from dataclasses import dataclass, field, replace
from typing import Any, TextIO

from fanout.aws import Clients
from fanout.local.backpressure import BoundedQueueClient
from fanout.local.emulator import Emulator
from fanout.local.esm import EventSourceMapping
from fanout.local.ingest import clear_metrics, quiet_powertools, start_functions
from fanout.local.resources import LocalStack, create_resources
from fanout.mapping import Spec
from fanout.runtime import Runtime
from fanout.settings import LOCAL_CONFIG, PipelineConfig, ResourceNames


@dataclass
class ServeHandle:
    """A running local stack; `stop()` ends it (idempotent)."""

    endpoint_url: str
    stack: LocalStack
    clients: Clients
    emulator: Emulator
    writers: EventSourceMapping
    splitters: EventSourceMapping
    _handlers: list[Any] = field(default_factory=list)
    _stopped: bool = False

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.writers.stop()
        self.splitters.stop()
        for handler in self._handlers:
            handler.runtime.use(None)
        self.emulator.__exit__(None, None, None)

    def __enter__(self) -> ServeHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_stack(spec: Spec, *, port: int = 0, concurrency: int = 4,
                config: PipelineConfig = LOCAL_CONFIG,
                names: ResourceNames | None = None) -> ServeHandle:
    """Start the moto server, create the resources and start the functions behind them."""
    quiet_powertools()
    from splitter import handler as splitter_handler
    from writer import handler as writer_handler

    names = names or ResourceNames()
    emulator = Emulator("server", port=port).__enter__()
    try:
        assert emulator.endpoint_url
        _reset(emulator.endpoint_url)
        clients = emulator.clients()
        stack = create_resources(clients, spec, config=config, names=names,
                                 endpoint_url=emulator.endpoint_url)
        runtime = Runtime(stack.settings, spec, clients)
        bounded_sqs = BoundedQueueClient(clients.sqs, stack.settings.rows_queue_url)
        splitter_handler.runtime.use(replace(runtime, clients=replace(clients, sqs=bounded_sqs)))
        writer_handler.runtime.use(runtime)
        writers, splitters = start_functions(stack, clients, clear_metrics(splitter_handler),
                                             clear_metrics(writer_handler),
                                             concurrency=concurrency,
                                             on_deleted=bounded_sqs.finished)
    except BaseException:
        splitter_handler.runtime.use(None)
        writer_handler.runtime.use(None)
        emulator.__exit__(None, None, None)
        raise
    return ServeHandle(emulator.endpoint_url, stack, clients, emulator, writers, splitters,
                       [splitter_handler, writer_handler])


def _reset(endpoint_url: str) -> None:
    """A fresh stack: moto's backends live in this process and outlive an earlier server."""
    request = urllib.request.Request(f"{endpoint_url}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass


def describe(handle: ServeHandle) -> str:
    """What an operator needs: endpoint, names, URLs and commands to paste."""
    s, config, endpoint = handle.stack.settings, handle.stack.config, handle.endpoint_url
    upload = f"s3://{s.bucket}/{config.upload_prefix}"
    return "\n".join([
        "fanout serve: the pipeline is running on a local AWS emulator (moto)",
        f"  endpoint        {endpoint}",
        f"  bucket          {s.bucket}",
        f"  upload prefix   {upload}",
        f"  rows queue      {s.rows_queue_url}",
        f"  DLQ             {s.dlq_url}",
        f"  table           {s.table_name}",
        f"  jobs ledger     {s.ledger_table_name}",
        f"  visibility timeout {config.visibility_timeout_s} s, "
        f"maxReceiveCount {config.max_receive_count}",
        "",
        "try it (any credentials work; these are moto's):",
        "  export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing "
        "AWS_DEFAULT_REGION=us-east-1",
        f"  aws --endpoint-url {endpoint} s3 cp data.csv {upload}",
        f"  aws --endpoint-url {endpoint} dynamodb scan --table-name {s.ledger_table_name}",
        f"  aws --endpoint-url {endpoint} dynamodb scan --table-name {s.table_name} "
        "--select COUNT",
        f"  aws --endpoint-url {endpoint} sqs get-queue-attributes --queue-url {s.dlq_url} "
        "--attribute-names ApproximateNumberOfMessages",
        f"  dlq-replayer inspect --endpoint-url {endpoint}",
        "",
        "Ctrl-C stops it (everything is in memory and goes with it).",
    ]) + "\n"


def serve_forever(spec: Spec, *, port: int = 0, concurrency: int = 4,
                  stream: TextIO = sys.stdout) -> int:
    """Run until SIGINT or SIGTERM; stop the functions and the server cleanly."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        handle = start_stack(spec, port=port, concurrency=concurrency)
        try:
            stream.write(describe(handle))
            stream.flush()
            while not stop.wait(0.5):
                pass
            stream.write("fanout serve: stopping\n")
            stream.flush()
        finally:
            handle.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
