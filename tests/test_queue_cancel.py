"""Withdrawing a request over the queue (`XADD {prefix}:requests * cancel <JSON>`): the agent's
own pending request ends `rejected`, reason_code `withdrawn`, its card locked; a decided request,
another agent's, an unknown id or a malformed entry is dead-lettered and changes nothing."""

from __future__ import annotations

import asyncio
import json

import hitl
from hitl.client import AsyncClient

from bot.intake import Intake
from bot.routing import SingleChannelRouter
from store.redis_store import GROUP, Store
from tests.harness import Harness
from tests.reviewer import approve, h
from tests.test_commands import hitl as slash
from tests.test_commands import words
from tests.util import eventually

__all__ = ["h"]

REFUND = {"action": "refund", "summary": "Refund $250 to Ana", "params": {"amount": 250}}


async def _dead(h: Harness, n: int) -> list[dict[str, str]]:
    async def found() -> list[dict[str, str]] | None:
        rows = await h.store.redis.xrange(h.store.keys.dead)
        return [dict(f) for _, f in rows] if len(rows) >= n else None

    return list(await eventually(found, what=f"{n} dead letters"))


async def test_an_agent_withdraws_its_pending_request(h: Harness) -> None:
    async with AsyncClient.from_url(h.redis_url, agent="billing-agent") as client:
        rid = await client.request(**REFUND)
        rec = await h.card(rid)
        decision = await client.cancel(rid, reason="the customer paid meanwhile")
        again = await client.cancel(rid, reason="twice")  # idempotent: the decision in force
    assert decision.status == "rejected" and decision.reason_code == "withdrawn"
    assert decision.reason == "the customer paid meanwhile" and again == decision
    trail = [e.event for e in await h.store.trail(rid)]
    assert trail.count("withdrawn") == 1 and "invalid" not in trail, trail

    async def locked() -> bool:
        text = json.dumps(h.message(rec))
        return "Withdrawn" in text and "the customer paid meanwhile" in text

    await eventually(locked, what="card locked as withdrawn, with the reason")

    async def all_read() -> bool:  # the second withdrawal too
        return await h.store.queue_lag() == 0

    await eventually(all_read, what="every entry handled")
    assert await h.store.redis.xlen(h.store.keys.dead) == 0
    assert await h.store.redis.zcard(h.store.keys.pending) == 0


async def test_the_sync_client_withdraws_too(h: Harness) -> None:
    def withdrawn() -> hitl.Decision:
        with hitl.Client(h.redis_url, agent="billing-agent") as client:
            return client.cancel(client.request(**REFUND))

    decision = await asyncio.to_thread(withdrawn)
    assert decision.status == "rejected" and decision.reason_code == "withdrawn"


async def test_a_withdrawal_never_changes_a_decision_nor_another_agents_request(h: Harness) -> None:
    async with AsyncClient.from_url(h.redis_url, agent="billing-agent") as client:
        done = await client.request(**REFUND, id="done-1")
        await approve(h, await h.card(done))
        assert (await client.cancel(done, reason="too late")).approved  # the decision in force
        theirs = await h.push(agent="payments-bot", id="theirs-1")
        await h.card(theirs)
        before = await h.store.redis.xlen(h.store.keys.decisions)
        queue = h.store.keys.requests
        await h.store.redis.xadd(queue, {"cancel": json.dumps({"id": theirs, "agent": "billing-agent"})})
        await h.store.redis.xadd(queue, {"cancel": json.dumps({"id": "nobody-1", "agent": "billing-agent"})})
        await h.store.redis.xadd(queue, {"cancel": "{not json"})
        await h.store.redis.xadd(queue, {"cancel": json.dumps({"id": "x", "agent": "a", "extra": 1})})
        dead = await _dead(h, 5)
    errors = [d["error"] for d in dead]
    assert "already decided (approved)" in errors[0], errors
    assert "another agent's" in errors[1] and "payments-bot" in errors[1], errors
    assert "no request 'nobody-1'" in errors[2], errors
    assert "not valid JSON" in errors[3] and "extra" in errors[4], errors
    assert (await h.store.get(done)).decision.status == "approved"  # type: ignore[union-attr]
    assert (await h.store.get(theirs)).decision is None
    # nothing published for any of them: no agent takes a refused withdrawal for a decision
    assert await h.store.redis.xlen(h.store.keys.decisions) == before
    # the refusal is audited on the request's trail as what it is, not as an invalid request
    trail = await h.store.trail(done)
    [refused] = [e for e in trail if e.detail.get("error")]
    assert refused.event == "withdraw_refused" and "already decided (approved)" in refused.detail["error"]
    assert "invalid" not in [e.event for e in trail]
    text = words(await slash(h, f"audit {done}"))
    assert "*withdraw_refused* by _system_: cancel: request 'done-1' is already decided (approved)" in text, text




async def test_a_withdrawal_another_replica_reads_before_its_request_is_stored_waits_for_it(
        store: Store, redis_url: str) -> None:
    """Two replicas: `a` holds the request entry (read, not yet stored) while `b` reads the
    withdrawal sent right after it. The withdrawal stays pending and is applied once retried
    (reclaim), never dead-lettered as "no request"; one for an id never sent still is, at once."""
    def replica(name: str) -> Intake:
        return Intake(store, lambda: SingleChannelRouter(), redis_url=redis_url, consumer=name,
                      claim_idle_s=0, max_deliveries=5)

    a, b = replica("a"), replica("b")
    queue = store.keys.requests
    try:
        await store.ensure_group()
        await store.redis.xadd(queue, {"request": json.dumps({**REFUND, "agent": "billing-agent", "id": "r1"})})
        await store.redis.xadd(queue, {"cancel": json.dumps({"id": "r1", "agent": "billing-agent"})})
        await store.redis.xadd(queue, {"cancel": json.dumps({"id": "ghost-1", "agent": "billing-agent"})})
        [held] = await a.stream.read("a", ">", count=1)  # replica a is held back with the request
        await b._process(await b.stream.read("b", ">"))
        [dead] = [f for _, f in await store.redis.xrange(store.keys.dead)]
        assert "no request 'ghost-1'" in dead["error"], dead  # never sent: refused at once
        assert [p["message_id"] for p in await store.redis.xpending_range(queue, GROUP, "-", "+", 10)] \
            == [held.id, (await store.redis.xrange(queue))[1][0]]  # the withdrawal waits, unacknowledged
        await a._process([held])  # the request is stored
        assert (await store.get("r1")).decision is None
        assert await b.reclaim() == 1  # the withdrawal, retried
        decision = (await store.get("r1")).decision
        assert decision is not None and decision.reason_code == "withdrawn", decision
        assert await store.queue_lag() == 0 and await store.redis.xlen(store.keys.dead) == 1
    finally:
        await a.close()
        await b.close()


async def test_a_withdrawal_that_waited_too_long_is_refused_as_a_withdrawal(store: Store, redis_url: str) -> None:
    """A withdrawal left waiting for its request (held by a replica that never stores it) ends
    dead-lettered after HITL_MAX_DELIVERIES like any entry, but as a refused withdrawal: on the
    request's trail, and no `invalid` decision published under the queue entry's id."""
    a = Intake(store, lambda: SingleChannelRouter(), redis_url=redis_url, consumer="a")
    b = Intake(store, lambda: SingleChannelRouter(), redis_url=redis_url, consumer="b", max_deliveries=1)
    queue = store.keys.requests
    try:
        await store.ensure_group()
        await store.redis.xadd(queue, {"request": json.dumps({**REFUND, "agent": "billing-agent", "id": "r2"})})
        await store.redis.xadd(queue, {"cancel": json.dumps({"id": "r2", "agent": "billing-agent"})})
        await a.stream.read("a", ">", count=1)  # replica a holds the request, and never stores it
        await b._process(await b.stream.read("b", ">"))  # waits
        assert await store.redis.xlen(store.keys.dead) == 0
        await b._drain_own_pending()  # b restarts: its second delivery is past max_deliveries
        [(_, dead)] = await store.redis.xrange(store.keys.dead)
        assert dead["error"].startswith("cancel: "), dead
        assert await store.redis.xlen(store.keys.decisions) == 0
        assert [e.event for e in await store.trail("r2")] == ["withdraw_refused"]
    finally:
        await a.close()
        await b.close()
