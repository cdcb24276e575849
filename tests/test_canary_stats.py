"""Canaries count only in the vigilance figures: the loop's figures (requests, routes, decisions,
times, escalations, expiries, reviewers, agents) in `/hitl stats`, the App Home and `/metrics`
are those of real requests alone (docs/trust.md)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from blocks.ids import ActionId
from store.stats import Report
from tests.harness import Harness, running
from tests.test_metrics import scrape, value
from tests.util import eventually

POLICY = """
defaults: {tier: medium}
tiers:
  low:    {mode: auto}
  medium: {mode: approve, timeout: 1h, escalation: [{after: 10m, notify: ["U0LEAD"]}]}
  high:   {mode: approve}
batching: {enabled: false}
triggers:
  first_use: {enabled: false}
trust:
  canaries: {file: canaries.jsonl, share: 0.5}
"""

CANARY = {"agent": "refund-bot", "action": "refund", "summary": "Refund $950 to a card ending 0000",
          "params": {"order": "A-77"}, "answer": "reject", "why": "Paid with the card ending 4242."}


async def _canaries(h: Harness, at_least: int) -> tuple[list[str], int]:
    """Push real requests until `at_least` canaries were queued: (their ids, real requests pushed)."""
    pattern, pushed = h.store.trust.k.canary("*"), [0]

    async def found() -> list[str] | None:
        ids = sorted(k.rsplit(":", 1)[1] for k in await h.store.redis.keys(pattern) if not k.endswith(":scored"))
        if len(ids) >= at_least and all([await h.store.exists(i) for i in ids]):
            return ids
        await h.push(agent="pay-bot", action="pay", summary=f"Pay invoice {pushed[0]}", id=f"real-{pushed[0]}")
        pushed[0] += 1
        return None

    ids = await eventually(found, what=f"{at_least} canaries")
    return list(ids), pushed[0]


async def test_canaries_count_only_in_the_vigilance_figures(redis_url: str, tmp_path: Path) -> None:
    (tmp_path / "canaries.jsonl").write_text(json.dumps(CANARY) + "\n")
    async with running(redis_url, tmp_path, POLICY) as h:
        canaries, n = await _canaries(h, 2)
        # the same reviewer approves every real request, and the first canary (wrongly)
        for rid in [f"real-{i}" for i in range(n)] + canaries[:1]:
            await h.click(await h.card(rid), "U0BOB", ActionId.approve)
            await h.decided(rid)
        for rid in canaries[1:]:  # nobody decides the other canaries
            await h.card(rid)
        stats = h.store.stats

        async def counted() -> Report | None:
            """The report once every audit event written so far is counted (the canary's score among
            them); the expiries below come later, each counted on its own (no other event of its
            request in the projector's batch)."""
            last = await h.store.redis.xrevrange(h.store.keys.audit, count=1)
            group = [g for g in await h.store.redis.xinfo_groups(h.store.keys.audit) if g["name"] == "stats"]
            if not group or group[0]["pending"] or group[0]["last-delivered-id"] != last[0][0]:
                return None
            r = await stats.report(24, time.time())
            return r if r.canaries[0] == 1 else None

        await eventually(counted, what="the decisions counted")
        # ... they are escalated, then expire
        assert h.bot.scheduler is not None
        h.bot.scheduler.clock = lambda: time.time() + 3700  # type: ignore[misc]
        h.bot.scheduler.kick()
        for rid in canaries[1:]:
            await h.decided(rid)
        r: Report = await eventually(counted, what="stats counted")
        # vigilance: the one canary decided is scored (not caught)
        assert r.canaries == (1, 0) and r.canary_reviewers == [("U0BOB", 1, 0)]
        # every other figure is the real requests' alone
        assert r.requests == n and r.by_mode == {"approve": n}
        assert r.decisions == {"approved": n} and r.human_decisions == n
        assert r.ttd.count == n and r.tte.count == n
        assert r.escalations == 0 and r.queue_change == 0
        assert r.top_agents == [("pay-bot", n)] and r.top_actions == [("pay", n)]
        assert [(v.user_id, v.decisions, v.approvals) for v in r.reviewers] == [("U0BOB", n, n)]
        assert sum(sum(hour.outcomes.values()) for hour in r.series) == n  # the chart's bars
        # /metrics reads the same counters
        m = await scrape(h)
        assert value(m, "hitl_requests", "hitl_requests_total", mode="approve") == n
        assert {k[-1] for k in m["hitl_decisions"]} == {("status", "approved")}
        assert value(m, "hitl_decisions", "hitl_decisions_total", status="approved") == n
        assert value(m, "hitl_escalations", "hitl_escalations_total") == 0
        ttd, tte = "hitl_time_to_decision_seconds", "hitl_time_to_escalate_seconds"
        assert value(m, ttd, f"{ttd}_count") == n and value(m, tte, f"{tte}_count") == n
        totals = await stats.totals()
        assert "expired" not in totals and "escalated" not in totals, totals
