"""A click's path (issue 13, point 5): one record read per click, the record after a transition
computed rather than read again, and the HTTP answer as soon as the listener acknowledges."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from slack_bolt.async_app import AsyncAck

from bot import http_ack
from emulator import sign
from emulator.common import TEAM_ID
from handlers import reviews
from handlers.deps import Deps
from store.models import Choice, Mode, Request, Route, State, utcnow
from store.redis_store import GROUP, Accepted, Store
from store.transitions import vote
from tests.harness import SECRET, Harness, start, stop


async def _pending(store: Store, rid: str, **fields: Any) -> None:
    await store.ensure_group()
    await store.redis.xadd(store.keys.requests, {"request": "{}"})
    [[_, [(entry_id, _)]]] = await store.redis.xreadgroup(GROUP, "t", {store.keys.requests: ">"}, count=1)
    req = Request(id=rid, agent="billing", action="refund", summary="Refund $250", **fields)
    route = Route(mode=Mode.approve, tier="medium", quorum=2)
    assert await store.accept(entry_id, Accepted(req, route, None, post=False), utcnow()) == "accepted"


async def test_a_click_reads_the_record_once(store: Store) -> None:
    await _pending(store, "one")
    await store.redis.config_resetstat()
    record = await reviews.decide(Deps(store=store), "one", "U0ALICE", "alice", Choice.approve)
    stats = await store.redis.info("commandstats")
    assert stats["cmdstat_hgetall"]["calls"] == 1
    assert record.votes[0].user_id == "U0ALICE" and record.version == 1


@pytest.mark.parametrize("steps", [
    [("U0ALICE", Choice.approve)],
    [("U0ALICE", Choice.approve), ("U0BOB", Choice.approve)],  # the quorum of two: decided
    [("U0ALICE", Choice.edit)],
    [("U0ALICE", Choice.reject)],
])
async def test_the_record_after_a_transition_is_the_stored_one(store: Store, steps: list[tuple[str, Choice]]) -> None:
    await _pending(store, "r", params={"amount": 250}, editable=["amount"])
    for user, choice in steps:
        before = await store.get("r")
        kw: dict[str, Any] = {"edits": {"amount": 200}} if choice is Choice.edit else {}
        if choice is Choice.reject:
            kw = {"reason_code": "wrong_amount", "reason": "too much"}
        after = await store.apply(vote(before, user_id=user, name=user, choice=choice, now=utcnow(), **kw), utcnow())
        assert after == await store.get("r")
    assert after.version == len(steps)
    if len(steps) == 2 or steps[0][1] is Choice.reject:
        assert after.state is State.decided and after.decision is not None


@pytest.fixture
async def h(redis_url: str) -> AsyncIterator[Harness]:
    harness = await start(redis_url)
    yield harness
    await stop(harness)


async def test_a_click_is_answered_once_its_listener_is_done_and_the_rest_at_ack(
        h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    gate, finished, stored = asyncio.Event(), asyncio.Event(), asyncio.Event()

    @h.bot.bolt.action("test.quick")
    async def quick(ack: AsyncAck) -> None:
        await ack()
        await asyncio.sleep(0.05)  # stored after the ack, and after Bolt's 10 ms ack poll ...
        stored.set()

    @h.bot.bolt.action("test.slow")
    async def slow(ack: AsyncAck) -> None:
        await ack()
        await gate.wait()
        finished.set()

    @h.bot.bolt.view("test.form")
    async def form(ack: AsyncAck) -> None:
        await ack(response_action="errors", errors={"amount": "must be a number"})
        await gate.wait()

    async def post(payload: dict[str, Any], secret: str = SECRET) -> tuple[int, str]:
        body = ("payload=" + json.dumps(payload)).encode()
        async with aiohttp.ClientSession() as s, s.post(
                f"http://127.0.0.1:{h.bot.port}/slack/events", data=body,
                headers={**sign(secret, body, int(time.time())),
                         "Content-Type": "application/x-www-form-urlencoded"}) as r:
            return r.status, await r.text()

    def click(action_id: str) -> dict[str, Any]:
        return {"type": "block_actions", "user": {"id": "U0ALICE", "team_id": TEAM_ID}, "team": {"id": TEAM_ID},
                "actions": [{"action_id": action_id, "value": "x"}]}

    assert (await post(click("test.quick")))[0] == 200
    assert stored.is_set()  # ... and the answer comes after it
    monkeypatch.setattr(http_ack, "ACK_WAIT_S", 0.05)  # a slow listener's click is answered anyway
    assert (await post(click("test.slow")))[0] == 200
    assert not finished.is_set()  # a listener still busy does not hold the answer
    status, text = await post({"type": "view_submission", "user": {"id": "U0ALICE", "team_id": TEAM_ID},
                               "team": {"id": TEAM_ID},
                               "view": {"type": "modal", "callback_id": "test.form", "state": {"values": {}}}})
    assert status == 200 and json.loads(text) == {"response_action": "errors",
                                                  "errors": {"amount": "must be a number"}}
    gate.set()
    await asyncio.wait_for(finished.wait(), 5)
    assert (await post(click("test.quick"), secret="wrong"))[0] == 401  # Bolt's own answer
