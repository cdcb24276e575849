"""Trust state against a real Redis: counted once per request whatever the races; the policy's
promotion steps never relax a rule."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from bot.policy import PolicyEngine
from store.models import Mode, Request, Route, utcnow
from store.redis_store import Accepted, Store
from store.trust import Away, Grant, GrantBounds, TrustState, band, stand_ins


async def _stored(store: Store, rid: str, **kw: object) -> Request:
    req = Request.model_validate({"id": rid, "agent": "bot", "action": "refund", "summary": "s", **kw})
    entry = str(await store.redis.xadd(store.keys.requests, {"request": req.model_dump_json()}))
    await store.ensure_group()
    await store.redis.xreadgroup("hitl", "c", {store.keys.requests: ">"})
    await store.accept(entry, Accepted(req, Route(), None, post=False), utcnow())
    return req


async def test_racing_counts_of_one_request_count_once_and_two_count_twice(store: Store) -> None:
    a, b = await _stored(store, "a"), await _stored(store, "b")
    now = utcnow()
    results = await asyncio.gather(*(store.trust.outcome(r, "clean", 5, now, agree=True)
                                     for r in (a, a, a, b, b, a, b)))
    assert sorted(r[0] for r in results) == ["counted", "counted", "dup", "dup", "dup", "dup", "dup"]
    state = await store.trust.state("bot", "refund")
    assert state.clean == 2 and state.approvals == 2 and state.outcomes == 2


async def test_promotion_at_after_and_demotion_by_an_override(store: Store) -> None:
    reqs = [await _stored(store, f"r{i}", confidence=0.85) for i in range(4)]
    now = utcnow()
    assert (await store.trust.outcome(reqs[0], "clean", 2, now, agree=True))[0] == "counted"
    assert (await store.trust.outcome(reqs[1], "clean", 2, now, agree=True))[0] == "promoted"
    assert (await store.trust.outcome(reqs[2], "override", 2, now, agree=False, actor="U1"))[0] == "demoted"
    assert (await store.trust.outcome(reqs[3], "override", 2, now, agree=False))[0] == "counted"  # once
    cal = await store.trust.calibration()
    assert cal[("bot/refund", "0.8")] == (4, 2)


async def test_a_grant_is_created_once_per_quorum(store: Store) -> None:
    now = utcnow()
    g = Grant(id="g-1", agent="bot", action="refund", tier="high", request_id="r1",
              bounds=GrantBounds(amount_max=100), created_at=now, expires_at=now + timedelta(hours=1))
    assert await store.trust.vote_grant(g, "U1", 2, now, redact=store.redact, current=("U1", "U2", "U3")) == ("waiting", 1)
    assert await store.trust.vote_grant(g, "U1", 2, now, redact=store.redact, current=("U1", "U2", "U3")) == ("waiting", 1)  # the same person twice
    got = await asyncio.gather(*(store.trust.vote_grant(g, u, 2, now, redact=store.redact, current=("U1", "U2", "U3")) for u in ("U2", "U3")))
    assert sorted(s for s, _ in got) == ["created", "exists"]
    [grant] = await store.trust.grants()
    assert grant.by[:2] == ["U1", "U2"] or grant.by[:2] == ["U1", "U3"]


async def test_a_grant_asked_for_with_an_approval_no_longer_current_does_not_count(store: Store) -> None:
    """U1 asked, then an edit made U1's approval stale: U2's ask is the only one that counts."""
    now = utcnow()
    g = Grant(id="g-2", agent="bot", action="refund", tier="high", request_id="r2",
              bounds=GrantBounds(amount_max=100), created_at=now, expires_at=now + timedelta(hours=1))
    assert await store.trust.vote_grant(g, "U1", 2, now, redact=store.redact, current=["U1"]) == ("waiting", 1)
    assert await store.trust.vote_grant(g, "U2", 2, now, redact=store.redact, current=["U3"]) == ("waiting", 1)
    assert await store.trust.grants() == []
    assert await store.trust.vote_grant(g, "U3", 2, now, redact=store.redact, current=["U1", "U2"]) == ("created", 2)
    [grant] = await store.trust.grants()
    assert grant.by == ["U1", "U2", "U3"]


def test_bands() -> None:
    assert [band(x) for x in (0.0, 0.05, 0.8, 0.89, 0.9, 1.0)] == ["0.0", "0.0", "0.8", "0.8", "0.9", "0.9"]
    assert band(None) == ""


POLICY = """
defaults: {tier: medium}
tiers:
  low:    {mode: auto}
  medium: {mode: approve}
  high:   {mode: approve, quorum: 2}
rules:
  - {name: crypto, when: 'request.action == "buy_crypto"', mode: deny}
  - {name: big, when: 'request.params.size > 10', tier: high}
trust:
  after: 5
  promote: [{after: 20, lower_tier: 1}]
"""


def _req(action: str = "refund", **kw: object) -> Request:
    return Request.model_validate({"id": "x", "agent": "bot", "action": action, "summary": "s", **kw})


def test_new_then_trusted_then_promoted_but_never_past_a_rule() -> None:
    engine = PolicyEngine.from_yaml(POLICY)
    new = TrustState("bot", "refund", clean=3)
    route = engine.route(_req(), trust=new)
    assert route.mode is Mode.approve and "first_use" in route.rules and "3 of 5" in " ".join(route.reasons)
    trusted = TrustState("bot", "refund", state="trusted", clean=6)
    route = engine.route(_req(), trust=trusted)
    assert route.tier == "medium" and "first_use" not in route.rules
    promoted = TrustState("bot", "refund", state="trusted", clean=20)
    route = engine.route(_req(), trust=promoted)
    assert route.tier == "low" and route.mode is Mode.auto and "trust_promoted" in route.rules
    # a rule's tier and a deny are never relaxed by trust
    assert engine.route(_req(params={"size": 11}), trust=promoted).tier == "high"
    assert engine.route(_req("buy_crypto"), trust=promoted).mode is Mode.deny
    # without a trust state (the fallback router's callers), nothing changes
    assert engine.route(_req()).tier == "medium"


async def test_a_batch_lookup_answers_as_one_lookup_per_request(store: Store) -> None:
    reqs = [await _stored(store, f"l{i}") for i in range(3)]
    other = Request.model_validate({"id": "l9", "agent": "mail-bot", "action": "send", "summary": "s"})
    assert (await store.trust.outcome(reqs[0], "clean", 1, utcnow(), agree=True))[0] == "promoted"
    await store.trust.queue_canary({"id": "c1", "agent": "bot", "action": "refund", "summary": "s"},
                                   {"answer": "reject", "why": "test"})
    canary = Request.model_validate({"id": "c1", "agent": "bot", "action": "refund", "summary": "s"})
    batch = [*reqs, other, canary]
    many = [(state, canary) for state, canary, _ in await store.trust.snapshot_many(batch)]
    assert many == [await store.trust.lookup(r) for r in batch]
    assert many[0][0].trusted and not many[3][0].trusted and many[4][1] and not many[0][1]


async def test_an_absence_ends_once_and_a_window_end_never_ends_a_newer_one(store: Store) -> None:
    now = utcnow()
    away = Away(user="U1", delegate="U2", since=now, until=now + timedelta(days=1))
    await store.trust.set_away(away, "U1", now)
    assert set(await store.trust.away(now)) == {"U1"}
    deadlines = dict(await store.redis.zrange(store.keys.deadlines, 0, -1, withscores=True))
    assert deadlines["away:U1"] == int(away.until.timestamp() * 1000) and "awaydraw:U1" in deadlines
    # the date has not come: the scheduler's window end does nothing
    assert await store.trust.end_away("U1", now, "system", "window_end") is None
    # replicas racing to end it: one ends it, audited once
    later = away.until + timedelta(seconds=1)
    ended = await asyncio.gather(*(store.trust.end_away("U1", later, "system", "window_end") for _ in range(5)))
    assert sum(e is not None for e in ended) == 1
    assert [e.detail["why"] for e in await store.audit_entries() if e.event == "away_ended"] == ["window_end"]
    assert await store.trust.away(later) == {} and "away:U1" not in await store.redis.zrange(
        store.keys.deadlines, 0, -1)
    # set again for longer while an old window end is on its way: the new absence stays
    again = Away(user="U1", delegate="U3", since=later, until=later + timedelta(days=2))
    await store.trust.set_away(again, "U1", later)
    assert await store.trust.end_away("U1", later + timedelta(hours=1), "system", "window_end") is None
    assert (await store.trust.away(later + timedelta(hours=1)))["U1"].delegate == "U3"
    # back early: ended at once, the delegate decides nothing more
    back = await store.trust.back("U1", later + timedelta(hours=2))
    assert back is not None and back.ended_at == later + timedelta(hours=2)
    assert await store.trust.away(later + timedelta(hours=2)) == {}
    assert await store.trust.back("U1", later + timedelta(hours=3)) is None  # nothing more to end


def test_stand_ins_is_the_one_rule() -> None:
    now = utcnow()
    live = Away(user="U1", delegate="U2", since=now, until=now + timedelta(hours=1))
    over = Away(user="U3", delegate="U2", since=now, until=now - timedelta(seconds=1))
    back = live.model_copy(update={"user": "U4", "ended_at": now})
    absences = {"U1": live, "U3": over, "U4": back}
    assert stand_ins(["U1", "U3", "U4", "U5"], absences, now) == {"U1": live}
    assert stand_ins(["U1"], absences, live.until) == {}  # the date itself is no longer away
    assert stand_ins([], absences, now) == {}
