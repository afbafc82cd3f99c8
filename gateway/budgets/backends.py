"""Opens the spend store a budgets config names: the embedded SQLite file, or DynamoDB (boto3 imported only then)."""

from __future__ import annotations

from pathlib import Path

from gateway.budgets.store import SpendStore, SqliteSpendStore
from gateway.config import BudgetsConfig


def open_store(config: BudgetsConfig) -> SpendStore:
    """The store `config.backend` names."""
    if config.backend == "dynamodb":
        from gateway.budgets.dynamo import DynamoSpendStore

        dynamo = config.dynamodb
        return DynamoSpendStore(dynamo.table, dynamo.region, dynamo.endpoint_url, create_table=dynamo.create_table)
    return SqliteSpendStore(Path(config.store).expanduser())
