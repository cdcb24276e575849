"""Slack's retries act once, and a stopping bot finishes the clicks Slack was told went through
(found by an adversarial review of the Socket Mode and HTTP doors)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest

import handlers.cards as cards_mod
from blocks.ids import ActionId, BlockId
from emulator.signing import sign
from handlers.once import once_key
from store.models import AgentMessage
from store.redis_store import Store
from tests.harness import SECRET, Harness, running
from tests.test_escalation import POLICY, push_handover
from tests.util import eventually

LEADS = """
defaults: {tier: leads, channel: "#approvals"}
tiers:
  low: {mode: auto}
  medium: {mode: approve}
  high: {mode: approve}
  leads: {mode: approve, approvers: ["S0LEADS"]}
batching: {enabled: false}
triggers: {first_use: {enabled: false}}
"""


async def _retry(h: Harness, payload: dict[str, Any]) -> tuple[int, str]:
    """The same interaction again, as Slack retries it over HTTP (`X-Slack-Retry-Num: 1`):
    the bot's status and body."""
    body = urlencode({"payload": json.dumps(payload)}).encode()
    headers = sign(SECRET, body, int(time.time())) | {
        "Content-Type": "application/x-www-form-urlencoded", "X-Slack-Retry-Num": "1",
        "X-Slack-Retry-Reason": "http_timeout"}
    async with aiohttp.ClientSession() as s, s.post(f"http://127.0.0.1:{h.bot.port}/slack/events",
                                                    data=body, headers=headers) as r:
        return r.status, await r.text()


async def _interim(h: Harness, rid: str) -> list[AgentMessage]:
    rows = await h.store.redis.xrange(h.client.reply_to)
    return [AgentMessage.model_validate_json(f["message"]) for _, f in rows if f.get("message_for") == rid]


async def _n(h: Harness, rid: str, n: int) -> bool:
    return len(await _interim(h, rid)) >= n


async def test_a_retried_reply_form_reaches_the_agent_once(redis_url: str, tmp_path: Path) -> None:
    async with running(redis_url, tmp_path, POLICY) as h:
        rid = await push_handover(h)
        rec = await h.card(rid)
        await h.click(rec, "U0ALICE", ActionId.take_over)
        await eventually(lambda: _n(h, rid, 1), what="taken over")
        await h.click(rec, "U0ALICE", ActionId.reply)
        view = await eventually(lambda: asyncio.sleep(0, h.emu.top_view("U0ALICE")), what="the reply form")
        assert (await h.emu.submit_view("U0ALICE", view.id, {BlockId.reply_text.value: {"value": "On it"}})).closed
        await eventually(lambda: _n(h, rid, 2), what="the reply reached the agent")
        sent = h.emu.sent[-1].payload
        assert sent["type"] == "view_submission"
        claim = h.store.keys.slack_once("")[:-1]
        await eventually(lambda: _claimed(h, claim), what="the form noted as handled")
        assert (await _retry(h, sent))[0] == 200
        await h.emu.slash_command("U0ALICE", "C0GENERAL", "/hitl", "help")  # something after it, to wait on
        assert [m.event for m in await _interim(h, rid)].count("reply") == 1


async def test_a_retried_click_is_not_a_second_late_click(redis_url: str, tmp_path: Path) -> None:
    async with running(redis_url, tmp_path, POLICY) as h:
        rid = await h.push()
        rec = await h.card(rid)
        await h.click(rec, "U0ALICE", ActionId.approve)
        await h.decided(rid)
        sent = h.emu.sent[-1].payload
        await eventually(lambda: _claimed(h, h.store.keys.slack_once("")[:-1]), what="the click noted")
        assert (await _retry(h, sent))[0] == 200
        assert [e.event for e in await h.store.trail(rid)].count("clicked") == 1
        assert not h.emu.ephemerals("U0ALICE")  # not told her own click came late


async def test_a_first_delivery_is_never_dropped_and_every_kind_has_its_own_key() -> None:
    click = {"type": "block_actions", "user": {"id": "U1"}, "actions": [{"action_id": "a", "action_ts": "1.5"}]}
    again = {**click, "actions": [{"action_id": "a", "action_ts": "1.6"}]}
    assert once_key(click) != once_key(again)  # two clicks are two requests
    form = {"type": "view_submission", "view": {"id": "V1", "hash": "h", "state": {"values": {"b": {"x": 1}}}}}
    fixed = {"type": "view_submission", "view": {"id": "V1", "hash": "h", "state": {"values": {"b": {"x": 2}}}}}
    assert once_key(form) != once_key(fixed)  # a form corrected after its errors is a new submission
    assert once_key({"command": "/hitl", "trigger_id": "T1"}) == "t:T1"
    assert once_key({"type": "event_callback", "event_id": "Ev1"}) == "e:Ev1"
    assert once_key({"type": "view_closed"}) is None


async def test_stop_finishes_a_click_slack_was_told_went_through(redis_url: str, tmp_path: Path) -> None:
    async with running(redis_url, tmp_path, LEADS) as h:
        h.emu.add_usergroup("leads", ["U0ALICE"], "S0LEADS")
        rid = await h.push()
        rec = await h.card(rid)
        h.emu.inject("usergroups.users.list", delay=1.5)  # Slack slow to say who leads: the click outlasts its answer
        reply = await h.click(rec, "U0ALICE", ActionId.approve)
        assert reply.status == 200 and not reply.timed_out
        bot = h.bots.pop()
        await bot.stop()  # a rolling deploy's SIGTERM now
        store = Store.from_url(redis_url, "hitl")
        try:
            assert (await store.get(rid)).decision is not None  # applied before stop() returned
        finally:
            await store.close()


async def _claimed(h: Harness, prefix: str) -> bool:
    return bool(await h.store.redis.keys(prefix + "*"))


async def test_stop_drains_a_form_acknowledged_after_stop_began(redis_url: str, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    original = cards_mod.ack_rejection
    entered = asyncio.Event()

    async def slow_ack_rejection(ack: Any, view: Any) -> Any:  # the listener's pre-ack work takes 0.3 s
        entered.set()
        await asyncio.sleep(0.3)
        return await original(ack, view)

    monkeypatch.setattr(cards_mod, "ack_rejection", slow_ack_rejection)
    async with running(redis_url, tmp_path, LEADS) as h:
        rid, view = await _reject_form(h)
        h.emu.inject("usergroups.users.list", delay=1.0)  # the decision's own work after ack()
        submit = asyncio.create_task(h.emu.submit_view(
            "U0ALICE", view.id, {BlockId.reason_code.value: {"value": "other"},
                                 BlockId.reason_text.value: {"value": "Wrong customer"}}))
        await entered.wait()
        bot = h.bots.pop()
        await bot.stop()  # SIGTERM while the form is inside the bot, not yet acknowledged
        result = await submit
        store = Store.from_url(redis_url, "hitl")
        try:
            rec2 = await store.get(rid)
            # Slack was told the form went through (modal closed) ...
            assert result.closed
            # ... so the rejection must have been applied before stop() returned
            assert rec2.decision is not None, "form acknowledged (modal closed) but decision lost"
        finally:
            await store.close()


async def test_healthz_fails_while_the_replica_turns_slack_away(redis_url: str, tmp_path: Path) -> None:
    async with running(redis_url, tmp_path, LEADS) as h:
        h.emu.add_usergroup("leads", ["U0ALICE"], "S0LEADS")
        rid = await h.push()
        rec = await h.card(rid)
        h.emu.inject("usergroups.users.list", delay=2.0)  # a click still being applied: stop() drains it
        await h.click(rec, "U0ALICE", ActionId.approve)
        bot = h.bots.pop()
        stopping = asyncio.create_task(bot.stop())
        await eventually(lambda: asyncio.sleep(0, bot.closing), what="the stop begun")
        async with aiohttp.ClientSession() as s:
            async with s.post(f"http://127.0.0.1:{bot.port}/slack/events", data=b"x") as r:
                events = r.status
            async with s.get(f"http://127.0.0.1:{bot.port}/healthz") as r:
                health = r.status
        await stopping
        assert events == 503
        assert health == 503, "replica turns every Slack request away but /healthz says it is healthy"


async def test_a_retried_invalid_form_gets_its_errors_again(redis_url: str, tmp_path: Path) -> None:
    async with running(redis_url, tmp_path, LEADS) as h:
        rid, view = await _reject_form(h)
        bad = await h.emu.submit_view("U0ALICE", view.id, {BlockId.reason_code.value: {"value": "other"}})
        assert not bad.closed and bad.errors  # "other" needs details
        sent = h.emu.sent[-1].payload
        await eventually(lambda: _answer_kept(h), what="the first answer kept with its claim")
        status, text = await _retry(h, sent)
        assert status == 200 and (await h.store.get(rid)).decision is None
        assert "errors" in text, "the retry's answer closes the modal though the form was refused"


async def _answer_kept(h: Harness) -> bool:
    for key in await h.store.redis.keys(h.store.keys.slack_once("") + "*"):
        if "errors" in (await h.store.redis.get(key) or ""):
            return True
    return False


async def _reject_form(h: Harness) -> tuple[str, Any]:
    """A request of the leads' tier and Alice's reject form open on it."""
    h.emu.add_usergroup("leads", ["U0ALICE"], "S0LEADS")
    rid = await h.push()
    await h.click(await h.card(rid), "U0ALICE", ActionId.reject)
    return rid, await eventually(lambda: asyncio.sleep(0, h.emu.top_view("U0ALICE")), what="the reject form")
