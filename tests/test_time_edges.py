"""Time edge cases against a real Redis and the Slack emulator, on the scheduler's injected
clock: who a reminder names once part of a quorum voted, ..."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from blocks.ids import ActionId, BatchActionId
from bot.policy import PolicyEngine
from emulator import Emulator
from store.models import Choice, Status, from_epoch, utcnow
from store.redis_store import Store
from store.transitions import vote
from store.trust import Away
from tests.harness import Harness, running
from tests.test_batch import _cards_showing, _item
from tests.test_scheduler import TOKEN, World, step
from tests.util import eventually

QUORUM = PolicyEngine.from_yaml("""
defaults: {channel: "#approvals", approvers: ["U0ALICE", "U0CAROL"]}
tiers:
  low: {mode: auto}
  medium:
    mode: approve
    quorum: 2
    timeout: 100s
    reminder: {at: 0.2, repeat: true}
  high: {mode: approve}
triggers: {first_use: {enabled: false}}
""")


@pytest.fixture
async def w(store: Store) -> AsyncIterator[World]:
    emu = Emulator(signing_secret="s", request_url=None, bot_token=TOKEN)
    await emu.start()
    yield World(store, emu, AsyncWebClient(token=TOKEN, base_url=emu.api_url), engine=QUORUM)
    await emu.stop()


async def test_a_reminder_after_one_vote_of_two_names_only_who_has_not_voted(w: World) -> None:
    """Quorum 2, Alice approved: the reminder is for Carol; Alice is not told to decide again
    (she could not: her seat is taken)."""
    rec = await w.request()
    now = from_epoch(w.clock())
    await w.store.apply(vote(rec, user_id="U0ALICE", name="alice", choice=Choice.approve, now=now), now)
    await step(w, 21)
    [reminder] = w.thread(rec)
    assert "<@U0CAROL>" in reminder and "U0ALICE" not in reminder
    [(_, detail)] = await w.events(rec.id)
    assert detail["mentioned"] == ["U0CAROL"]


async def test_a_reminder_names_who_stands_in_for_an_approver_away(w: World) -> None:
    """Alice is away, Bob decides for her (the card says so): the reminder mentions Bob, not
    Alice; once she is back it mentions her again. A stand-in who asked for the request cannot
    decide it, so then Alice herself is reminded."""
    now = from_epoch(w.clock())
    await w.store.trust.set_away(Away(user="U0ALICE", delegate="U0BOB", until=now + timedelta(days=2), since=now))
    rec = await w.request()
    own = await w.request(requested_by="U0BOB")
    await step(w, 21)
    [reminder] = w.thread(rec)
    assert "<@U0BOB> <@U0CAROL>" in reminder and "U0ALICE" not in reminder
    assert "<@U0ALICE> <@U0CAROL>" in w.thread(own)[0]
    await w.store.trust.back("U0ALICE", from_epoch(w.clock()))
    await step(w, 41)
    assert "<@U0ALICE> <@U0CAROL>" in w.thread(rec)[1]


BATCHED = """
tiers:
  low:    {mode: auto}
  medium: {mode: approve, approvers: ["U0ALICE", "U0CAROL"], timeout: 1h, reminder: {after: 10m, repeat: true}}
  high:   {mode: approve}
batching: {window: 30s, max_items: 40}
triggers:
  first_use: {enabled: false}
"""


async def test_a_batch_card_gets_one_reminder_per_round_not_one_per_item(redis_url: str, tmp_path: Path) -> None:
    """Three refunds on one batch card, nobody decides: at 10 minutes the card's thread gets one
    reminder saying three wait (it used to get three identical 'this request is still waiting'
    replies, one per item), at 20 minutes one more; every item counts its reminders."""
    async with running(redis_url, tmp_path, BATCHED) as h:
        ids = [await h.push(summary=f"Refund ${i}", batch_key="k") for i in range(3)]
        await _cards_showing(h, ids)
        rec = await h.store.get(ids[0])
        assert rec.channel and rec.ts and h.bot.scheduler is not None

        def reminders() -> list[str]:
            assert rec.channel and rec.ts
            return [m["text"] for m in h.emu.thread(rec.channel, rec.ts)[1:]]

        async def counted(n: int) -> bool:
            return all(r.reminders == n for r in await h.store.get_many(ids))

        for n, at in ((1, 601), (2, 1201)):
            h.bot.scheduler.clock = lambda at=at: time.time() + at  # type: ignore[misc]
            h.bot.scheduler.kick()
            await eventually(lambda n=n: counted(n), 10, f"reminder {n} counted on every item")  # type: ignore[misc]
            assert len(reminders()) == n, reminders()
        assert "<@U0ALICE> <@U0CAROL> Reminder: 3 requests on this card are still waiting" in reminders()[0]
        assert "The first expires in 49m" in reminders()[0]


async def test_a_handover_whose_card_slack_refused_is_not_looked_at_every_two_seconds(w: World) -> None:
    """Slack refused a handover card for good (its channel is gone): its level-0 event stopped
    waiting for the card, as reminders and levels of approval cards do, instead of waking the
    scheduler every 2 s until the expiry (hours later); the expiry still ends it."""
    rec = await w.request(post=False, kind="escalation", summary="The customer wants a person")
    await w.store.redis.hset(w.store.keys.request(rec.id), "undeliverable", "channel_not_found")
    await step(w, 10, by=1)
    assert await w.store.redis.zscore(w.store.keys.deadlines, f"escalate:{rec.id}") is None
    await step(w, 100, by=50)
    final = await w.store.get(rec.id)
    assert final.decision is not None and final.decision.status is Status.expired


LEVELED = """
tiers:
  low:    {mode: auto}
  medium:
    mode: approve
    approvers: ["U0ALICE"]
    timeout: 1h
    escalation:
      - {after: 10m, notify: ["#approvals-leads", "U0DAVE"]}
      - {after: 20m, notify: ["U0DAVE"], repeat: 10m}
  high:   {mode: approve}
batching: {window: 30s, max_items: 40}
triggers:
  first_use: {enabled: false}
"""


def _later(h: Harness, seconds: float) -> None:
    assert h.bot.scheduler is not None
    h.bot.scheduler.clock = lambda: time.time() + seconds  # type: ignore[misc]
    h.bot.scheduler.kick()


async def _at_level(h: Harness, ids: list[str], n: int) -> bool:
    return all(r.escalation_level == n for r in await h.store.get_many(ids))


async def test_a_batch_cards_level_tells_each_target_once_for_all_its_items(redis_url: str, tmp_path: Path) -> None:
    """Three refunds on one batch card, nobody decides: at 10 minutes #approvals-leads gets one
    post and Dave one DM saying three wait, the card's thread one note (it used to be three of
    each, one per item); every item records its level. The level's repeats tell Dave once each.
    Dave's one 'Approve all' then decides every item: the grant covered the whole card."""
    async with running(redis_url, tmp_path, LEVELED) as h:
        ids = [await h.push(summary=f"Refund ${i}", batch_key="k") for i in range(3)]
        await _cards_showing(h, ids)
        rec = await h.store.get(ids[0])
        assert rec.channel and rec.ts
        for n, at in ((1, 601), (2, 1201), (3, 1801)):
            _later(h, at)
            await eventually(lambda n=n: _at_level(h, ids, n), 10, f"level {n} on every item")  # type: ignore[misc]
            await asyncio.sleep(0.3)  # nothing more comes
            assert len(h.emu.messages("U0DAVE")) == n, h.emu.messages("U0DAVE")
        leads = h.emu.messages("#approvals-leads")
        assert len(leads) == 1 and "3 requests on one card have had no decision" in json.dumps(leads[0]["blocks"])
        notes = [m["text"] for m in h.emu.thread(rec.channel, rec.ts)[1:] if "escalated (level" in m["text"]]
        assert len(notes) == 3, notes
        for r in await h.store.get_many(ids):
            assert r.time_to_escalate_s is not None and "U0DAVE" in r.extra_approvers
            levels = [e.detail["level"] for e in await h.store.trail(r.id) if e.event == "escalated"]
            assert levels == [1, 2, 2], levels
        await h.emu.click("U0DAVE", rec.channel, rec.ts, BatchActionId.approve_all)
        for rid in ids:
            decision = await h.client.wait(rid, timeout=10)
            assert decision.status is Status.approved and decision.decided_by[0].user_id == "U0DAVE"


async def test_a_batch_cards_level_still_tells_people_when_the_item_sending_it_is_decided(
        redis_url: str, tmp_path: Path) -> None:
    """The item that took the card's level round is approved while Slack is slow to give the
    card's link: it tells nobody, and another item of the card tells #approvals-leads and Dave
    (once each) for the two still waiting, which both record the level and Dave may decide."""
    async with running(redis_url, tmp_path, LEVELED) as h:
        ids = [await h.push(summary=f"Refund ${i}", batch_key="k") for i in range(3)]
        await _cards_showing(h, ids)
        rec = await h.store.get(ids[0])
        assert rec.channel and rec.ts and rec.batch
        h.emu.inject("chat.getPermalink", delay=2.0)  # the first item's round waits on Slack

        async def holder() -> str | None:
            keys = [k async for k in h.store.redis.scan_iter(f"{h.store.keys.batch(rec.batch or '')}:level:0:*")]
            return str(await h.store.redis.hget(keys[0], "who") or "") or None if keys else None

        _later(h, 601)
        first = str(await eventually(holder, 10, "the item taking the level round"))
        await _item(h, await h.store.get(first), "U0ALICE", "approve")
        assert (await h.client.wait(first, timeout=10)).status is Status.approved
        rest = [i for i in ids if i != first]
        await eventually(lambda: _at_level(h, rest, 1), 10, "level 1 on the items still waiting")
        await asyncio.sleep(2.5)  # the rejected item's slow round ends meanwhile: it tells nobody
        assert len(h.emu.messages("#approvals-leads")) == 1 and len(h.emu.messages("U0DAVE")) == 1
        assert "2 requests on one card" in json.dumps(h.emu.messages("U0DAVE")[0]["blocks"])
        assert (await h.store.get(first)).escalation_level == 0
        await h.emu.click("U0DAVE", rec.channel, rec.ts, BatchActionId.approve_all)
        for rid in rest:
            assert (await h.client.wait(rid, timeout=10)).status is Status.approved


STOOD_IN = """
defaults: {channel: "#approvals"}
tiers:
  low:    {mode: auto}
  medium:
    mode: approve
    approvers: ["U0ALICE"]
    timeout: 1h
    escalation: [{after: 10m, notify: ["U0DAVE"]}]
  high:   {mode: approve}
batching: {enabled: false}
triggers:
  first_use: {enabled: false}
"""


async def test_a_level_tells_whoever_stands_in_for_a_target_away(redis_url: str, tmp_path: Path) -> None:
    """Dave, whom the level notifies, is away and Bob decides for him: Bob gets the DM (saying
    he stands in for Dave), the thread note names him, and his click decides; Dave is not DMed.
    On Bob's own request Dave is told as before and Bob gets no right to decide it."""
    async with running(redis_url, tmp_path, STOOD_IN) as h:
        now = utcnow()
        await h.store.trust.set_away(Away(user="U0DAVE", delegate="U0BOB", until=now + timedelta(days=2), since=now))
        rid = await h.push(summary="Refund $40")
        own = await h.push(summary="Refund $41", requested_by="U0BOB")
        rec, mine = await h.card(rid), await h.card(own)
        _later(h, 601)
        await eventually(lambda: _at_level(h, [rid, own], 1), 10, "level 1 on both")
        [to_bob] = h.emu.messages("U0BOB")
        assert "Escalated to you, standing in for <@U0DAVE> (away) (level 1)" in json.dumps(to_bob["blocks"])
        [to_dave] = h.emu.messages("U0DAVE")  # for Bob's own request only
        assert "Refund $41" in json.dumps(to_dave["blocks"])
        assert rec.channel and rec.ts
        assert any("<@U0BOB> (for <@U0DAVE>, away)" in m["text"] for m in h.emu.thread(rec.channel, rec.ts))
        rec, mine = await h.store.get(rid), await h.store.get(own)
        assert "U0BOB" in rec.extra_approvers and "U0BOB" not in mine.extra_approvers
        [detail] = [e.detail for e in await h.store.trail(rid) if e.event == "escalated"]
        assert detail["stood_in"] == {"U0DAVE": "U0BOB"}
        await h.click(rec, "U0BOB", ActionId.approve)
        decision = await h.client.wait(rid, timeout=10)
        assert decision.status is Status.approved and decision.decided_by[0].user_id == "U0BOB"


async def test_a_level_gives_nobody_the_seat_of_a_target_away_who_asked_for_the_request(
        redis_url: str, tmp_path: Path) -> None:
    """Dave, whom the level notifies, asked for the refund himself and is away, Bob standing in:
    nobody decides for the requester, so Bob is neither told nor let decide; Dave is told as
    before (and still cannot approve his own request)."""
    async with running(redis_url, tmp_path, STOOD_IN) as h:
        now = utcnow()
        await h.store.trust.set_away(Away(user="U0DAVE", delegate="U0BOB", until=now + timedelta(days=2), since=now))
        rec = await h.card(await h.push(summary="Refund $42", requested_by="U0DAVE"))
        _later(h, 601)
        await eventually(lambda: _at_level(h, [rec.id], 1), 10, "level 1")
        assert not h.emu.messages("U0BOB")
        assert len(h.emu.messages("U0DAVE")) == 1
        rec = await h.store.get(rec.id)
        assert "U0BOB" not in rec.extra_approvers
        [detail] = [e.detail for e in await h.store.trail(rec.id) if e.event == "escalated"]
        assert "stood_in" not in detail
        await h.click(rec, "U0BOB", ActionId.approve)
        assert "not one of the approvers" in await h.ephemeral("U0BOB")
        assert (await h.store.get(rec.id)).votes == []


SEATED = STOOD_IN.replace('approvers: ["U0ALICE"]', 'approvers: ["U0ALICE", "U0DAVE"]\n    quorum: 2')


async def test_a_level_for_an_approver_away_leaves_their_stand_in_on_their_seat(
        redis_url: str, tmp_path: Path) -> None:
    """Quorum 2 of Alice and Dave; the level notifies Dave, who is away, Bob standing in. Bob is
    told and decides for Dave: his vote takes Dave's seat, so Dave's own vote is refused (an
    approver and their stand-in hold one seat), and Alice's makes the quorum."""
    async with running(redis_url, tmp_path, SEATED) as h:
        now = utcnow()
        await h.store.trust.set_away(Away(user="U0DAVE", delegate="U0BOB", until=now + timedelta(days=2), since=now))
        rec = await h.card(await h.push(summary="Refund $43"))
        _later(h, 601)
        await eventually(lambda: _at_level(h, [rec.id], 1), 10, "level 1")
        assert "standing in for <@U0DAVE>" in json.dumps(h.emu.messages("U0BOB")[0]["blocks"])
        await h.click(rec, "U0BOB", ActionId.approve)

        async def voted(n: int) -> bool:
            return len((await h.store.get(rec.id)).votes) == n

        await eventually(lambda: voted(1), what="Bob's vote")
        await h.click(rec, "U0DAVE", ActionId.approve)
        assert "Your stand-in already voted" in await h.ephemeral("U0DAVE")
        after = await h.store.get(rec.id)
        assert after.decision is None and [v.user_id for v in after.votes] == ["U0BOB"]
        assert [e.detail["reason"] for e in await h.store.trail(rec.id) if e.event == "refused"] == ["delegate_voted"]
        await h.click(rec, "U0ALICE", ActionId.approve)
        decision = await h.client.wait(rec.id, timeout=10)
        assert [v.user_id for v in decision.decided_by] == ["U0BOB", "U0ALICE"]
