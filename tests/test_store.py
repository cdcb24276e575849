"""Store against a real redis-server: atomic accept, transitions, outbox leases, audit trail."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from store.errors import AlreadyDecided, Conflict, NotAllowed
from store.models import Choice, Decision, Request, Route, State, Status, utcnow
from store.redis_store import GROUP, Accepted, Entry, Store
from store.transitions import authorize, vote

# agents' reply streams; in the `{hitl}` slot, so the same tests run on a cluster (test_store_cluster)
REPLY = "{hitl}:results:agent"
REPLY_A = "{hitl}:results:a"


def _request(rid: str = "r1", **kw: object) -> Request:
    data: dict[str, object] = {"id": rid, "agent": "billing", "action": "refund", "summary": "Refund $250"}
    data.update(kw)
    return Request.model_validate(data)


async def _push_and_read(store: Store, req: Request) -> str:
    await store.ensure_group()
    await store.redis.xadd(store.keys.requests, {"request": req.model_dump_json()})
    res = await store.redis.xreadgroup(GROUP, "t", {store.keys.requests: ">"}, count=1)
    return str(res[0][1][0][0])


async def _accept(store: Store, req: Request, quorum: int = 1, approvers: list[str] | None = None) -> None:
    entry = await _push_and_read(store, req)
    route = Route(quorum=quorum, approvers=approvers or [])
    assert await store.accept(entry, Accepted(req, route, None, post=True), utcnow()) == "accepted"


async def test_accept_is_atomic_and_acknowledges(store: Store) -> None:
    req = _request(reply_to=REPLY)
    entry = await _push_and_read(store, req)
    acc = Accepted(req, Route(), None, post=True)
    assert await store.accept(entry, acc, utcnow()) == "accepted"
    # a retried call after success changes nothing
    assert await store.accept(entry, acc, utcnow()) == "redelivered"
    rec = await store.get("r1")
    assert rec.state is State.pending and rec.params == {} and rec.version == 0
    assert await store.pending_ids() == ["r1"]
    pending = await store.redis.xpending(store.keys.requests, GROUP)
    assert pending["pending"] == 0
    assert [m for m, _ in await store.redis.zrange(store.keys.outbox, 0, -1, withscores=True)] == ["post:r1"]
    assert [e.event for e in await store.trail("r1")] == ["received", "routed"]


async def test_same_id_twice_is_one_request(store: Store) -> None:
    await _accept(store, _request())
    entry = await _push_and_read(store, _request(summary="again"))
    assert await store.accept(entry, Accepted(_request(), Route(), None, True), utcnow()) == "duplicate"
    assert (await store.get("r1")).request.summary == "Refund $250"
    assert await store.outbox_depth() == 1


async def test_auto_decision_is_published_at_once(store: Store) -> None:
    req = _request(reply_to=REPLY)
    entry = await _push_and_read(store, req)
    d = Decision(request_id="r1", status=Status.auto_approved, decided_at=utcnow(), route=Route(mode="auto"))
    assert await store.accept(entry, Accepted(req, Route(mode="auto"), d, post=False), utcnow()) == "accepted"
    assert (await store.get("r1")).state is State.decided
    for stream in (REPLY, store.keys.decisions):
        rows = await store.redis.xrange(stream)
        assert json.loads(rows[0][1]["decision"])["status"] == "auto_approved"
    assert await store.pending_count() == 0


async def test_dead_letter_keeps_raw_entry_and_tells_agent(store: Store) -> None:
    await store.ensure_group()
    raw = {"request": '{"agent": 1}', "extra": "x"}
    await store.redis.xadd(store.keys.requests, raw)
    res = await store.redis.xreadgroup(GROUP, "t", {store.keys.requests: ">"})
    entry = Entry(res[0][1][0][0], res[0][1][0][1])
    d = Decision(request_id=entry.id, status=Status.invalid, reason="bad", decided_at=utcnow())
    assert await store.dead_letter(entry, "bad", utcnow(), request_id=entry.id, decision=d, reply_to=REPLY_A) == "dead"
    assert await store.dead_letter(entry, "bad", utcnow(), request_id=entry.id, decision=d, reply_to=REPLY_A) == "redelivered"
    dead = await store.redis.xrange(store.keys.dead)
    assert len(dead) == 1 and dead[0][1]["error"] == "bad" and dead[0][1]["request"] == '{"agent": 1}'
    assert len(await store.redis.xrange(REPLY_A)) == 1


async def test_fifty_conflicting_clicks_give_one_decision(store: Store) -> None:
    await _accept(store, _request(reply_to=REPLY))

    async def click(i: int) -> str:
        for _ in range(100):
            rec = await store.get("r1")
            try:
                authorize(rec, f"U{i:04d}", Choice.approve)
                await store.apply(vote(rec, user_id=f"U{i:04d}", name="", choice=Choice.approve, now=utcnow()), utcnow())
                return "won"
            except AlreadyDecided:
                return "late"
            except Conflict:
                continue
        return "gave up"

    results = await asyncio.gather(*(click(i) for i in range(50)))
    assert results.count("won") == 1 and results.count("late") == 49
    assert len(await store.redis.xrange(REPLY)) == 1
    assert len(await store.redis.xrange(store.keys.decisions)) == 1
    rec = await store.get("r1")
    assert rec.decision is not None and rec.decision.status is Status.approved
    assert len(rec.votes) == 1


async def test_quorum_needs_distinct_people(store: Store) -> None:
    await _accept(store, _request(), quorum=2)
    rec = await store.get("r1")
    rec = await store.apply(vote(rec, user_id="U0A", name="a", choice=Choice.approve, now=utcnow()), utcnow())
    assert rec.state is State.pending and len(rec.approvals()) == 1
    with pytest.raises(NotAllowed) as e:
        authorize(rec, "U0A", Choice.approve)
    assert e.value.reason == "already_voted"
    rec = await store.apply(vote(rec, user_id="U0B", name="b", choice=Choice.approve, now=utcnow()), utcnow())
    assert rec.decision is not None and [v.user_id for v in rec.decision.decided_by] == ["U0A", "U0B"]


async def test_stale_version_is_a_conflict(store: Store) -> None:
    await _accept(store, _request(), quorum=2)
    stale = await store.get("r1")
    await store.apply(vote(stale, user_id="U0A", name="a", choice=Choice.approve, now=utcnow()), utcnow())
    with pytest.raises(Conflict):
        await store.apply(vote(stale, user_id="U0B", name="b", choice=Choice.approve, now=utcnow()), utcnow())


async def test_outbox_lease_and_requeue(store: Store) -> None:
    await store.enqueue("post:a", 1000)
    lease, members = await store.claim_outbox(2000, 30_000)
    assert members == ["post:a"]
    assert (await store.claim_outbox(2000, 30_000))[1] == []  # leased: not due again
    await store.enqueue("post:a", 2500)  # queued again while leased: not runnable twice at once
    assert (await store.claim_outbox(2600, 30_000))[1] == []
    assert await store.finish_outbox("post:a", lease)  # ... but it runs once more afterwards
    lease2, members = await store.claim_outbox(int(time.time() * 1000), 30_000)
    assert members == ["post:a"] and await store.finish_outbox("post:a", lease2)
    assert await store.outbox_depth() == 0
    assert not await store.finish_outbox("post:a", lease2)  # a lease that is no longer ours


async def test_enqueue_many_is_enqueue_for_each(store: Store) -> None:
    await store.enqueue("update:a", 1000)
    lease, _ = await store.claim_outbox(1000, 30_000)  # "update:a" is leased now
    await store.enqueue_many(["update:a", "update:b", "update:c"], 2000)
    rows = dict(await store.redis.zrange(store.keys.outbox, 0, -1, withscores=True))
    assert rows == {"update:b": 2000, "update:c": 2000, "update:a": lease}  # the leased one is not pulled forward
    assert await store.redis.sismember(store.keys.outbox_again, "update:a")


async def test_lock_updates_go_before_redraws_in_the_shared_pace(store: Store) -> None:
    """Issue 10, point 6: a redraw of an open card takes only a free token; it never takes the
    slot a lock of a decided card reserved, however often it asks."""
    rate, burst = 1.0, 1.0
    assert await store.pace("update", "update:a", 0, rate, burst) == 0  # the burst token
    assert await store.pace("update", "update:b", 0, rate, burst) == 1000  # a lock reserves 1 s
    assert await store.pace("update", "update:c", 0, rate, burst, reserve=False) >= 1000  # a redraw waits
    assert await store.pace("update", "update:c", 1000, rate, burst, reserve=False) > 0  # b's slot
    assert await store.pace("update", "update:b", 1000, rate, burst) == 0  # b goes at its slot
    assert await store.pace("update", "update:c", 2000, rate, burst, reserve=False) == 0  # then c
