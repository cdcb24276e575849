"""Intake per read batch (issue 13, point 1): one pipeline for a whole batch keeps each entry's
effects and its XACK atomic and a failing entry alone; routing uses in-process copies of the
pause switch and the seen actions, and the accept script refuses a route made on a stale copy,
so a pause takes effect for every replica with the first request accepted after it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import pytest

from bot.intake import Intake
from store.accept import Accepted
from store.models import Mode, Request, Route, utcnow
from store.redis_store import GROUP, Store

GOOD = {"agent": "billing", "action": "lookup_order", "summary": "Look up order 4711"}


class AutoUnlessPaused:
    """Acts alone unless paused or on an action's first use (then a person approves)."""

    policy = SimpleNamespace(triggers=SimpleNamespace(first_use=SimpleNamespace(enabled=True)))

    def __init__(self) -> None:
        self.calls: list[tuple[str, bool, bool]] = []

    def route(self, request: Request, *, first_use: bool = False, paused: bool = False) -> Route:
        assert request.id is not None
        self.calls.append((request.id, first_use, paused))
        mode = Mode.approve if paused or first_use else Mode.auto
        return Route(mode=mode, tier="low", paused=paused, rules=["first_use"] if first_use else [])


@pytest.fixture
async def replicas(store: Store, redis_url: str) -> AsyncIterator[tuple[Intake, Intake]]:
    made = [Intake(store, AutoUnlessPaused, redis_url=redis_url, consumer=f"r{i}") for i in range(2)]
    router = AutoUnlessPaused()
    for i in made:
        i.router = lambda r=router: r  # type: ignore[misc]
    await store.ensure_group()
    yield made[0], made[1]
    for i in made:
        await i.close()


async def _push(store: Store, **fields: Any) -> str:
    return str(await store.redis.xadd(store.keys.requests, {"request": json.dumps({**GOOD, **fields})}))


async def _take(i: Intake) -> None:
    """This replica reads what is there and handles it as one batch."""
    entries = await i.stream.read(i.consumer, ">")
    assert entries
    await i._process(entries)


async def _route(store: Store, rid: str) -> Route:
    return (await store.get(rid)).route


async def test_a_pause_takes_effect_on_every_replica_with_its_next_request(
        store: Store, replicas: tuple[Intake, Intake]) -> None:
    a, b = replicas
    for i, rid in ((a, "warm-a"), (b, "warm-b")):
        await _push(store, id=rid, action="lookup_order")
        await _take(i)
    assert not a._paused and not b._paused  # each replica's copy says "running"
    # an admin pauses on some other replica: nothing tells a or b, yet neither acts on its copy
    assert await store.set_paused(True, "incident", "U0ADMIN", utcnow())
    for i, rid in ((a, "after-a"), (b, "after-b")):
        await _push(store, id=rid)
        await _take(i)
        route = await _route(store, rid)
        assert route.paused and route.mode is Mode.approve, rid
        assert (await store.get(rid)).decision is None  # waits for a person
    assert a._paused and b._paused
    assert await store.set_paused(False, None, "U0ADMIN", utcnow())
    await _push(store, id="resumed")
    await _take(a)
    assert (await _route(store, "resumed")).mode is Mode.auto and not a._paused


async def test_an_action_seen_on_another_replica_is_no_first_use(store: Store, replicas: tuple[Intake, Intake]) -> None:
    a, b = replicas
    await _push(store, id="first", action="refund")
    await _take(a)
    assert (await _route(store, "first")).rules == ["first_use"]
    await _push(store, id="second", action="refund")
    await _take(b)  # b has never seen "refund"; Redis has
    assert (await _route(store, "second")).mode is Mode.auto
    assert "refund" in b._seen
    await _push(store, id="third", action="refund")
    await _take(b)  # now from b's own copy: routed once, no second try
    assert [c for c in b.router().calls if c[0] == "third"] == [("third", False, False)]


class _OneRefused(Store):
    """Redis refuses the accept of request `bad` (a script error before any write)."""

    async def accept_many(self, items: list[tuple[str, Accepted]], now: datetime) -> list[str | Exception]:
        return await super().accept_many(
            [("not-a-stream-id" if acc.request.id == "bad" else e, acc) for e, acc in items], now)


async def test_one_refused_entry_in_a_batch_leaves_the_others_accepted(redis_url: str) -> None:
    store = _OneRefused.from_url(redis_url)
    i = Intake(store, AutoUnlessPaused, redis_url=redis_url, consumer="c1", max_deliveries=2)
    try:
        await store.ensure_group()
        ids = {rid: await _push(store, id=rid) for rid in ("before", "bad", "after")}
        entries = await i.stream.read("c1", ">")
        assert len(entries) == 3  # one read, one batch
        await i._process(entries)
        for rid in ("before", "after"):
            assert await store.exists(rid)
        assert not await store.exists("bad")
        pending = await store.redis.xpending_range(store.keys.requests, GROUP, "-", "+", 10)
        assert [p["message_id"] for p in pending] == [ids["bad"]]  # only the refused one stays pending
        # refused again on its next delivery: dead-lettered with the reason, nothing lost
        await i._process(await i.stream.read("c1", "0"))
        [(_, dead)] = await store.redis.xrange(store.keys.dead)
        assert dead["error"].startswith("Redis refused to store it 2 times")
        assert (await store.redis.xpending(store.keys.requests, GROUP))["pending"] == 0
    finally:
        await i.close()
        await store.close()


async def test_a_batch_is_one_round_trip_of_script_calls(store: Store, replicas: tuple[Intake, Intake]) -> None:
    a, _ = replicas
    await _push(store, id="w0", action="lookup_order")
    await _take(a)  # learns the action and the switch
    await store.redis.config_resetstat()
    for n in range(20):
        await _push(store, id=f"b{n}")
    await _take(a)
    stats = await store.redis.info("commandstats")
    assert stats["cmdstat_evalsha"]["calls"] == 20  # one accept per entry
    assert stats["cmdstat_xreadgroup"]["calls"] == 1
    # the switch and the seen actions are read inside each accept only (commandstats counts
    # a script's own commands too), never by a round trip of their own
    assert "cmdstat_hgetall" not in stats
    assert stats["cmdstat_sismember"]["calls"] == stats["cmdstat_hget"]["calls"] == 20


async def test_a_script_cache_emptied_by_a_redis_restart_is_loaded_again(store: Store,
                                                                         replicas: tuple[Intake, Intake]) -> None:
    a, _ = replicas
    await store.redis.script_flush()  # as after a restart without persistence of scripts
    await _push(store, id="after-flush")
    await _take(a)
    assert await store.exists("after-flush")
    assert (await store.redis.xpending(store.keys.requests, GROUP))["pending"] == 0


class _BreaksOnBoom(Intake):
    def parse(self, entry: Any) -> Request:
        request = super().parse(entry)
        if request.id == "boom":
            raise RuntimeError("a bug met while parsing")
        return request


async def test_a_bug_met_while_parsing_one_entry_leaves_the_batch_alone(store: Store, redis_url: str) -> None:
    i = _BreaksOnBoom(store, AutoUnlessPaused, redis_url=redis_url, consumer="c1")
    try:
        await store.ensure_group()
        for rid in ("x1", "boom", "x2"):
            await _push(store, id=rid)
        await _take(i)
        assert await store.exists("x1") and await store.exists("x2") and not await store.exists("boom")
        [(_, dead)] = await store.redis.xrange(store.keys.dead)
        assert dead["error"] == "internal error while processing: RuntimeError: a bug met while parsing"
        assert (await store.redis.xpending(store.keys.requests, GROUP))["pending"] == 0
    finally:
        await i.close()


TRUSTING = """
defaults: {tier: low}
tiers:
  low:    {mode: auto, sample: 0}
  medium: {mode: approve}
  high:   {mode: approve}
batching: {enabled: false}
trust: {after: 2}
"""


@pytest.fixture
async def trusting(store: Store, redis_url: str) -> AsyncIterator[Intake]:
    from bot.policy import PolicyEngine

    engine = PolicyEngine.from_yaml(TRUSTING)
    i = Intake(store, lambda: engine, redis_url=redis_url, consumer="t1")
    await store.ensure_group()
    yield i
    await i.close()


async def test_trust_changed_by_another_replica_is_routed_on_at_once(store: Store, trusting: Intake) -> None:
    # intake keeps each action's trust between batches; the accept script compares it with
    # what is stored, so a change made elsewhere (here: written as another replica's outcome
    # would) is routed on with the very next request, never the copy
    await _push(store, id="t-1", action="refund")
    await _take(trusting)
    assert (await _route(store, "t-1")).mode is Mode.approve  # a new action: people approve
    assert "billing/refund" in trusting._trust
    await store.redis.hset(store.trust.k.action("billing/refund"),
                           mapping={"state": "trusted", "clean": 2, "approvals": 2, "outcomes": 2})
    await _push(store, id="t-2", action="refund")
    await _take(trusting)
    assert (await _route(store, "t-2")).mode is Mode.auto
    # and back: a reset elsewhere is not missed either
    assert await store.trust.set("reset", "billing", "refund", "U0ADMIN", utcnow())
    await _push(store, id="t-3", action="refund")
    await _take(trusting)
    assert (await _route(store, "t-3")).mode is Mode.approve


async def test_a_canary_of_an_action_known_here_is_still_a_canary(store: Store, trusting: Intake) -> None:
    await _push(store, id="c-0", action="refund")
    await _take(trusting)
    assert "billing/refund" in trusting._trust  # the next request's trust is not read again...
    await store.trust.queue_canary({**GOOD, "action": "refund", "id": "c-1"}, {"answer": "reject", "why": "test"})
    await _take(trusting)
    rec = await store.get("c-1")
    assert rec.route.canary  # ...yet its canary marker is seen (by the accept script)
    assert await store.redis.xlen(store.keys.decisions) == 0  # no agent hears of it
