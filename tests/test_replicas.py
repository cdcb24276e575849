"""Several `hitl run` replicas on one Redis: every request is carded once and decided once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from blocks.ids import BatchActionId, batch_item_block_id
from store.models import Status
from tests.harness import Harness, start, start_bot, stop
from tests.util import eventually, shown_request_ids


@pytest.fixture
async def h(redis_url: str) -> AsyncIterator[Harness]:
    harness = await start(redis_url, consumer="replica-a")
    harness.bots.append(await start_bot(redis_url, harness.emu, consumer="replica-b"))
    yield harness
    await stop(harness)


async def test_two_replicas_share_the_work_without_doubling(h: Harness) -> None:
    ids = [await h.push(id=f"rep-{i}", reply_to="agent:replicas") for i in range(30)]

    async def all_carded() -> bool:
        for r in ids:
            if not await h.store.exists(r) or not (await h.store.get(r)).ts:
                return False
        return True

    await eventually(all_carded, 20, "30 cards")
    await asyncio.sleep(0.3)
    shown = [shown_request_ids(m) for m in h.emu.messages("#approvals")]
    for rid in ids:  # every request on exactly one card (a batch card, or its own)
        assert sum(rid in s for s in shown) == 1, rid
    assert sum(b.intake.processed for b in h.bots) == 30
    assert sum(b.delivery.stats["posted"] for b in h.bots) == len(shown)
    for rid in ids[:5]:
        rec = await h.store.get(rid)
        assert rec.batch and rec.channel and rec.ts  # 30 refunds from one agent: one batch card
        await h.emu.click("U0ALICE", rec.channel, rec.ts, BatchActionId.item, value="approve",
                          block_id=batch_item_block_id(rec.batch, rid))
        assert (await h.client.wait(rid, timeout=10)).status is Status.approved
    assert await h.store.redis.xlen("agent:replicas") == 5
