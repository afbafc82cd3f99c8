"""Settled spend in DynamoDB: per-account running totals, each (charge, account) booked exactly once."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

from gateway.budgets.store import Charge, LeaseRow, TotalRow
from gateway.dynamo_table import dynamo_client, ensure_table

CHARGE, TOTAL, LEASES = "charge#", "total#", "leases#"
MAX_ACCOUNTS = 50  # TransactWriteItems takes at most 100 items, and a charge needs two per account
CONFLICT_RETRIES = 5  # a transaction cancelled only by TransactionConflict (a concurrent writer) is tried again
_NAMES = {"#m": "picos", "#o": "micros", "#t": "tokens"}
_ADDED = {"#m": "picos", "#t": "tokens"}
_PICOS_PER_MICRO = 10**6  # items written before money was exact kept micro-dollars (`micros`); read as picos
PICO_LEASE = "pico"  # the marker of a lease value in pico-dollars (a three-element one is in micro-dollars)


def _money(item: dict) -> int:
    """A total's pico-dollars: what was ADDed since money became exact, plus any legacy micro-dollars."""
    picos = _int(item["picos"]["N"]) if "picos" in item else 0
    return picos + (_int(item["micros"]["N"]) * _PICOS_PER_MICRO if "micros" in item else 0)


def _lease(value: dict) -> tuple[int, int, float]:
    parts = value["L"]
    scale = 1 if len(parts) > 3 else _PICOS_PER_MICRO
    return _int(parts[0]["N"]) * scale, _int(parts[1]["N"]), float(parts[2]["N"])


def _int(number: str) -> int:
    value = Decimal(number)
    if value != value.to_integral_value():
        raise ValueError(f"spend store: a non-integer amount {number!r}")
    return int(value)


class DynamoSpendStore:
    """One table, a string partition key `pk` and no sort key:

    - `charge#<charge id>#<account>`: the idempotency item (picos, tokens, at), put once, never updated;
    - `total#<account>`: the account's settled totals (picos, tokens), only ever ADDed to (a total from before
      money was exact also has `micros`, read as a million picos each: no rewrite needed).

    One transaction per charge puts its idempotency items (`attribute_not_exists(pk)`) and ADDs to its totals,
    so a total moves exactly when its idempotency item first appears: a replay, from this process or another,
    is cancelled by the condition and books nothing. Charge ids are uuid hex (no `#`), so keys are unambiguous.
    """

    def __init__(self, table: str, region: str, endpoint_url: str | None = None, *, create_table: bool = False) -> None:
        self._table = table
        self._client = dynamo_client(region, endpoint_url, attempts=5, connect_s=5, read_s=10)
        if create_table:
            ensure_table(self._client, table)

    def record(self, charges: Iterable[Charge]) -> list[Charge]:
        """Any error other than "already recorded" propagates: the caller keeps the charges and sends them again."""
        return [charge for charge in charges if self._book(charge)]

    def _book(self, charge: Charge) -> bool:
        """True: booked now; False: booked before. Raises on anything else (throttling, network, a missing table)."""
        accounts = list(dict.fromkeys(charge.accounts))  # a repeated account would be two writes to one item
        if not 0 < len(accounts) <= MAX_ACCOUNTS:
            raise ValueError(f"charge {charge.id}: {len(accounts)} accounts (1 to {MAX_ACCOUNTS} fit a transaction)")
        if type(charge.picos) is not int or type(charge.tokens) is not int:
            raise TypeError(f"charge {charge.id}: amounts must be integers (pico-dollars, tokens)")
        amounts = {":m": {"N": str(charge.picos)}, ":t": {"N": str(charge.tokens)}}
        items: list[dict[str, Any]] = []
        for account in accounts:
            marker = {"pk": {"S": f"{CHARGE}{charge.id}#{account}"}, "picos": amounts[":m"],
                      "tokens": amounts[":t"], "at": {"N": str(int(time.time()))}}  # fmt: skip
            items.append({"Put": {"TableName": self._table, "Item": marker,
                                  "ConditionExpression": "attribute_not_exists(pk)"}})  # fmt: skip
            items.append({"Update": {"TableName": self._table, "Key": {"pk": {"S": f"{TOTAL}{account}"}},
                                     "UpdateExpression": "ADD #m :m, #t :t", "ExpressionAttributeNames": _ADDED,
                                     "ExpressionAttributeValues": amounts}})  # fmt: skip
        for attempt in range(CONFLICT_RETRIES + 1):
            try:
                # A fresh token per attempt: botocore's own retries of this request reuse it, so a commit whose reply
                # was lost still reads as booked now (a replay by the caller is a new call, and a new token).
                self._client.transact_write_items(TransactItems=items, ClientRequestToken=uuid.uuid4().hex)
                return True
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "TransactionCanceledException":
                    raise
                codes = [r.get("Code", "None") for r in exc.response.get("CancellationReasons", [])]
                if len(codes) != len(items):
                    raise
                if any(codes[i] == "ConditionalCheckFailed" for i in range(0, len(items), 2)):  # the puts
                    return False  # an idempotency item exists: its transaction committed this whole charge
                if set(codes) - {"None"} != {"TransactionConflict"} or attempt == CONFLICT_RETRIES:
                    raise
            time.sleep(random.uniform(0, 0.02 * 2**attempt))  # back off a little: a concurrent writer is busy
        raise AssertionError("unreachable")

    def total(self, account: str) -> tuple[int, int]:
        """One account's settled totals: a strongly consistent GetItem (what a ledger reads on an account's first
        grant, so it never starts from a stale balance)."""
        item = self._client.get_item(TableName=self._table, Key={"pk": {"S": f"{TOTAL}{account}"}},
                                     ConsistentRead=True, ProjectionExpression="#m, #o, #t",
                                     ExpressionAttributeNames=_NAMES).get("Item")  # fmt: skip
        return (_money(item), _int(item["tokens"]["N"])) if item else (0, 0)

    def save_leases(self, rows: Iterable[LeaseRow]) -> None:
        """One item per account (`leases#<account>`), one attribute per replica: [picos, tokens, saved at]."""
        now = str(int(time.time()))
        for account, replica, picos, tokens in rows:
            key = {"pk": {"S": f"{LEASES}{account}"}}
            if picos or tokens:
                value = {"L": [{"N": str(picos)}, {"N": str(tokens)}, {"N": now}, {"S": PICO_LEASE}]}
                self._client.update_item(TableName=self._table, Key=key, UpdateExpression="SET #r = :v",
                                         ExpressionAttributeNames={"#r": replica},
                                         ExpressionAttributeValues={":v": value})  # fmt: skip
            else:
                self._client.update_item(TableName=self._table, Key=key, UpdateExpression="REMOVE #r",
                                         ExpressionAttributeNames={"#r": replica})  # fmt: skip

    def leases(self, account: str) -> dict[str, tuple[int, int, float]]:
        item = self._client.get_item(TableName=self._table, Key={"pk": {"S": f"{LEASES}{account}"}},
                                     ConsistentRead=True).get("Item") or {}  # fmt: skip
        return {replica: _lease(v) for replica, v in item.items() if replica != "pk"}

    def totals(self) -> dict[str, tuple[int, int]]:
        # For operators and tests (a ledger reads one account at a time, with `total`). A Scan filtered on the key
        # prefix: simple and strongly consistent, but it
        # reads (and pays for) every idempotency item too, so its cost grows with the number of charges ever booked.
        # If that matters: a TTL on the idempotency items (replays come within minutes), or the totals in their own
        # table or a sparse index.
        pages = self._client.get_paginator("scan").paginate(
            TableName=self._table,
            ConsistentRead=True,  # a restarted ledger must not start from stale totals (it would over-lease)
            FilterExpression="begins_with(pk, :prefix)",
            ProjectionExpression="pk, #m, #o, #t",
            ExpressionAttributeNames=_NAMES,
            ExpressionAttributeValues={":prefix": {"S": TOTAL}},
        )
        return {
            item["pk"]["S"].removeprefix(TOTAL): (_money(item), _int(item["tokens"]["N"]))
            for page in pages
            for item in page["Items"]
        }

    def totals_page(self, prefix: str, after: str | None, limit: int) -> tuple[list[TotalRow], str | None]:
        """A Scan filtered on the key prefix (in DynamoDB's order, not the accounts'); the cursor is the key of the
        last item read, so a page of a table with many charges may take several Scan calls."""
        rows: list[TotalRow] = []
        start = {"ExclusiveStartKey": {"pk": {"S": after}}} if after else {}
        while True:
            page = self._client.scan(
                TableName=self._table, ConsistentRead=True, Limit=max(limit, 100), **start,
                FilterExpression="begins_with(pk, :prefix)", ProjectionExpression="pk, #m, #o, #t",
                ExpressionAttributeNames=_NAMES, ExpressionAttributeValues={":prefix": {"S": TOTAL + prefix}},
            )  # fmt: skip
            for item in page["Items"]:
                rows.append((item["pk"]["S"].removeprefix(TOTAL), _money(item), _int(item["tokens"]["N"])))
                if len(rows) == limit:
                    return rows, item["pk"]["S"]
            last = page.get("LastEvaluatedKey")
            if last is None:
                return rows, None
            start = {"ExclusiveStartKey": last}

    def close(self) -> None:
        self._client.close()
