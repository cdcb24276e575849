"""The scheduler against a real Redis and the Slack emulator, on an injected clock: reminders,
escalation levels and expiry fire in order, once, only while the request is pending."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.gateway import Gateway
from bot.policy import PolicyEngine, PolicyError
from bot.scheduler import Scheduler
from bot.timing import honour_user_request, next_level_ms, plan, tier_of
from emulator import Emulator
from store.errors import NotAllowed
from store.models import Choice, Record, Request, Status, from_epoch
from store.pacing import PostSlots, post_window
from store.redis_store import GROUP, Accepted, Store
from store.transitions import authorize, vote

TOKEN = "xoxb-test-token"
POLICY = """
defaults: {channel: "#approvals", approvers: ["U0ALICE"]}
tiers:
  low: {mode: auto}
  relaxed: {mode: approve, timeout: 10s, on_timeout: approve}
  medium:
    mode: approve
    timeout: 100s
    reminder: {at: 0.2, repeat: true}
    escalation:
      - {after: 30s, notify: ["#approvals-leads", "#no-such-channel"]}
      - {after: 50s, notify: ["U0DAVE", "S0MANAGERS"], repeat: 20s}
  high: {mode: approve, quorum: 2}
rules:
  - {name: tags, when: 'request.action == "tag_contact"', tier: relaxed}
triggers: {first_use: {enabled: false}}
"""
ENGINE = PolicyEngine.from_yaml(POLICY)


@dataclass
class World:
    store: Store
    emu: Emulator
    slack: AsyncWebClient
    t0: float = field(default_factory=time.time)
    offset: float = 0.0
    schedulers: list[Scheduler] = field(default_factory=list)
    engine: PolicyEngine = ENGINE

    def clock(self) -> float:
        return self.t0 + self.offset

    def scheduler(self) -> Scheduler:
        # posting slots as wide as the harness's (the emulator here does not rate-limit; the
        # scheduler's pacing has its own tests, in tests/test_scheduler_pacing.py)
        s = Scheduler(self.store, Gateway(self.slack), lambda: self.engine, clock=self.clock,
                      slot_window=lambda: post_window(100.0, 100.0))
        self.schedulers.append(s)
        return s

    async def request(self, *, post: bool = True, **fields: Any) -> Record:
        """Accept a request as intake does (deadlines planned) and post a stand-in card."""
        store = self.store
        data = {"agent": "crm-bot", "action": "update_contact", "summary": "Update contact 7",
                "id": f"r{len(await store.pending_ids(1000))}-{time.monotonic_ns()}"} | fields
        req = Request.model_validate(data)
        await store.ensure_group()
        entry = await store.redis.xadd(store.keys.requests, {"request": req.model_dump_json()})
        await store.redis.xreadgroup(GROUP, "test", {store.keys.requests: ">"}, count=100)
        route = honour_user_request(req, self.engine.route(req))
        now = from_epoch(self.clock())
        deadlines = plan(req, route, tier_of(self.engine, route), int(self.clock() * 1000))
        await store.accept(entry, Accepted(req, route, None, post=False, deadlines=deadlines), now)
        assert req.id is not None
        if post:
            resp = await self.slack.chat_postMessage(channel=route.channel, text="card")
            await store.mark_posted(req.id, f"post:{req.id}", 0, str(resp["channel"]),
                                    str(resp["ts"]), now, 0)
        return await store.get(req.id)

    def thread(self, rec: Record) -> list[str]:
        assert rec.channel and rec.ts
        return [m["text"] for m in self.emu.thread(rec.channel, rec.ts)[1:]]

    async def events(self, rid: str) -> list[tuple[str, dict[str, Any]]]:
        timed = ("reminded", "escalated", "expired")
        return [(e.event, e.detail) for e in await self.store.trail(rid) if e.event in timed]


@pytest.fixture
async def w(store: Store) -> AsyncIterator[World]:
    emu = Emulator(signing_secret="s", request_url=None, bot_token=TOKEN)
    await emu.start()
    slack = AsyncWebClient(token=TOKEN, base_url=emu.api_url)
    yield World(store, emu, slack)
    await emu.stop()


async def step(w: World, to: float, by: float = 5.0, s: Scheduler | None = None) -> None:
    """Move the clock forward to `to` seconds after t0, firing what is due at each step."""
    s = s or (w.schedulers[0] if w.schedulers else w.scheduler())
    while w.offset < to:
        w.offset = min(to, w.offset + by)
        while await s.run_once():
            pass


async def closed_for_ms(w: World, channel: str) -> int:
    """How long a 429 closed `channel`'s posting slot for, from now on Redis's clock."""
    blocked = await w.store.redis.hget(PostSlots(w.store).keys(channel)[0], "blocked_until")
    secs, micros = await w.store.redis.time()
    return int(blocked or 0) - (secs * 1000 + micros // 1000)


async def retry_after_passed(w: World, *channels: str) -> None:
    """Retry-After has passed on Redis's clock too: the test moved the scheduler's clock, but the
    posting slots a 429 closed run on Redis's own (real) time."""
    for channel in channels:
        await w.store.redis.hset(PostSlots(w.store).keys(channel)[0], "blocked_until", 0)


@pytest.mark.cluster_too
async def test_reminders_and_levels_fire_in_order_then_expiry_ends_them(w: World) -> None:
    rec = await w.request()
    await step(w, 130)
    events = await w.events(rec.id)
    assert [(e, d.get("level", d.get("count"))) for e, d in events] == [
        ("reminded", 1), ("escalated", 1), ("reminded", 2), ("escalated", 2),
        ("reminded", 3), ("escalated", 2), ("reminded", 4), ("escalated", 2), ("expired", None)]
    after = await w.store.get(rec.id)
    assert after.decision is not None and after.decision.status is Status.expired
    assert after.decision.reason == "No decision in 1m" and after.decision.reason_code == "timeout"
    assert after.reminders == 4 and after.escalation_level == 4
    assert await w.store.redis.zcard(w.store.keys.deadlines) == 0
    thread = w.thread(rec)
    assert thread[0].startswith(":alarm_clock: <@U0ALICE> Reminder: this request is still waiting")
    assert "escalated (level 1) to #approvals-leads" in thread[1]
    assert "<@U0DAVE>, <!subteam^S0MANAGERS>" in thread[3]
    leads = w.emu.messages("#approvals-leads")
    assert len(leads) == 1 and "Escalated to you (level 1)" in json.dumps(leads[0]["blocks"])
    assert "Open the card" in json.dumps(leads[0]["blocks"])
    assert len(w.emu.messages("U0DAVE")) == 3  # level 2 and its two repeats, as DMs
    first = next(d for e, d in events if e == "escalated")
    assert first["failed"] == {"#no-such-channel": "channel_not_found"}
    assert 0 <= first["seconds"] < 1


async def test_escalation_widens_who_may_decide(w: World) -> None:
    leads = w.emu.ws.find_channel("#approvals-leads")
    assert leads is not None
    leads.members.add("U0CAROL")  # a lead: widened in by the channel-level notice
    rec = await w.request()
    with pytest.raises(NotAllowed):
        authorize(rec, "U0CAROL", Choice.approve)
    await step(w, 55)
    rec = await w.store.get(rec.id)
    assert rec.escalated_to == ["#approvals-leads", "#no-such-channel", "U0DAVE", "S0MANAGERS"]
    # the notified user, the group's members and the channel's members (conversations.members)
    assert {"U0DAVE", "U0ALICE", "U0BOB", "U0CAROL"} <= set(rec.extra_approvers)
    authorize(rec, "U0DAVE", Choice.approve)
    authorize(rec, "U0CAROL", Choice.approve)
    assert rec.time_to_escalate_s is not None and rec.time_to_escalate_s < 1


async def test_a_decision_cancels_what_is_scheduled(w: World) -> None:
    rec = await w.request()
    await step(w, 25)
    assert len(await w.events(rec.id)) == 1
    now = from_epoch(w.clock())
    rec = await w.store.get(rec.id)
    await w.store.apply(vote(rec, user_id="U0ALICE", name="alice", choice=Choice.approve,
                             now=now), now)
    for kind in ("remind", "escalate", "expire"):
        assert await w.store.redis.zscore(w.store.keys.deadlines, f"{kind}:{rec.id}") is None
    await step(w, 200)
    assert len(await w.events(rec.id)) == 1 and len(w.thread(rec)) == 1


@pytest.mark.cluster_too
async def test_two_schedulers_racing_fire_each_deadline_once(w: World) -> None:
    recs = [await w.request() for _ in range(8)]
    a, b = w.scheduler(), w.scheduler()
    w.offset = 35  # one reminder and the first level are due for every request
    await asyncio.gather(a.run_once(), b.run_once(), a.run_once(), b.run_once())
    for rec in recs:
        events = [e for e, _ in await w.events(rec.id)]
        assert sorted(events) == ["escalated", "reminded"], events
        assert len(w.thread(rec)) == 2
    assert len(w.emu.messages("#approvals-leads")) == len(recs)
    assert a.stats["reminded"] + b.stats["reminded"] == len(recs)


async def test_a_crashed_replicas_lease_runs_out_and_another_fires_it(w: World) -> None:
    rec = await w.request()
    w.offset = 21
    _lease, members = await w.store.claim_due(w.store.keys.deadlines, int(w.clock() * 1000),
                                             30_000)
    assert members == [f"remind:{rec.id}"]  # ... and the replica dies here
    other = w.scheduler()
    w.offset = 22
    await other.run_once()
    assert await w.events(rec.id) == []
    w.offset = 29
    await other.run_once()
    assert await w.events(rec.id) == []
    w.offset = 52  # the lease ended at 51
    while await other.run_once():
        pass
    assert sorted(e for e, _ in await w.events(rec.id)) == ["escalated", "escalated", "reminded"]
    assert sum(1 for t in w.thread(rec) if "Reminder" in t) == 1


async def test_deadlines_missed_while_down_fire_at_the_next_start(w: World) -> None:
    waiting = await w.request()
    expired = await w.request()
    w.offset = 58  # every replica was down: levels 1 and 2 and two reminders are due
    s = w.scheduler()
    while await s.run_once():
        pass
    events = [(e, d.get("level")) for e, d in await w.events(waiting.id)]
    assert ("escalated", 1) in events and ("escalated", 2) in events
    assert sum(1 for e, _ in events if e == "reminded") == 1  # no burst of stale reminders
    w.offset = 500
    while await s.run_once():
        pass
    for rec in (waiting, expired):
        final = await w.store.get(rec.id)
        assert final.decision is not None and final.decision.status is Status.expired
        assert [e for e, _ in await w.events(rec.id)].count("expired") == 1
    assert await w.store.redis.zcard(w.store.keys.deadlines) == 0


async def test_a_throttled_reminder_waits_for_retry_after(w: World) -> None:
    rec = await w.request()
    w.emu.inject("chat.postMessage", status=429, retry_after=7)
    s = w.scheduler()
    w.offset = 20
    await s.run_once()
    assert await w.events(rec.id) == []
    due = await w.store.redis.zscore(w.store.keys.deadlines, f"remind:{rec.id}")
    assert abs(due - (w.clock() + 7) * 1000) < 50
    assert 6000 < await closed_for_ms(w, "#approvals") <= 7000  # the card's channel, for delivery too
    w.offset = 27
    await retry_after_passed(w, "#approvals")
    await s.run_once()
    assert [e for e, _ in await w.events(rec.id)] == ["reminded"]


async def test_timeout_approves_only_where_the_tier_says_so(w: World) -> None:
    rec = await w.request(action="tag_contact", reply_to="agent:inbox")
    question = await w.request(action="tag_contact", kind="question", options=["a", "b"])
    assert rec.route.tier == "relaxed"
    await step(w, 11)
    final = await w.store.get(rec.id)
    assert final.decision is not None and final.decision.status is Status.auto_approved
    assert final.decision.reason_code == "timeout" and "relaxed tier approves" in (
        final.decision.reason or "")
    assert await w.store.redis.xlen("agent:inbox") == 1
    q = await w.store.get(question.id)
    assert q.decision is not None and q.decision.status is Status.expired  # never auto-answered
    assert [e.event for e in await w.store.trail(rec.id)].count("expired") == 1


async def test_nothing_is_approved_by_the_clock_while_automation_is_paused(w: World) -> None:
    """`on_timeout: approve` lets an unanswered request run on its own: not for a request routed
    while paused, and not while `/hitl pause` holds (switched on after it was routed); both
    expire, saying why."""
    unpaused, routed_paused = await w.request(action="tag_contact"), await w.request(action="tag_contact")
    route = routed_paused.route.model_copy(update={"paused": True})  # as intake routes it while paused
    await w.store.redis.hset(w.store.keys.request(routed_paused.id), "route", route.model_dump_json())
    await step(w, 11)
    assert (await w.store.get(unpaused.id)).decision.status is Status.auto_approved  # type: ignore[union-attr]
    final = await w.store.get(routed_paused.id)
    assert final.decision is not None and final.decision.status is Status.expired
    assert "automation is paused" in (final.decision.reason or "")
    later = await w.request(action="tag_contact")
    await w.store.set_paused(True, "incident", "U0ADMIN", from_epoch(w.clock()))
    await step(w, 23)
    final = await w.store.get(later.id)
    assert final.decision is not None and final.decision.status is Status.expired
    assert "automation is paused" in (final.decision.reason or "")


async def test_a_wait_the_agent_shortened_is_never_approved_by_the_clock(w: World) -> None:
    """The relaxed tier gives people 10 s to object before an unanswered request passes; an
    agent sending `timeout_s: 1` must not get its action approved a second later."""
    hurried = await w.request(action="tag_contact", timeout_s=1)
    await step(w, 2, by=1)
    final = await w.store.get(hurried.id)
    assert final.decision is not None and final.decision.status is Status.expired


async def test_a_policy_reloaded_while_requests_wait_never_lets_them_pass_on_timeout(w: World) -> None:
    """What nobody decides in time ends as the card said when it was routed, or stricter: a
    reload that lets the medium tier approve on timeout does not approve a request routed
    under `reject`; a reload that makes the relaxed tier reject does expire one routed under
    `approve`."""
    strict = await w.request()  # medium: on_timeout reject
    relaxed = await w.request(action="tag_contact")  # relaxed: on_timeout approve
    assert strict.route.on_timeout is None and relaxed.route.on_timeout == "approve"
    w.engine = PolicyEngine.from_yaml(POLICY.replace("    timeout: 100s\n", "    timeout: 100s\n    on_timeout: approve\n")
                                      .replace("relaxed: {mode: approve, timeout: 10s, on_timeout: approve}",
                                               "relaxed: {mode: approve, timeout: 10s}"))
    await step(w, 101)
    for rid in (strict.id, relaxed.id):
        final = await w.store.get(rid)
        assert final.decision is not None and final.decision.status is Status.expired, rid


async def test_reminders_wait_for_a_card_that_is_not_posted_yet(w: World) -> None:
    rec = await w.request(post=False)
    s = w.scheduler()
    w.offset = 20
    await s.run_once()
    assert await w.events(rec.id) == []
    due = await w.store.redis.zscore(w.store.keys.deadlines, f"remind:{rec.id}")
    assert due is not None and w.clock() * 1000 < due <= (w.clock() + 2) * 1000


def test_plan_and_next_level() -> None:
    req = Request(id="x", agent="a", action="update_contact", summary="s")
    route = ENGINE.route(req)
    tier = tier_of(ENGINE, route)
    assert dict(plan(req, route, tier, 1000)) == {
        "expire:x": 101_000, "remind:x": 21_000, "escalate:x": 31_000}
    esc = Request(id="y", agent="a", action="b", summary="s", kind="escalation")
    assert dict(plan(esc, ENGINE.route(esc), tier, 0))["escalate:y"] == 0  # level 0 at once
    short = Request(id="z", agent="a", action="b", summary="s", timeout_s=25)
    assert dict(plan(short, ENGINE.route(short), tier, 0)) == {"expire:z": 25_000,
                                                               "remind:z": 5_000}
    record = Record(request=req, route=route, created_at=from_epoch(0), posted_at=from_epoch(0),
                    escalation_level=1)
    assert next_level_ms(record, tier, 50_000) == 70_000  # the repeat: 50s + 20s
    late = record.model_copy(update={"escalation_level": 2, "route": route.model_copy(
        update={"timeout_s": 1000})})
    assert next_level_ms(late, tier, 130_000) == 150_000  # missed repeats are not bursted


def test_user_requested_human_escalates_whatever_the_policy() -> None:
    deny = PolicyEngine.from_yaml(POLICY.replace(
        "rules:\n", "rules:\n  - {name: deny_all, when: 'true', mode: deny}\n"))
    req = Request(id="u", agent="a", action="b", summary="I want to talk to a human now")
    route = honour_user_request(req, deny.route(req))
    assert route.mode.value == "escalate" and "user_requested_human" in route.rules
    assert route.reasons[0].startswith("The user asked for a person")
    agent_says = Request(id="v", agent="a", action="b", summary="s",
                         context={"escalation_reason": "user_requested"})
    assert honour_user_request(agent_says, ENGINE.route(agent_says)).mode.value == "escalate"
    plain = Request(id="p", agent="a", action="b", summary="s")
    assert honour_user_request(plain, ENGINE.route(plain)) == ENGINE.route(plain)


async def test_slack_5xx_backs_off_and_retries(w: World) -> None:
    rec = await w.request()
    w.emu.inject("chat.postMessage", status=500, times=2)
    s = w.scheduler()
    w.offset = 20
    await s.run_once()
    first = await w.store.redis.zscore(w.store.keys.deadlines, f"remind:{rec.id}")
    assert first == pytest.approx(w.clock() * 1000 + 500, abs=2)  # 0.5 s, then 1 s, ...
    w.offset = 20.5
    await s.run_once()
    second = await w.store.redis.zscore(w.store.keys.deadlines, f"remind:{rec.id}")
    assert second == pytest.approx(w.clock() * 1000 + 1000, abs=2)
    w.offset = 21.5
    await s.run_once()
    assert [e for e, _ in await w.events(rec.id)] == ["reminded"]
    assert s.stats["retried"] == 2


def test_only_the_last_level_may_repeat() -> None:
    bad = POLICY.replace('{after: 30s, notify: ["#approvals-leads", "#no-such-channel"]}',
                         '{after: 30s, notify: ["#approvals-leads"], repeat: 10s}')
    with pytest.raises(PolicyError) as e:
        PolicyEngine.from_yaml(bad)
    assert "level 0: only the last level may repeat" in str(e.value)


def _dms(w: World, user: str) -> list[dict[str, Any]]:
    return w.emu.messages(user)


async def test_a_level_grants_before_it_notifies_and_notifies_once(w: World) -> None:
    """Issue 10, point 10: the person a level tells may decide before the message reaches them,
    and a 429 on the card's thread note does not send the DM again."""
    rec = await w.request()
    s = w.scheduler()
    await step(w, 49, s=s)  # reminders and level 1 done; level 2 (Dave, the managers) is due at 50 s
    assert (await w.store.get(rec.id)).escalation_level == 1
    w.emu.inject("chat.postMessage", status=429, retry_after=1)  # the DM to Dave is throttled
    w.offset = 50
    await s.run_once()
    after = await w.store.get(rec.id)
    assert "U0DAVE" in after.extra_approvers and not _dms(w, "U0DAVE")  # granted first
    authorize(after, "U0DAVE", Choice.approve)  # so his click, whenever the DM lands, counts
    assert after.escalation_level == 1  # the level itself is not done yet
    w.emu.inject("chat.postMessage", times=1)  # the DM goes through ...
    w.emu.inject("chat.postMessage", status=429, retry_after=1)  # ... the thread note is throttled
    w.offset = 51
    dm = str(w.emu.calls_to("conversations.open")[-1].response["channel"]["id"])
    await retry_after_passed(w, dm)  # the 429 closed the DM's slot (on Redis's clock)
    await s.run_once()
    assert len(_dms(w, "U0DAVE")) == 1 and (await w.store.get(rec.id)).escalation_level == 1
    w.offset = 52
    await retry_after_passed(w, "#approvals")
    await s.run_once()
    done = await w.store.get(rec.id)
    assert done.escalation_level == 2 and len(_dms(w, "U0DAVE")) == 1  # notified once
    assert "<@U0DAVE>, <!subteam^S0MANAGERS>" in w.thread(done)[-1]
    assert [d.get("level") for e, d in await w.events(rec.id) if e == "escalated"] == [1, 2]


LEVELS = PolicyEngine.from_yaml("""
defaults: {channel: "#approvals", approvers: ["U0ALICE"]}
tiers:
  low: {mode: auto}
  medium:
    mode: approve
    timeout: 200s
    escalation:
      - {after: 30s, notify: ["#approvals-leads", "U0DAVE"]}
      - {after: 50s, notify: ["U0ERIN"]}
      - {after: 70s, notify: ["U0CAROL"]}
  high: {mode: approve}
triggers: {first_use: {enabled: false}}
""")


async def test_nobody_is_told_to_decide_a_request_decided_while_the_level_ran(w: World) -> None:
    """Alice approves while the level is still finding who to tell (Slack slow to list the
    channel): no channel post, no DM, no thread note go out for the decided request."""
    w.engine = LEVELS
    rec = await w.request()
    s = w.scheduler()
    w.offset = 31
    w.emu.inject("conversations.members", delay=2.0)  # the approval lands inside this wait
    running = asyncio.create_task(s.run_once())
    await asyncio.sleep(0.4)
    now = from_epoch(w.clock())
    await w.store.apply(vote(await w.store.get(rec.id), user_id="U0ALICE", name="alice", choice=Choice.approve,
                             now=now), now)
    await running
    assert (await w.store.get(rec.id)).decision.status is Status.approved  # type: ignore[union-attr]
    assert w.emu.messages("#approvals-leads") == [] and w.emu.messages("U0DAVE") == []
    assert w.thread(rec) == []


async def test_a_level_two_replicas_ran_is_counted_once_and_the_next_still_comes(w: World) -> None:
    """Replica A's level 1 outlasts its lease on a slow Slack, so replica B runs level 1 too:
    the level is recorded once, and levels 2 and 3 are still granted and told."""
    w.engine = LEVELS
    w.emu.add_user("U0ERIN", "erin")
    rec = await w.request()
    a, b = w.scheduler(), w.scheduler()
    w.offset = 31
    w.emu.inject("chat.getPermalink", delay=1.0)  # A's call is slow
    slow = asyncio.create_task(a.run_once())
    await asyncio.sleep(0.3)
    w.offset = 62  # A's 30 s lease ran out while it waits on Slack
    while await b.run_once():
        pass
    await slow
    for t in (75, 90, 120, 150, 199):
        await step(w, t, s=b)
    final = await w.store.get(rec.id)
    levels = [d["level"] for e, d in await w.events(rec.id) if e == "escalated"]
    assert levels == [1, 2, 3], levels
    assert {"U0DAVE", "U0ERIN", "U0CAROL"} <= set(final.extra_approvers)
    assert len(w.emu.messages("U0ERIN")) == 1 and len(w.emu.messages("U0DAVE")) == 1


def test_people_a_level_is_about_to_tell_are_never_cut_from_who_may_decide() -> None:
    """Extra approvers are capped; the newest level's people come first, so a DM's reader can
    always decide (the cap used to keep a 1,000-member channel and cut later levels' people)."""
    from store.transitions import MAX_EXTRA_APPROVERS, grant

    rec = Record(request=Request(id="x", agent="a", action="b", summary="s"), route=ENGINE.route(
        Request(id="x", agent="a", action="b", summary="s")), created_at=from_epoch(0),
        extra_approvers=[f"U{i:05d}" for i in range(MAX_EXTRA_APPROVERS)])
    t = grant(rec, approvers=["U0ERIN"])
    assert t is not None and "U0ERIN" in json.loads(t.fields["extra_approvers"])


async def test_a_handover_cards_time_to_escalate_is_recorded_once(w: World) -> None:
    """Two replicas running the same level-0 deadline (a lease run out) from the record as they
    read it: the second finds the time recorded and records nothing (stats time it once)."""
    rec = await w.request(kind="escalation", summary="The customer wants a person")
    tier = tier_of(ENGINE, rec.route)
    a, b = w.scheduler(), w.scheduler()
    await asyncio.gather(a._escalate(rec, tier), b._escalate(rec, tier))
    level0 = [d for e, d in await w.events(rec.id) if e == "escalated" and d["level"] == 0]
    assert len(level0) == 1


async def test_a_level_still_sending_keeps_its_lease_so_no_other_replica_sends_it_again(w: World) -> None:
    """Replica A's post to the level's channel is slow (Slack answers after 1.5 s, longer than
    the event's lease); replica B keeps looking meanwhile, as time goes on. A renews its lease
    while the level runs, so B never takes the level over: every notice goes out once."""
    w.engine = LEVELS
    rec = await w.request()
    a, b = w.scheduler(), w.scheduler()
    a.lease_ms = b.lease_ms = 600
    w.offset = 31
    w.emu.inject("chat.postMessage", delay=1.5)  # A's post to #approvals-leads
    slow = asyncio.create_task(a.run_once())
    while not slow.done():  # time goes on at about its real pace; B fires whatever is due
        await asyncio.sleep(0.05)
        w.offset += 0.05
        await b.run_once()
    await slow
    assert len(w.emu.messages("#approvals-leads")) == 1
    assert len(_dms(w, "U0DAVE")) == 1 and len(w.thread(rec)) == 1
    assert [d["level"] for e, d in await w.events(rec.id) if e == "escalated"] == [1]


@pytest.mark.parametrize("failure", [{"error": "internal_error", "times": 3}, {"status": 429, "retry_after": 10}])
async def test_a_channel_slack_cannot_list_for_now_is_listed_again_before_its_level_counts(
        w: World, failure: dict[str, Any]) -> None:
    """A level notifying a channel, while Slack fails to list its members (a 5xx-like error, a
    429): the level is run again later, and the channel's members are brought in then: it is
    never recorded as if the channel had nobody in it."""
    leads = w.emu.ws.find_channel("#approvals-leads")
    assert leads is not None
    leads.members.add("U0CAROL")
    rec = await w.request()
    w.emu.inject("conversations.members", **failure)
    await step(w, 55)
    rec = await w.store.get(rec.id)
    level_1 = next(d for e, d in await w.events(rec.id) if e == "escalated")
    assert level_1["level"] == 1 and "U0CAROL" in rec.extra_approvers
    authorize(rec, "U0CAROL", Choice.approve)
