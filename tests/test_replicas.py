"""Several `hitl run` replicas on one Redis: every request is carded once and decided once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from blocks.ids import BatchActionId, batch_item_block_id
from bot import delivery
from bot.worker import kept_lease
from emulator.limits import Fault
from store.models import Status
from store.redis_store import Store
from tests.harness import Harness, start, start_bot, stop
from tests.test_cards_lock import POLICY
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


@pytest.fixture
async def slow(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:
    """Two replicas whose outbox lease is 1.5 s (it stands for 30 s against a longer call; renewed
    every 0.5 s, so a loaded machine's stall under a second does not lose it)."""
    monkeypatch.setattr(delivery, "LEASE_MS", 1500)
    path = tmp_path / "policy.yml"
    path.write_text(POLICY)
    harness = await start(redis_url, policy=path, consumer="replica-a")
    harness.bots.append(await start_bot(redis_url, harness.emu, policy=path, consumer="replica-b"))
    yield harness
    await stop(harness)


async def test_a_post_slower_than_its_lease_is_posted_once(slow: Harness) -> None:
    """Slack answers the card's post after 4 s, well past the 1.5 s outbox lease. The replica
    posting renews its lease while the call runs, so the other never takes the post over (it
    used to post a second card, which the first then deleted: seen, and notified, meanwhile)."""
    h = slow
    h.emu.inject("chat.postMessage", delay=4.0)
    rid = await h.push()
    rec = await h.card(rid)
    await asyncio.sleep(2.0)  # the other replica would have posted by now, and its copy been deleted
    posts = [c for c in h.emu.calls_to("chat.postMessage") if c.ok]
    assert len(posts) == 1 and str(posts[0].response["ts"]) == rec.ts
    assert not h.emu.calls_to("chat.delete")
    assert [m["ts"] for m in h.emu.messages("#approvals")] == [rec.ts]


async def test_a_retry_searching_slower_than_its_lease_searches_and_posts_once(slow: Harness) -> None:
    """The card's first post fails with a 500 (its outcome unknown), so the retry pages the
    channel's history first, and that page comes after 4 s. The searching replica keeps its
    lease: the other neither searches nor posts meanwhile; one search, one card."""
    h = slow
    h.emu.inject("chat.postMessage", status=500)
    search = Fault(delay=4.0)
    h.emu.faults.add("conversations.history", search)
    rid = await h.push()
    rec = await h.card(rid)
    await asyncio.sleep(2.0)
    assert len(h.emu.calls_to("conversations.history")) == 1
    assert [c.status for c in h.emu.calls_to("chat.postMessage")] == [500, 200]
    assert not h.emu.calls_to("chat.delete")
    assert [m["ts"] for m in h.emu.messages("#approvals")] == [rec.ts]


async def test_a_kept_lease_is_renewed_until_a_deferral_reschedules_it(store: Store) -> None:
    """The lease is renewed while the work runs; a deferral (the work rescheduled, as a post
    waiting for its slot is) uses the lease in force and stops the renewals: the member stays
    due when the deferral said, and only then can another replica claim it."""
    def now() -> int:
        return int(time.time() * 1000)

    await store.enqueue("post:a", 0)
    first, members = await store.claim_outbox(now(), 900)
    assert members == ["post:a"]
    async with kept_lease(store, store.keys.outbox, "post:a", first, lease_ms=900, now_ms=now,
                          name="test") as lease:
        await asyncio.sleep(1.2)  # past the first lease's end: renewed meanwhile
        assert lease.until > first
        assert (await store.claim_outbox(now(), 900))[1] == []  # no other replica takes it
        retry_at = now() + 1500
        assert await lease.finish(retry_at)  # deferred to its turn
        await asyncio.sleep(0.6)  # a renewal would have come by now
    assert await store.redis.zscore(store.keys.outbox, "post:a") == retry_at
    assert (await store.claim_outbox(now(), 900))[1] == []
    await asyncio.sleep(max(0, retry_at - now()) / 1000 + 0.05)
    assert (await store.claim_outbox(now(), 900))[1] == ["post:a"]
