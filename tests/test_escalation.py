"""Escalations end to end: the handover card and its context package, take over, reply,
resolve and hand back reaching the agent, user-requested escalation, escalation levels on the
bot's own scheduler (its clock moved, never slept), and deadlines missed while stopped."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from slack_sdk.models.blocks import Block

from blocks.cards import card
from blocks.details import context_modal
from blocks.escalation import (
    escalation_card,
    escalation_note,
    escalation_notice,
    locked_escalation_card,
    owned_message,
    reminder_message,
    why_escalated,
)
from blocks.ids import INPUT_ACTION, ActionId, BlockId, CallbackId
from blocks.modals import hand_back_modal, parse_text_value, reply_modal, resolve_modal
from blocks.payloads import ModalMeta
from store.models import AgentMessage, Choice, Record, Request, Route, Status, Vote
from store.redis_store import Store
from tests.harness import Harness, running, start_bot
from tests.test_blocks import EVIL, NOW, _texts, check_modal, decided, huge, make
from tests.util import eventually

POLICY = """
defaults: {channel: "#approvals"}
tiers:
  low: {mode: auto}
  medium:
    mode: approve
    timeout: 1h
    escalation:
      - {after: 10m, notify: ["#approvals-leads"]}
      - {after: 30m, notify: ["U0DAVE"]}
  high:
    mode: approve
    approvers: ["U0ALICE"]
    escalation: [{after: 5m, notify: ["U0DAVE"]}]
rules:
  - {name: no_crypto, when: 'request.action == "buy_crypto"', mode: deny, reason: "No crypto"}
triggers: {first_use: {enabled: false}}
batching: {enabled: false}
"""

LONG_TURN = "I have been waiting for my refund for weeks & <nobody> answers. " * 5


@pytest.fixture
async def h(redis_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    async with running(redis_url, tmp_path, POLICY) as harness:
        yield harness


def later(h: Harness, seconds: float) -> None:
    """Move the bot's scheduler clock `seconds` ahead of real time and wake it."""
    assert h.bot.scheduler is not None
    h.bot.scheduler.clock = lambda: time.time() + seconds
    h.bot.scheduler.kick()


def actions(message: dict[str, Any]) -> list[str]:
    return [e.get("action_id", "") for b in message.get("blocks", []) if b["type"] == "actions"
            for e in b["elements"]]


async def interim(h: Harness, rid: str, n: int) -> list[AgentMessage]:
    """The first `n` interim messages for `rid` on the agent's reply stream."""

    async def found() -> list[AgentMessage] | None:
        rows = await h.store.redis.xrange(h.client.reply_to)
        msgs = [AgentMessage.model_validate_json(f["message"]) for _, f in rows
                if f.get("message_for") == rid]
        return msgs if len(msgs) >= n else None

    return list(await eventually(found, what=f"{n} interim messages"))


async def card_text(h: Harness, rid: str, needle: str) -> Record:
    async def shows() -> Record | None:
        rec = await h.store.get(rid)
        return rec if needle in json.dumps(h.message(rec)["blocks"]) else None

    return await eventually(shows, what=f"card showing {needle!r}")


async def submit(h: Harness, user: str, block: BlockId, text: str) -> None:
    view = await eventually(lambda: _top(h, user), what="modal")
    result = await h.emu.submit_view(user, view.id, {block.value: {"value": text}})
    assert result.closed, result.errors


async def _top(h: Harness, user: str) -> Any:
    return h.emu.top_view(user)


async def ephemeral(h: Harness, user: str) -> str:
    async def found() -> str | None:
        msgs = h.emu.ephemerals(user)
        return msgs[-1]["text"] if msgs else None

    return str(await eventually(found, what=f"ephemeral to {user}"))


async def push_handover(h: Harness, **fields: Any) -> str:
    ctx = {
        "goal": "Get the customer their refund for order 4711",
        "conversation": [{"role": "customer" if i % 2 else "agent", "text": LONG_TURN}
                         for i in range(149)] + [{"role": "customer", "text": "Just refund me"}],
        "actions_attempted": [{"action": "lookup_order", "result": "found, paid $40", "ok": True},
                              {"action": "refund", "result": "403: over the agent's limit",
                               "ok": False}],
        "failure_reason": "Refund API refused: over my limit",
        "customer": {"name": "Ana Lima", "tier": "gold", "orders": 31, "since": "2019",
                     "email": "ana@example.com"},
        "recommendation": "Refund $40 and add a $10 voucher",
        "alternatives": ["Refund only", "Voucher only"],
        "escalation_reason": "low_confidence",
    }
    return await h.push(kind="escalation", action="refund_dispute",
                        summary="Customer disputes a $40 charge on order 4711", confidence=0.35,
                        context=ctx, **fields)


async def test_handover_card_carries_the_context_package_within_limits(h: Harness) -> None:
    rid = await push_handover(h)
    rec = await h.card(rid)
    msg = h.message(rec)
    blocks = json.dumps(msg["blocks"], ensure_ascii=False)
    assert not h.emu.block_errors
    assert len(msg["blocks"]) <= 15 and len(blocks) < 12_000  # readable in ten seconds
    for expected in ("Handover needed: refund_dispute", "*Why:* Low confidence (35%)",
                     "Refund API refused", "Get the customer their refund",
                     "Refund $40 and add a $10 voucher", "*Alternatives:* Refund only",
                     "✗ refund → 403", "Ana Lima", "Last 4 of 150 turns",
                     "Show full context", "Just refund me"):
        assert expected in blocks, expected
    assert "<nobody>" not in blocks and "&lt;nobody&gt;" in blocks
    assert actions(msg) == [ActionId.take_over, ActionId.reply, ActionId.resolve,
                            ActionId.hand_back, ActionId.show_context]
    await h.click(rec, "U0BOB", ActionId.show_context)
    view = await eventually(lambda: _top(h, "U0BOB"), what="context modal")
    spec = json.dumps(view.spec)
    assert view.spec["callback_id"] == CallbackId.context_modal
    assert "earlier turns are stored with request" in spec and "ana@example.com" in spec

    async def escalated() -> Record | None:
        r = await h.store.get(rid)
        return r if r.time_to_escalate_s is not None else None

    done = await eventually(escalated, what="time to escalate recorded")
    assert done.time_to_escalate_s is not None and done.time_to_escalate_s < 1
    events = [e for e in await h.store.trail(rid) if e.event == "escalated"]
    assert len(events) == 1 and events[0].detail["level"] == 0
    assert events[0].detail["seconds"] == pytest.approx(done.time_to_escalate_s, abs=0.002)


@pytest.mark.cluster_too
async def test_take_over_reply_and_resolve_reach_the_agent(h: Harness) -> None:
    rid = await push_handover(h)
    rec = await h.card(rid)
    await h.click(rec, "U0ALICE", ActionId.take_over)
    [taken] = await interim(h, rid, 1)
    assert taken.event == "taken_over" and taken.by.user_id == "U0ALICE"
    rec = await card_text(h, rid, "Taken over by <@U0ALICE>")
    assert ActionId.take_over not in actions(h.message(rec))
    await h.click(rec, "U0BOB", ActionId.reply)  # someone else: told who owns it, no modal
    assert "<@U0ALICE> took this case over" in await ephemeral(h, "U0BOB")
    assert h.emu.top_view("U0BOB") is None

    await h.click(rec, "U0ALICE", ActionId.reply)
    await submit(h, "U0ALICE", BlockId.reply_text, "Hi Ana, I'm looking at it now")
    reply = (await interim(h, rid, 2))[1]
    assert reply.event == "reply" and reply.text == "Hi Ana, I'm looking at it now"
    await card_text(h, rid, "Last reply to the agent")
    assert (await h.store.get(rid)).decision is None  # the case stays open

    await h.click(rec, "U0ALICE", ActionId.resolve)
    await submit(h, "U0ALICE", BlockId.resolution_text, "Refunded $40 and sent a voucher")
    decision = await h.client.wait(rid, timeout=10)  # skips the interim messages
    assert decision.status is Status.resolved
    assert decision.reason == "Refunded $40 and sent a voucher"
    locked = await card_text(h, rid, "Resolved")
    assert not actions(h.message(locked))
    events = [e.event for e in await h.store.trail(rid)]
    assert events.count("messaged") == 2 and "taken_over" in events and "replied" in events


async def test_hand_back_gives_the_agent_instructions(h: Harness) -> None:
    rid = await push_handover(h)
    rec = await h.card(rid)
    await h.click(rec, "U0CAROL", ActionId.hand_back)
    await submit(h, "U0CAROL", BlockId.instructions_text, "Refund $40, no voucher")
    decision = await h.client.wait(rid, timeout=10)
    assert decision.status is Status.answered and decision.answer == "Refund $40, no voucher"
    await card_text(h, rid, "Handed back to the agent")


async def test_a_user_asking_for_a_person_gets_one_whatever_the_policy(h: Harness) -> None:
    rid = await h.push(action="buy_crypto", summary="Buy $50 of BTC",
                       context={"conversation": ["Buy me bitcoin", "No wait, let me talk to a human"]})
    rec = await h.card(rid)
    assert rec.route.mode.value == "escalate" and rec.decision is None
    msg = h.message(rec)
    assert "The user asked for a person" in json.dumps(msg["blocks"])
    assert ActionId.approve in actions(msg) and ActionId.take_over in actions(msg)


@pytest.mark.cluster_too
async def test_levels_notify_in_order_and_a_decision_stops_the_chain(h: Harness) -> None:
    rid = await h.push(params={"order": "4711"})
    rec = await h.card(rid)
    later(h, 11 * 60)
    leads = await eventually(lambda: _messages(h, "#approvals-leads"), what="level 1 notice")
    assert "Escalated to you (level 1)" in json.dumps(leads[0]["blocks"])
    assert "/archives/" in json.dumps(leads[0]["blocks"])  # the link to the card
    rec = await card_text(h, rid, "Escalated (level 1)")
    assert any("escalated (level 1)" in m["text"] for m in h.emu.thread(rec.channel or "", rec.ts or ""))
    await h.click(rec, "U0ALICE", ActionId.approve)
    await h.client.wait(rid, timeout=10)
    later(h, 40 * 60)
    await eventually(lambda: _zero_deadlines(h), what="no deadlines left")
    assert not h.emu.messages("U0DAVE")


async def test_a_level_lets_the_person_it_notifies_decide(h: Harness) -> None:
    rid = await h.push(risk={"amount": 900, "currency": "USD"})
    rec = await h.card(rid)
    assert rec.route.approvers == ["U0ALICE"]
    await h.click(rec, "U0DAVE", ActionId.approve)
    assert "not one of the approvers" in await ephemeral(h, "U0DAVE")
    later(h, 6 * 60)
    dm = await eventually(lambda: _messages(h, "U0DAVE"), what="DM to Dave")
    assert "Escalated to you (level 1)" in json.dumps(dm[0]["blocks"])
    await h.click(rec, "U0DAVE", ActionId.approve)
    decision = await h.client.wait(rid, timeout=10)
    assert decision.status is Status.approved and decision.decided_by[0].user_id == "U0DAVE"


async def test_deadlines_missed_while_stopped_fire_on_start(h: Harness) -> None:
    rid = await h.push(timeout_s=60)
    await h.card(rid)
    port = h.bot.port
    await h.bot.stop()
    h.bots.remove(h.bot)
    # ... time passes: every deadline of the request is now in the past
    past = int(time.time() * 1000) - 1000
    store = Store.from_url(h.redis_url)
    members = await store.redis.zrange(store.keys.deadlines, 0, -1)
    assert members == [f"expire:{rid}"]  # levels come after 10m: past the 60s timeout
    await store.redis.zadd(store.keys.deadlines, {m: past for m in members})
    await store.close()
    policy = h.bot.settings.policy
    h.bot = await start_bot(h.redis_url, h.emu, port=port, policy=policy)
    h.bots.append(h.bot)
    decision = await h.client.wait(rid, timeout=10)
    assert decision.status is Status.expired and decision.reason == "No decision in 1m"
    locked = await card_text(h, rid, "Expired:")
    assert "no decision in 1m" in json.dumps(h.message(locked)["blocks"])
    assert [e.event for e in await h.store.trail(rid)].count("expired") == 1


async def _messages(h: Harness, channel: str) -> list[dict[str, Any]] | None:
    msgs = h.emu.messages(channel)
    return msgs or None


async def _zero_deadlines(h: Harness) -> bool:
    return bool(await h.store.redis.zcard(h.store.keys.deadlines) == 0)


# ---- the blocks, with hostile and huge input ------------------------------------------------

HANDOVER_ACTIONS = [ActionId.take_over, ActionId.reply, ActionId.resolve, ActionId.hand_back]


def _hostile() -> Record:
    big = huge()
    data = big.request.model_dump(exclude_none=True)
    data |= {"kind": "escalation", "summary": (EVIL * 40)[:3000]}
    data["context"] |= {"failure_reason": EVIL, "recommendation": EVIL}
    route = big.route.model_dump() | {
        "mode": "escalate", "rules": ["confidence_low", "tool_call_loop", "evil<!here>"],
        "reasons": [EVIL]}
    return big.model_copy(update={"request": Request.model_validate(data),
                                  "route": Route.model_validate(route)})


def _safe(text: str) -> None:
    allowed = re.compile(r"^(@[UW][A-Z0-9]+|#[CG][A-Z0-9]+|!subteam\^S[A-Z0-9]+|"
                         r"!date\^\d+\^[^|<>]*\|[^<>|]*|https://slack\.test/[^|<> ]+\|Open the card)$")
    for m in re.finditer(r"<([^>]*)>", text):
        assert allowed.match(m.group(1)), m.group(0)[:80]


def _check(msg: dict[str, Any]) -> None:

    assert 1 <= len(msg["text"]) <= 3000 and 1 <= len(msg["blocks"]) <= 50
    for b in msg["blocks"]:
        parsed = Block.parse(b)
        assert parsed is not None
        parsed.to_dict()
    for t in [*_texts(msg["blocks"]), msg["text"]]:
        _safe(t)
        assert "<!channel" not in t and "<!here" not in t and "<http://evil" not in t


def test_handover_card_fits_slack_with_hostile_and_huge_input() -> None:

    record = _hostile()
    owner = Vote(user_id="U0ALICE", name="alice", choice=Choice.take_over, at=NOW)
    msg = escalation_card(record.model_copy(update={
        "owner": owner, "escalated_to": ["#leads", "C0X", "U0HEAD", "S0LEADS", "<!here>"],
        "escalation_level": 2, "reminders": 3,
        "messages": [AgentMessage(request_id="r1", event="reply", text=EVIL * 100, by=owner,
                                  at=NOW)]}))
    _check(msg)
    text = json.dumps(msg, ensure_ascii=False)
    assert len(msg["blocks"]) <= 15 and len(text) < 14_000
    assert "Last 4 of 200 turns" in text and "(last 4 of 50)" in text
    assert "Low confidence (42%)" in text
    assert "<#C0X>" in text and "<!subteam^S0LEADS>" in text and "&lt;!here&gt;" in text
    assert [e["action_id"] for e in msg["blocks"][-1]["elements"]] == [
        *HANDOVER_ACTIONS[1:], ActionId.show_context]  # taken over: no Take over button
    review = huge().model_copy(update={"route": Route(mode="escalate")})
    _check(card(review))  # a review routed to a person: its action can be decided here too
    assert [e["action_id"] for e in card(review)["blocks"][-1]["elements"]] == [
        *HANDOVER_ACTIONS, ActionId.approve, ActionId.edit, ActionId.reject,
        ActionId.show_context]
    check_modal(context_modal(record, ModalMeta(r="r1")))
    for status in Status:
        closed = decided(record, status, [("U01", Choice.hand_back)], reason=EVIL, answer=EVIL)
        _check(locked_escalation_card(closed))
    for message in (reminder_message(record, ["U0A", "S0B"], 7200, Status.expired),
                    escalation_note(record, 1, ["#leads", "U0HEAD"], 600),
                    escalation_notice(record, 1, 600, "https://slack.test/archives/C1/p1|x>"),
                    escalation_notice(record, 1, 600, "https://slack.test/archives/C1/p1"),
                    owned_message(owner)):
        _check(message)


def test_modals_of_the_handover() -> None:

    record = make(kind="escalation")
    meta = ModalMeta(r="r1", c="C1", t="1.2")
    for build, callback, block in ((reply_modal, CallbackId.reply_modal, BlockId.reply_text),
                                   (resolve_modal, CallbackId.resolve_modal,
                                    BlockId.resolution_text),
                                   (hand_back_modal, CallbackId.hand_back_modal,
                                    BlockId.instructions_text)):
        view = build(record, meta)
        check_modal(view)
        assert view["callback_id"] == callback
        assert any(b.get("block_id") == block for b in view["blocks"])
        assert parse_text_value({block: {INPUT_ACTION: {"value": "  ok "}}}, block) == ("ok", {})
        assert parse_text_value({block: {INPUT_ACTION: {"value": " "}}}, block)[1]
        assert parse_text_value({block: {INPUT_ACTION: {"value": "x" * 3001}}}, block)[1]


def test_why_it_escalated_in_plain_words() -> None:

    assert why_escalated(make(kind="escalation", route=Route(
        mode="escalate", rules=["user_requested_human"]))) == [
        ":raising_hand: The user asked for a person"]
    loop = make(kind="escalation", metadata={"tool_calls": 31},
                context={"escalation_reason": "loop"},
                route=Route(mode="escalate", rules=["tool_call_loop", "kind_escalation"]))
    assert why_escalated(loop) == ["Stuck in a loop (31 tool calls)", "Stuck in a loop"]
    rule = make(route=Route(mode="escalate", rules=["vip"], reasons=["VIP customers get a person"]))
    assert why_escalated(rule) == ["VIP customers get a person"]
    assert why_escalated(make(kind="escalation", route=Route(mode="escalate"))) == [
        "The agent handed the case over"]


async def test_the_python_client_hears_interim_messages_while_it_waits(h: Harness) -> None:
    rid = await push_handover(h)
    heard: list[str] = []

    async def on_message(m: Any) -> None:
        heard.append(f"{m.event}:{m.text or ''}")

    waiting = asyncio.create_task(h.client.wait(rid, timeout=20, on_message=on_message))
    rec = await h.card(rid)
    await h.click(rec, "U0ALICE", ActionId.take_over)
    await interim(h, rid, 1)
    await h.click(rec, "U0ALICE", ActionId.reply)
    await submit(h, "U0ALICE", BlockId.reply_text, "On it")
    await interim(h, rid, 2)
    await h.click(rec, "U0ALICE", ActionId.resolve)
    await submit(h, "U0ALICE", BlockId.resolution_text, "Done")
    decision = await waiting
    assert decision.status is Status.resolved
    assert heard == ["taken_over:", "reply:On it"]
    assert [m.event for m in await h.client.messages(rid)] == ["taken_over", "reply"]


def test_a_handover_footer_says_the_mode_only_while_it_waits_and_names_the_request() -> None:
    from store.models import Mode

    rec = make(Route(mode=Mode.escalate, tier="high"), kind="escalation", id="esc-7")
    open_text = json.dumps(escalation_card(rec)["blocks"])
    assert "handed to a person" in open_text and "Request `esc-7`" in open_text
    done = decided(rec, Status.resolved, [("U0ALICE", Choice.resolve)])
    closed_text = json.dumps(locked_escalation_card(done)["blocks"])
    assert "handed to a person" not in closed_text and "Request `esc-7`" in closed_text
