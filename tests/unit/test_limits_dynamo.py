"""Bucket levels in DynamoDB against a local moto server (real HTTP, fake credentials): two independent bucket
owners (two clusters) sharing one table never over-grant, levels survive an owner's restart, and a store that
fails raises (the replica then falls back; it never grants unbounded)."""

from __future__ import annotations

import threading
import uuid

import pytest

from gateway.limits.bucket import MILLI, MINUTE_MS, BucketSpec
from gateway.limits.dynamo import DynamoBucketStore
from gateway.limits.owner import BucketOwner
from tests.moto_support import REGION, moto_server


@pytest.fixture(scope="module")
def dynamo_url(tmp_path_factory):
    with moto_server(tmp_path_factory.mktemp("aws")) as url:
        yield url


@pytest.fixture
def table() -> str:
    return f"limits-{uuid.uuid4().hex[:12]}"


def _store(url: str, table: str) -> DynamoBucketStore:
    return DynamoBucketStore(table, REGION, url, create_table=True)


def test_two_clusters_taking_from_one_bucket_at_once_never_over_grant(dynamo_url, table):
    spec = BucketSpec(200 * MILLI, 60 * MILLI)  # 200 at once, one a second after that
    clock = [1_000_000]
    owners = [BucketOwner(_store(dynamo_url, table), clock_ms=lambda: clock[0]) for _ in range(2)]
    granted = [0, 0]

    def cluster(i: int) -> None:
        for n in range(60):
            grant = owners[i].grant(f"c{i}-r{n % 3}", "key:k1:rpm:requests", spec, 10 * MILLI, MILLI)
            granted[i] += grant.granted

    threads = [threading.Thread(target=cluster, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert granted[0] > 0 and granted[1] > 0  # both clusters were served
    assert 199 * MILLI < sum(granted) <= 200 * MILLI  # the bucket (less a fraction of one call), never more
    clock[0] += 10_000  # ten seconds: ten refilled
    left = 200 * MILLI - sum(granted) + 10 * MILLI
    assert owners[1].status("key:k1:rpm:requests", spec)["level"] == left  # the other cluster sees the same level


def test_levels_survive_a_restart_and_debts_are_shared(dynamo_url, table):
    spec = BucketSpec(100 * MILLI, 100 * MILLI)
    now = 5_000_000
    first = _store(dynamo_url, table)
    assert first.take("b", spec, 60 * MILLI, MILLI, 1, now).granted == 50 * MILLI
    first.give("b", spec, -80 * MILLI, now)  # a call used 80 more than it was admitted for
    first.close()
    again = _store(dynamo_url, table)  # a restarted owner, or another cluster
    assert again.level("b", spec, now).milli == -30 * MILLI
    refused = again.take("b", spec, 10 * MILLI, MILLI, 1, now)
    assert refused.granted == 0 and refused.wait_ms == 31 * MINUTE_MS // 100  # until the debt and one call refill


def test_an_unreachable_table_raises_instead_of_granting(dynamo_url):
    store = DynamoBucketStore("no-such-table", REGION, dynamo_url)
    with pytest.raises(Exception):  # noqa: B017 -- botocore's ResourceNotFoundException
        store.take("b", BucketSpec(10 * MILLI, 10 * MILLI), MILLI, MILLI, 1, 0)
