"""The core loop end to end: the real bot over HTTP, Slack's wire format, a real Redis.

Requests are pushed onto the queue, cards appear in the emulator, clicks and modal
submissions reach the bot as signed HTTP requests, and decisions reach the agent.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from blocks.ids import ActionId, BlockId, param_block_id
from emulator import sign
from store.models import Status
from tests.harness import SECRET, Harness, start, stop
from tests.util import eventually


@pytest.fixture
async def h(redis_url: str) -> AsyncIterator[Harness]:
    harness = await start(redis_url)
    yield harness
    await stop(harness)


def _actions(message: dict[str, Any]) -> list[str]:
    return [e.get("action_id", "") for b in message.get("blocks", []) if b["type"] == "actions"
            for e in b["elements"]]


def _ephemerals_for(h: Harness, user: str) -> list[str]:
    return [json.dumps(e) for e in h.emu.ephemerals(user)]


@pytest.mark.cluster_too
async def test_approve(h: Harness) -> None:
    rid = await h.push(params={"order": "4711", "amount": 250}, confidence=0.72,
                       context={"recommendation": "Refund the duplicate charge"})
    waiting = asyncio.create_task(h.client.wait(rid, timeout=10))
    rec = await h.card(rid)
    msg = h.message(rec)
    assert ActionId.approve in _actions(msg) and ActionId.reject in _actions(msg)
    assert ActionId.edit not in _actions(msg)  # nothing editable
    assert "Refund $250 to Ana" in json.dumps(msg["blocks"])
    resp = await h.click(rec, "U0ALICE", ActionId.approve)
    assert resp.status == 200
    decision = await waiting
    assert decision.status is Status.approved
    assert [v.user_id for v in decision.decided_by] == ["U0ALICE"]
    assert decision.params == {"order": "4711", "amount": 250}

    async def locked() -> bool:
        m = h.message(await h.store.get(rid))
        return not _actions(m) and "Approved" in json.dumps(m["blocks"])

    await eventually(locked, what="card locked")
    events = [e.event for e in await h.store.trail(rid)]
    for expected in ("received", "routed", "posted", "clicked", "decided", "published"):
        assert expected in events, events


@pytest.mark.cluster_too
async def test_edit_with_a_changed_number(h: Harness) -> None:
    rid = await h.push(params={"order": "4711", "amount": 250}, editable=["amount"])
    rec = await h.card(rid)
    assert ActionId.edit in _actions(h.message(rec))
    await h.click(rec, "U0ALICE", ActionId.edit)
    view = await eventually(lambda: _open_view(h, "U0ALICE"), what="edit modal")
    # an invalid value: inline error, nothing decided
    result = await h.emu.submit_view("U0ALICE", view.id, {param_block_id("amount"): {"value": "lots"}})
    assert not result.closed and param_block_id("amount") in result.errors
    assert (await h.store.get(rid)).decision is None
    result = await h.emu.submit_view("U0ALICE", view.id, {param_block_id("amount"): {"value": "200"}})
    assert result.closed
    decision = await h.client.wait(rid, timeout=10)
    assert decision.status is Status.approved
    assert decision.params["amount"] == 200 and isinstance(decision.params["amount"], int)
    assert decision.changes["amount"].before == 250 and decision.changes["amount"].after == 200


async def _open_view(h: Harness, user: str) -> Any:
    return h.emu.top_view(user)


@pytest.mark.cluster_too
async def test_reject_with_a_reason(h: Harness) -> None:
    rid = await h.push()
    rec = await h.card(rid)
    await h.click(rec, "U0BOB", ActionId.reject)
    view = await eventually(lambda: _open_view(h, "U0BOB"), what="reject modal")
    result = await h.emu.submit_view("U0BOB", view.id, {
        BlockId.reason_code.value: {"value": "wrong_params"},
        BlockId.reason_text.value: {"value": "The order was refunded last week"}})
    assert result.closed
    decision = await h.client.wait(rid, timeout=10)
    assert decision.status is Status.rejected
    assert decision.reason_code == "wrong_params" and decision.reason == "The order was refunded last week"
    assert decision.params == {}


async def test_double_click_and_a_late_second_reviewer_change_nothing(h: Harness) -> None:
    h.emu.inject("chat.update", delay=1.0, times=None)  # people click before the card is locked
    rid = await h.push(reply_to="agent:inbox")
    rec = await h.card(rid)
    await h.click(rec, "U0ALICE", ActionId.approve)
    await h.decided(rid)
    await h.click(rec, "U0ALICE", ActionId.approve)
    await h.click(rec, "U0BOB", ActionId.approve)
    await eventually(lambda: asyncio.sleep(0, _ephemerals_for(h, "U0BOB")), what="ephemeral to Bob")
    assert "U0ALICE" in _ephemerals_for(h, "U0BOB")[0]  # who decided it
    assert _ephemerals_for(h, "U0ALICE")
    assert await h.store.redis.xlen("agent:inbox") == 1
    rec = await h.store.get(rid)
    assert rec.decision is not None and len(rec.decision.decided_by) == 1


async def test_self_approval_is_refused_and_audited(h: Harness) -> None:
    rid = await h.push(requested_by="U0ALICE")
    rec = await h.card(rid)
    await h.click(rec, "U0ALICE", ActionId.approve)
    await eventually(lambda: asyncio.sleep(0, _ephemerals_for(h, "U0ALICE")), what="refusal")
    assert "cannot approve it yourself" in _ephemerals_for(h, "U0ALICE")[0]
    assert (await h.store.get(rid)).decision is None
    refused = [e for e in await h.store.trail(rid) if e.event == "refused"]
    assert refused and refused[0].actor == "U0ALICE" and refused[0].detail["reason"] == "self_approval"
    await h.click(rec, "U0BOB", ActionId.approve)
    assert (await h.client.wait(rid, timeout=10)).status is Status.approved


async def _post_signed(h: Harness, body: bytes, headers: dict[str, str]) -> int:
    url = f"http://127.0.0.1:{h.bot.port}/slack/events"
    async with aiohttp.ClientSession() as s, s.post(url, data=body, headers={
            **headers, "Content-Type": "application/x-www-form-urlencoded"}) as r:
        return r.status


async def test_forged_and_stale_requests_get_401(h: Harness) -> None:
    rid = await h.push()
    await h.card(rid)
    body = ("payload=" + json.dumps({"type": "block_actions", "user": {"id": "U0ALICE"},
                                     "actions": [{"action_id": ActionId.approve.value,
                                                  "value": json.dumps({"r": rid})}]})).encode()
    now = int(time.time())
    assert await _post_signed(h, body, sign("not-the-secret", body, now)) == 401
    assert await _post_signed(h, body, sign(SECRET, body, now - 301)) == 401
    assert await _post_signed(h, body, {}) == 401
    await asyncio.sleep(0.2)
    assert (await h.store.get(rid)).decision is None


async def test_idempotent_re_push_gives_one_card(h: Harness) -> None:
    await h.push(id="same-1")
    await h.push(id="same-1")
    rec = await h.card("same-1")
    await eventually(lambda: _events(h, "same-1", "duplicate"), what="duplicate audited")
    await asyncio.sleep(0.3)
    cards = [m for m in h.emu.messages(rec.channel or "") if "same-1" in json.dumps(m.get("metadata") or {})]
    assert len(cards) == 1


async def _events(h: Harness, rid: str, name: str) -> bool:
    return any(e.event == name for e in await h.store.trail(rid))


async def test_invalid_entries_reach_the_agent(h: Harness) -> None:
    await h.push_raw({"agent": "a", "action": "b", "summary": "s", "id": "bad", "confidence": -1,
                      "reply_to": "hitl:results:test-agent"})
    await h.push_raw("not json at all")
    decision = await h.client.wait("bad", timeout=10)
    assert decision.status is Status.invalid and "confidence" in (decision.reason or "")
    await eventually(lambda: _dead_count(h, 2), what="two dead letters")
    assert not h.emu.calls_to("chat.postMessage")


async def _dead_count(h: Harness, n: int) -> bool:
    return bool(await h.store.redis.xlen(h.store.keys.dead) == n)


async def test_fifty_conflicting_clicks_give_one_decision(h: Harness) -> None:
    for i in range(50):
        h.emu.add_user(f"U0R{i:03d}", f"reviewer{i}")
    rid = await h.push(reply_to="agent:fifty")
    rec = await h.card(rid)
    results = await asyncio.gather(*(h.click(rec, f"U0R{i:03d}", ActionId.approve) for i in range(50)))
    assert all(r.status == 200 for r in results)
    await h.decided(rid)
    await asyncio.sleep(0.3)
    assert await h.store.redis.xlen("agent:fifty") == 1
    assert await h.store.redis.xlen(h.store.keys.decisions) == 1
    decided = [e for e in await h.store.trail(rid) if e.event == "decided"]
    assert len(decided) == 1


async def test_slack_429_on_post_is_retried_after_retry_after(h: Harness) -> None:
    h.emu.inject("chat.postMessage", status=429, retry_after=1, times=1)
    rid = await h.push()
    started = time.monotonic()
    rec = await h.card(rid)
    assert time.monotonic() - started >= 0.9
    assert len([c for c in h.emu.calls_to("chat.postMessage") if c.status == 200]) == 1
    assert rec.ts


async def test_5xx_then_success_posts_one_card(h: Harness) -> None:
    h.emu.inject("chat.postMessage", status=500, times=2)
    rid = await h.push()
    rec = await h.card(rid)
    ok = [c for c in h.emu.calls_to("chat.postMessage") if c.status == 200]
    assert len(ok) == 1 and len(h.emu.messages(rec.channel or "")) == 1


async def test_healthz_and_metrics(h: Harness) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{h.bot.port}/healthz") as r:
            assert r.status == 200 and (await r.json())["redis"] == "ok"
        async with s.get(f"http://127.0.0.1:{h.bot.port}/metrics") as r:
            text = await r.text()
    from prometheus_client.parser import text_string_to_metric_families

    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"hitl_queue_depth", "hitl_outbox_depth", "hitl_dead_letters"} <= names


async def test_an_edit_for_a_request_that_vanished_closes_and_explains(h: Harness) -> None:
    rid = await h.push(params={"amount": 250}, editable=["amount"])
    rec = await h.card(rid)
    await h.click(rec, "U0ALICE", ActionId.edit)
    view = await eventually(lambda: _open_view(h, "U0ALICE"), what="edit modal")
    await h.store.redis.delete(h.store.keys.request(rid))  # e.g. removed by an operator meanwhile
    result = await h.emu.submit_view("U0ALICE", view.id, {param_block_id("amount"): {"value": "200"}})
    assert result.closed and result.reply is not None and result.reply.status == 200

    async def told() -> bool:
        return any("can't find this request" in json.dumps(m) for m in h.emu.messages("U0ALICE"))

    await eventually(told, what="a DM that explains")
