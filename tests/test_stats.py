"""Stats: audit events -> hourly counters (once each, whoever counts) -> a report with warnings.

A known history is written straight into Redis (records and audit events with chosen
times), counted by the real projector, and every figure of the report is checked.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from blocks.stats import stats_message
from bot.stats import StatsProjector, event_ms, non_trivial, ops_for
from bot.worker import cancel_all
from store.models import Decision, Mode, Request, Route, Status
from store.redis_store import GROUP, Accepted, Store
from store.stats import (
    BOUNDS_S,
    HOUR_MS,
    RETENTION_S,
    STATS_GROUP,
    Histogram,
    StatsStore,
    bucket_index,
    build_report,
)
from store.transitions import Transition
from tests.test_blocks import check_blocks

LONG = "Refund the duplicate charge on order 4711 to the customer's original card; " * 3


@pytest.fixture
async def projector(store: Store, redis_url: str) -> AsyncIterator[StatsProjector]:
    p = StatsProjector(store, redis_url=redis_url, consumer="test", claim_idle_s=0.05)
    await p.ensure_group()
    yield p
    await p.close()


async def drain(p: StatsProjector) -> None:
    while await p.read(">", block_ms=None):
        pass


class History:
    """A history with chosen times: requests and decisions through the real accept and apply
    scripts (which count `received`, `routed` and `decided` themselves), the other events
    written into the audit stream as the bot's other scripts would, for the projector."""

    def __init__(self, store: Store, now: datetime) -> None:
        self.store, self.now = store, now

    async def request(self, rid: str, created: datetime, mode: str, *, agent: str = "billing",
                      action: str = "refund", paused: bool = False, status: str | None = None,
                      summary: str = "Refund $250 to Ana") -> None:
        s = self.store
        await s.ensure_group()
        await s.redis.xadd(s.keys.requests, {"request": "{}"})
        [[_, [(entry_id, _)]]] = await s.redis.xreadgroup(GROUP, "history", {s.keys.requests: ">"}, count=1)
        req = Request(id=rid, agent=agent, action=action, summary=summary)
        route = Route(mode=Mode(mode), tier="medium", paused=paused)
        decision = Decision(request_id=rid, status=Status(status), route=route, decided_at=created) \
            if status else None
        assert await s.accept(entry_id, Accepted(req, route, decision, post=False), created) == "accepted"

    async def record(self, rid: str, *, posted: datetime | None = None,
                     changes: dict[str, Any] | None = None) -> None:
        fields: dict[str, Any] = {"changes": json.dumps(changes or {})}
        if posted:
            fields["posted_at"] = int(posted.timestamp() * 1000)
        await self.store.redis.hset(self.store.keys.request(rid), mapping=fields)

    async def decide(self, rid: str, at: datetime, status: str) -> None:
        rec = await self.store.get(rid)
        t = Transition(rec, decision=Decision(request_id=rid, status=Status(status), route=rec.route,
                                              decided_at=at))
        await self.store.apply(t, at)

    async def event(self, event: str, rid: str, at: datetime, actor: str = "system",
                    **detail: Any) -> None:
        await self.store.redis.xadd(self.store.keys.audit, {
            "event": event, "request_id": rid, "actor": actor, "at": at.isoformat(),
            "detail": json.dumps(detail)})


# ---- pure parts ---------------------------------------------------------------------------------


def test_bucket_index_and_quantiles() -> None:
    assert bucket_index(0) == 0 and bucket_index(1) == 0 and bucket_index(1.01) == 1
    assert bucket_index(10**9) == len(BOUNDS_S)
    counts = [0] * (len(BOUNDS_S) + 1)
    counts[bucket_index(120)] = 10  # (60, 120]
    counts[bucket_index(600)] = 5  # (300, 600]
    h = Histogram(tuple(counts), 0)
    assert h.quantile(0.5) == pytest.approx(60 + 60 * 7.5 / 10)
    assert h.quantile(0.9) == pytest.approx(300 + 300 * 3.5 / 5)
    assert Histogram().quantile(0.5) is None


def test_event_time_is_at_else_the_entry_id() -> None:
    at = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert event_ms("1-0", {"at": at.isoformat()}) == int(at.timestamp() * 1000)
    assert event_ms("1700000000123-4", {}) == 1700000000123


def test_non_trivial_cards() -> None:
    short = {"route": {"mode": "approve"}, "request": {"summary": "Refund $5"}}
    assert not non_trivial(short)
    assert non_trivial({**short, "request": {"summary": LONG}})
    assert non_trivial({**short, "request": {"summary": "x", "params": {"a": 1, "b": 2, "c": 3}}})
    # a sampled after-the-fact review is not a decision before acting
    assert not non_trivial({"route": {"mode": "auto"}, "request": {"summary": LONG}})


def test_ops_of_an_event_past_retention_only_count_in_totals() -> None:
    now = 1_900_000_000_000
    old = now - (RETENTION_S + 2 * 3600) * 1000
    ops = ops_for({"event": "routed", "detail": '{"mode": "auto"}'}, old, None, now)
    assert ops and all(op.hour is None for op in ops)
    fresh = ops_for({"event": "routed", "detail": '{"mode": "auto"}'}, now, None, now)
    assert {op.hour for op in fresh} == {None, now // HOUR_MS}


def _bucket(**fields: int) -> dict[str, int]:
    return {k.replace("__", ":"): v for k, v in fields.items()}


def test_warning_signs_hold_only_past_their_thresholds() -> None:
    now = 1_900_000_000.0
    quiet = [(0, {"mode:approve": 3, "mode:auto": 17})]  # 15% escalated, 20 routed
    assert build_report(quiet, now_s=now, queue_depth=0, oldest_created_s=None).warnings == []
    too_few = [(0, {"mode:approve": 19})]  # 100% but fewer than 20 routed: not flagged
    assert build_report(too_few, now_s=now, queue_depth=0, oldest_created_s=None).warnings == []
    high = build_report([(0, {"mode:approve": 9, "mode:auto": 11})], now_s=now, queue_depth=0,
                        oldest_created_s=None)
    assert [w.code for w in high.warnings] == ["escalation_high"]
    low = build_report([(0, {"mode:approve": 1, "mode:auto": 39})], now_s=now, queue_depth=0,
                       oldest_created_s=None)
    assert [w.code for w in low.warnings] == ["escalation_low"]
    # requests routed while paused do not count towards the escalation rate
    paused = build_report([(0, {"mode:approve": 30, "paused:approve": 28, "mode:auto": 18})],
                          now_s=now, queue_depth=0, oldest_created_s=None)
    assert paused.escalation_rate == pytest.approx(2 / 20) and paused.paused_routed == 28
    assert paused.warnings == []


def test_override_rising_compares_the_halves_of_the_window() -> None:
    first = [(h, {"st:approved": 1}) for h in range(12)]
    second = [(h, {"st:approved": 1}) for h in range(12, 18)] + [
        (h, {"st:rejected": 1}) for h in range(18, 24)]
    r = build_report(first + second, now_s=0, queue_depth=0, oldest_created_s=None)
    assert r.override_halves == (0.0, 0.5)
    assert "override_rising" in [w.code for w in r.warnings]
    steady = [(h, {"st:approved": 1}) for h in range(24)]
    assert build_report(steady, now_s=0, queue_depth=0, oldest_created_s=None).warnings == []


def test_queue_growing_and_slow_escalation() -> None:
    grow = [(h, {"pending:in": 2}) for h in range(6)]  # +12 in six hours
    r = build_report(grow, now_s=0, queue_depth=12, oldest_created_s=None)
    assert r.queue_change == 12 and [w.code for w in r.warnings] == ["queue_growing"]
    steady = [(h, {"pending:in": 2, "pending:out": 2}) for h in range(6)]
    assert build_report(steady, now_s=0, queue_depth=40, oldest_created_s=None).warnings == []
    slow = {f"tte:{bucket_index(90)}": 10}
    r = build_report([(0, slow)], now_s=0, queue_depth=0, oldest_created_s=None)
    assert [w.code for w in r.warnings] == ["slow_escalation"]
    fast = {f"tte:{bucket_index(4)}": 10}
    assert build_report([(0, fast)], now_s=0, queue_depth=0, oldest_created_s=None).warnings == []


def test_rubber_stamp_by_speed_or_by_approval_share() -> None:
    fast = {"rv:U0FAST:n": 6, "rv:U0FAST:ok": 3, f"rv:U0FAST:nt{bucket_index(1.5)}": 6,
            f"rv:U0FAST:t{bucket_index(1.5)}": 6}
    always = {"rv:U0YES:n": 60, "rv:U0YES:ok": 60, f"rv:U0YES:t{bucket_index(40)}": 60}
    careful = {"rv:U0OK:n": 60, "rv:U0OK:ok": 55, f"rv:U0OK:nt{bucket_index(40)}": 60}
    r = build_report([(0, {**fast, **always, **careful})], now_s=0, queue_depth=0,
                     oldest_created_s=None)
    flagged = {w.user_id: w.text for w in r.warnings if w.code == "rubber_stamp"}
    assert set(flagged) == {"U0FAST", "U0YES"}
    assert "1.5s" in flagged["U0FAST"] and "100% of 60" in flagged["U0YES"]
    assert [rv.user_id for rv in r.reviewers] == ["U0OK", "U0YES", "U0FAST"]


# ---- the projector on a real Redis ----------------------------------------------------------------


async def test_a_known_history_gives_known_figures(store: Store, projector: StatsProjector) -> None:
    now = datetime.now(UTC)
    t0 = now - timedelta(hours=3)
    h = History(store, now)
    # 10 automatic, 1 denied, 18 for approval, 1 escalation: 30 routed, 19 sent to people
    for i in range(10):
        await h.request(f"auto{i}", t0, "auto", action="lookup_order", status="auto_approved")
    await h.request("deny0", t0, "deny", agent="rogue", status="denied")
    await h.request("esc0", t0, "escalate", agent="support")
    for i in range(18):
        rid = f"r{i}"
        created = t0 + timedelta(minutes=i)
        posted = created + timedelta(seconds=90)  # slow notifications: p90 over 60s
        await h.request(rid, created, "approve", summary=LONG)
        await h.record(rid, posted=posted, changes={"amount": {"before": 250, "after": 200}} if i == 1 else None)
        await h.event("posted", rid, posted)
        if i < 10:  # alice: 1.5s after the card appears, every time
            at = posted + timedelta(seconds=1.5)
            await h.event("clicked", rid, at, "U0ALICE", choice="edit" if i == 1 else "approve")
            await h.decide(rid, at, "approved")
        elif i < 15:  # bob: ten minutes, and rejects two
            at = posted + timedelta(minutes=10)
            choice = "reject" if i < 12 else "approve"
            await h.event("clicked", rid, at, "U0BOB", choice=choice)
            await h.decide(rid, at, "rejected" if i < 12 else "approved")
    await h.event("clicked", "r0", now, "U0BOB", choice="approve", outcome="already_decided")
    await drain(projector)

    stats = StatsStore(store.redis, store.keys)
    assert await stats.lag() == 0
    r = await stats.report(24, now.timestamp())
    assert r.requests == 30
    assert r.by_mode == {"auto": 10, "deny": 1, "approve": 18, "escalate": 1}
    assert r.escalation_rate == pytest.approx(19 / 30)
    assert r.decisions == {"auto_approved": 10, "denied": 1, "approved": 13, "rejected": 2}
    assert r.human_decisions == 15 and r.edited == 1
    assert r.rate("approved") == pytest.approx(13 / 15)
    assert r.override_rate == pytest.approx(3 / 15)
    # time to decision: 10 at 91.5s (60..120], 5 at 690s (600..1800]
    assert r.ttd.count == 15
    assert r.ttd.quantile(0.5) == pytest.approx(60 + 60 * 7.5 / 10)
    assert r.ttd.quantile(0.9) == pytest.approx(600 + 1200 * 3.5 / 5)
    assert r.ttd.sum_s == pytest.approx(10 * 91.5 + 5 * 690)
    assert r.tte.count == 18 and r.tte.quantile(0.5) == pytest.approx(60 + 60 * 9 / 18)
    assert r.queue_depth == 4 and r.queue_change == 19 - 15
    assert r.oldest_wait_s == pytest.approx(3 * 3600, abs=2)
    assert r.top_actions[0] == ("refund", 20) and ("lookup_order", 10) in r.top_actions
    assert r.top_agents[0] == ("billing", 28)
    alice, bob = (next(x for x in r.reviewers if x.user_id == u) for u in ("U0ALICE", "U0BOB"))
    assert (alice.decisions, alice.approvals, alice.nontrivial) == (10, 10, 10)
    assert alice.median_s == pytest.approx(1 + 0.5) and alice.rubber_stamp
    assert (bob.decisions, bob.approvals) == (5, 3) and not bob.rubber_stamp  # late click ignored
    assert bob.median_s == pytest.approx(300 + 300 * 2.5 / 5)
    codes = [w.code for w in r.warnings]
    assert codes == ["escalation_high", "slow_escalation", "rubber_stamp"]
    assert sum(sum(x.outcomes.values()) for x in r.series) == 26 and len(r.series) == 24

    totals = await stats.totals()
    assert totals["mode:approve"] == 18 and totals["st:approved"] == 13
    assert "agent:billing" not in totals  # unbounded names stay in the expiring buckets
    ttl = await store.redis.ttl(stats.hour_key(int(t0.timestamp() * 1000) // HOUR_MS))
    assert RETENTION_S - 4 * 3600 < ttl <= RETENTION_S + 3600
    assert await store.redis.ttl(stats.total_key) == -1


async def test_each_event_counts_once_whoever_reads_it(store: Store, redis_url: str) -> None:
    h = History(store, datetime.now(UTC))
    projectors = [StatsProjector(store, redis_url=redis_url, consumer=f"c{i}") for i in range(3)]
    await projectors[0].ensure_group()
    for i in range(300):  # events the projector counts (invalid entries), two per request
        await h.event("invalid", f"x{i}", h.now)
        await h.event("overridden", f"x{i}", h.now)
    await asyncio.gather(*(drain(p) for p in projectors))
    # the same entries offered again (a retried batch, a reclaim) add nothing
    rows = await store.redis.xrange(store.keys.audit, count=50)
    assert await projectors[1].count(list(rows)) == 50
    assert await projectors[2].count(list(rows)) == 50
    totals = await StatsStore(store.redis, store.keys).totals()
    assert totals["invalid"] == 300 and totals["overridden"] == 300
    assert sum(p.counted for p in projectors) == 600
    for p in projectors:
        await p.close()


async def test_a_dead_consumers_events_are_reclaimed(store: Store, redis_url: str) -> None:
    h = History(store, datetime.now(UTC))
    await h.event("invalid", "a", h.now)
    await h.event("refused", "a", h.now)
    dead = StatsProjector(store, redis_url=redis_url, consumer="dead")
    await dead.ensure_group()
    # "dead" reads the entries and dies before counting them
    await store.redis.xreadgroup(STATS_GROUP, "dead", {store.keys.audit: ">"}, count=10)
    alive = StatsProjector(store, redis_url=redis_url, consumer="alive", claim_idle_s=0.05)
    assert await alive.read(">", block_ms=None) == 0
    await asyncio.sleep(0.1)
    assert await alive.reclaim() == 2
    assert (await StatsStore(store.redis, store.keys).totals())["invalid"] == 1
    for p in (dead, alive):
        await p.close()


async def test_the_running_projector_counts_live_events(store: Store, redis_url: str) -> None:
    p = StatsProjector(store, redis_url=redis_url, consumer="live")
    task = asyncio.create_task(p.run())
    h = History(store, datetime.now(UTC))
    await h.event("escalated", "live", h.now, level=1)
    stats = StatsStore(store.redis, store.keys)
    for _ in range(200):
        if (await stats.totals()).get("escalated") == 1:
            break
        await asyncio.sleep(0.02)
    assert (await stats.totals()).get("escalated") == 1
    await cancel_all([task])  # a single cancel can be swallowed inside a Redis read on Python 3.11


def test_stats_message_escapes_names_and_fits_slack() -> None:
    bucket = {"mode:approve": 30, "action:<!channel> boom": 3, "agent:<@U0ADMIN> & co": 3}
    for i in range(40):
        bucket |= {f"rv:U0R{i:03d}:n": 60, f"rv:U0R{i:03d}:ok": 60}
    r = build_report([(0, bucket)], now_s=3600.0, queue_depth=0, oldest_created_s=None)
    msg = stats_message(r, lag=3, chart=True)
    check_blocks(msg["blocks"])
    assert len(msg["blocks"]) <= 50 and len(msg["text"]) < 3000
    text = json.dumps(msg, ensure_ascii=False)
    assert "<!channel>" not in text and "&lt;!channel&gt; boom 3" in text
    assert "&lt;@U0ADMIN&gt; &amp; co 3" in text
    assert "and 30 more" in text and "and 33 more warning signs" in text  # 40 + escalation
    assert "3 recent events are still being counted" in text and "chart follows" in text
    assert "<@U0R000> 60 · — · 100% :warning:" in text


async def test_malformed_entries_are_acknowledged_without_stalling(store: Store,
                                                                    projector: StatsProjector) -> None:
    await store.redis.xadd(store.keys.audit, {"event": "clicked", "request_id": "x", "actor": "U1",
                                              "detail": '{"choice": ["odd"]}'})
    await store.redis.xadd(store.keys.audit, {"event": "routed", "detail": "not json"})
    await History(store, datetime.now(UTC)).request("ok", datetime.now(UTC), "auto")
    await drain(projector)
    stats = StatsStore(store.redis, store.keys)
    assert await stats.lag() == 0 and (await stats.totals()) == {"mode:auto": 1, "received": 1}


def test_a_handover_card_is_timed_once_and_is_not_an_escalation_level() -> None:
    now = 1_900_000_000_000
    rec = {"created_at": now - 2000, "route": {"mode": "escalate"}}
    posted = ops_for({"event": "posted", "detail": "{}"}, now, rec, now)
    level0 = ops_for({"event": "escalated", "detail": '{"seconds": 2.0, "level": 0}'}, now, None, now)
    level1 = ops_for({"event": "escalated", "detail": '{"seconds": 0.1, "level": 1}'}, now, None, now)
    tte = [op for op in posted + level0 if op.field.startswith("tte:") and not op.field.endswith("sum")
           and op.hour is None]
    assert len(tte) == 1  # from the level-0 event only
    assert not any(op.field == "escalated" for op in level0)
    assert any(op.field == "escalated" for op in level1)
    approve = ops_for({"event": "posted", "detail": "{}"}, now, {**rec, "route": {"mode": "approve"}}, now)
    assert [op for op in approve if op.field.startswith("tte:") and op.hour is None]  # approval cards count


def test_checks_after_the_fact_and_shadow_agreement_are_reported() -> None:
    from blocks.stats import metric_fields

    now = 1_900_000_000_000
    ops = []
    for event, detail in [("reviewed", '{"verdict": "ok"}'), ("reviewed", '{"verdict": "wrong"}'),
                          ("overridden", "{}"), ("shadow_compared", '{"agreed_action": true}'),
                          ("shadow_compared", '{"agreed_action": false}')]:
        ops += ops_for({"event": event, "detail": detail}, now, None, now)
    bucket: dict[str, int] = {}
    for op in ops:
        if op.hour is not None:
            bucket[op.field] = bucket.get(op.field, 0) + op.amount
    report = build_report([(now // 3_600_000, bucket)], now_s=now / 1000, queue_depth=0, oldest_created_s=None)
    assert (report.reviewed, report.overridden, report.shadow, report.shadow_agreed) == (2, 1, 2, 1)
    text = "\n".join(metric_fields(report))
    assert "checked afterwards 2, found wrong 1" in text and "agreed with the agent 50% of 2" in text


@pytest.mark.parametrize("mode", list(Mode))
@pytest.mark.parametrize("paused", [False, True])
@pytest.mark.parametrize("status", ["", "auto_approved", "denied", "escalated"])
def test_intake_counts_what_the_projector_would_count_of_the_same_events(mode: Mode, paused: bool,
                                                                         status: str) -> None:
    """accept.lua's stats are computed once per agent, action, route and hour (store.accept):
    they equal `ops_for` of the full events the script writes, as the projector reads them."""
    from store.accept import ROUTED_FIELDS, intake_stats, stats_args
    from store.keys import Keys

    now_ms = 1_790_000_123_456
    route = Route(mode=mode, tier="high", rules=["r1"], reasons=["why"], paused=paused, channel="#c")
    events = [("received", "billing-bot", {"entry_id": "1-0", "action": "refund"}),
              ("routed", "policy", route.model_dump(mode="json", include=ROUTED_FIELDS))]
    if status:
        events.append(("decided", "policy", {"status": status}))
    ops = [op for event, actor, detail in events
           for op in ops_for({"event": event, "actor": actor, "detail": json.dumps(detail)}, now_ms, None, now_ms)]
    expected = stats_args(ops, Keys("hitl"), now_ms)[0]
    assert intake_stats("billing-bot", "refund", mode.value, paused, status, now_ms // HOUR_MS) == expected


async def _group(store: Store) -> dict[str, Any]:
    [g] = [g for g in await store.redis.xinfo_groups(store.keys.audit) if g["name"] == STATS_GROUP]
    return dict(g)


async def _caught_up(h: History, projector: StatsProjector) -> None:
    """The projector has read an event and everything since."""
    await h.event("invalid", "x0", h.now)
    await drain(projector)
    assert (await _group(h.store))["entries-read"] == 1


async def test_a_new_group_that_never_read_is_moved_too(store: Store, projector: StatsProjector) -> None:
    """A group made on an empty stream does not know how many entries it read until it reads
    one; caught up, it is moved past intake's events all the same (from the stream's count)."""
    h = History(store, datetime.now(UTC))
    assert (await _group(store))["entries-read"] is None
    await h.request("a1", h.now, "auto", status="auto_approved")
    g = await _group(store)
    assert (g["entries-read"], g["lag"]) == (4, 0)
    assert await projector.read(">", block_ms=None) == 0


async def test_intake_moves_a_caught_up_projector_past_the_events_it_counted_itself(
        store: Store, projector: StatsProjector) -> None:
    """accept.lua counts its own events: with the projector caught up, it moves the group past
    them, so the projector never reads a request that only went through intake, and every
    figure is still counted once."""
    h = History(store, datetime.now(UTC))
    await _caught_up(h, projector)
    await h.request("a1", h.now, "auto", status="auto_approved")
    await h.request("p1", h.now, "approve")
    g = await _group(store)
    newest = (await store.redis.xrevrange(store.keys.audit, count=1))[0][0]
    assert (g["last-delivered-id"], g["entries-read"], g["lag"]) == (newest, 1 + 6, 0)
    assert await projector.read(">", block_ms=None) == 0  # nothing left to read
    totals = await StatsStore(store.redis, store.keys).totals()
    assert (totals["received"], totals["mode:auto"], totals["mode:approve"], totals["st:auto_approved"],
            totals["invalid"]) == (2, 1, 1, 1, 1)


async def test_a_projector_behind_reads_intakes_events_too_and_counts_each_once(
        store: Store, projector: StatsProjector) -> None:
    """Behind (an event it must count is unread), the group is left where it is: the projector
    then reads the earlier event and intake's, counting the one and acknowledging the others."""
    h = History(store, datetime.now(UTC))
    await _caught_up(h, projector)
    await h.event("invalid", "x1", h.now)  # the projector must count this one
    await h.request("a1", h.now, "auto", status="auto_approved")
    g = await _group(store)
    assert g["lag"] == 5 and g["entries-read"] == 1
    await drain(projector)
    assert (await _group(store))["lag"] == 0 and projector.counted == 6  # read and acknowledged: x0, x1, a1's 4
    await h.request("a2", h.now, "auto", status="auto_approved")  # caught up again: skipped
    assert (await _group(store))["entries-read"] == 10 and await projector.read(">", block_ms=None) == 0
    totals = await StatsStore(store.redis, store.keys).totals()
    assert (totals["invalid"], totals["received"], totals["st:auto_approved"]) == (2, 2, 2)


def test_the_scripts_name_the_projectors_group() -> None:
    from pathlib import Path

    lua = (Path(__file__).resolve().parent.parent / "store" / "lua" / "_stats.lua").read_text()
    assert f"local STATS_GROUP = '{STATS_GROUP}'" in lua


async def test_a_withdrawn_request_is_no_persons_rejection(store: Store, projector: StatsProjector) -> None:
    """The agent withdrawing its request (REST cancel: `rejected`, reason_code `withdrawn`)
    is nobody's decision: no rejection by people, no override, no time to decision."""
    from store.transitions import withdraw

    now = datetime.now(UTC)
    t0 = now - timedelta(hours=1)
    h = History(store, now)
    for i in range(10):
        await h.request(f"p{i}", t0, "approve")
        await h.decide(f"p{i}", t0 + timedelta(minutes=1), "approved")
    await h.request("w1", t0, "approve")
    await store.apply(withdraw(await store.get("w1"), now=now, by="billing (API key k1)"), now)
    await drain(projector)
    r = await StatsStore(store.redis, store.keys).report(24, now.timestamp())
    assert r.human_decisions == 10 and r.ttd.count == 10
    assert "rejected" not in r.decisions and r.decisions["withdrawn"] == 1
    assert r.override_rate == 0 and r.rate("rejected") == 0
    assert r.queue_change == 0  # it left the queue all the same
    assert (await StatsStore(store.redis, store.keys).totals())["st:withdrawn"] == 1


async def test_a_request_approved_by_the_clock_leaves_the_queue(store: Store, projector: StatsProjector) -> None:
    """A tier with `on_timeout: approve` ends an unanswered request `auto_approved`: it left the
    people's queue like an expired one, so the queue does not read as growing."""
    from store.transitions import expire

    now = datetime.now(UTC)
    h = History(store, now)
    for i in range(6):
        await h.request(f"t{i}", now - timedelta(hours=2), "approve")
        t = expire(await store.get(f"t{i}"), now=now, status=Status.auto_approved, reason="No decision in 1h")
        await store.apply(t, now)
    await drain(projector)
    r = await StatsStore(store.redis, store.keys).report(24, now.timestamp())
    assert r.queue_depth == 0 and r.queue_change == 0
    assert "queue_growing" not in [w.code for w in r.warnings]
    assert r.decisions == {"auto_approved": 6} and r.human_decisions == 0


async def test_taking_over_and_replying_are_not_a_reviewers_decisions(store: Store,
                                                                       projector: StatsProjector) -> None:
    """A handover's take over and replies keep the case open: they are not decisions, so they
    neither count as decisions nor time one (taking a case within seconds is not rubber-stamping)."""
    now = datetime.now(UTC)
    h = History(store, now)
    for i in range(5):
        created = now - timedelta(hours=1, minutes=i)
        posted = created + timedelta(seconds=2)
        await h.request(f"e{i}", created, "escalate", summary=LONG)
        await h.record(f"e{i}", posted=posted)
        await h.event("clicked", f"e{i}", posted + timedelta(seconds=1.5), "U0CARL", choice="take_over")
        await h.event("clicked", f"e{i}", posted + timedelta(seconds=2), "U0CARL", choice="reply")
        await h.event("clicked", f"e{i}", posted + timedelta(minutes=10), "U0CARL", choice="resolve")
    await drain(projector)
    r = await StatsStore(store.redis, store.keys).report(24, now.timestamp())
    [carl] = r.reviewers
    assert (carl.decisions, carl.nontrivial) == (5, 5) and carl.rubber_stamp is None
    assert carl.median_s is not None and carl.median_s > 300
    assert "rubber_stamp" not in [w.code for w in r.warnings]
