"""Bucket levels in DynamoDB, shared by every cluster: one item per bucket, refilled lazily from its timestamp,
changed only by a conditional write against the level it was read at (optimistic concurrency: two clusters
taking from one bucket at once never both get the same tokens)."""

from __future__ import annotations

import random
import time

from botocore.exceptions import ClientError

from gateway.dynamo_table import dynamo_client, ensure_table
from gateway.limits.bucket import BucketSpec, Level, full, refilled
from gateway.limits.store import Taken, decide, given

PREFIX = "bucket#"
CAS_ATTEMPTS = 20  # a bucket this contended is retried after a short random pause each time


class ContendedBucket(RuntimeError):
    """Every conditional write lost to another writer: nothing was taken (the caller treats it as a store error)."""


class DynamoBucketStore:
    """Items `bucket#<id>` with `milli` and `at_ms` (numbers). A read is strongly consistent; a write names the
    level it read (`milli = :m AND at_ms = :a`, or `attribute_not_exists(pk)` for a bucket never used), so a
    concurrent writer makes it fail and it is computed again from the new level."""

    def __init__(self, table: str, region: str, endpoint_url: str | None = None, *, create_table: bool = False) -> None:
        self._table = table
        self._client = dynamo_client(region, endpoint_url, attempts=3, connect_s=2, read_s=3)
        if create_table:
            ensure_table(self._client, table)

    def _get(self, bucket: str) -> Level | None:
        item = self._client.get_item(TableName=self._table, Key={"pk": {"S": PREFIX + bucket}},
                                     ConsistentRead=True).get("Item")  # fmt: skip
        return Level(int(item["milli"]["N"]), int(item["at_ms"]["N"])) if item else None

    def _put(self, bucket: str, before: Level | None, after: Level) -> bool:
        """Write `after` if the item still holds `before`; False when another writer changed it first."""
        values = {":nm": {"N": str(after.milli)}, ":na": {"N": str(after.at_ms)}}
        if before is None:
            condition = "attribute_not_exists(pk)"
        else:
            condition = "milli = :m AND at_ms = :a"
            values |= {":m": {"N": str(before.milli)}, ":a": {"N": str(before.at_ms)}}
        try:
            self._client.update_item(TableName=self._table, Key={"pk": {"S": PREFIX + bucket}},
                                     UpdateExpression="SET milli = :nm, at_ms = :na", ConditionExpression=condition,
                                     ExpressionAttributeValues=values)  # fmt: skip
            return True
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return False
            raise

    def _change(self, bucket: str, spec: BucketSpec, now_ms: int, step):  # type: ignore[no-untyped-def]
        """Read, apply `step(level) -> (answer, new level or None)`, write conditionally; again on a lost race."""
        for attempt in range(CAS_ATTEMPTS):
            stored = self._get(bucket)
            level = refilled(spec, stored, now_ms) if stored is not None else full(spec, now_ms)
            answer, after = step(level)
            if after is None or self._put(bucket, stored, after):
                return answer
            time.sleep(random.uniform(0, 0.002 * (attempt + 1)))
        raise ContendedBucket(f"bucket {bucket}: {CAS_ATTEMPTS} conditional writes lost to other writers")

    def take(self, bucket: str, spec: BucketSpec, want: int, need: int, holders: int, now_ms: int) -> Taken:
        def step(level: Level) -> tuple[Taken, Level | None]:
            taken, after = decide(spec, level, want, need, holders, now_ms)
            return taken, after if taken.granted else None

        return self._change(bucket, spec, now_ms, step)  # type: ignore[no-any-return]

    def give(self, bucket: str, spec: BucketSpec, amount: int, now_ms: int) -> int:
        def step(level: Level) -> tuple[int, Level]:
            after = given(spec, level, amount)
            return after.milli, after

        return self._change(bucket, spec, now_ms, step)  # type: ignore[no-any-return]

    def level(self, bucket: str, spec: BucketSpec, now_ms: int) -> Level:
        stored = self._get(bucket)
        return refilled(spec, stored, now_ms) if stored is not None else full(spec, now_ms)

    def close(self) -> None:
        self._client.close()
