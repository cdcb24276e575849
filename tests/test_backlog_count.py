"""The backlog digest counts everything waiting (issue 13, point 6), not the first 500."""

from __future__ import annotations

import json

from blocks.batch_views import digest_card, queue_modal
from bot.backlog import Backlog
from store.backlog import BacklogStore
from store.models import Mode, Request, Route, utcnow
from store.redis_store import GROUP, Accepted, Store


async def _waiting(store: Store, n: int, channel: str) -> list[str]:
    """`n` pending requests whose cards wait for a slot in `channel` (every third on a batch)."""
    await store.ensure_group()
    async with store.redis.pipeline(transaction=False) as p:
        for _ in range(n):
            p.xadd(store.keys.requests, {"request": "{}"})
        await p.execute()
    rows = await store.redis.xreadgroup(GROUP, "t", {store.keys.requests: ">"}, count=n)
    items = []
    for i, (entry_id, _) in enumerate(rows[0][1]):
        req = Request(id=f"w{i}", agent="billing", action=f"act{i % 12}", summary=f"#{i}")
        route = Route(mode=Mode.approve, tier="high" if i % 4 == 0 else "medium", channel=channel)
        items.append((entry_id, Accepted(req, route, None, post=False)))
    assert set(await store.accept_many(items, utcnow())) == {"accepted"}
    state = BacklogStore(store)
    ids = [acc.request.id or "" for _, acc in items]
    singles, batched = ids[: n * 2 // 3], ids[n * 2 // 3:]
    for rid in singles:
        await state.add(channel, f"post:{rid}", 1)
    await store.redis.rpush(store.keys.batch_items("b1"), *batched)
    await state.add(channel, "batch:b1", 2)
    return ids


async def test_the_digest_counts_every_waiting_request(store: Store) -> None:
    ids = await _waiting(store, 1200, "#approvals")
    backlog = Backlog(store)
    tally = await backlog.tally("#approvals")
    assert tally.total == 1200
    assert sum(tally.by_action.values()) == 1200 and tally.by_action["act0"] == 100
    assert tally.by_tier == {"high": 300, "medium": 900}
    text = json.dumps(digest_card("#approvals", [], 5.0, cleared=False, counts=tally))
    assert "1200 requests" in text and "act0 100" in text and "and 4 more" in text
    # cards going out are no longer counted; the rest come from what this replica already read
    await store.redis.hset(store.keys.request(ids[0]), "ts", "1.0")
    await BacklogStore(store).remove("#approvals", f"post:{ids[1]}")
    await store.redis.config_resetstat()
    tally = await backlog.tally("#approvals")
    assert tally.total == 1198
    assert "cmdstat_hmget" not in await store.redis.info("commandstats")  # no record read again


def test_the_queue_modal_says_how_many_wait_in_all() -> None:
    text = json.dumps(queue_modal("#approvals", [], total=1200))
    assert "1200 requests waiting" in text
