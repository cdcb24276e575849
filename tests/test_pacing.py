"""Posts paced from the send, not the token (issue 13, point 3).

Against the emulator's strict mode (one post per channel per rolling second, no burst,
measured when the request arrives) a burst gets every card out without a single 429: a post
holds its channel's slot until Slack's answer, and the next may go a second after that answer,
so it always reaches Slack more than a second after the previous one did (the bound is zero,
not "few"). A 429 closes only its channel, for Retry-After, and since a 429 posted nothing, the
retry searches no `conversations.history`; a post whose answer was lost (5xx after effect) still
does, before it takes its slot (the slot covers the post alone, its lease renewed while the call
runs). The slots live in Redis: two replicas share them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from bot.delivery import UPDATE_BURST, UPDATE_RATE, Delivery
from emulator import Emulator
from emulator.limits import Fault
from store.pacing import Outcome, PostSlots
from store.redis_store import Store
from tests.harness import Harness, start, start_bot, stop
from tests.util import eventually, shown_request_ids

POLICY = """
tiers:
  low: {mode: auto}
  medium: {mode: approve}
  high: {mode: approve, channel: "#approvals-high"}
rules:
  - {name: big, when: "request.risk.amount > 500", tier: high}
batching: {enabled: false}
triggers:
  first_use: {enabled: false}
"""

WINDOW_S = 1.0  # the strict emulator's rolling second


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yml"
    path.write_text(POLICY)
    return path


def post_gaps(emu: Emulator) -> list[float]:
    """Seconds between consecutive carried-out posts of each channel, as the emulator received them."""
    posts = [c for c in emu.calls_to("chat.postMessage") if c.ok]
    gaps: list[float] = []
    for channel in {str(c.response["channel"]) for c in posts}:
        times = sorted(c.received or c.at for c in posts if c.response["channel"] == channel)
        gaps += [b - a for a, b in itertools.pairwise(times)]
    return gaps


async def on_cards(h: Harness, ids: list[str], channel: str = "#approvals") -> list[dict[str, object]]:
    """Every request on exactly one card in `channel`, and its record knowing it."""
    async def shown() -> bool:
        seen = [shown_request_ids(m) for m in h.emu.messages(channel)]
        return all(sum(rid in s for s in seen) == 1 for rid in ids)

    await eventually(shown, 60, f"{len(ids)} requests on cards")
    await eventually(lambda: _all_posted(h, ids), 10, "cards recorded")
    return h.emu.messages(channel)


async def _all_posted(h: Harness, ids: list[str]) -> bool:
    return all(r.ts for r in await h.store.get_many(ids))


# ---- end to end, against the strict emulator ----------------------------------------------

async def test_a_burst_under_a_strict_slack_gets_every_card_out_without_a_429(redis_url: str, policy: Path) -> None:
    h = await start(redis_url, policy=policy, strict_limits=True, post_rate=1.0, post_burst=1.0, backlog_at=3)
    try:
        ids = [await h.push(action=f"one_off_{i}", summary=f"One-off {i}") for i in range(6)]
        messages = await on_cards(h, ids)
        assert h.emu.rate_limited == 0
        assert h.bot.delivery.stats["rate_limited"] == 0
        assert min(post_gaps(h.emu)) >= WINDOW_S
        assert not h.emu.calls_to("conversations.history")
        # the backlog digest took a slot of its own and was counted among the paced posts
        digests = [m for m in messages if "backlog" in json.dumps(m.get("blocks")).lower()]
        assert len(digests) == 1
        assert len([c for c in h.emu.calls_to("chat.postMessage") if c.ok]) == len(ids) + 1
    finally:
        await stop(h)


async def test_two_replicas_under_a_strict_slack_stay_under_the_limit(redis_url: str, policy: Path) -> None:
    h = await start(redis_url, policy=policy, strict_limits=True, post_rate=1.0, post_burst=1.0,
                    consumer="replica-a")
    h.bots.append(await start_bot(redis_url, h.emu, policy=policy, post_rate=1.0, post_burst=1.0,
                                  consumer="replica-b"))
    try:
        ids = [await h.push(action=f"one_off_{i}", summary=f"One-off {i}") for i in range(6)]
        await on_cards(h, ids)
        assert h.emu.rate_limited == 0
        assert min(post_gaps(h.emu)) >= WINDOW_S
        assert sum(b.delivery.stats["posted"] for b in h.bots) == 6
    finally:
        await stop(h)


async def test_a_429_searches_no_history_and_its_post_lands_once(redis_url: str, policy: Path) -> None:
    h = await start(redis_url, policy=policy)
    try:
        h.emu.inject("chat.postMessage", status=429, retry_after=1)
        rid = await h.push()
        await on_cards(h, [rid])
        posts = h.emu.calls_to("chat.postMessage")
        assert [c.status for c in posts] == [429, 200]
        assert posts[1].received is not None and posts[0].received is not None
        assert posts[1].received - posts[0].received >= 1.0  # Retry-After honoured
        assert not h.emu.calls_to("conversations.history")  # a 429 posted nothing: nothing to look for
        assert [e.event for e in await h.store.trail(rid)].count("posted") == 1
        assert h.bot.delivery.stats["rate_limited"] == 1
    finally:
        await stop(h)


async def test_a_post_whose_answer_was_lost_still_searches_history(redis_url: str, policy: Path) -> None:
    h = await start(redis_url, policy=policy)
    try:
        h.emu.inject("chat.postMessage", status=500, applied=True)  # posted, but the answer is a 500
        rid = await h.push()
        await on_cards(h, [rid])
        assert h.emu.calls_to("conversations.history")
        assert [c.status for c in h.emu.calls_to("chat.postMessage")] == [500]  # found, not posted again
        assert h.bot.delivery.stats["reconciled"] == 1
    finally:
        await stop(h)


async def test_a_429_closes_only_its_own_channel(redis_url: str, policy: Path) -> None:
    h = await start(redis_url, policy=policy)
    try:
        h.emu.inject("chat.postMessage", status=429, retry_after=60)
        held = await h.push(summary="Refund $250 to Ana")

        async def limited() -> bool:
            return any(c.status == 429 for c in h.emu.calls_to("chat.postMessage"))

        await eventually(limited, what="the 429")
        same = await h.push(summary="Refund $100 to Bo")
        other = await h.push(summary="Refund $900 to Cy", risk={"amount": 900, "currency": "USD"})
        await on_cards(h, [other], "#approvals-high")
        assert (await h.store.get(held)).ts is None  # #approvals is closed for Retry-After ...
        assert (await h.store.get(same)).ts is None  # ... for every post of it
        assert not h.emu.calls_to("conversations.history")
    finally:
        await stop(h)


async def test_a_retry_searches_history_before_its_slot_so_a_long_search_lets_no_post_in(
        redis_url: str, policy: Path) -> None:
    """(review bda487f) A retry whose answer was lost searches conversations.history. Were the
    slot held through the search, a search outlasting the slot's lease (20 s, scaled here to
    0.3 s against a 2 s search) would free the slot at the lease's end, another card would post
    a window later, and this one would follow inside the same second: a strict Slack's 429.
    The search comes before the slot, which covers the post alone."""
    h = await start(redis_url, policy=policy, strict_limits=True, post_rate=1.0, post_burst=1.0)
    try:
        h.bot.delivery.slots.lease_ms = 300  # stands for the 20 s lease against a longer search
        h.emu.inject("chat.postMessage", status=500)  # answer lost: the retry must search history
        search = Fault(delay=2.0)
        h.emu.faults.add("conversations.history", search)
        rid1 = await h.push(action="one_off_1", summary="One-off 1")

        async def retry_searching() -> bool:
            return search.times == 0 and not h.emu.calls_to("conversations.history")

        await eventually(retry_searching, 10, "the retry searching history")
        rid2 = await h.push(action="one_off_2", summary="One-off 2")
        await on_cards(h, [rid1, rid2])
        assert h.emu.rate_limited == 0, "a post went inside another's second"
        assert min(post_gaps(h.emu)) >= WINDOW_S
        assert len(h.emu.calls_to("conversations.history")) == 1
        assert [c.status for c in h.emu.calls_to("chat.postMessage")] == [500, 200, 200]
    finally:
        await stop(h)


async def test_a_retry_deferred_after_its_search_does_not_search_again(redis_url: str, policy: Path) -> None:
    """The search comes before the slot; a retry that then has to wait for its slot keeps what
    it found (nothing) and, back at its turn, posts without a second search."""
    h = await start(redis_url, policy=policy, strict_limits=True, post_rate=0.5, post_burst=1.0)
    try:
        h.emu.inject("chat.postMessage", status=500)  # counts a 2 s window; the retry comes in 0.5 s
        rid = await h.push()
        await on_cards(h, [rid])
        assert h.bot.delivery.stats["deferred"] >= 1, "the retry never waited for its slot"
        assert len(h.emu.calls_to("conversations.history")) == 1
        assert [c.status for c in h.emu.calls_to("chat.postMessage")] == [500, 200]
    finally:
        await stop(h)


async def test_a_post_slower_than_the_lease_keeps_its_slot_until_its_answer(redis_url: str, policy: Path) -> None:
    """The lease only frees the slot of a replica that died: a live one renews it while its call
    runs, so the other replica's next post still goes a window after the slow post's answer."""
    h = await start(redis_url, policy=policy, strict_limits=True, post_rate=1.0, post_burst=1.0,
                    consumer="replica-a")
    h.bots.append(await start_bot(redis_url, h.emu, policy=policy, post_rate=1.0, post_burst=1.0,
                                  consumer="replica-b"))
    try:
        for b in h.bots:
            b.delivery.slots.lease_ms = 300  # stands for the 20 s lease against a longer call
        slow = Fault(delay=1.5)
        h.emu.faults.add("chat.postMessage", slow)
        rid1 = await h.push(action="one_off_1", summary="One-off 1")

        async def in_flight() -> bool:
            return slow.times == 0

        await eventually(in_flight, 10, "the slow post in flight")
        rid2 = await h.push(action="one_off_2", summary="One-off 2")  # the idle replica takes it
        await on_cards(h, [rid1, rid2])
        first, second = [c for c in h.emu.calls_to("chat.postMessage") if c.ok]
        assert second.received is not None
        assert second.received - first.at >= WINDOW_S  # a window after the answer, not the lease
        assert h.emu.rate_limited == 0
    finally:
        await stop(h)


# ---- the slots themselves ------------------------------------------------------------------

def slots(store: Store, **kw: int) -> PostSlots:
    return PostSlots(store, **{"limit": 1, "window_ms": 60_000, "lease_ms": 60_000, "grace_ms": 60_000, **kw})


async def test_a_slot_is_held_until_the_answer_and_counts_a_window_after_it(store: Store) -> None:
    s = slots(store)
    assert await s.take("#c", "post:a") == 0
    assert await s.take("#c", "post:b") > 0  # a is in flight, however long that takes
    await s.done("#c", "post:a", "posted")
    wait = await s.take("#c", "post:b")
    assert 0 < wait <= 60_000  # a window from a's answer, not from when a was let go
    assert await s.take("#other", "post:x") == 0  # each channel has its own


async def test_a_post_that_posted_nothing_frees_its_slot_at_once(store: Store) -> None:
    s = slots(store)
    assert await s.take("#c", "post:a") == 0
    await s.done("#c", "post:a", "none")
    assert await s.take("#c", "post:b") == 0


async def test_a_lost_answer_counts_as_a_post(store: Store) -> None:
    s = slots(store)
    assert await s.take("#c", "post:a") == 0
    await s.done("#c", "post:a", "maybe")
    assert await s.take("#c", "post:b") > 0


async def test_a_429_closes_the_channel_and_its_post_goes_first(store: Store) -> None:
    s = slots(store)
    assert await s.take("#c", "post:a") == 0
    assert await s.take("#c", "post:b") > 0
    await s.done("#c", "post:a", "none", retry_after_ms=30_000)
    assert await s.take("#c", "post:b") >= 29_000
    queue = s.keys("#c")[1]
    assert await store.redis.zrange(queue, 0, -1) == ["post:a", "post:b"]
    await store.redis.hset(s.keys("#c")[0], "blocked_until", 0)  # Retry-After has passed
    assert await s.take("#c", "post:b") > 0  # a goes first
    assert await s.take("#c", "post:a") == 0


async def test_waiters_go_in_order_and_one_that_never_comes_back_loses_its_place(store: Store) -> None:
    s = slots(store)
    assert await s.take("#c", "post:a") == 0
    first, second = await s.take("#c", "post:b"), await s.take("#c", "post:c")
    assert 0 < first < second  # told to come back one after the other
    await s.done("#c", "post:a", "none")
    assert await s.take("#c", "post:c") > 0  # b's turn, though c asked first after the slot freed
    await store.redis.hset(s.keys("#c")[0], "back:post:b", 0)  # b was due long ago and never came
    assert await s.take("#c", "post:c") == 0
    assert await s.take("#c", "post:b") > 0  # back at the end of the queue


async def test_a_holder_that_died_frees_the_slot_when_its_lease_ends(store: Store) -> None:
    s = slots(store, lease_ms=50, window_ms=1)
    assert await s.take("#c", "post:a") == 0

    async def free() -> bool:
        return await s.take("#c", "post:b") == 0

    await eventually(free, what="the dead holder's lease to end")


async def _end_lease(store: Store, s: PostSlots, member: str, *, just_now: bool = False) -> None:
    """Make `member`'s lease have ended (its holder died or stalled): long ago, or a moment ago
    (so the post still counts in the window)."""
    key = s.keys("#c")[0]
    busy = json.loads(await store.redis.hget(key, "busy"))
    seconds, micros = await store.redis.time()
    busy[member]["x"] = seconds * 1000 + micros // 1000 - 1 if just_now else 0
    await store.redis.hset(key, "busy", json.dumps(busy))


@pytest.mark.parametrize("outcome", ["posted", "maybe"])
async def test_a_post_answered_after_its_lease_ended_still_counts_from_its_answer(
        store: Store, outcome: Outcome) -> None:
    s = slots(store)
    assert await s.take("#c", "post:a") == 0
    await _end_lease(store, s, "post:a")
    assert await s.take("#c", "post:b") == 0  # the lease freed the slot
    await s.done("#c", "post:b", "none")
    await s.done("#c", "post:a", outcome)  # a was only late: its answer comes now
    assert await s.take("#c", "post:c") > 0  # a window from a's answer


async def test_a_late_answer_replaces_the_count_its_lease_made(store: Store) -> None:
    s = slots(store, limit=2)
    assert await s.take("#c", "post:a") == 0
    await _end_lease(store, s, "post:a", just_now=True)  # counted a window from its lease's end
    assert await s.take("#c", "post:b") == 0  # the other of the two slots
    await s.done("#c", "post:a", "posted")
    assert await s.take("#c", "post:c") > 0  # b in flight, a answered: both slots taken
    await s.done("#c", "post:b", "none")
    assert await s.take("#c", "post:c") == 0  # a counts once, not for its lease and its answer


async def test_a_holder_renews_its_lease_while_its_call_runs(store: Store) -> None:
    s = slots(store)
    assert await s.take("#c", "post:a") == 0
    key = s.keys("#c")[0]
    busy = json.loads(await store.redis.hget(key, "busy"))
    short = busy["post:a"]["x"] - 30_000
    busy["post:a"]["x"] = short
    await store.redis.hset(key, "busy", json.dumps(busy))
    assert await s.keep("#c", "post:a")
    assert json.loads(await store.redis.hget(key, "busy"))["post:a"]["x"] > short
    await _end_lease(store, s, "post:a")
    assert not await s.keep("#c", "post:a")  # too late: the lease already freed the slot
    assert not await s.keep("#c", "post:x")  # never held


class _CancelledAfterGrant(PostSlots):
    """Redis grants the slot, but the task is cancelled before it reads the answer."""

    async def take(self, channel: str, member: str, *, front: bool = False) -> int:
        await super().take(channel, member, front=front)
        raise asyncio.CancelledError


async def test_a_post_cancelled_while_taking_its_slot_gives_the_slot_back(redis_url: str, policy: Path) -> None:
    h = await start(redis_url, policy=policy)
    try:
        d: Delivery = h.bot.delivery
        d.slots = _CancelledAfterGrant(h.store, lease_ms=60_000)
        with pytest.raises(asyncio.CancelledError):
            await d.slot("#c", "post:a", 0)
        assert await slots(h.store).take("#c", "post:b") == 0  # not held for the 60 s lease
    finally:
        await stop(h)


async def test_two_replicas_share_the_slots(store: Store, redis_url: str) -> None:
    other = Store(aioredis.Redis.from_url(redis_url, decode_responses=True))
    try:
        a, b = slots(store), slots(other)
        assert await a.take("#c", "post:a") == 0
        assert await b.take("#c", "post:b") > 0
        await a.done("#c", "post:a", "posted")
        assert await b.take("#c", "post:b") > 0  # still within a's window
    finally:
        await other.close()


async def test_the_slots_script_touches_only_its_keys(store: Store, redis_url: str) -> None:
    s = slots(store)
    user = "slots-only"
    keys = s.keys("#c")
    await store.redis.execute_command("ACL", "SETUSER", user, "reset", "on", "nopass", "+@all",
                                      *(f"~{k}" for k in keys))
    limited = Store(aioredis.Redis.from_url(redis_url, username=user, password="x", decode_responses=True))
    try:
        ls = slots(limited)
        assert await ls.take("#c", "post:a") == 0
        assert await ls.take("#c", "post:b") > 0
        await ls.done("#c", "post:a", "none", retry_after_ms=1000)
    finally:
        await limited.close()
        await store.redis.execute_command("ACL", "DELUSER", user)


async def test_updates_keep_headroom_under_slacks_tier_3(store: Store) -> None:
    """Tier 3 allows 50 calls a minute in a burst; the update bucket takes fewer, so the time
    between taking a token and Slack receiving the call cannot push it over."""
    now = 1_700_000_000_000
    waits = await asyncio.gather(*(store.pace("update", f"update:{i}", now, UPDATE_RATE, UPDATE_BURST)
                                   for i in range(50)))
    assert sum(w == 0 for w in waits) == int(UPDATE_BURST) < 50
