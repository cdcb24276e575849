"""Batch cards and rate-limit-aware delivery, end to end against the emulator."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from blocks.ids import BatchActionId, batch_item_block_id
from store.models import Record, Status
from tests.harness import Harness, start, start_bot, stop
from tests.util import eventually, shown_request_ids

POLICY = """
tiers:
  low:    {mode: auto}
  medium: {mode: approve}
  high:   {mode: approve, quorum: 2}
batching: {window: 30s, max_items: 40}
triggers:
  first_use: {enabled: false}
"""


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yml"
    path.write_text(POLICY)
    return path


@pytest.fixture
async def h(redis_url: str, policy: Path) -> AsyncIterator[Harness]:
    harness = await start(redis_url, policy=policy)
    yield harness
    await stop(harness)


async def _cards_showing(h: Harness, ids: list[str], channel: str = "#approvals") -> list[dict[str, Any]]:
    async def all_shown() -> list[dict[str, Any]] | None:
        msgs = h.emu.messages(channel)
        shown = set().union(*(shown_request_ids(m) for m in msgs)) if msgs else set()
        return msgs if set(ids) <= shown else None

    msgs = list(await eventually(all_shown, 30, f"{len(ids)} requests on cards"))

    async def all_marked() -> bool:
        return all(r.ts for r in await h.store.get_many(ids))

    await eventually(all_marked, 10, "cards recorded on the requests")
    return msgs


async def _records(h: Harness, ids: list[str]) -> list[Record]:
    return [await h.store.get(r) for r in ids]


async def _item(h: Harness, rec: Record, user: str, choice: str) -> Any:
    assert rec.batch and rec.channel and rec.ts
    return await h.emu.click(user, rec.channel, rec.ts, BatchActionId.item, value=choice,
                             block_id=batch_item_block_id(rec.batch, rec.id))


async def test_related_requests_share_one_card_updated_in_place(h: Harness) -> None:
    ids = [await h.push(agent="crm", action="update_tag", summary=f"Tag contact #{i} churn-risk",
                        params={"contact": i, "tag": "churn-risk"}) for i in range(5)]
    msgs = await _cards_showing(h, ids)
    assert len(msgs) == 1 and len(h.emu.calls_to("chat.postMessage")) == 1
    text = json.dumps(msgs[0]["blocks"])
    assert "5 update_tag requests from crm" in text and "Approving all runs" in text
    recs = await _records(h, ids)
    assert len({r.batch for r in recs}) == 1 and all(r.ts == msgs[0]["ts"] for r in recs)
    # each item has its own control
    await _item(h, recs[2], "U0ALICE", "approve")
    assert (await h.client.wait(ids[2], timeout=10)).status is Status.approved

    async def item_locked() -> bool:
        return "*Approved* by" in json.dumps(h.emu.messages("#approvals")[0]["blocks"])

    await eventually(item_locked, what="item shown as approved")
    assert (await h.store.get(ids[0])).decision is None


@pytest.mark.cluster_too
async def test_approve_all_is_honest_about_each_item(h: Harness) -> None:
    ids = [await h.push(summary=f"Refund ${100 + i}", risk={"amount": 100 + i, "currency": "USD"},
                        batch_key="refunds-7") for i in range(3)]
    ids.append(await h.push(summary="Refund $900", risk={"amount": 900, "currency": "USD"}, batch_key="refunds-7"))
    ids.append(await h.push(summary="Refund $50 for Alice's customer", requested_by="U0ALICE",
                            batch_key="refunds-7"))
    msgs = await _cards_showing(h, ids)
    assert len(msgs) == 1
    rec = await h.store.get(ids[0])
    assert rec.channel and rec.ts
    await h.emu.click("U0ALICE", rec.channel, rec.ts, BatchActionId.approve_all)

    async def summary() -> str | None:
        eph = h.emu.ephemerals("U0ALICE")
        return json.dumps(eph[-1]) if eph else None

    # The summary is sent after every item was tried (items are decided one after another):
    # reading the items before it raced the bulk action still working on the last two.
    text = str(await eventually(summary, what="bulk summary"))
    for rid in ids[:3]:
        assert (await h.client.wait(rid, timeout=10)).status is Status.approved
    big, own = await h.store.get(ids[3]), await h.store.get(ids[4])
    assert big.decision is None and [v.user_id for v in big.votes] == ["U0ALICE"]  # 1 of 2
    assert own.decision is None and not own.votes
    assert "Approved 3 of the 5 you saw" in text and "another approver" in text and "cannot approve it yourself" in text
    # every approved item has its own decision and audit trail
    for rid in ids[:3]:
        events = [e.event for e in await h.store.trail(rid)]
        assert events.count("decided") == 1 and events.count("published") == 1
    assert [e.detail.get("reason") for e in await h.store.trail(ids[4]) if e.event == "refused"] == ["self_approval"]
    # Bob completes the high-value one
    await h.emu.click("U0BOB", rec.channel, rec.ts, BatchActionId.approve_all)
    decision = await h.client.wait(ids[3], timeout=10)
    assert [v.user_id for v in decision.decided_by] == ["U0ALICE", "U0BOB"]


async def test_reject_all_with_one_reason(h: Harness) -> None:
    ids = [await h.push(action="delete_file", summary=f"Delete /tmp/report-{i}.csv", batch_key="cleanup",
                        params={"path": f"/tmp/report-{i}.csv"}, risk={"reversible": False}) for i in range(5)]
    msgs = await _cards_showing(h, ids)
    assert "5 of these cannot be undone" in json.dumps(msgs[0]["blocks"])
    rec = await h.store.get(ids[0])
    assert rec.channel and rec.ts
    await h.emu.click("U0BOB", rec.channel, rec.ts, BatchActionId.reject_all)
    view = await eventually(lambda: asyncio.sleep(0, h.emu.top_view("U0BOB")), what="reject-all modal")
    assert "/tmp/report-3.csv" in json.dumps(view.blocks)
    result = await h.emu.submit_view("U0BOB", view.id, {"hitl.reason_code": {"value": "risky"},
                                                        "hitl.reason_text": {"value": "Keep them for audit"}})
    assert result.closed
    for rid in ids:
        d = await h.client.wait(rid, timeout=10)
        assert d.status is Status.rejected and d.reason_code == "risky" and d.reason == "Keep them for audit"


def _shown(view: Any) -> int | None:
    import re

    m = re.search(r"Email customer (\d)", json.dumps(view.blocks)) if view else None
    return int(m.group(1)) if m else None


@pytest.mark.cluster_too
async def test_review_one_by_one(h: Harness) -> None:
    ids = [await h.push(action="send_email", summary=f"Email customer {i}", batch_key="emails") for i in range(3)]
    await _cards_showing(h, ids)
    rec = await h.store.get(ids[0])
    assert rec.channel and rec.ts
    await h.emu.click("U0CAROL", rec.channel, rec.ts, BatchActionId.one_by_one)
    view = await eventually(lambda: asyncio.sleep(0, h.emu.top_view("U0CAROL")), what="stepper")
    assert "Item 1 of 3" in json.dumps(view.blocks)
    first = _shown(view)
    assert first is not None
    await h.emu.click_view("U0CAROL", view.id, BatchActionId.step_approve)
    assert (await h.client.wait(ids[first], timeout=10)).status is Status.approved

    async def moved_on() -> Any:
        v = h.emu.top_view("U0CAROL")
        return v if _shown(v) not in (None, first) else None

    view = await eventually(moved_on, what="second item")
    second = _shown(view)
    await h.emu.click_view("U0CAROL", view.id, BatchActionId.step_skip)

    async def third() -> Any:
        v = h.emu.top_view("U0CAROL")
        return v if _shown(v) not in (None, first, second) else None

    view = await eventually(third, what="third item")
    last = _shown(view)
    assert last is not None and second is not None
    await h.emu.click_view("U0CAROL", view.id, BatchActionId.step_reason, value="wrong_action")
    await h.emu.click_view("U0CAROL", view.id, BatchActionId.step_reject)
    d = await h.client.wait(ids[last], timeout=10)
    assert d.status is Status.rejected and d.reason_code == "wrong_action"
    assert (await h.store.get(ids[second])).decision is None  # skipped stays open


async def test_a_burst_under_slack_rate_limits(redis_url: str, policy: Path) -> None:
    """One message per second per channel with 429s: nothing lost, nothing posted twice."""
    h = await start(redis_url, policy=policy, rate_limits=True, post_rate=1.0, post_burst=2.0, backlog_at=4)
    try:
        ids = [await h.push(action=f"single_{i}", summary=f"One-off {i}") for i in range(6)]
        ids += [await h.push(agent="crm", action="update_tag", summary=f"Tag #{i}") for i in range(15)]
        ids += [await h.push(agent="mail", action="send", summary=f"Send #{i}") for i in range(15)]
        msgs = await _cards_showing(h, ids)
        shown = [shown_request_ids(m) for m in msgs]
        for rid in ids:
            assert sum(rid in s for s in shown) == 1, rid
        posts = h.emu.calls_to("chat.postMessage")
        assert len({c.response.get("ts") for c in posts if c.ok}) == len([c for c in posts if c.ok])
        assert h.emu.rate_limited <= 2, h.emu.rate_limited
        # the backlog digest was posted first, updated in place, and cleared at the end
        digests = [m for m in h.emu.messages("#approvals") if "backlog" in json.dumps(m.get("blocks")).lower()]
        assert len(digests) == 1

        async def cleared() -> bool:
            m = next(x for x in h.emu.messages("#approvals") if x["ts"] == digests[0]["ts"])
            return "cleared" in json.dumps(m["blocks"])

        await eventually(cleared, 15, "digest cleared")
    finally:
        await stop(h)


async def test_a_batch_past_max_items_splits_into_more_cards(redis_url: str, tmp_path: Path) -> None:
    path = tmp_path / "policy.yml"
    path.write_text(POLICY.replace("batching: {window: 30s, max_items: 40}", "batching: {window: 30s, max_items: 3}"))
    h = await start(redis_url, policy=path)
    try:
        ids = [await h.push(agent="crm", action="update_tag", summary=f"Tag #{i}") for i in range(7)]
        msgs = await _cards_showing(h, ids)
        assert len(msgs) == 3  # 3 + 3 + 1, none truncated
        shown = [shown_request_ids(m) for m in msgs]
        assert sorted(len(s) for s in shown) == [1, 3, 3]
        assert all(len(m["blocks"]) <= 50 for m in msgs)
        assert set().union(*shown) == set(ids)
    finally:
        await stop(h)


async def test_two_replicas_share_the_pace_under_slack_limits(redis_url: str, policy: Path) -> None:
    """Pacing lives in Redis: two replicas together still post about one card per second."""
    h = await start(redis_url, policy=policy, rate_limits=True, post_rate=1.0, post_burst=2.0,
                    consumer="replica-a")
    h.bots.append(await start_bot(redis_url, h.emu, policy=policy, post_rate=1.0, post_burst=2.0,
                                  consumer="replica-b"))
    try:
        ids = [await h.push(action=f"one_off_{i}", summary=f"One-off {i}") for i in range(6)]
        msgs = await _cards_showing(h, ids)
        assert len(msgs) == 6 and h.emu.rate_limited == 0
        posts = sorted(c.at for c in h.emu.calls_to("chat.postMessage") if c.ok)
        assert posts[-1] - posts[0] >= 3.0  # 6 posts, a burst of 2, then one per second
        assert sum(b.delivery.stats["posted"] for b in h.bots) == 6
    finally:
        await stop(h)


async def test_the_digest_opens_the_queue(redis_url: str, policy: Path) -> None:
    h = await start(redis_url, policy=policy, rate_limits=True, post_rate=0.5, post_burst=1.0, backlog_at=3)
    try:
        ids = [await h.push(action=f"single_{i}", summary=f"One-off {i}") for i in range(6)]

        async def digest() -> dict[str, Any] | None:
            return next((m for m in h.emu.messages("#approvals") if "Approval backlog" in json.dumps(m["blocks"])),
                        None)

        card = await eventually(digest, 20, "the backlog digest")
        await h.emu.click("U0CAROL", "#approvals", card["ts"], BatchActionId.open_queue)
        view = await eventually(lambda: asyncio.sleep(0, h.emu.top_view("U0CAROL")), what="queue modal")
        text = json.dumps(view.blocks)
        waiting = [i for i in range(6) if f"One-off {i}" in text]
        assert waiting and "requests waiting in #approvals" in text
        await _cards_showing(h, ids)
    finally:
        await stop(h)
