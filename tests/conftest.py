"""Shared fixtures: one private redis-server per session, a clean database per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from store.redis_store import Store
from tests.redis_cluster import LocalCluster, LocalSentinel
from tests.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start(appendonly=True)
    yield server
    server.stop()


@pytest.fixture
async def redis_url(redis_server: RedisServer) -> AsyncIterator[str]:
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start(appendonly=True)
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushall()
    await client.aclose()
    yield redis_server.url


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[Store]:
    s = Store.from_url(redis_url, prefix="hitl")
    yield s
    await s.close()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    """A real 3-master Redis Cluster for the `cluster` tests, started once when first asked for."""
    cluster = LocalCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster_url(redis_cluster: LocalCluster) -> str:
    redis_cluster.flush()
    return redis_cluster.url


@pytest.fixture
def redis_sentinel() -> Iterator[LocalSentinel]:
    """A fresh master, replica and three sentinels per test (failover tests kill the master)."""
    deployment = LocalSentinel()
    try:
        deployment.start()
        yield deployment
    finally:
        deployment.stop()
