"""Commands packed by hiredis are byte for byte what redis-py would send (store/packing.py)."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from redis.exceptions import DataError

from store.packing import FastPackConnection
from store.redis_store import Store

CASES = [
    ("EVALSHA", "a" * 40, 2, "hitl:req:x", "hitl:audit", "é ✓ 😀", b"\xff\x00raw", 1.5, -3, 10**15, ""),
    ("CONFIG GET", "maxmemory"),
    ("XADD", "s", "*", "decision", '{"a": "b\\u00e9"}'),
]


@pytest.mark.parametrize("args", CASES)
def test_the_same_bytes_as_redis_py(args: tuple[object, ...]) -> None:
    fast, plain = FastPackConnection(), aioredis.Connection()
    assert b"".join(fast.pack_command(*args)) == b"".join(plain.pack_command(*args))


@pytest.mark.parametrize("bad", [None, True])
def test_what_redis_py_refuses_is_still_refused(bad: object) -> None:
    with pytest.raises(DataError):
        FastPackConnection().pack_command("SET", "k", bad)


async def test_the_store_uses_it_and_it_talks_to_redis(store: Store) -> None:
    from hitl.connect import KeepsCancellation

    used = store.redis.connection_pool.connection_class
    assert issubclass(used, FastPackConnection) and issubclass(used, KeepsCancellation)
    await store.redis.set("k", "é ✓")
    assert await store.redis.get("k") == "é ✓"
    assert "maxmemory" in await store.redis.config_get("maxmemory")
