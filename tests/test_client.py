"""The agent client against a real redis-server and the real intake: blocking waits, restarts."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.client import HitlClient, SyncHitlClient
from bot.intake import Intake
from bot.routing import SingleChannelRouter
from store.models import Choice, Mode, Request, Route, Status, utcnow
from store.redis_store import Store
from store.transitions import vote
from tests.util import eventually, started


class AutoRouter:
    def route(self, request: Request, *, first_use: bool = False, paused: bool = False) -> Route:
        if request.action == "lookup":
            return Route(mode=Mode.auto, tier="low")
        return SingleChannelRouter().route(request)


@pytest.fixture
async def intake(store: Store, redis_url: str) -> AsyncIterator[Intake]:
    router = AutoRouter()
    async with started(Intake(store, lambda: router, redis_url=redis_url, consumer="c")) as i:
        yield i


async def _approve(store: Store, rid: str, user: str = "U0ALICE") -> None:
    await eventually(lambda: store.exists(rid), what="record")
    rec = await store.get(rid)
    await store.apply(vote(rec, user_id=user, name="alice", choice=Choice.approve, now=utcnow()), utcnow())


async def test_ask_blocks_until_a_person_decides(store: Store, intake: Intake, redis_url: str) -> None:
    async with HitlClient.from_url(redis_url, name="agent-1") as client:
        waiting = asyncio.create_task(client.ask(agent="a", action="refund", summary="Refund", id="r1",
                                                 params={"amount": 5}, timeout=10))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        await _approve(store, "r1")
        decision = await waiting
    assert decision.status is Status.approved and decision.approved
    assert decision.decided_by[0].user_id == "U0ALICE" and decision.params == {"amount": 5}
    # it arrived on the agent's own results stream
    assert await store.redis.xlen(store.keys.results("agent-1")) == 1


async def test_auto_decision_arrives_even_if_faster_than_the_wait(store: Store, intake: Intake, redis_url: str) -> None:
    async with HitlClient.from_url(redis_url) as client:
        decision = await client.ask(agent="a", action="lookup", summary="Look up order 1", timeout=10)
    assert decision.status is Status.auto_approved


async def test_a_restarted_agent_waits_on_an_earlier_id(store: Store, intake: Intake, redis_url: str) -> None:
    async with HitlClient.from_url(redis_url, name="agent-2") as first:
        rid = await first.request(agent="a", action="refund", summary="Refund")
    await eventually(lambda: store.exists(rid), what="record")
    async with HitlClient.from_url(redis_url, name="agent-2-restarted") as second:
        waiting = asyncio.create_task(second.wait(rid, timeout=10))
        await asyncio.sleep(0.1)
        await _approve(store, rid)
        assert (await waiting).status is Status.approved
        # after the fact, too: read from the stored state
        assert (await second.wait(rid, timeout=1)).status is Status.approved


async def test_wait_times_out(store: Store, intake: Intake, redis_url: str) -> None:
    async with HitlClient.from_url(redis_url) as client:
        rid = await client.request(agent="a", action="refund", summary="Refund")
        with pytest.raises(TimeoutError):
            await client.wait(rid, timeout=0.3)


async def test_invalid_request_is_answered_as_invalid(store: Store, intake: Intake, redis_url: str) -> None:
    async with HitlClient.from_url(redis_url, name="agent-3") as client:
        rid = "bad-1"
        await store.redis.xadd(store.keys.requests, {"request": '{"id": "bad-1", "agent": "a", "action": "b", '
                                                                '"summary": "s", "confidence": 9, '
                                                                '"reply_to": "hitl:results:agent-3"}'})
        decision = await client.wait(rid, timeout=5, reply_to="hitl:results:agent-3")
        assert decision.status is Status.invalid and "confidence" in (decision.reason or "")
        # and by id alone, later
        assert (await client.wait(rid, timeout=1)).status is Status.invalid


async def test_client_validates_before_sending(redis_url: str, store: Store) -> None:
    async with HitlClient.from_url(redis_url) as client:
        with pytest.raises(ValueError, match="confidence"):
            await client.request(agent="a", action="b", summary="s", confidence=3)
    assert await store.redis.exists(store.keys.requests) == 0


@pytest.mark.cluster_too
async def test_sync_client(store: Store, intake: Intake, redis_url: str) -> None:
    result: dict[str, object] = {}

    def agent() -> None:
        client = SyncHitlClient(redis_url, name="sync-agent")
        try:
            result["decision"] = client.ask(agent="a", action="refund", summary="Refund", id="s1", timeout=10)
        finally:
            client.close()

    thread = threading.Thread(target=agent)
    thread.start()
    await _approve(store, "s1")
    await asyncio.to_thread(thread.join, 10)
    decision = result["decision"]
    assert getattr(decision, "status", None) is Status.approved


async def test_asking_again_with_a_decided_id_answers_with_the_stored_decision(
        store: Store, intake: Intake, redis_url: str) -> None:
    # the second entry is a duplicate for intake (nothing is published again): the answer is
    # the decision stored by id, read in the same round trip as the request is sent
    async with HitlClient.from_url(redis_url, name="agent-4") as client:
        first = await client.ask(agent="a", action="lookup", summary="Look up order 2", id="again-1", timeout=10)
        second = await client.ask(agent="a", action="lookup", summary="Look up order 2", id="again-1", timeout=10)
    assert first.status is Status.auto_approved and second == first
    assert await store.redis.xlen(store.keys.results("agent-4")) == 1


@pytest.mark.cluster_too
async def test_concurrent_asks_on_one_client_each_get_their_own_decision(
        store: Store, intake: Intake, redis_url: str) -> None:
    async with HitlClient.from_url(redis_url, name="agent-5") as client:
        decisions = await asyncio.gather(*(client.ask(agent="a", action="lookup", summary=f"Look up {i}",
                                                      timeout=10) for i in range(20)))
    assert len({d.request_id for d in decisions}) == 20
    assert all(d.status is Status.auto_approved for d in decisions)


async def _all_end(tasks: list[asyncio.Task[Any]]) -> None:
    """Every task ends (a wait whose cancellation was lost reads on for ever: 5 s is its bound)."""
    _, pending = await asyncio.wait(tasks, timeout=5)
    assert not pending, f"{len(pending)} of {len(tasks)} cancelled waits still waiting"


@pytest.mark.cluster_too
async def test_cancelled_waits_end_and_the_client_works_on(store: Store, intake: Intake, redis_url: str) -> None:
    """An agent cancels its waits (a task cancelled at shutdown, an asyncio.wait_for around
    `wait`, an MCP call bounded by its wait), more of them than the client's 64 connections.
    A cancellation that came while a command was being sent was lost (redis-py sends through
    asyncio.wait_for, which on Python 3.11 returns the send's result instead of the
    cancellation): the wait read on for ever, holding a connection (on a cluster, a place in
    the client's queue); a few rounds of that left every later command waiting."""
    client = HitlClient.from_url(redis_url, name="agent-6")
    try:
        ids = await asyncio.gather(*(client.request(agent="a", action="refund", summary=f"Refund {i}")
                                     for i in range(100)))
        for steps in range(16):  # the cancellation lands at each step of the waits' first commands
            waits = [asyncio.create_task(client.wait(rid)) for rid in ids]
            for _ in range(steps):
                await asyncio.sleep(0)
            for t in waits:
                t.cancel()
            await _all_end(waits)
            assert all(t.cancelled() for t in waits)
        bounded = [asyncio.create_task(asyncio.wait_for(client.wait(rid), 0.01 * (i % 10)))
                   for i, rid in enumerate(ids)]
        await _all_end(bounded)
        assert all(isinstance(t.exception(), TimeoutError) for t in bounded)
        waiting = asyncio.create_task(client.ask(agent="a", action="refund", summary="After", id="after",
                                                 timeout=10))
        await _approve(store, "after")  # a decision published after all that is still read
        assert (await waiting).approved
    finally:
        await client.close()
