"""Several `hitl run` replicas on one Redis: every request is carded once and decided once."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from blocks.ids import ActionId
from store.models import Status
from tests.harness import Harness, start, start_bot, stop
from tests.util import eventually


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
    cards = [json.dumps(m.get("metadata")) for m in h.emu.messages("#approvals")]
    assert len(cards) == 30 and all(sum(f'"rep-{i}"' in c for c in cards) == 1 for i in range(30))
    posted_by = [b.delivery.stats["posted"] for b in h.bots]
    processed_by = [b.intake.processed for b in h.bots]
    assert sum(posted_by) == 30 and sum(processed_by) == 30
    for rid in ids[:5]:
        rec = await h.store.get(rid)
        await h.click(rec, "U0ALICE", ActionId.approve)
        assert (await h.client.wait(rid, timeout=10)).status is Status.approved
    assert await h.store.redis.xlen("agent:replicas") == 5
