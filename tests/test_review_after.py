"""Audit and shadow modes end to end: a check after the fact, overrides, shadow agreement."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from blocks.ids import ActionId, BlockId
from store.models import Status
from tests.harness import Harness, running
from tests.util import eventually

POLICY = """
tiers:
  low:    {mode: auto, sample: 1.0}
  medium: {mode: approve}
  high:   {mode: approve}
rules:
  - name: shadow_emails
    when: request.action == "send_email"
    mode: shadow
batching: {enabled: false}
triggers:
  first_use: {enabled: false}
"""


@pytest.fixture
async def h(redis_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    async with running(redis_url, tmp_path, POLICY) as harness:
        yield harness


async def _reviewed(h: Harness, rid: str) -> bool:
    return (await h.store.get(rid)).review is not None


async def _messages(h: Harness, stream: str) -> list[dict[str, str]]:
    return [f for _, f in await h.store.redis.xrange(stream)]


async def test_a_sampled_automatic_action_is_checked_and_an_override_reaches_the_agent(h: Harness) -> None:
    rid = await h.push(action="lookup_order", summary="Look up order 4711", confidence=0.95,
                       requested_by="U0DAVE", reply_to="agent:inbox")
    decision = await h.client.wait(rid, timeout=10)
    assert decision.status is Status.auto_approved and decision.route and decision.route.sampled
    rec = await h.card(rid)  # posted for review afterwards
    msg = h.message(rec)
    assert "This already ran on its own" in json.dumps(msg["blocks"])
    # the requester cannot check their own request
    await h.click(rec, "U0DAVE", ActionId.review_ok)
    await eventually(lambda: asyncio.sleep(0, h.emu.ephemerals("U0DAVE")), what="refusal")
    h.emu.inject("chat.update", delay=1.0, times=None)  # a second reviewer clicks before the card updates
    await h.click(rec, "U0BOB", ActionId.review_wrong)
    view = await eventually(lambda: asyncio.sleep(0, h.emu.top_view("U0BOB")), what="what-was-wrong modal")
    result = await h.emu.submit_view("U0BOB", view.id, {BlockId.reason_code.value: {"value": "wrong_action"},
                                                        BlockId.reason_text.value: {"value": "Wrong order"}})
    assert result.closed
    # the modal closes at once (ack first); Bob's check is stored right after: Alice clicks then
    await eventually(lambda: _reviewed(h, rid), what="Bob's check stored")

    await h.click(rec, "U0ALICE", ActionId.review_ok)
    await eventually(lambda: asyncio.sleep(0, h.emu.ephemerals("U0ALICE")), what="already checked")
    assert "Already checked by" in json.dumps(h.emu.ephemerals("U0ALICE")[-1])

    async def flagged() -> bool:
        return "Flagged as wrong" in json.dumps(h.message(await h.store.get(rid))["blocks"])

    await eventually(flagged, what="card shows the override")
    rec = await h.store.get(rid)
    assert rec.review is not None and rec.review.verdict == "wrong" and rec.review.reason_code == "wrong_action"
    events = [e.event for e in await h.store.trail(rid)]
    assert events.count("reviewed") == 1 and events.count("overridden") == 1 and "refused" in events
    notes = [json.loads(f["message"]) for f in await _messages(h, "agent:inbox") if "message" in f]
    assert len(notes) == 1 and notes[0]["event"] == "override" and notes[0]["text"] == "Wrong order"


@pytest.mark.cluster_too
async def test_looks_right_is_recorded(h: Harness) -> None:
    rid = await h.push(action="lookup_order", summary="Look up order 9", confidence=0.95)
    rec = await h.card(rid)
    await h.click(rec, "U0ALICE", ActionId.review_ok)

    async def checked() -> bool:
        return "looks right" in json.dumps(h.message(await h.store.get(rid))["blocks"])

    await eventually(checked, what="card shows the check")
    assert [e.detail["verdict"] for e in await h.store.trail(rid) if e.event == "reviewed"] == ["ok"]


async def test_a_late_check_on_a_card_not_yet_redrawn_is_audited_and_changes_nothing(h: Harness) -> None:
    """Alice checked it; Bob's "Looks right" on his copy of the card (its redraw is slow) is told
    so, leaves an audit entry like a late Approve, and the first check stands."""
    rid = await h.push(action="lookup_order", summary="Look up order 4711", confidence=0.95)
    rec = await h.card(rid)
    h.emu.inject("chat.update", delay=2.0, times=None)  # the card is not redrawn yet
    await h.click(rec, "U0ALICE", ActionId.review_ok)
    await eventually(lambda: _reviewed(h, rid), what="Alice's check")
    await h.click(rec, "U0BOB", ActionId.review_ok)
    assert "Already checked" in await h.ephemeral("U0BOB") or "already" in (await h.ephemeral("U0BOB")).lower()
    late = [e for e in await h.store.trail(rid) if e.actor == "U0BOB"]
    assert [(e.event, e.detail) for e in late] == [("clicked", {"choice": "review", "outcome": "already_decided"})]
    assert (await h.store.get(rid)).review.by.user_id == "U0ALICE"  # type: ignore[union-attr]

async def test_shadow_mode_hides_the_recommendation_and_records_agreement(h: Harness) -> None:
    rid = await h.push(action="send_email", summary="Email Ana about her refund", confidence=0.91,
                       context={"recommendation": "Send it now"})
    rec = await h.card(rid)
    assert rec.route.mode == "shadow"
    blocks = json.dumps(h.message(rec)["blocks"])
    assert "Send it now" not in blocks and "91%" not in blocks
    await h.click(rec, "U0ALICE", ActionId.approve)
    assert (await h.client.wait(rid, timeout=10)).status is Status.approved
    compared = [e.detail for e in await h.store.trail(rid) if e.event == "shadow_compared"]
    assert compared == [{"agreed": True, "agreed_action": True, "confidence": 0.91, "status": "approved"}]
