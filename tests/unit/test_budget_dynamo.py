"""The DynamoDB spend store against a local moto server (real HTTP, fake credentials, never the internet): exact,
idempotent under replays and concurrent writers, durable across restarts, and loud on any other failure."""

from __future__ import annotations

import itertools
import random
import threading
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from pydantic import ValidationError
from werkzeug.serving import make_server

from gateway.budgets import dynamo
from gateway.budgets.backends import open_store
from gateway.budgets.dynamo import DynamoSpendStore
from gateway.budgets.ledger import Ledger
from gateway.budgets.policy import Account
from gateway.budgets.store import Charge, SqliteSpendStore
from gateway.config import BudgetsConfig

REGION = "us-east-1"
FAKE_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}
AWS_OVERRIDES = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB")


def _one_at_a_time(app: Callable[..., Iterable[bytes]]) -> Callable[..., list[bytes]]:
    lock = threading.Lock()

    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with lock:
            return list(app(environ, start_response))

    return serve


@pytest.fixture(scope="module")
def dynamo_url(tmp_path_factory):
    with pytest.MonkeyPatch.context() as env:
        for name, value in FAKE_AWS.items():
            env.setenv(name, value)
        for name in AWS_OVERRIDES:
            env.delenv(name, raising=False)
        nowhere = str(tmp_path_factory.mktemp("aws") / "none")  # no shared config or credentials file applies
        env.setenv("AWS_CONFIG_FILE", nowhere)
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", nowhere)
        # moto's ThreadedMotoServer, but one request at a time: moto's DynamoDB is not thread-safe (a cancelled
        # transaction restores a copy of the table taken before it began, undoing what concurrent requests wrote,
        # and ADD is an unlocked read-modify-write). Served in turn, each transaction is isolated, as DynamoDB's are.
        app = _one_at_a_time(DomainDispatcherApplication(create_backend_app))
        server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{server.server_port}"
        server.shutdown()
        thread.join()


@pytest.fixture
def table() -> str:
    return f"spend-{uuid.uuid4().hex[:12]}"  # one table per test: moto's state lives as long as the process


def _store(url: str, table: str, create: bool = True) -> DynamoSpendStore:
    return DynamoSpendStore(table, REGION, url, create_table=create)


def _expected(charges: list[Charge]) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for charge in charges:
        for account in set(charge.accounts):
            m, t = out.get(account, (0, 0))
            out[account] = (m + charge.picos, t + charge.tokens)
    return out


BIG = 2**53 + 1  # not representable as a float: the amounts must stay integers end to end
BATCH = [
    Charge("c1", ("turn|t-1|turn", "global|*|2026-11-28"), 1_234, 56),
    Charge("c2", ("global|*|2026-11-28",), BIG, 7),
    Charge("c3", ("org|acme|2026-11", "org|acme|2026-11", "global|*|2026-11-28"), 10, 1),  # a repeated account
]


def test_recording_books_each_charge_on_each_account_exactly(dynamo_url, table):
    store = _store(dynamo_url, table)
    assert store.totals() == {}
    assert store.record(BATCH) == BATCH
    assert store.totals() == {
        "turn|t-1|turn": (1_234, 56),
        "global|*|2026-11-28": (1_234 + BIG + 10, 56 + 7 + 1),
        "org|acme|2026-11": (10, 1),  # once, like the SQLite store's (id, account) primary key
    }
    sqlite_totals = _expected(BATCH)
    assert store.totals() == sqlite_totals


def test_a_replayed_batch_books_nothing_twice(dynamo_url, table):
    store = _store(dynamo_url, table)
    store.record(BATCH)
    before = store.totals()
    assert store.record(BATCH) == []  # the ledger's reply was lost and the replica sent the batch again
    new = Charge("c4", ("turn|t-1|turn",), 5, 5)
    assert store.record([BATCH[1], new, BATCH[0]]) == [new]  # old and new mixed: only the new one is fresh
    after = store.totals()
    assert after["turn|t-1|turn"] == (before["turn|t-1|turn"][0] + 5, before["turn|t-1|turn"][1] + 5)
    assert after["global|*|2026-11-28"] == before["global|*|2026-11-28"]


def test_two_stores_writing_the_same_charges_concurrently_book_each_once(dynamo_url, table):
    stores = [_store(dynamo_url, table), _store(dynamo_url, table)]  # like two ledger processes
    accounts = ["global|*|2026-11-28", "org|acme|2026-11", "org|beta|2026-11", "turn|t-1|turn"]
    rng = random.Random(11)
    charges = [
        Charge(uuid.uuid4().hex, ("global|*|2026-11-28", rng.choice(accounts[1:])), rng.randint(1, 10**6), i)
        for i in range(24)
    ]
    writers = 4  # two threads per store, each sending every charge, in its own order, in batches
    start = threading.Barrier(writers)
    fresh: list[list[Charge]] = [[] for _ in range(writers)]
    errors: list[BaseException] = []

    def write(n: int) -> None:
        order = random.Random(n).sample(charges, len(charges))
        try:
            start.wait()
            for i in range(0, len(order), 5):
                fresh[n].extend(stores[n % 2].record(order[i : i + 5]))
        except BaseException as exc:  # surfaced below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    booked = [c.id for c in itertools.chain.from_iterable(fresh)]
    assert sorted(booked) == sorted(c.id for c in charges)  # every charge fresh exactly once, across all writers
    assert stores[0].totals() == stores[1].totals() == _expected(charges)


def test_totals_survive_a_restart(dynamo_url, table):
    _store(dynamo_url, table).record(BATCH)
    reborn = _store(dynamo_url, table)  # create_table on an existing table: it is simply used
    assert reborn.totals() == _expected(BATCH)
    assert reborn.record(BATCH[:1]) == []  # the new process also knows what was booked before


ACCOUNT = Account("turn", "t-1", "turn", limit_picos=10_000, limit_tokens=None)


def test_a_ledger_over_dynamodb_settles_and_a_new_ledger_reads_the_spend_back(dynamo_url, table):
    ledger = Ledger(_store(dynamo_url, table))
    assert ledger.grant("a", ACCOUNT, want=(5_000, 0), need=(1_000, 0)).picos == 5_000
    batch = [Charge("call-1", (ACCOUNT.id, "global|*|2026-11-28"), 1_234, 56)]
    assert ledger.settle("a", batch) == 1
    assert ledger.settle("a", batch) == 0
    assert ledger.status(ACCOUNT.id)["spent_picos"] == 1_234 and ledger.status(ACCOUNT.id)["reserved_picos"] == 3_766
    reborn = Ledger(_store(dynamo_url, table))
    assert reborn.status(ACCOUNT.id)["spent_picos"] == 1_234
    assert reborn.status("global|*|2026-11-28")["spent_tokens"] == 56
    # the restarted ledger also knows that replica `a` still holds 3,766 of its lease
    assert reborn.status(ACCOUNT.id)["reserved_picos"] == 3_766
    assert reborn.grant("b", ACCOUNT, want=(10_000, 0), need=(1_000, 0)).remaining_picos == 10_000 - 1_234 - 3_766


def test_a_failure_other_than_a_replay_raises_and_the_charge_can_be_sent_again(dynamo_url, table):
    missing = _store(dynamo_url, table, create=False)
    with pytest.raises(ClientError) as info:
        missing.record(BATCH[:1])
    assert info.value.response["Error"]["Code"] == "ResourceNotFoundException"
    with pytest.raises(ClientError):
        missing.totals()
    _store(dynamo_url, table)  # now the table exists: the resent charge is booked, as fresh
    assert missing.record(BATCH[:1]) == BATCH[:1]
    assert missing.totals() == _expected(BATCH[:1])


def _cancelled(stubber: Stubber, *codes: str) -> None:
    stubber.add_client_error("transact_write_items", service_error_code="TransactionCanceledException",
                             modeled_fields={"CancellationReasons": [{"Code": c} for c in codes]})  # fmt: skip


def test_cancellations_are_told_apart(monkeypatch):
    for name, value in FAKE_AWS.items():
        monkeypatch.setenv(name, value)
    pauses: list[float] = []
    monkeypatch.setattr(dynamo.time, "sleep", pauses.append)
    store = DynamoSpendStore("unused", REGION, "http://127.0.0.1:9")
    charge = Charge("c1", ("a", "b"), 1, 1)  # four items: put a, update a, put b, update b
    with Stubber(store._client) as stubber:
        _cancelled(stubber, "None", "None", "ConditionalCheckFailed", "None")
        assert store.record([charge]) == []  # booked before
        _cancelled(stubber, "None", "TransactionConflict", "None", "None")
        stubber.add_response("transact_write_items", {})
        assert store.record([charge]) == [charge] and len(pauses) == 1  # a concurrent writer: tried again
        _cancelled(stubber, "None", "ThrottlingError", "None", "None")
        with pytest.raises(ClientError):
            store.record([charge])  # throttled: the caller keeps the charge and sends it again
        for _ in range(dynamo.CONFLICT_RETRIES + 1):
            _cancelled(stubber, "TransactionConflict", "None", "None", "None")
        with pytest.raises(ClientError):
            store.record([charge])  # conflicts that do not clear are an error like any other
        stubber.assert_no_pending_responses()
    with pytest.raises(ValueError, match="accounts"):
        store.record([Charge("c2", tuple(f"acct-{i}" for i in range(dynamo.MAX_ACCOUNTS + 1)), 1, 1)])
    with pytest.raises(TypeError, match="integers"):
        store.record([Charge("c3", ("a",), 0.5, 1)])  # type: ignore[arg-type]


def test_open_store_picks_the_backend_from_the_config(dynamo_url, table, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    sqlite = open_store(BudgetsConfig(store="~/spend.db"))
    assert isinstance(sqlite, SqliteSpendStore) and (tmp_path / "spend.db").exists()
    sqlite.close()
    config = BudgetsConfig(backend="dynamodb", dynamodb={"table": table, "endpoint_url": dynamo_url,
                                                         "create_table": True})  # fmt: skip
    store = open_store(config)
    assert isinstance(store, DynamoSpendStore)
    assert store.record(BATCH[:1]) == BATCH[:1] and _store(dynamo_url, table, create=False).totals() == _expected(
        BATCH[:1]
    )
    assert BudgetsConfig().backend == "sqlite" and BudgetsConfig().dynamodb.table == "llm-gateway-spend"
    with pytest.raises(ValidationError):
        BudgetsConfig(backend="dynamo")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        BudgetsConfig(dynamodb={"table": "t", "tabel": "typo"})


def test_one_accounts_total_is_read_alone(dynamo_url, table):
    store = _store(dynamo_url, table)
    store.record(BATCH)
    expected = _expected(BATCH)
    for account, total in expected.items():
        assert store.total(account) == total
    assert store.total("never|used|turn") == (0, 0)


def test_items_written_in_micro_dollars_are_read_as_pico_dollars(dynamo_url, table):
    """A table from before money was exact: totals kept `micros`, leases three-element lists of micro-dollars."""
    store = _store(dynamo_url, table)
    client = store._client
    client.put_item(TableName=table, Item={"pk": {"S": "total#org|acme|2026-12"}, "micros": {"N": "368"},
                                           "tokens": {"N": "10"}})  # fmt: skip
    client.put_item(TableName=table, Item={"pk": {"S": "leases#org|acme|2026-12"},
                                           "r1": {"L": [{"N": "1000"}, {"N": "0"}, {"N": "5"}]}})  # fmt: skip
    assert store.total("org|acme|2026-12") == (368 * 10**6, 10)
    assert store.leases("org|acme|2026-12")["r1"][:2] == (1000 * 10**6, 0)
    store.record([Charge("c-exact", ("org|acme|2026-12",), 351_900_000, 5)])  # $0.0003519, exactly
    assert store.total("org|acme|2026-12") == (368 * 10**6 + 351_900_000, 15)
    assert store.totals()["org|acme|2026-12"] == (368 * 10**6 + 351_900_000, 15)
    store.save_leases([("org|acme|2026-12", "r1", 7, 0)])
    assert store.leases("org|acme|2026-12")["r1"][:2] == (7, 0)
