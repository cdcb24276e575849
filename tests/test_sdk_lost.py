"""A Redis that comes back without its data (no persistence, or a failover to a replica that never
had the request) while an agent waits: the request is gone, and no decision can ever come.

Against real redis-server processes started here, restarted *without* AOF or RDB, and the real
bot: the waiting client sends its request again and gets the decision; a resumed wait (a client
that does not hold the request) raises `hitl.RequestLost` instead of waiting for ever."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import hitl.client
import pytest
from hitl import AsyncClient, RequestLost
from hitl.protocol import Status

from tests.harness import running
from tests.redis_server import RedisServer
from tests.reviewer import POLICY, card_for
from tests.util import eventually


@pytest.fixture
def volatile() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()  # --save "" --appendonly no: a restart loses everything
    yield server
    server.stop()


def _lose_everything(server: RedisServer) -> None:
    server.kill()
    server.start()


async def _queued_ids(client: AsyncClient) -> list[str]:
    return [json.loads(f["request"])["id"] for _, f in await client.redis.xrange(client.keys.requests)]


async def test_a_wait_sends_its_request_again_when_redis_comes_back_empty(volatile: RedisServer,
                                                                         tmp_path: Path) -> None:
    async with running(volatile.url, tmp_path, POLICY) as h:
        # paused: the auto-approved lookup gets a card and stays pending, so the agent waits
        await h.store.set_paused(True, "incident", "U0ADMIN", datetime.now(UTC))
        async with AsyncClient.from_url(volatile.url, agent="billing", prefix=h.bot.settings.prefix) as client:
            task = asyncio.create_task(client.ask(action="lookup_order", summary="Look up A-17",
                                                  params={"order": "A-17"}))  # timeout=None
            rec = await card_for(h, "lookup_order")
            _lose_everything(volatile)  # the request, its record and the pause switch are gone
            # the bot reconnects, the wait sends the request again, the bot (no longer paused) decides
            decision = await asyncio.wait_for(task, 30)  # the old code waits for ever here
            assert decision.request_id == rec.id
            assert decision.status is Status.auto_approved
            assert (await h.decided(rec.id)).decision is not None


async def test_a_held_request_is_sent_again_once(volatile: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # the periodic check, often: after each 0.2 s read with nothing (no bot here: no decision)
    monkeypatch.setattr(hitl.client, "BLOCK_MS", 200)
    monkeypatch.setattr(hitl.client, "RECHECK_S", 0.3, raising=False)
    async with AsyncClient.from_url(volatile.url, agent="billing") as client:
        rid = await client.submit({"action": "refund", "summary": "Refund $5"})
        task = asyncio.create_task(client.wait(rid))
        await asyncio.sleep(1.0)  # periodic checks find its entry queued: nothing sent again
        assert await _queued_ids(client) == [rid]
        _lose_everything(volatile)

        async def resent() -> bool:
            try:
                return await _queued_ids(client) == [rid]
            except hitl.Unreachable:
                return False
        await eventually(resent, 15, "the request sent again")
        await asyncio.sleep(1.0)  # later checks find the new entry: not sent a third time
        assert await _queued_ids(client) == [rid]
        assert not task.done()
        task.cancel()


async def test_a_resumed_wait_on_a_lost_request_raises_request_lost(volatile: RedisServer) -> None:
    async with AsyncClient.from_url(volatile.url, agent="billing") as first:
        rid = await first.submit({"action": "refund", "summary": "Refund $5", "id": "refund-A-9"})
    async with AsyncClient.from_url(volatile.url, agent="billing") as resumed:  # a restarted agent
        task = asyncio.create_task(resumed.wait(rid))  # timeout=None
        await asyncio.sleep(0.5)
        _lose_everything(volatile)
        with pytest.raises(RequestLost) as lost:
            await asyncio.wait_for(task, 20)  # the old code waits for ever here
        assert lost.value.request_id == rid
        assert "submit it again" in str(lost.value)
        assert await _queued_ids(resumed) == []  # it holds no request to send
