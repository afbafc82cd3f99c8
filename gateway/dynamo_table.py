"""DynamoDB for the gateway's stores: a client of their own, and the one table layout they share (a string `pk`)."""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError


def dynamo_client(region: str, endpoint_url: str | None, *, attempts: int, connect_s: float, read_s: float) -> Any:
    """boto3's default credential chain, in a session of its own (the default session is not thread-safe)."""
    config = Config(retries={"mode": "standard", "max_attempts": attempts}, connect_timeout=connect_s,
                    read_timeout=read_s)  # fmt: skip
    return boto3.session.Session().client("dynamodb", region_name=region, endpoint_url=endpoint_url, config=config)


def ensure_table(client: Any, table: str) -> None:
    """For development and tests: the table (partition key `pk`, PAY_PER_REQUEST), created if missing, once it
    is ACTIVE."""
    try:
        client.create_table(
            TableName=table, AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}], BillingMode="PAY_PER_REQUEST",
        )  # fmt: skip
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceInUseException":  # already there (or being created)
            raise
    client.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 1})
