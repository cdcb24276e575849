"""A message's text has a limit as a whole, beside each field's own: Slack refuses a message whose
blocks hold more than about 12,000 characters of text with `msg_blocks_too_long` (the error is in
chat.postMessage's reference; the number is Slack's SDK maintainers': slackapi/bolt-js#2509).
Every field within its own limit, a card of long text or a batch of 40 ordinary items still went
over it, so in real Slack the card never appeared. Found by an adversarial review."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from blocks.batch import BATCH_ITEMS_MAX, batch_card
from blocks.cards import card
from blocks.facts import reject_reasons
from blocks.kit import CUT_KEEP, MESSAGE_TEXT_MAX, fit_blocks, section, text_size
from emulator import Emulator
from store.models import Batch, Record, Request, Route
from tests.harness import TOKEN, running
from tests.util import eventually, shown_request_ids

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
SLACK_LIMIT = 12_000


def refund(i: int, summary: int = 160) -> dict[str, Any]:
    s = (f"Refund order ORD-{100000 + i} for customer jane.doe{i}@example.com: the parcel arrived damaged and "
         "the customer asked for their money back; the agent checked the delivery photos and the order history. ")
    return {"id": str(uuid.UUID(int=i)), "agent": "support-bot", "action": "refund_order",
            "summary": (s * 3)[:summary], "editable": ["amount"], "confidence": 0.82,
            "params": {"order_id": f"ORD-{100000 + i}", "amount": 42.5 + i, "reason": "damaged in transit"},
            "risk": {"amount": 42.5 + i, "currency": "USD", "reversible": True}}


def longest(**over: Any) -> dict[str, Any]:
    """A valid request with every text the card shows at its longest."""
    params = {f"param_{i:02d}_" + "x" * 80: "v" * 300 for i in range(12)}
    req: dict[str, Any] = {
        "id": "r" * 128, "agent": "A" * 100, "action": "B" * 100, "summary": "S" * 3000, "params": params,
        "editable": list(params)[:10], "draft": "D" * 3000, "confidence": 0.5,
        "risk": {"amount": 1e15, "currency": "USD", "reversible": False, "tags": ["t" * 50] * 20},
        "context": {"goal": "G" * 3000, "recommendation": "R" * 3000, "failure_reason": "F" * 3000,
                    "conversation": [{"role": "r" * 50, "text": "T" * 3000}] * 10,
                    "actions_attempted": [{"action": "a" * 300, "result": "z" * 3000, "ok": False}] * 50,
                    "alternatives": ["L" * 3000] * 10},
        "requested_by": "U0ALICE"}
    req.update(over)
    return req


def card_longest() -> dict[str, Any]:
    """`longest` within the protocol's 64 KiB: every text at the length the card shows it."""
    req = longest(agent="solo", action="big")
    req["context"] = {"goal": "G" * 500, "recommendation": "R" * 800, "failure_reason": "F" * 500,
                      "conversation": [{"role": "r" * 40, "text": "T" * 300}] * 3,
                      "actions_attempted": [{"action": "a" * 100, "result": "z" * 150, "ok": False}] * 3,
                      "alternatives": ["L" * 400]}
    return req


def record(req: dict[str, Any], **route: Any) -> Record:
    r = Request.model_validate(req)
    return Record(request=r, route=Route(**{"tier": "t" * 40, "reasons": ["why " * 300], **route}),
                  created_at=NOW, params=dict(r.params))


def test_fit_blocks_cuts_the_longest_texts_to_a_common_cap_and_nothing_else() -> None:
    blocks = [section("a" * 3000) for _ in range(5)] + [section("short")]
    blocks.append({"type": "actions", "elements": [{"type": "button", "action_id": "x", "value": "v",
                                                      "text": {"type": "plain_text", "text": "Approve"}}]})
    fitted = fit_blocks(blocks, 10_000)
    assert text_size(fitted) <= 10_000 and text_size(blocks) > 10_000  # the original is untouched
    cut = [len(b["text"]["text"]) for b in fitted[:5]]
    assert len(set(cut)) == 1 and cut[0] > CUT_KEEP  # evenly, not one text gutted
    assert fitted[5]["text"]["text"] == "short" and fitted[6] == blocks[6]
    assert fit_blocks(blocks[5:]) is blocks[5:] or fit_blocks(blocks[5:]) == blocks[5:]


def test_a_batch_of_forty_ordinary_items_fits_and_says_what_is_not_shown() -> None:
    recs = [record(refund(i), group="refund", tier="medium", reasons=["amount over 25"]) for i in range(40)]
    b = Batch(id="0123456789ab", group="refund", channel="C1", items=[r.id for r in recs], created_at=NOW)
    m = batch_card(b, recs)
    assert text_size(m["blocks"]) <= MESSAGE_TEXT_MAX
    drawn = set().union(*(shown_request_ids({"blocks": [blk]}) for blk in m["blocks"]))
    if len(drawn & {r.id for r in recs}) < 40:  # the rest wait for a later drawing, and the card says so
        assert "not shown" in str(m["blocks"][-1])


def test_the_largest_batch_of_the_longest_items_fits() -> None:
    recs = [record(longest(id=f"{i:03d}" + "r" * 125, editable=[]), group="refund") for i in range(BATCH_ITEMS_MAX)]
    b = Batch(id="0123456789ab", group="refund", channel="C1", items=[r.id for r in recs], created_at=NOW)
    assert text_size(batch_card(b, recs)["blocks"]) <= MESSAGE_TEXT_MAX


@pytest.mark.parametrize("kind", ["approval", "question", "escalation"])
def test_a_card_of_the_longest_request_fits(kind: str) -> None:
    over: dict[str, Any] = {"kind": kind}
    if kind == "question":
        over["options"] = [{"value": f"v{i}" + "v" * 70, "label": f"{i}" + "l" * 74} for i in range(10)]
    m = card(record(longest(**over)), details=True)
    assert text_size(m["blocks"]) <= MESSAGE_TEXT_MAX


async def test_the_emulator_refuses_a_message_over_slacks_limit_as_slack_does() -> None:
    emu = Emulator(signing_secret="s", request_url=None, bot_token=TOKEN)
    await emu.start()
    try:
        async with aiohttp.ClientSession() as s:
            async def post(n: int) -> dict[str, Any]:
                blocks = [section("x" * 3000) for _ in range(n // 3000)] + ([section("y" * (n % 3000))] if n % 3000 else [])
                async with s.post(f"{emu.api_url}chat.postMessage", headers={"Authorization": f"Bearer {TOKEN}"},
                                  json={"channel": "#approvals", "text": "t", "blocks": blocks}) as r:
                    return dict(await r.json())
            assert (await post(SLACK_LIMIT))["ok"]
            assert (await post(SLACK_LIMIT + 1)) == {"ok": False, "error": "msg_blocks_too_long"}
    finally:
        await emu.stop()


POLICY = """
defaults: {channel: "#approvals"}
tiers:
  low:    {mode: approve}
  medium: {mode: approve}
  high:   {mode: approve}
batching: {window: 2s, max_items: 40}
triggers: {first_use: {enabled: false}}
"""


async def test_forty_ordinary_requests_all_reach_a_card_and_the_longest_request_too(
        redis_url: str, tmp_path: Path) -> None:
    async with running(redis_url, tmp_path, POLICY) as h:
        ids = [await h.push(**{k: v for k, v in refund(i).items() if k != "id"}) for i in range(40)]
        single = await h.push(**{k: v for k, v in card_longest().items() if k != "id"})
        rec = await h.card(single, timeout=20)
        assert not rec.undeliverable and text_size(h.message(rec)["blocks"]) <= MESSAGE_TEXT_MAX

        async def every_one_shown() -> bool:
            shown: set[str] = set()
            for m in h.emu.messages("#approvals"):
                shown |= shown_request_ids(m)
            return set(ids) <= shown
        await eventually(every_one_shown, 60, "all 40 requests on cards")  # the emulator refuses > 12,000
        assert not [r.id for r in await h.store.get_many(ids) if r.undeliverable]


def test_a_calls_own_reject_reasons_stay_distinct_up_to_150_characters() -> None:
    names = ["policy_violation_" + "x" * 70 + "_refund", "policy_violation_" + "x" * 70 + "_credit"]
    rec = record({"id": "r1", "agent": "a", "action": "b", "summary": "s",
                  "metadata": {"humanlayer": {"reject_options": [{"name": n, "title": n} for n in names]}}})
    assert [code for code, _ in reject_reasons(rec)] == names


async def test_requests_joining_a_batch_whose_redraw_slack_refuses_are_said_undeliverable(
        redis_url: str, tmp_path: Path) -> None:
    """A batch card Slack will no longer redraw: the items on it stay as they are (people see and
    click them), those that joined since are on no card, so they are marked undeliverable (listed
    by /hitl queue, and they still expire) instead of waiting unseen."""
    async with running(redis_url, tmp_path, POLICY.replace("window: 2s", "window: 30s")) as h:
        first = [await h.push(**{k: v for k, v in refund(i).items() if k != "id"}) for i in range(3)]
        for rid in first:
            await h.card(rid, timeout=20)
        h.emu.inject("chat.update", error="msg_blocks_too_long", times=None)
        late = await h.push(**{k: v for k, v in refund(99).items() if k != "id"})

        async def said() -> bool:
            return await h.store.exists(late) and bool((await h.store.get(late)).undeliverable)
        await eventually(said, 20, "the late request marked undeliverable")
        assert (await h.store.get(late)).batch == (await h.store.get(first[0])).batch
        assert not [r.id for r in await h.store.get_many(first) if r.undeliverable]  # they are on the card


def test_a_long_command_reply_fits_one_message_and_says_what_it_left_out() -> None:
    from blocks.commands import policy_message

    m = policy_message([f"• rule {i}: " + "x" * 200 for i in range(300)], "Automation is on.")
    assert text_size(m["blocks"]) <= MESSAGE_TEXT_MAX
    assert "do not fit in one Slack message" in str(m["blocks"][-1]) + str(m["blocks"][-2])
