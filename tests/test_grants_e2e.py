"""Standing grants and delegation end to end: signed clicks, the emulator, a real Redis."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from blocks.ids import ActionId, HomeActionId, param_block_id
from store.models import Mode, Record, State, Status, utcnow
from store.trust import Away
from tests.harness import Harness, start, stop
from tests.util import eventually

POLICY = """
defaults: {tier: medium}
tiers:
  low:    {mode: auto}
  medium: {mode: approve, grants: {duration: 1h, max_amount: 100, same: [to]}}
  high:   {mode: approve, quorum: 2, grants: {duration: 30m, max_amount: 100}}
  locked: {mode: approve, grants: false}
rules:
  - {name: two_people, when: 'request.action == "wire"', tier: high}
  - {name: no_grants, when: 'request.action == "delete"', tier: locked}
  - {name: approvers, when: 'request.action == "invoice"', tier: finance}
  - {name: legal, when: 'request.risk.domain == "legal"', tier: high}
admins: ["U0ADMIN"]
batching: {enabled: false}
triggers:
  first_use: {enabled: false}
  amount_over_limit: {tier: high}
"""


@pytest.fixture
async def h(redis_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    policy = tmp_path / "policy.yml"
    text = POLICY.replace("  locked: {mode: approve, grants: false}\n",
                          "  locked: {mode: approve, grants: false}\n"
                          "  finance: {mode: approve, approvers: [U0ALICE]}\n")
    policy.write_text(text)
    harness = await start(redis_url, policy=policy)
    yield harness
    await stop(harness)


def _buttons(h: Harness, rec: object) -> list[str]:
    msg = h.message(rec)  # type: ignore[arg-type]
    return [e["text"]["text"] for b in msg["blocks"] if b["type"] == "actions" for e in b["elements"]]






async def _card_says(h: Harness, rec: Record, words: str, present: bool = True) -> str:
    """The card's blocks once they do (or, with present=False, no longer) contain `words`."""
    async def shown() -> str | None:
        text = json.dumps(h.message(rec)["blocks"])
        return text if (words in text) is present else None

    return str(await eventually(shown, what=f"card {'showing' if present else 'without'} {words!r}"))


async def _pending(h: Harness, **fields: object) -> str:
    rid = await h.push(**fields)
    rec = await h.card(rid)
    assert rec.route.mode is Mode.approve and rec.decision is None
    return rid


@pytest.mark.cluster_too
async def test_a_grant_approves_similar_requests_within_its_bounds(h: Harness) -> None:
    rid = await h.push(summary="Refund $50 to Ana", params={"to": "ana"}, risk={"amount": 50})
    rec = await h.card(rid)
    assert "Approve and allow similar for 1h" in _buttons(h, rec)
    await h.click(rec, "U0BOB", ActionId.approve_grant)
    assert (await h.client.wait(rid, timeout=10)).status is Status.approved
    assert "approved on their own until" in await h.ephemeral("U0BOB")
    [grant] = await h.grants(1)
    assert grant.by == ["U0BOB"] and grant.bounds.amount_max == 100 and grant.bounds.params == {"to": ["ana"]}
    # similar and within bounds: approved on its own, naming the grant and who granted it
    similar = await h.push(summary="Refund $80 to Ana", params={"to": "ana"}, risk={"amount": 80})
    d = await h.client.wait(similar, timeout=10)
    assert d.status is Status.auto_approved and d.route is not None and d.route.grant is not None
    assert d.route.grant.id == grant.id and d.route.grant.by == ["U0BOB"] and "grant" in d.route.rules
    # outside the bounds: a person again
    await _pending(h, summary="Refund $150 to Ana", params={"to": "ana"}, risk={"amount": 150})
    await _pending(h, summary="Refund $20 to Eve", params={"to": "eve"}, risk={"amount": 20})
    await _pending(h, action="cancel", summary="Cancel for Ana", params={"to": "ana"}, risk={"amount": 20})
    # listed, then revoked: only its granter or an admin may
    listed = await h.emu.slash_command("U0CAROL", "C0GENERAL", "/hitl", "grants")
    assert grant.id in json.dumps(listed.json())
    refused = await h.emu.slash_command("U0CAROL", "C0GENERAL", "/hitl", f"grants revoke {grant.id}")
    assert "Only hitl admins" in json.dumps(refused.json()) or "granted" in json.dumps(refused.json())
    assert await h.store.trust.grants()
    done = await h.emu.slash_command("U0BOB", "C0GENERAL", "/hitl", f"grants revoke {grant.id}")
    assert "Revoked" in json.dumps(done.json())
    assert not await h.store.trust.grants()
    await _pending(h, summary="Refund $10 to Ana", params={"to": "ana"}, risk={"amount": 10})
    assert "grant_revoked" in [e.event for e in await h.store.audit_entries()]


async def test_a_grant_expires_and_the_home_tab_revokes(h: Harness) -> None:
    rid = await h.push(summary="Refund $5 to Ana", params={"to": "ana"}, risk={"amount": 5})
    await h.click(await h.card(rid), "U0BOB", ActionId.approve_grant)
    [grant] = await h.grants(1)
    # time passes: the grant's hour is over (written as the store keeps it)
    old = grant.model_copy(update={"expires_at": utcnow() - timedelta(seconds=1)})
    await h.store.redis.hset(h.store.trust.k.grants, grant.id, old.model_dump_json())
    await _pending(h, summary="Refund $6 to Ana", params={"to": "ana"}, risk={"amount": 6})
    assert not await h.store.trust.grants()
    assert "grant_expired" in [e.event for e in await h.store.audit_entries()]
    # a fresh grant, revoked from the App Home
    rid = await h.push(summary="Refund $7 to Ana", params={"to": "ana"}, risk={"amount": 7})
    await h.click(await h.card(rid), "U0BOB", ActionId.approve_grant)
    [grant] = await h.grants(1)
    await h.emu.open_home("U0BOB")
    home = await eventually(lambda: asyncio.sleep(0, h.emu.home("U0BOB")), what="home")
    assert grant.id in json.dumps(home.to_slack())
    await h.emu.click_home("U0BOB", HomeActionId.revoke_grant, value=grant.id)

    async def gone() -> bool:
        return not await h.store.trust.grants()

    await eventually(gone, what="revoked from the Home tab")


async def test_no_grant_where_the_policy_says_no(h: Harness) -> None:
    rec = await h.card(await h.push(action="delete", summary="Delete Ana's account"))
    assert rec.route.tier == "locked" and rec.route.grant_offer_s is None
    assert not any("allow similar" in b for b in _buttons(h, rec))
    big = await h.card(await h.push(summary="Refund $90", risk={"amount": 99.5}))
    assert big.route.grant_offer_s == 3600
    over = await h.card(await h.push(action="wire", summary="Wire $120", risk={"amount": 120}))
    assert over.route.grant_offer_s is None  # above the policy's amount limit for grants


async def test_a_quorum_two_grant_needs_two_people(h: Harness) -> None:
    rid = await h.push(action="wire", summary="Wire $40 to ACME", risk={"amount": 40})
    rec = await h.card(rid)
    assert rec.route.quorum == 2 and "Approve and allow similar for 30m" in _buttons(h, rec)
    await h.click(rec, "U0ALICE", ActionId.approve_grant)
    assert "1 of 2 so far" in await h.ephemeral("U0ALICE")
    assert not await h.store.trust.grants()
    # one person's grant does not approve the next one
    await _pending(h, action="wire", summary="Wire $30 to ACME", risk={"amount": 30})
    await h.click(rec, "U0BOB", ActionId.approve_grant)
    [grant] = await h.grants(1)
    assert grant.by == ["U0ALICE", "U0BOB"]
    d = await h.client.wait(await h.push(action="wire", summary="Wire $25", risk={"amount": 25}), timeout=10)
    assert d.status is Status.auto_approved and d.route and d.route.grant and d.route.grant.by == grant.by
    # approve (no grant) by the second person: no grant
    other = await h.card(await h.push(action="wire", agent="pay-bot", summary="Wire $5", risk={"amount": 5}))
    await h.click(other, "U0ALICE", ActionId.approve_grant)
    await h.ephemeral("U0ALICE", 2)
    await h.click(other, "U0BOB", ActionId.approve)
    assert (await h.client.wait(other.id, timeout=10)).status is Status.approved
    assert [g.id for g in await h.store.trust.grants()] == [grant.id]


async def test_a_delegate_decides_only_while_the_person_is_away(h: Harness) -> None:
    reply = await h.emu.slash_command("U0ALICE", "C0GENERAL", "/hitl", "away until 2099-12-24 to <@U0BOB|bob>")
    assert "You are away until" in json.dumps(reply.json())
    rec = await h.card(await h.push(action="invoice", summary="Pay invoice 7"))
    assert rec.route.delegates == {"U0ALICE": "U0BOB"}
    await _card_says(h, rec, "is away until")
    await h.click(rec, "U0CAROL", ActionId.approve)  # not the delegate
    assert "not one of the approvers" in await h.ephemeral("U0CAROL")
    await h.click(rec, "U0BOB", ActionId.approve)
    d = await h.client.wait(rec.id, timeout=10)
    assert d.status is Status.approved and d.decided_by[0].user_id == "U0BOB"
    clicked = [e for e in await h.store.trail(rec.id) if e.event == "clicked"]
    assert clicked[-1].actor == "U0BOB" and clicked[-1].detail["for"] == ["U0ALICE"]
    # the delegate may not decide what they asked for themselves
    own = await h.card(await h.push(action="invoice", summary="Pay my invoice", requested_by="U0BOB"))
    await h.click(own, "U0BOB", ActionId.approve)
    assert "cannot approve it yourself" in await h.ephemeral("U0BOB")
    # the absence is over: the delegate is an ordinary bystander again
    now = utcnow()
    await h.store.trust.set_away(Away(user="U0ALICE", delegate="U0BOB", since=now - timedelta(days=2),
                                      until=now - timedelta(seconds=1)))
    late = await h.card(await h.push(action="invoice", summary="Pay invoice 8"))
    assert late.route.delegates == {}
    await h.click(late, "U0BOB", ActionId.approve)
    assert "absence is over" in await h.ephemeral("U0BOB", 2)
    # refused forms
    for text, words in (("away until 2001-01-01 to <@U0BOB|bob>", "has passed"),
                        ("away until 2099-01-01 to <@U0ALICE|alice>", "someone else"),
                        ("away tomorrow", "Use")):
        r = await h.emu.slash_command("U0ALICE", "C0GENERAL", "/hitl", text)
        assert words in json.dumps(r.json()), text


async def test_a_grant_without_an_amount_still_respects_the_ceiling(h: Harness) -> None:
    rid = await h.push(action="email", summary="Email Ana", params={"to": "ana"})
    await h.click(await h.card(rid), "U0BOB", ActionId.approve_grant)
    [grant] = await h.grants(1)
    assert grant.bounds.amount_max is None
    d = await h.client.wait(await h.push(action="email", summary="Email Ana again", params={"to": "ana"}),
                            timeout=10)
    assert d.status is Status.auto_approved
    # within the policy's ceiling it is covered; above it, never
    d = await h.client.wait(await h.push(action="email", summary="Email Ana a $99 voucher", params={"to": "ana"},
                                         risk={"amount": 99}), timeout=10)
    assert d.status is Status.auto_approved
    await _pending(h, action="email", summary="Email Ana a $150 voucher", params={"to": "ana"}, risk={"amount": 150})


async def test_a_user_group_may_stand_in(h: Harness) -> None:
    reply = await h.emu.slash_command("U0ALICE", "C0GENERAL", "/hitl",
                                      "away until 2099-01-01 to <!subteam^S0MANAGERS|@managers>")
    assert "You are away until" in json.dumps(reply.json())
    rec = await h.card(await h.push(action="invoice", summary="Pay invoice 9"))
    assert rec.route.delegates == {"U0ALICE": "S0MANAGERS"}
    await h.click(rec, "U0CAROL", ActionId.approve)  # not in the group
    assert "not one of the approvers" in await h.ephemeral("U0CAROL")
    await h.click(rec, "U0BOB", ActionId.approve)  # a manager
    d = await h.client.wait(rec.id, timeout=10)
    assert d.status is Status.approved and d.decided_by[0].user_id == "U0BOB"
    back = await h.emu.slash_command("U0ALICE", "C0GENERAL", "/hitl", "away off")
    assert "Welcome back" in json.dumps(back.json())
    assert await h.store.trust.away(utcnow()) == {}


# ---- delegation follows the absence on cards already posted (issue 17, point 3) -------------------


async def _events(h: Harness, rid: str, event: str) -> list[dict[str, object]]:
    return [{"actor": e.actor, **e.detail} for e in await h.store.trail(rid) if e.event == event]


async def test_a_card_posted_before_the_absence_is_redrawn_and_the_delegate_decides(h: Harness) -> None:
    rec = await h.card(await h.push(action="invoice", summary="Pay invoice 10"))
    assert "is away" not in json.dumps(h.message(rec)["blocks"]) and rec.route.delegates == {}
    await h.click(rec, "U0BOB", ActionId.approve)  # not yet a stand-in
    assert "not one of the approvers" in await h.ephemeral("U0BOB")
    updates = len(h.emu.calls_to("chat.update"))
    await h.emu.slash_command("U0ALICE", "C0GENERAL", "/hitl", "away until 2099-12-24 to <@U0BOB|bob>")
    text = await _card_says(h, rec, "<@U0BOB> decides for them")
    assert "<@U0ALICE> is away until" in text
    assert len(h.emu.calls_to("chat.update")) > updates  # redrawn in place, through the outbox
    await h.click(rec, "U0BOB", ActionId.approve)
    d = await h.client.wait(rec.id, timeout=10)
    assert d.status is Status.approved and [v.user_id for v in d.decided_by] == ["U0BOB"]
    clicked = await _events(h, rec.id, "clicked")
    assert clicked[-1]["actor"] == "U0BOB" and clicked[-1]["for"] == ["U0ALICE"]
    assert await _events(h, rec.id, "delegated") == [{"actor": "U0BOB", "for": ["U0ALICE"]}]
    # the locked card no longer speaks of the absence
    await _card_says(h, rec, "is away", present=False)


async def test_when_the_window_ends_the_card_and_the_click_check_both_stop_naming_the_delegate(h: Harness) -> None:
    await h.emu.slash_command("U0ALICE", "C0GENERAL", "/hitl", "away until 2099-12-24 to <@U0BOB|bob>")
    rec = await h.card(await h.push(action="invoice", summary="Pay invoice 11"))
    await _card_says(h, rec, "<@U0BOB> decides for them")
    # time passes: the date arrives (written as the store keeps it; the scheduler does the rest)
    raw = await h.store.redis.hget(h.store.trust.k.away, "U0ALICE")
    due = Away.model_validate_json(raw).model_copy(update={"until": utcnow() - timedelta(seconds=1)})
    await h.store.redis.hset(h.store.trust.k.away, "U0ALICE", due.model_dump_json())
    await h.store.redis.zadd(h.store.keys.deadlines, {"away:U0ALICE": 0})
    await _card_says(h, rec, "is away", present=False)
    ended = [e for e in await h.store.audit_entries() if e.event == "away_ended"]
    assert len(ended) == 1 and ended[0].actor == "system" and ended[0].detail["why"] == "window_end"
    await h.click(rec, "U0BOB", ActionId.approve)
    assert "absence is over" in await h.ephemeral("U0BOB")
    refused = await _events(h, rec.id, "refused")
    assert refused[-1] == {"actor": "U0BOB", "choice": "approve", "reason": "delegation_over"}
    still = await h.store.get(rec.id)
    assert still.state is State.pending and still.votes == []
    await h.click(rec, "U0ALICE", ActionId.approve)  # the approver decides again
    assert (await h.client.wait(rec.id, timeout=10)).status is Status.approved


async def test_back_early_redraws_and_a_stand_in_never_decides_their_own_request(h: Harness) -> None:
    own = await h.card(await h.push(action="invoice", summary="Pay Bob's invoice", requested_by="U0BOB"))
    other = await h.card(await h.push(action="invoice", summary="Pay invoice 12"))
    await h.emu.slash_command("U0ALICE", "C0GENERAL", "/hitl", "away until 2099-12-24 to <@U0BOB|bob>")
    assert "stands in but asked for this, so cannot decide it" in await _card_says(h, own, "is away until")
    await _card_says(h, other, "<@U0BOB> decides for them")
    await h.click(own, "U0BOB", ActionId.approve)
    assert "cannot approve it yourself" in await h.ephemeral("U0BOB")
    assert (await _events(h, own.id, "refused"))[-1]["reason"] == "self_approval"
    assert (await h.store.get(own.id)).state is State.pending
    back = await h.emu.slash_command("U0ALICE", "C0GENERAL", "/hitl", "away off")
    assert "Welcome back" in json.dumps(back.json())
    await _card_says(h, other, "is away", present=False)
    await _card_says(h, own, "is away", present=False)
    ended = [e for e in await h.store.audit_entries() if e.event == "away_ended"]
    assert [(e.actor, e.detail["why"]) for e in ended] == [("U0ALICE", "back")]
    await h.click(other, "U0BOB", ActionId.approve)
    assert "absence is over" in await h.ephemeral("U0BOB", 2)
    assert (await h.store.get(other.id)).state is State.pending


async def test_a_grant_covers_only_what_its_granters_could_have_approved(h: Harness) -> None:
    """A grant never approves a request made on behalf of one of its granters (who may never
    approve their own), nor one the policy sends to another tier (here a quorum of two): those
    reach people."""
    rid = await h.push(action="refund", summary="Refund $40 to Ana", params={"to": "ana"}, risk={"amount": 40},
                       requested_by="U0CAROL")
    await h.click(await h.card(rid), "U0BOB", ActionId.approve_grant)
    [grant] = await h.grants(1)
    assert grant.by == ["U0BOB"] and grant.tier == "medium"
    # the same agent, action and bounds: covered, unless it is asked on Bob's behalf
    d = await h.client.wait(await h.push(action="refund", summary="Refund $30 to Ana", params={"to": "ana"},
                                         risk={"amount": 30}), timeout=10)
    assert d.status is Status.auto_approved and d.route is not None and d.route.grant is not None
    own = await h.store.get(await _pending(h, action="refund", summary="Refund $30 to Ana for Bob",
                                           params={"to": "ana"}, risk={"amount": 30}, requested_by="U0BOB"))
    assert own.route.grant is None and "grant" not in own.route.rules
    # within the bounds, but a rule sends it to the high tier (two people): not Bob's alone to give
    legal = await h.store.get(await _pending(h, action="refund", summary="Refund $20 to Ana (legal)",
                                             params={"to": "ana"}, risk={"amount": 20, "domain": "legal"}))
    assert legal.route.tier == "high" and legal.route.quorum == 2 and legal.route.grant is None


def test_a_grant_needs_its_granters_to_be_the_routes_approvers_and_its_quorum() -> None:
    """The rules `Grant.matches` adds to agent, action, bounds and expiry, one by one: the tier,
    approvers (users or user groups) and quorum it was made under, and never its granters' own."""
    from store.models import Request, Route
    from store.trust import Grant

    now = utcnow()
    grant = Grant(id="g", agent="a", action="b", tier="medium", request_id="r", created_at=now,
                  expires_at=now + timedelta(hours=1), by=["U0BOB"], approvers=[], quorum=1)
    request = Request(agent="a", action="b", summary="s", id="x")
    route = Route(mode=Mode.approve, tier="medium", channel="#c")
    assert grant.matches(request, now, route)
    assert not grant.matches(request, now, route.model_copy(update={"tier": "high"}))
    assert not grant.matches(request, now, route.model_copy(update={"quorum": 2}))
    assert not grant.matches(request, now, route.model_copy(update={"approvers": ["U0ALICE"]}))
    assert not grant.matches(request.model_copy(update={"requested_by": "U0BOB"}), now, route)
    assert not grant.matches(request, now + timedelta(hours=2), route)
    group = grant.model_copy(update={"approvers": ["S0MANAGERS"]})
    assert group.matches(request, now, route.model_copy(update={"approvers": ["S0MANAGERS"]}))
    assert not group.matches(request, now, route)  # the tier no longer limits who decides: not the same grant


async def test_a_grant_made_by_a_member_of_an_approver_group_covers_its_tier(redis_url: str, tmp_path: Path) -> None:
    policy = tmp_path / "groups.yml"
    policy.write_text("defaults: {tier: medium}\ntiers:\n  low: {mode: auto}\n"
                      "  medium: {mode: approve, approvers: [S0MANAGERS], grants: {duration: 1h, max_amount: 100}}\n"
                      "  high: {mode: approve}\nbatching: {enabled: false}\ntriggers:\n  first_use: {enabled: false}\n")
    h = await start(redis_url, policy=policy)
    try:
        h.emu.add_usergroup("managers", ["U0ALICE", "U0BOB"], group_id="S0MANAGERS")
        rec = await h.card(await h.push(summary="Refund $40 to Ana", risk={"amount": 40}))
        await h.click(rec, "U0ALICE", ActionId.approve_grant)
        [grant] = await h.grants(1)
        assert grant.approvers == ["S0MANAGERS"]
        d = await h.client.wait(await h.push(summary="Refund $30 to Ana", risk={"amount": 30}), timeout=10)
        assert d.status is Status.auto_approved and d.route is not None and d.route.grant is not None
    finally:
        await stop(h)


async def test_a_grant_keeps_its_same_values_exactly(h: Harness) -> None:
    """`same: [to]` holds the value approved, digit for digit: Lua's JSON keeps 14 digits, and a
    grant made on account 123456789012345 once covered 123456789012340."""
    rid = await h.push(summary="Refund $50", params={"to": 123456789012345}, risk={"amount": 50})
    await h.click(await h.card(rid), "U0BOB", ActionId.approve_grant)
    [grant] = await h.grants(1)
    assert grant.bounds.params == {"to": [123456789012345]}
    same = await h.client.wait(await h.push(summary="Refund $40", params={"to": 123456789012345},
                                            risk={"amount": 40}), timeout=10)
    assert same.status is Status.auto_approved
    await _pending(h, summary="Refund $40 elsewhere", params={"to": 123456789012340}, risk={"amount": 40})


async def test_an_away_date_at_the_end_of_time_is_refused_or_shown_and_cards_still_post(h: Harness) -> None:
    """A date that is past year 9999 once in UTC is not a date: refused, nothing stored (it used
    to be stored and crash every card naming the person, which then never posted); the last day
    of year 9999 is a date, and the cards naming them say so."""
    odd = await h.emu.slash_command("U0ALICE", "C0GENERAL", "/hitl", "away until 9999-12-31T23:59:59-14:00 to U0BOB")
    assert odd.status == 200 and "away until 2026-12-24" in json.dumps(odd.json())
    assert not await h.store.redis.hgetall(h.store.trust.k.away)
    far = await h.emu.slash_command("U0ALICE", "C0GENERAL", "/hitl", "away until 9999-12-31 to U0BOB")
    assert far.status == 200 and "You are away until" in json.dumps(far.json())
    rec = await h.card(await h.push(action="invoice", summary="Pay invoice 9"))
    assert rec.route.delegates == {"U0ALICE": "U0BOB"}
    await _card_says(h, rec, "is away until")


PAIR = """
defaults: {tier: medium}
tiers:
  low:  {mode: auto}
  medium: {mode: approve, quorum: 2, grants: {duration: 1h, max_amount: 100, same: [to]}}
  high: {mode: approve}
batching: {enabled: false}
triggers:
  first_use: {enabled: false}
"""


async def test_a_grant_asked_for_on_values_edited_since_counts_no_more(redis_url: str, tmp_path: Path) -> None:
    """Quorum 2, grants bound to the same `to`. Alice approves "ana" and asks for a grant; Bob
    edits `to` to "bea" (his approval of the new values: Alice's is stale); Carol approves "bea"
    and asks for a grant, which decides the request. Alice never asked for a grant on "bea", and
    nobody who decided wanted "ana": no grant follows (one current asker of two), and nothing
    sent to "ana" is approved on its own."""
    policy = tmp_path / "policy.yml"
    policy.write_text(PAIR)
    h = await start(redis_url, policy=policy)
    try:
        rid = await h.push(summary="Refund $50", params={"to": "ana"}, editable=["to"], risk={"amount": 50})
        rec = await h.card(rid)
        await h.click(rec, "U0ALICE", ActionId.approve_grant)
        assert "1 of 2 so far" in await h.ephemeral("U0ALICE")
        await h.click(rec, "U0BOB", ActionId.edit)
        view = await eventually(lambda: asyncio.sleep(0, h.emu.top_view("U0BOB")), what="edit modal")
        assert (await h.emu.submit_view("U0BOB", view.id, {param_block_id("to"): {"value": "bea"}})).closed
        await eventually(lambda: _voters(h, rid, 2), what="Bob's edit")
        await _card_says(h, await h.store.get(rid), "bea")  # redrawn with the values Carol approves
        await h.click(await h.store.get(rid), "U0CAROL", ActionId.approve_grant)
        decision = await h.client.wait(rid, timeout=10)
        assert decision.status is Status.approved and decision.params == {"to": "bea"}
        assert "no standing grant" in (await h.ephemeral("U0CAROL")).lower()
        assert await h.store.trust.grants() == []
        await _pending(h, summary="Refund $40", params={"to": "ana"}, risk={"amount": 40})
    finally:
        await stop(h)


async def _voters(h: Harness, rid: str, n: int) -> bool:
    return len((await h.store.get(rid)).votes) == n
