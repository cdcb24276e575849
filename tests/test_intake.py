"""Intake against a real redis-server: validation, dead letters, idempotency, reclaim."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from bot.intake import Intake
from bot.routing import SingleChannelRouter
from store.models import State
from store.redis_store import GROUP, Store
from tests.util import eventually, started

ROUTER = SingleChannelRouter()


@pytest.fixture
async def intake(store: Store, redis_url: str) -> AsyncIterator[Intake]:
    async with started(Intake(store, lambda: ROUTER, redis_url=redis_url, consumer="c1", claim_idle_s=0.2, max_deliveries=3)) as i:
        yield i


async def _push(store: Store, value: object, field: str = "request") -> str:
    raw = value if isinstance(value, str) else json.dumps(value)
    return str(await store.redis.xadd(store.keys.requests, {field: raw}))


async def _dead(store: Store, n: int) -> list[dict[str, str]]:
    async def check() -> list[dict[str, str]] | None:
        rows = await store.redis.xrange(store.keys.dead)
        return [f for _, f in rows] if len(rows) >= n else None

    return await eventually(check, what=f"{n} dead letters")


GOOD = {"agent": "billing", "action": "refund", "summary": "Refund $250"}

INVALID = [
    ("not json", "{not json", "request is not valid JSON"),
    ("not an object", "[1, 2]", "must be a JSON object"),
    ("missing summary", {"agent": "a", "action": "b"}, "summary: Field required"),
    ("confidence out of range", {**GOOD, "confidence": 1.5}, "confidence: Input should be less than or equal to 1"),
    ("unknown kind", {**GOOD, "kind": "vote"}, "kind: Input should be"),
    ("oversized summary", {**GOOD, "summary": "x" * 5000}, "summary: String should have at most 3000"),
    ("unknown field", {**GOOD, "colour": "red"}, "colour: Extra inputs are not permitted"),
    ("editable not in params", {**GOOD, "editable": ["amount"]}, "editable names 'amount'"),
    ("reply_to into the audit stream", {**GOOD, "reply_to": "hitl:audit"}, "names one of the bot's own keys"),
    # a number sent as text is converted by the model, past the bounds JSON numbers are held to
    ("tool_calls as text past 1e15", {**GOOD, "metadata": {"tool_calls": "1" * 20}},
     "metadata.tool_calls: Input should be less than or equal to 1000000000000000"),
]


@pytest.mark.parametrize(("case", "value", "error"), INVALID, ids=[c[0] for c in INVALID])
async def test_invalid_entries_are_dead_lettered_with_a_reason(
    store: Store, intake: Intake, case: str, value: object, error: str
) -> None:
    entry_id = await _push(store, value)
    [dead] = await _dead(store, 1)
    assert error in dead["error"], dead["error"]
    assert dead["entry_id"] == entry_id
    assert dead["request"] == (value if isinstance(value, str) else json.dumps(value))
    assert (await store.redis.xpending(store.keys.requests, GROUP))["pending"] == 0
    assert [e.event for e in await store.audit_entries()] == ["invalid", "published"]


async def test_entry_without_request_field(store: Store, intake: Intake) -> None:
    await _push(store, GOOD, field="payload")
    [dead] = await _dead(store, 1)
    assert dead["error"] == "entry has no 'request' field (fields: payload)"


async def test_invalid_entry_tells_a_usable_reply_to(store: Store, intake: Intake) -> None:
    await _push(store, {"agent": "a", "action": "b", "id": "x1", "confidence": 7, "summary": "s",
                        "reply_to": "agent:inbox"})
    await _dead(store, 1)
    rows = await store.redis.xrange("agent:inbox")
    decision = json.loads(rows[0][1]["decision"])
    assert decision["status"] == "invalid" and decision["request_id"] == "x1"
    assert "confidence" in decision["reason"]
    # the same decision stays readable by id for an agent that restarts
    assert json.loads(await store.redis.get(store.keys.invalid("x1")))["status"] == "invalid"


async def test_own_keys_are_never_written_as_reply_to(store: Store, intake: Intake) -> None:
    await _push(store, {**GOOD, "id": "x2", "reply_to": "hitl:requests"})
    await _dead(store, 1)
    assert (await store.redis.xinfo_stream(store.keys.requests))["entries-added"] == 1  # nothing added to our queue


async def test_same_id_twice_is_one_request(store: Store, intake: Intake) -> None:
    await _push(store, {**GOOD, "id": "dup"})
    await _push(store, {**GOOD, "id": "dup", "summary": "second"})

    async def both_acked() -> bool:
        return (await store.redis.xpending(store.keys.requests, GROUP))["pending"] == 0 and \
            (await store.redis.xinfo_stream(store.keys.requests))["entries-added"] == 2 and \
            await store.exists("dup")

    await eventually(both_acked, what="both entries acknowledged")
    await eventually(lambda: _events(store, "duplicate"), what="duplicate audited")
    rec = await store.get("dup")
    assert rec.request.summary == "Refund $250" and rec.state is State.pending
    assert await store.outbox_depth() == 1


async def _events(store: Store, name: str) -> bool:
    return any(e.event == name for e in await store.audit_entries())


async def test_request_without_id_takes_the_entry_id(store: Store, intake: Intake) -> None:
    entry_id = await _push(store, GOOD)
    await eventually(lambda: store.exists(entry_id), what="record by entry id")


async def test_idle_entries_of_a_dead_consumer_are_reclaimed(store: Store, redis_url: str) -> None:
    await store.ensure_group()
    await _push(store, {**GOOD, "id": "orphan"})
    # a consumer that read the entry and died before acknowledging it
    await store.redis.xreadgroup(GROUP, "dead-consumer", {store.keys.requests: ">"})
    i = Intake(store, lambda: ROUTER, redis_url=redis_url, consumer="c2", claim_idle_s=0.2)
    task = asyncio.create_task(i.run())
    try:
        await eventually(lambda: store.exists("orphan"), what="orphan reclaimed")
    finally:
        i.stop()
        await asyncio.wait_for(task, 10)
        await i.close()


async def test_entry_delivered_too_often_is_dead_lettered(store: Store, redis_url: str) -> None:
    await store.ensure_group()
    entry_id = await _push(store, {**GOOD, "id": "poison"})
    for n in range(4):  # four consumers each read it and crashed
        if n == 0:
            await store.redis.xreadgroup(GROUP, "crasher", {store.keys.requests: ">"})
        else:
            await store.redis.xclaim(store.keys.requests, GROUP, "crasher", 0, [entry_id])
    i = Intake(store, lambda: ROUTER, redis_url=redis_url, consumer="c3", claim_idle_s=0.1, max_deliveries=3)
    await asyncio.sleep(0.15)
    await i.reclaim()
    await i.close()
    [dead] = await _dead(store, 1)
    assert "delivered 5 times" in dead["error"]
    assert not await store.exists("poison")


async def test_a_poison_entry_of_our_own_is_dead_lettered_after_restarts(store: Store, redis_url: str) -> None:
    """A fixed consumer name that crashed on an entry each time re-reads it on start; it must
    not loop forever."""
    await store.ensure_group()
    entry_id = await _push(store, {**GOOD, "id": "own-poison"})
    await store.redis.xreadgroup(GROUP, "fixed", {store.keys.requests: ">"})
    for _ in range(4):  # four restarts, each crashing while handling it
        await store.redis.xreadgroup(GROUP, "fixed", {store.keys.requests: "0"})
    i = Intake(store, lambda: ROUTER, redis_url=redis_url, consumer="fixed", max_deliveries=3)
    task = asyncio.create_task(i.run())
    try:
        [dead] = await _dead(store, 1)
        assert dead["entry_id"] == entry_id and "delivered" in dead["error"]
        assert not await store.exists("own-poison")
    finally:
        i.stop()
        await asyncio.wait_for(task, 10)
        await i.close()
