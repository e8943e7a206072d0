"""The AWS client factory: one place that knows the endpoint, region and retry policy."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config

# botocore's standard retry mode backs off on throttling and 5xx; the writer adds its own
# budget-aware loop on top for UnprocessedItems, which botocore does not retry.
CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 3}, max_pool_connections=32)


def client(service: str, *, endpoint_url: str | None = None, region: str = "us-east-1") -> Any:
    return boto3.session.Session().client(
        service, endpoint_url=endpoint_url, region_name=region, config=CLIENT_CONFIG
    )


@dataclass(frozen=True)
class Clients:
    """The clients the handlers use; tests and the local runtime pass their own."""

    s3: Any
    sqs: Any
    dynamodb: Any
    sns: Any | None = None
    lambda_: Any | None = None

    @classmethod
    def create(cls, *, endpoint_url: str | None = None, region: str = "us-east-1") -> Clients:
        return cls(
            s3=client("s3", endpoint_url=endpoint_url, region=region),
            sqs=client("sqs", endpoint_url=endpoint_url, region=region),
            dynamodb=client("dynamodb", endpoint_url=endpoint_url, region=region),
            sns=client("sns", endpoint_url=endpoint_url, region=region),
            lambda_=client("lambda", endpoint_url=endpoint_url, region=region),
        )


def b64_default(value: Any) -> str:
    """`json.dumps(default=)` for DynamoDB JSON: a B value (bytes) is its base64 text, as
    on the wire; anything else json cannot encode is an error."""
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode()
    raise TypeError(f"cannot encode {type(value).__name__} as DynamoDB JSON")
