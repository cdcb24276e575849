"""Redis going away and coming back: health says so, and nothing is lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from blocks.ids import ActionId
from store.models import Status
from tests.harness import Harness, start, stop
from tests.redis_server import RedisServer
from tests.util import eventually


@pytest.fixture
async def h(redis_url: str) -> AsyncIterator[Harness]:
    harness = await start(redis_url)
    yield harness
    await stop(harness)


async def _health(h: Harness) -> int:
    try:
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{h.bot.port}/healthz",
                                                       timeout=aiohttp.ClientTimeout(total=5)) as r:
            return r.status
    except aiohttp.ClientError:
        return 0


async def test_a_redis_restart_is_reported_and_survived(h: Harness, redis_server: RedisServer) -> None:
    rid = await h.push(id="before-restart")
    rec = await h.card(rid)
    assert await _health(h) == 200
    redis_server.restart()  # kill -9, then start again from its append-only file
    redis_server.kill()
    await eventually(lambda: _is(h, 503), 15, "healthz 503 while Redis is down")
    redis_server.start(appendonly=True)
    await eventually(lambda: _is(h, 200), 20, "healthz 200 once Redis is back")
    # the request survived, can still be decided, and new requests flow
    await h.click(rec, "U0ALICE", ActionId.approve)
    assert (await h.client.wait(rid, timeout=15)).status is Status.approved
    after = await h.push(id="after-restart")
    assert (await h.card(after, timeout=15)).ts


async def _is(h: Harness, status: int) -> bool:
    return await _health(h) == status


async def test_intake_that_died_is_not_reported_healthy(h: Harness) -> None:
    assert await _health(h) == 200
    h.bot.intake.running = False  # as after a failure, before it restarts itself
    assert await _health(h) == 503
    await asyncio.sleep(0)
