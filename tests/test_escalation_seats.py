"""A quorum counts seats across escalation levels, end to end: a level that notifies someone
the card does not name (a manager) who is away lets their stand-in decide on the manager's
seat, so the stand-in and the manager together are one vote of a quorum-2 request, on single
cards and batch items alike. Signed clicks on the emulator's cards, a real Redis, the
scheduler's injected clock."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path

from blocks.ids import ActionId
from store.models import Record, State, Status, utcnow
from store.trust import Away
from tests.harness import Harness, running
from tests.test_batch import _cards_showing, _item
from tests.util import eventually

MANAGED = """
defaults: {channel: "#approvals"}
tiers:
  low:    {mode: auto}
  medium:
    mode: approve
    approvers: ["U0ALICE", "U0CAROL"]
    quorum: 2
    timeout: 1h
    escalation: [{after: 10m, notify: ["U0DAVE"]}]
  high:   {mode: approve}
batching: {enabled: false}
triggers:
  first_use: {enabled: false}
"""

BATCHED = MANAGED.replace("batching: {enabled: false}", "batching: {window: 30s, max_items: 40}")


def _later(h: Harness, seconds: float) -> None:
    assert h.bot.scheduler is not None
    h.bot.scheduler.clock = lambda: time.time() + seconds  # type: ignore[misc]
    h.bot.scheduler.kick()


async def _away(h: Harness, user: str = "U0DAVE") -> None:
    now = utcnow()
    await h.store.trust.set_away(Away(user=user, delegate="U0BOB", until=now + timedelta(days=2), since=now))


async def _escalated_card(h: Harness, summary: str) -> Record:
    """A posted card of the medium tier, its first level (Dave) fired."""
    rec = await h.card(await h.push(summary=summary))
    _later(h, 601)
    await eventually(lambda: _at_level(h, [rec.id], 1), 10, "level 1")
    return rec


async def _at_level(h: Harness, ids: list[str], n: int) -> bool:
    return all(r.escalation_level == n for r in await h.store.get_many(ids))


async def _votes(h: Harness, rec: Record, n: int) -> bool:
    return len((await h.store.get(rec.id)).votes) == n


async def _refusals(h: Harness, rec: Record) -> list[tuple[str, str]]:
    return [(e.actor, e.detail["reason"]) for e in await h.store.trail(rec.id) if e.event == "refused"]


async def test_a_stand_in_a_level_brought_in_and_the_manager_are_one_seat(redis_url: str, tmp_path: Path) -> None:
    """Quorum 2 of Alice and Carol; the level brings in Dave (a manager the card does not name),
    who is away, Bob standing in. Bob approves for Dave; Dave comes back and approves too: one
    seat, refused, nothing decided. Carol's approval is the second seat."""
    async with running(redis_url, tmp_path, MANAGED) as h:
        await _away(h)
        rec = await _escalated_card(h, "Refund $40")
        assert "standing in for <@U0DAVE>" in json.dumps(h.emu.messages("U0BOB")[0]["blocks"])
        await h.click(rec, "U0BOB", ActionId.approve)
        await eventually(lambda: _votes(h, rec, 1), what="Bob's vote")
        raw = json.loads(await h.store.redis.hget(h.store.keys.request(rec.id), "votes"))
        assert [(v["user_id"], v.get("seat")) for v in raw] == [("U0BOB", "U0DAVE")]
        assert [e.detail for e in await h.store.trail(rec.id) if e.event == "delegated"] == [{"for": ["U0DAVE"]}]
        await h.emu.slash_command("U0DAVE", "C0GENERAL", "/hitl", "away off")  # Dave is back
        await eventually(lambda: _dave_back(h), what="Dave back")
        await h.click(rec, "U0DAVE", ActionId.approve)
        assert "Your stand-in already voted" in await h.ephemeral("U0DAVE")
        after = await h.store.get(rec.id)
        assert after.state is State.pending, f"decided by {[v.user_id for v in after.votes]}"
        assert await _refusals(h, rec) == [("U0DAVE", "delegate_voted")]
        await h.click(rec, "U0CAROL", ActionId.approve)
        decision = await h.client.wait(rec.id, timeout=10)
        assert decision.status is Status.approved
        assert [v.user_id for v in decision.decided_by] == ["U0BOB", "U0CAROL"]


async def _dave_back(h: Harness) -> bool:
    away = (await h.store.trust.absences()).get("U0DAVE")
    return away is not None and away.ended_at is not None


async def test_a_manager_who_voted_leaves_no_seat_for_their_stand_in(redis_url: str, tmp_path: Path) -> None:
    """The other order: Dave (brought in by the level, away) approves himself; Bob, standing in
    for him, is refused (Dave's seat has voted); Alice's approval is the second seat."""
    async with running(redis_url, tmp_path, MANAGED) as h:
        await _away(h)
        rec = await _escalated_card(h, "Refund $41")
        await h.click(rec, "U0DAVE", ActionId.approve)
        await eventually(lambda: _votes(h, rec, 1), what="Dave's vote")
        await h.click(rec, "U0BOB", ActionId.approve)
        assert "The approver you stand in for has already voted" in await h.ephemeral("U0BOB")
        assert (await h.store.get(rec.id)).state is State.pending
        assert await _refusals(h, rec) == [("U0BOB", "approver_voted")]
        await h.click(rec, "U0ALICE", ActionId.approve)
        decision = await h.client.wait(rec.id, timeout=10)
        assert [v.user_id for v in decision.decided_by] == ["U0DAVE", "U0ALICE"]


async def test_a_batch_items_level_stand_in_and_the_manager_are_one_seat(redis_url: str, tmp_path: Path) -> None:
    """The same on a batch card: the card's level round brings in Dave (away, Bob standing in)
    on every item; on each item Bob and Dave hold one seat between them."""
    async with running(redis_url, tmp_path, BATCHED) as h:
        await _away(h)
        ids = [await h.push(summary=f"Refund ${i}", batch_key="k") for i in range(2)]
        await _cards_showing(h, ids)
        _later(h, 601)
        await eventually(lambda: _at_level(h, ids, 1), 10, "level 1 on every item")
        first, second = await h.store.get_many(ids)
        await _item(h, first, "U0BOB", "approve")
        await eventually(lambda: _votes(h, first, 1), what="Bob's vote")
        await _item(h, first, "U0DAVE", "approve")
        assert "Your stand-in already voted" in await h.ephemeral("U0DAVE")
        assert (await h.store.get(first.id)).state is State.pending
        await _item(h, second, "U0DAVE", "approve")
        await eventually(lambda: _votes(h, second, 1), what="Dave's vote")
        await _item(h, second, "U0BOB", "approve")
        assert "has already voted" in await h.ephemeral("U0BOB")
        assert (await h.store.get(second.id)).state is State.pending
        await _item(h, first, "U0CAROL", "approve")
        assert [v.user_id for v in (await h.client.wait(first.id, timeout=10)).decided_by] == ["U0BOB", "U0CAROL"]


async def test_a_stand_in_for_a_named_approver_and_a_manager_takes_the_seat_still_free(
        redis_url: str, tmp_path: Path) -> None:
    """Bob stands in for Alice (named on the card) and, once the level brings in Dave (away too),
    for Dave. Dave approves himself; Bob's approval then takes Alice's seat, still free, not Dave's
    (taken): two seats, the quorum met."""
    async with running(redis_url, tmp_path, MANAGED) as h:
        await _away(h)
        await _away(h, "U0ALICE")
        rec = await _escalated_card(h, "Refund $42")
        await h.click(rec, "U0DAVE", ActionId.approve)
        await eventually(lambda: _votes(h, rec, 1), what="Dave's vote")
        await h.click(rec, "U0BOB", ActionId.approve)
        decision = await h.client.wait(rec.id, timeout=10)
        assert decision.status is Status.approved, await _refusals(h, rec)
        raw = json.loads(await h.store.redis.hget(h.store.keys.request(rec.id), "votes"))
        assert [(v["user_id"], v.get("seat")) for v in raw] == [("U0DAVE", None), ("U0BOB", "U0ALICE")]
