"""Logs and traces for the logic below the handlers.

Logs: each Lambda's logic logs through the Powertools Logger of its handler's service
(`Logger(service=...)` again: Powertools hands back the one configured logger, handler
and formatter, so no line is printed twice). `log_keys` appends keys such as the job id
to every line the current thread logs, through any Powertools Logger, until the block
ends. The keys live in Powertools' thread-local context (`thread_safe_append_keys`), not
in the formatter's shared keys (`append_keys`), because the writer's pool threads write
different messages at once: each thread's lines carry its own message's keys.

Traces: `subsegment` opens an X-Ray subsegment around an AWS call that matters (a range
GET, a SendMessageBatch, a BatchWriteItem round, a ledger record or settle). With tracing
off (POWERTOOLS_TRACE_DISABLED, or outside Lambda: tests and the local runtime) it is a
null context, one attribute read per call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from numbers import Number
from typing import Any, ParamSpec, TypeVar, cast

from aws_lambda_powertools import Logger, Tracer

from fanout.contract import RowsMessage

P = ParamSpec("P")
R = TypeVar("R")


def message_keys(message: RowsMessage) -> dict[str, Any]:
    """The keys that find a message's log lines: its job, message id and sequence number."""
    return {"job": message.job, "message_id": message.message_id, "seq": message.seq}


@contextmanager
def log_keys(logger: Logger, **keys: Any) -> Iterator[None]:
    """Append `keys` to every line this thread logs until the block ends; a key that was
    set before the block (a job around a message) gets its value back after it."""
    formatter = logger.registered_formatter  # looked up once: it walks the handlers
    before = formatter.thread_safe_get_current_keys()
    saved = {key: before[key] for key in keys if key in before}
    formatter.thread_safe_append_keys(**keys)
    try:
        yield
    finally:
        formatter.thread_safe_remove_keys(keys)
        if saved:
            formatter.thread_safe_append_keys(**saved)


def with_log_keys(logger: Logger, keys: dict[str, Any], work: Callable[P, R]) -> Callable[P, R]:
    """`work`, run with `keys` on the log lines of the thread that runs it (a pool thread
    starts with none of its submitter's keys)."""
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        with log_keys(logger, **keys):
            return work(*args, **kwargs)
    return run


_tracer: Tracer | None = None


def tracer() -> Tracer:
    """The process's Tracer. Built on first use, after the handler built its own (which
    patched botocore): Tracer instances share one configuration, and this one must not
    change it, so it asks for no patching."""
    global _tracer
    if _tracer is None:
        _tracer = Tracer(auto_patch=False)
    return _tracer


def subsegment(name: str, **annotations: str | int) -> AbstractContextManager[Any]:
    """An X-Ray subsegment `## name`, annotated (annotations are searchable in X-Ray);
    a null context when tracing is off."""
    current = tracer()
    if current.disabled:
        return nullcontext()
    return _annotated(current, name, annotations)


@contextmanager
def _annotated(current: Tracer, name: str, annotations: dict[str, str | int]) -> Iterator[Any]:
    with current.provider.in_subsegment(name=f"## {name}") as segment:
        for key, value in annotations.items():
            # X-Ray takes any number; the stubs say numbers.Number, which int is only at run time
            segment.put_annotation(key=key, value=value if isinstance(value, str) else cast(Number, value))
        yield segment
