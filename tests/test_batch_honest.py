"""Batch cards that act on what the reviewer saw: the largest batch, late joiners, closed
batches, edits inside a batch, and review batches of actions that already ran."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from blocks.ids import BatchActionId, param_block_id
from store.models import State, Status
from tests.harness import Harness, start, stop
from tests.test_batch import POLICY, _cards_showing, _item
from tests.util import eventually, shown_request_ids


async def _start(redis_url: str, tmp_path: Path, policy: str = POLICY) -> Harness:
    path = tmp_path / "policy.yml"
    path.write_text(policy)
    return await start(redis_url, policy=path)


async def _reply(h: Harness, user: str) -> str:
    async def summary() -> str | None:
        eph = h.emu.ephemerals(user)
        return json.dumps(eph[-1]) if eph else None

    return str(await eventually(summary, what="bulk summary"))


def _button(msg: dict[str, Any], action_id: str) -> dict[str, Any] | None:
    for b in msg["blocks"]:
        for el in b.get("elements", []):
            if el.get("action_id") == action_id:
                return dict(el)
    return None


async def test_the_largest_batch_fits_and_approve_all_approves_what_was_shown(redis_url: str,
                                                                               tmp_path: Path) -> None:
    h = await _start(redis_url, tmp_path, POLICY.replace("max_items: 40", "max_items: 45"))
    try:
        ids = [await h.push(summary=f"Refund order {i} for R&D <EU>", risk={"amount": 10 + i, "currency": "USD",
                                                                           "reversible": False},
                            requested_by="U0ALICE" if i == 7 else None, batch_key="refunds")
               for i in range(45)]
        msgs = await _cards_showing(h, ids)

        async def full() -> dict[str, Any] | None:
            m = next((x for x in h.emu.messages("#approvals") if len(shown_request_ids(x)) == 45), None)
            return m if m and _button(m, BatchActionId.approve_all) and "Approve all 45" in json.dumps(m) else None

        msg = await eventually(full, 20, "all 45 on one card")
        assert len(msgs) == 1 and len(msg["blocks"]) <= 50
        text = json.dumps(msg["blocks"])
        assert "R&amp;D &lt;EU&gt;" in text and "&amp;amp;" not in text and "&amp;lt;" not in text
        await h.emu.click("U0ALICE", "#approvals", msg["ts"], BatchActionId.approve_all)
        reply = await _reply(h, "U0ALICE")
        assert "Approved 44 of the 45 you saw" in reply and "cannot approve it yourself" in reply
        records = await h.store.get_many(ids)
        assert sum(r.state is State.decided for r in records) == 44
    finally:
        await stop(h)


async def test_an_item_joining_between_draw_and_click_stays_pending(redis_url: str, tmp_path: Path) -> None:
    h = await _start(redis_url, tmp_path)
    try:
        ids = [await h.push(summary=f"Refund {i}", batch_key="late") for i in range(3)]
        await _cards_showing(h, ids)
        first = await h.store.get(ids[0])
        assert first.channel and first.ts and first.batch
        # the card as the reviewer sees it; then delivery stops, so it is never redrawn
        h.bots[0].delivery.stop()
        await asyncio.sleep(0)
        late = [await h.push(summary=f"Refund late {i}", batch_key="late") for i in range(2)]
        for rid in late:
            rec = await eventually(lambda rid=rid: _exists(h, rid), what="accepted")
            assert await h.store.join_batch(rec, "unused", int(time.time() * 1000)) == first.batch
        assert len((await h.store.get_batch(first.batch)).items) == 5
        await h.emu.click("U0BOB", first.channel, first.ts, BatchActionId.approve_all)
        reply = await _reply(h, "U0BOB")
        assert "Approved 3 of the 3 you saw" in reply and "2 arrived after you looked" in reply
        for rid in ids:
            assert (await h.store.get(rid)).state is State.decided
        for rid in late:
            assert (await h.store.get(rid)).state is State.pending
    finally:
        await stop(h)


async def _exists(h: Harness, rid: str) -> Any:
    return await h.store.get(rid) if await h.store.exists(rid) else None


async def test_a_request_never_joins_a_decided_batch(redis_url: str, tmp_path: Path) -> None:
    h = await _start(redis_url, tmp_path)
    try:
        first = await h.push(summary="Refund 1", batch_key="closed")
        rec = await h.card(first)
        await h.click(rec, "U0BOB", "hitl.approve")
        await h.decided(first)
        second = await h.push(summary="Refund 2", batch_key="closed")  # well within the 30 s window
        rec2 = await h.card(second)
        assert rec2.ts != rec.ts and rec2.batch != rec.batch  # a new card: people are notified
        msgs = h.emu.messages("#approvals")
        assert len(msgs) == 2 and "2 requests" not in json.dumps(msgs[0]) and "Refund 2" not in json.dumps(msgs[0])
        assert len(h.emu.calls_to("chat.postMessage")) == 2
    finally:
        await stop(h)


async def test_an_item_is_edited_inside_a_batch(redis_url: str, tmp_path: Path) -> None:
    h = await _start(redis_url, tmp_path)
    try:
        ids = [await h.push(summary=f"Refund order {i}", params={"order_id": f"A{i}", "amount": 250},
                            risk={"amount": 250, "currency": "USD"}, editable=["amount"], batch_key="edits")
               for i in range(2)]
        await _cards_showing(h, ids)
        rec = await h.store.get(ids[0])
        msg = h.message(rec)
        assert "Order id" in json.dumps(msg["blocks"]) and "order_id" not in json.dumps(msg["blocks"])
        await _item(h, rec, "U0BOB", "edit")
        view = await eventually(lambda: asyncio.sleep(0, h.emu.top_view("U0BOB")), what="edit modal")
        bad = await h.emu.submit_view("U0BOB", view.id, {param_block_id("amount"): {"value": "lots"}})
        assert not bad.closed  # the same validation as a single card
        result = await h.emu.submit_view("U0BOB", view.id, {param_block_id("amount"): {"value": "200"}})
        assert result.closed
        decision = await h.client.wait(ids[0], timeout=10)
        assert decision.status is Status.approved and decision.params["amount"] == 200

        async def shows_edit() -> bool:
            return "$200.00, _edited from $250.00_" in json.dumps(h.message(await h.store.get(ids[0]))["blocks"])

        await eventually(shows_edit, what="the edited value in place")
        assert (await h.store.get(ids[1])).state is State.pending
        # the one-by-one review offers Edit too: the same modal, pushed on top
        await h.emu.click("U0BOB", rec.channel or "", rec.ts or "", BatchActionId.one_by_one)
        step = await eventually(lambda: asyncio.sleep(0, h.emu.top_view("U0BOB")), what="one-by-one modal")
        await h.emu.click_view("U0BOB", step.id, BatchActionId.step_edit)

        async def pushed() -> Any:
            top = h.emu.top_view("U0BOB")
            return top if top is not None and top.id != step.id else None

        edit = await eventually(pushed, what="the edit modal on top")
        assert param_block_id("amount") in json.dumps(edit.to_slack()["blocks"])
        assert (await h.emu.submit_view("U0BOB", edit.id, {param_block_id("amount"): {"value": "180"}})).closed
        decision = await h.client.wait(ids[1], timeout=10)
        assert decision.status is Status.approved and decision.params["amount"] == 180
    finally:
        await stop(h)


REVIEW_POLICY = """
tiers:
  low:    {mode: audit, sample: 1.0}
  medium: {mode: approve}
  high:   {mode: approve}
batching: {window: 30s, max_items: 40}
triggers:
  first_use: {enabled: false}
"""


async def test_review_afterwards_items_share_a_review_card(redis_url: str, tmp_path: Path) -> None:
    h = await _start(redis_url, tmp_path, REVIEW_POLICY)
    try:
        ids = [await h.push(agent="crm", action="tag_customer", summary=f"Tag customer {i} as VIP", confidence=0.95,
                            requested_by="U0BOB" if i == 4 else None) for i in range(6)]
        for rid in ids:
            assert (await h.client.wait(rid, timeout=10)).status is Status.auto_approved
        msgs = await _cards_showing(h, ids)
        assert len(msgs) == 1

        async def review_card() -> dict[str, Any] | None:
            m = h.emu.messages("#approvals")[0]
            return m if "6 actions ran on their own, please check them" in json.dumps(m) else None

        msg = await eventually(review_card, what="the review card")
        rec = await h.store.get(ids[0])
        await _review_item(h, rec, "U0CAROL", "ok")
        await eventually(lambda: _reviewed(h, ids[0]), what="one checked")
        await h.emu.click("U0BOB", "#approvals", msg["ts"], BatchActionId.review_all)
        reply = await _reply(h, "U0BOB")
        assert "Marked right 4 of the" in reply
        reviewed = [r for r in await h.store.get_many(ids) if r.review is not None]
        assert len(reviewed) == 5 and (await h.store.get(ids[4])).review is None  # own request: refused
        events = [e.event for e in await h.store.trail(ids[1])]
        assert events.count("reviewed") == 1
        # a later action joins the still-open review card; "Was wrong" on it is an override
        late = await h.push(agent="crm", action="tag_customer", summary="Tag customer 9 as VIP", confidence=0.95)
        rec = await eventually(lambda: _on_card(h, late), what="the late action on the review card")
        assert rec.batch == (await h.store.get(ids[0])).batch
        await _review_item(h, rec, "U0CAROL", "wrong")
        view = await eventually(lambda: asyncio.sleep(0, h.emu.top_view("U0CAROL")), what="what-was-wrong modal")
        assert (await h.emu.submit_view("U0CAROL", view.id, {"hitl.reason_code": {"value": "wrong_action"}})).closed
        await eventually(lambda: _reviewed(h, late), what="the override")
        assert (await h.store.get(late)).review.verdict == "wrong"  # type: ignore[union-attr]
    finally:
        await stop(h)


async def _review_item(h: Harness, rec: Any, user: str, choice: str) -> Any:
    from blocks.ids import batch_item_block_id

    assert rec.batch and rec.channel and rec.ts
    return await h.emu.click(user, rec.channel, rec.ts, BatchActionId.review_item, value=choice,
                             block_id=batch_item_block_id(rec.batch, rec.id))


async def _on_card(h: Harness, rid: str) -> Any:
    rec = await _exists(h, rid)
    return rec if rec is not None and rec.ts else None


async def _reviewed(h: Harness, rid: str) -> bool:
    return (await h.store.get(rid)).review is not None
