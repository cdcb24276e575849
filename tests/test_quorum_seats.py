"""A quorum counts seats, end to end: an approver and whoever stands in for them while they are
away hold one seat, so between them they never approve a quorum-2 request or make its standing
grant. Signed clicks on the emulator's single and batch cards, a real Redis."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from blocks.batch import GRANT
from blocks.ids import ActionId
from store.models import Record, State, Status
from tests.harness import Harness, start, stop
from tests.test_batch_trust_e2e import _batch, _choose
from tests.test_grants_e2e import _card_says, _events
from tests.util import eventually

POLICY = """
defaults: {tier: pair}
tiers:
  low: {mode: auto}
  medium: {mode: approve}
  high: {mode: approve}
  pair: {mode: approve, quorum: 2, approvers: [U0ALICE, U0CAROL], grants: {duration: 30m, max_amount: 100}}
  ops: {mode: approve, quorum: 2, approvers: [U0CAROL, U0DAVE], grants: {duration: 30m, max_amount: 100}}
rules:
  - {name: ops, when: 'request.action == "deploy"', tier: ops}
admins: ["U0ADMIN"]
batching: {enabled: false}
triggers:
  first_use: {enabled: false}
"""

AWAY = "away until 2099-12-24 to <@U0BOB|bob>"


async def _start(redis_url: str, tmp_path: Path, text: str) -> Harness:
    policy = tmp_path / "policy.yml"
    policy.write_text(text)
    return await start(redis_url, policy=policy)


@pytest.fixture
async def h(redis_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    harness = await _start(redis_url, tmp_path, POLICY)
    yield harness
    await stop(harness)


async def _wire(h: Harness, amount: int = 40) -> Record:
    return await h.card(await h.push(action="wire", summary=f"Wire ${amount} to ACME", risk={"amount": amount}))


async def _refused(h: Harness, rec: Record, user: str, reason: str, words: str, n: int = 1) -> None:
    """`user`'s click was refused with `reason`, told in `words`, and nothing changed."""
    assert words in await h.ephemeral(user, n)
    refused = [e for e in await _events(h, rec.id, "refused") if e["actor"] == user]
    assert refused and refused[-1]["reason"] == reason, refused


async def _unchanged(h: Harness, rec: Record, voters: list[str]) -> None:
    after = await h.store.get(rec.id)
    assert after.state is State.pending, f"decided by {[v.user_id for v in after.votes]}"
    assert [v.user_id for v in after.votes] == voters
    assert not await h.store.trust.grants(), "a standing grant was made by one seat"


async def _voters(h: Harness, rec: Record, voters: list[str]) -> bool:
    return [v.user_id for v in (await h.store.get(rec.id)).votes] == voters


async def _decided_by(h: Harness, rec: Record) -> list[str]:
    d = await h.client.wait(rec.id, timeout=10)
    assert d.status is Status.approved
    return [v.user_id for v in d.decided_by]


async def test_an_away_approver_and_their_delegate_are_one_seat_of_a_quorum(h: Harness) -> None:
    """The reviewer's case: Bob stands in for Alice and asks for a grant; Alice, still away,
    asks too. One seat: refused, nothing approved, no grant. Carol's vote is the second seat."""
    await h.emu.slash_command("U0ALICE", "C0GENERAL", "/hitl", AWAY)
    rec = await _wire(h)
    await _card_says(h, rec, "is away until")
    await h.click(rec, "U0BOB", ActionId.approve_grant)  # for Alice
    assert "1 of 2 so far" in await h.ephemeral("U0BOB")
    await h.click(rec, "U0ALICE", ActionId.approve_grant)  # Alice herself, still away
    await _refused(h, rec, "U0ALICE", "delegate_voted", "Your stand-in already voted on this request for you")
    await _unchanged(h, rec, ["U0BOB"])
    # the record keeps whose seat Bob's vote took; the decision agents read does not change shape
    raw = json.loads(await h.store.redis.hget(h.store.keys.request(rec.id), "votes"))
    assert [(v["user_id"], v.get("seat")) for v in raw] == [("U0BOB", "U0ALICE")]
    clicked = [e for e in await _events(h, rec.id, "clicked") if e["actor"] == "U0BOB"]
    assert clicked[-1]["for"] == ["U0ALICE"]
    # Carol holds the other seat: approved, and the grant is Bob's (for Alice) and Carol's
    await h.click(rec, "U0CAROL", ActionId.approve_grant)
    assert await _decided_by(h, rec) == ["U0BOB", "U0CAROL"]
    [grant] = await h.grants(1)
    assert grant.by == ["U0BOB", "U0CAROL"]
    published = [f["decision"] for _, f in await h.store.redis.xrange(h.store.keys.decisions)
                 if json.loads(f["decision"])["request_id"] == rec.id]
    assert published and all(set(v) == {"user_id", "name", "choice", "at"}
                             for v in json.loads(published[-1])["decided_by"])


async def test_a_stand_in_may_not_vote_for_an_approver_who_voted_before_going_away(h: Harness) -> None:
    rec = await _wire(h)
    await h.click(rec, "U0ALICE", ActionId.approve_grant)
    assert "1 of 2 so far" in await h.ephemeral("U0ALICE")
    await h.emu.slash_command("U0ALICE", "C0GENERAL", "/hitl", AWAY)
    await _card_says(h, rec, "<@U0BOB> decides for them")
    await h.click(rec, "U0BOB", ActionId.approve_grant)
    await _refused(h, rec, "U0BOB", "approver_voted", "The approver you stand in for has already voted")
    assert (await _events(h, rec.id, "refused"))[-1] == {
        "actor": "U0BOB", "choice": "approve", "reason": "approver_voted", "for": ["U0ALICE"]}
    await _unchanged(h, rec, ["U0ALICE"])
    # a plain Approve is the same vote, refused the same way
    await h.click(rec, "U0BOB", ActionId.approve)
    await _refused(h, rec, "U0BOB", "approver_voted", "has already voted", 2)
    await _unchanged(h, rec, ["U0ALICE"])
    await h.click(rec, "U0CAROL", ActionId.approve)
    assert await _decided_by(h, rec) == ["U0ALICE", "U0CAROL"]


async def test_two_members_of_a_stand_in_group_are_one_seat(h: Harness) -> None:
    """Dave is away, the managers group (Alice, Bob: neither approves ops) stands in for him."""
    await h.emu.slash_command("U0DAVE", "C0GENERAL", "/hitl",
                              "away until 2099-12-24 to <!subteam^S0MANAGERS|@managers>")
    rec = await h.card(await h.push(action="deploy", summary="Deploy v2"))
    assert rec.route.tier == "ops"
    await _card_says(h, rec, "is away until")
    await h.click(rec, "U0ALICE", ActionId.approve_grant)  # for Dave
    assert "1 of 2 so far" in await h.ephemeral("U0ALICE")
    await h.click(rec, "U0BOB", ActionId.approve_grant)  # for Dave too
    await _refused(h, rec, "U0BOB", "seat_taken", "Someone else already stood in on this request")
    await _unchanged(h, rec, ["U0ALICE"])
    await h.click(rec, "U0DAVE", ActionId.approve)  # Dave himself: his seat has voted
    await _refused(h, rec, "U0DAVE", "delegate_voted", "Your stand-in already voted")
    await _unchanged(h, rec, ["U0ALICE"])
    await h.click(rec, "U0CAROL", ActionId.approve_grant)
    assert await _decided_by(h, rec) == ["U0ALICE", "U0CAROL"]
    [grant] = await h.grants(1)
    assert grant.by == ["U0ALICE", "U0CAROL"]


async def test_two_approvers_in_their_own_right_still_make_a_quorum_and_a_grant(h: Harness) -> None:
    rec = await _wire(h)
    await h.click(rec, "U0ALICE", ActionId.approve_grant)
    assert "1 of 2 so far" in await h.ephemeral("U0ALICE")
    assert (await h.store.get(rec.id)).state is State.pending
    await h.click(rec, "U0CAROL", ActionId.approve_grant)
    assert await _decided_by(h, rec) == ["U0ALICE", "U0CAROL"]
    [grant] = await h.grants(1)
    assert grant.by == ["U0ALICE", "U0CAROL"]
    assert not [e for e in await _events(h, rec.id, "refused")]
    votes = json.loads(await h.store.redis.hget(h.store.keys.request(rec.id), "votes"))
    assert all("seat" not in v for v in votes)  # own seats are not written


async def test_a_stand_in_for_the_one_approver_away_and_the_other_approver_are_two_seats(h: Harness) -> None:
    await h.emu.slash_command("U0ALICE", "C0GENERAL", "/hitl", AWAY)
    rec = await _wire(h)
    await _card_says(h, rec, "<@U0BOB> decides for them")
    await h.click(rec, "U0CAROL", ActionId.approve)
    await h.click(rec, "U0BOB", ActionId.approve)  # for Alice
    assert await _decided_by(h, rec) == ["U0CAROL", "U0BOB"]
    assert await _events(h, rec.id, "delegated") == [{"actor": "U0BOB", "for": ["U0ALICE"]}]


BATCH_POLICY = POLICY.replace("batching: {enabled: false}", "batching: {window: 30s, max_items: 40}")


async def test_a_batch_item_counts_seats_like_a_single_card(redis_url: str, tmp_path: Path) -> None:
    h = await _start(redis_url, tmp_path, BATCH_POLICY)
    try:
        await h.emu.slash_command("U0ALICE", "C0GENERAL", "/hitl", AWAY)
        recs = await _batch(h, 2, "wires", action="wire", risk={"amount": 30})
        await _choose(h, recs[0], "U0BOB", GRANT)  # for Alice
        assert "1 of 2 so far" in await h.ephemeral("U0BOB")
        await _choose(h, recs[0], "U0ALICE", GRANT)
        await _refused(h, recs[0], "U0ALICE", "delegate_voted", "Your stand-in already voted")
        await _unchanged(h, recs[0], ["U0BOB"])
        await _choose(h, recs[1], "U0ALICE", "approve")  # the other item: Alice's seat is free there
        await _choose(h, recs[1], "U0BOB", "approve")
        await _refused(h, recs[1], "U0BOB", "approver_voted", "has already voted", 2)
        assert (await h.store.get(recs[1].id)).state is State.pending
        await _choose(h, recs[0], "U0CAROL", GRANT)
        assert await _decided_by(h, recs[0]) == ["U0BOB", "U0CAROL"]
        [grant] = await h.grants(1)
        assert grant.by == ["U0BOB", "U0CAROL"]
    finally:
        await stop(h)


async def test_nobody_stands_in_for_the_requester_of_the_request(h: Harness) -> None:
    """Alice asked for the wire herself and is away, Bob standing in: her seat is the
    requester's, which nobody fills (she could not approve it, so her stand-in cannot either).
    Bob's click is refused, told and audited, and Carol alone is one seat of two."""
    await h.emu.slash_command("U0ALICE", "C0GENERAL", "/hitl", AWAY)
    rec = await h.card(await h.push(action="wire", summary="Wire $40 to ACME", risk={"amount": 40},
                                    requested_by="U0ALICE"))
    await _card_says(h, rec, "<@U0ALICE> asked for this, so nobody approves it for them")
    await h.click(rec, "U0BOB", ActionId.approve_grant)
    await _refused(h, rec, "U0BOB", "requester_seat", "The approver you stand in for asked for this action")
    await _unchanged(h, rec, [])
    await h.click(rec, "U0BOB", ActionId.approve)
    await _refused(h, rec, "U0BOB", "requester_seat", "asked for this action themselves", 2)
    await h.click(rec, "U0CAROL", ActionId.approve)
    await eventually(lambda: _voters(h, rec, ["U0CAROL"]), what="Carol's vote")
    await _unchanged(h, rec, ["U0CAROL"])
    assert not await _events(h, rec.id, "delegated")


async def test_a_grant_made_for_an_approver_away_never_covers_their_own_request(h: Harness) -> None:
    """Bob (for Alice, away) and Carol grant similar wires. A wire Alice then asks for herself is
    one nobody could approve for her seat, so the grant does not cover it: it goes to people.
    Another wire is covered as before."""
    await h.emu.slash_command("U0ALICE", "C0GENERAL", "/hitl", AWAY)
    rec = await _wire(h)
    await _card_says(h, rec, "<@U0BOB> decides for them")
    await h.click(rec, "U0BOB", ActionId.approve_grant)
    assert "1 of 2 so far" in await h.ephemeral("U0BOB")
    await h.click(rec, "U0CAROL", ActionId.approve_grant)
    [grant] = await h.grants(1)
    assert grant.by == ["U0BOB", "U0CAROL"]
    own = await h.card(await h.push(action="wire", summary="Wire $30 to ACME", risk={"amount": 30},
                                    requested_by="U0ALICE"))
    assert own.state is State.pending and own.route.grant is None
    other = await h.push(action="wire", summary="Wire $35 to ACME", risk={"amount": 35})
    assert (await h.client.wait(other, timeout=10)).status is Status.auto_approved


async def test_a_grant_asked_for_by_the_approval_that_decides_says_no_grant_follows(h: Harness) -> None:
    """Alice approves plainly; Carol's "Approve and allow similar" is the second seat and decides
    the request, with one person of two asking for the grant. No grant can follow (the request
    is decided): her reply says so, not "1 of 2 so far"."""
    rec = await _wire(h)
    await h.click(rec, "U0ALICE", ActionId.approve)
    await eventually(lambda: _voters(h, rec, ["U0ALICE"]), what="Alice's vote")
    await h.click(rec, "U0CAROL", ActionId.approve_grant)
    assert await _decided_by(h, rec) == ["U0ALICE", "U0CAROL"]
    reply = await h.ephemeral("U0CAROL")
    assert "so far" not in reply and "no standing grant" in reply.lower(), reply
    assert "2 people" in reply, reply
    assert not await h.store.trust.grants()
