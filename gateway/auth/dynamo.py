"""Key records in DynamoDB: one item per key, written with conditional puts (the revision is a compare-and-swap)."""

from __future__ import annotations

from typing import Any

from botocore.client import BaseClient
from botocore.exceptions import ClientError

from gateway.auth.keys import KeyRecord
from gateway.config import DynamoConfig
from gateway.dynamo_table import dynamo_client, ensure_table

KEY = "key#"


class DynamoKeyStore:
    """One table, a string partition key `pk` and no sort key; the item `key#<key id>` holds `revision` (a number)
    and `record` (the record as JSON). A put is conditional: `attribute_not_exists(pk)` for a new key, else
    `revision = :expected`, so two writers on one key never lose one another's change: the later one gets False,
    reads again and retries. Blocking calls: the caller runs them in a thread."""

    def __init__(self, config: DynamoConfig, client: BaseClient | None = None) -> None:
        self._table = config.table
        self._owned = client is None
        if client is None:
            client = dynamo_client(config.region, config.endpoint_url, attempts=5, connect_s=5, read_s=10)
        self._client = client
        if config.create_table:
            ensure_table(client, self._table)

    def get(self, key_id: str) -> KeyRecord | None:
        item = self._client.get_item(TableName=self._table, Key={"pk": {"S": f"{KEY}{key_id}"}},
                                     ConsistentRead=True, ProjectionExpression="#rec",
                                     ExpressionAttributeNames={"#rec": "record"}).get("Item")  # fmt: skip
        return KeyRecord.model_validate_json(item["record"]["S"]) if item else None

    def put(self, record: KeyRecord, expected_revision: int | None) -> bool:
        """False only on ConditionalCheckFailed (another writer came first); any other error raises."""
        body = record.model_dump_json()
        item = {"pk": {"S": f"{KEY}{record.key_id}"}, "revision": {"N": str(record.revision)}, "record": {"S": body}}
        condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(pk)"}
        if expected_revision is not None:
            condition = {"ConditionExpression": "#rev = :expected", "ExpressionAttributeNames": {"#rev": "revision"},
                         "ExpressionAttributeValues": {":expected": {"N": str(expected_revision)}}}  # fmt: skip
        try:
            self._client.put_item(TableName=self._table, Item=item, ReturnValuesOnConditionCheckFailure="ALL_OLD",
                                  **condition)  # fmt: skip
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            # botocore retried (a timeout, a 5xx) and the condition then failed: an earlier attempt may have landed
            # with its reply lost. If the item is exactly ours, it did: the write happened, once.
            retried = exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0) > 0
            return retried and exc.response.get("Item", {}).get("record", {}).get("S") == body
        return True

    def all(self) -> list[KeyRecord]:
        # A Scan, strongly consistent (a key just created is listed), filtered to the key items on the table.
        pages = self._client.get_paginator("scan").paginate(
            TableName=self._table,
            ConsistentRead=True,
            FilterExpression="begins_with(pk, :prefix)",
            ProjectionExpression="#rec",
            ExpressionAttributeNames={"#rec": "record"},
            ExpressionAttributeValues={":prefix": {"S": KEY}},
        )
        records = [KeyRecord.model_validate_json(item["record"]["S"]) for page in pages for item in page["Items"]]
        return sorted(records, key=lambda r: r.key_id)  # the order the SQLite store lists them in

    def close(self) -> None:
        if self._owned:  # a client passed in belongs to the caller
            self._client.close()
