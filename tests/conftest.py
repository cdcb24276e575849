"""Shared fixtures: one private redis-server per session, a clean database per test."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
import redis.asyncio as aioredis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bot.evidence.signing import Signer
from store.chain import ChainStore
from store.connect import parse
from store.redis_store import Store
from tests.pg_server import PostgresServer
from tests.redis_cluster import LocalCluster, LocalSentinel
from tests.redis_server import RedisServer

CLUSTER_PREFIX = "{hitl}"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start(appendonly=True)
    yield server
    server.stop()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test marked `cluster_too` runs on the redis-server and again on the 3-master Redis
    Cluster (`redis_url` is then the cluster's, and HITL_PREFIX `{hitl}`)."""
    if metafunc.definition.get_closest_marker("cluster_too") and "redis_url" in metafunc.fixturenames:
        metafunc.parametrize("redis_url", ["server", pytest.param("cluster", marks=pytest.mark.cluster)],
                             indirect=True)


@pytest.fixture
async def redis_url(redis_server: RedisServer, request: pytest.FixtureRequest,
                    monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    if getattr(request, "param", "server") == "cluster":
        cluster: LocalCluster = request.getfixturevalue("redis_cluster")
        cluster.flush()
        monkeypatch.setenv("HITL_PREFIX", CLUSTER_PREFIX)  # what the bot and its clients read
        yield cluster.url
        return
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start(appendonly=True)
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushall()
    await client.aclose()
    yield redis_server.url


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[Store]:
    s = Store.from_url(redis_url, prefix=CLUSTER_PREFIX if parse(redis_url).kind == "cluster" else "hitl")
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


_dbs = iter(range(10**6))


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    """A real PostgreSQL for the module's tests (the archive's), started when first asked for."""
    server = PostgresServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def pg_url(pg: PostgresServer) -> AsyncIterator[str]:
    """A fresh database per test."""
    name = f"t{os.getpid()}_{next(_dbs)}"
    async with await psycopg.AsyncConnection.connect(pg.url(), autocommit=True) as c:
        await c.execute(f"CREATE DATABASE {name}")
    yield pg.url(name)


@pytest.fixture
def signer() -> Signer:
    """A fresh audit signing key."""
    return Signer(Ed25519PrivateKey.generate())


@pytest.fixture
def chain(store: Store) -> ChainStore:
    """The sealed audit chain of the test's store."""
    return ChainStore(store.redis, store.keys.prefix)
