"""The log records' own writes and reads that more than one writer of the log needs: a
ticket's void (by the writer that holds it, or by a folder once its writer is gone)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from fanout.ledger.layout import _conditional_failed, _get, _log_sk, _s


def _void(ddb: Any, ledger_table: str, job: str, ticket: int) -> dict[str, Any] | None:
    """Void a ticket whose record did not come; the record if it came after all."""
    try:
        ddb.put_item(TableName=ledger_table,
                     Item={"pk": _s(job), "sk": _s(_log_sk(ticket)), "void": {"BOOL": True}},
                     ConditionExpression="attribute_not_exists(sk)")
        return None
    except ClientError as exc:
        if not _conditional_failed(exc):
            raise
    return _get(ddb, ledger_table, job, _log_sk(ticket))
