"""`GET /metrics`: Prometheus text that its own parser reads, with the loop's real figures."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from blocks.ids import ActionId
from bot.metrics import histogram
from store.models import utcnow
from store.stats import BOUNDS_S, StatsStore, bucket_index
from tests.harness import Harness, start, stop
from tests.util import eventually


@pytest.fixture
async def h(redis_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    path = tmp_path / "policy.yml"
    path.write_text("batching: {enabled: false}\n")
    harness = await start(redis_url, policy=path)
    yield harness
    await stop(harness)


async def scrape(h: Harness) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Family name -> {sorted sample labels incl. the sample name: value}."""
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{h.bot.port}/metrics") as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
        text = await r.text()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        samples = out.setdefault(family.name, {})
        for s in family.samples:
            samples[(("__name__", s.name), *sorted(s.labels.items()))] = s.value
    return out


def value(m: dict[str, dict[tuple[tuple[str, str], ...], float]], family: str, name: str,
          **labels: str) -> float:
    return m[family][(("__name__", name), *sorted(labels.items()))]


async def test_metrics_report_the_loop(h: Harness) -> None:
    ids = [await h.push(id=f"m{i}") for i in range(3)]
    for rid in ids[:2]:
        await h.click(await h.card(rid), "U0ALICE", ActionId.approve)
        await h.decided(rid)
    await h.card(ids[2])
    stats = StatsStore(h.store.redis, h.store.keys)

    async def counted() -> bool:
        t = await stats.totals()
        return await stats.lag() == 0 and t.get("st:approved") == 2 and t.get("tte:sum", -1) >= 0

    await eventually(counted, what="stats counted")
    m = await scrape(h)
    assert value(m, "hitl_pending_requests", "hitl_pending_requests") == 1
    assert value(m, "hitl_outbox_depth", "hitl_outbox_depth") >= 0
    assert value(m, "hitl_dead_letters", "hitl_dead_letters") == 0
    assert value(m, "hitl_paused", "hitl_paused") == 0
    assert value(m, "hitl_requests", "hitl_requests_total", mode="approve") == 3
    assert value(m, "hitl_decisions", "hitl_decisions_total", status="approved") == 2
    ttd = "hitl_time_to_decision_seconds"
    assert value(m, ttd, f"{ttd}_count") == 2 == value(m, ttd, f"{ttd}_bucket", le="+Inf")
    assert value(m, ttd, f"{ttd}_sum") > 0
    buckets = [value(m, ttd, f"{ttd}_bucket", le=f"{b:g}") for b in BOUNDS_S]
    assert buckets == sorted(buckets)  # cumulative
    tte = "hitl_time_to_escalate_seconds"
    assert value(m, tte, f"{tte}_count") == 3  # three cards in front of people
    assert "hitl_slack_rate_limited" in m and "hitl_slack_errors" in m

    await h.store.set_paused(True, "test", "U0ADMIN", utcnow())
    assert value(await scrape(h), "hitl_paused", "hitl_paused") == 1


def test_histogram_is_cumulative_with_sum_in_seconds() -> None:
    totals = {f"x:{bucket_index(0.5)}": 2, f"x:{bucket_index(90)}": 3,
              f"x:{len(BOUNDS_S)}": 1, "x:sum": 500_000}
    text = histogram("t_seconds", "help", totals, "x:") + "\n"
    (family,) = text_string_to_metric_families(text)
    got = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    assert got[("t_seconds_bucket", "1")] == 2 and got[("t_seconds_bucket", "60")] == 2
    assert got[("t_seconds_bucket", "120")] == 5 and got[("t_seconds_bucket", "+Inf")] == 6
    assert got[("t_seconds_count", None)] == 6 and got[("t_seconds_sum", None)] == 500


async def test_skipped_rules_and_slack_errors_are_exported(redis_url: str, tmp_path: Path) -> None:
    path = tmp_path / "policy.yml"
    path.write_text('rules:\n  - {name: big_refund, when: "request.risk.amount > 100", tier: high}\n'
                    '  - {name: rows, when: "request.params.rows < 10", tier: low, mode: auto}\n'
                    "batching: {enabled: false}\n")
    h = await start(redis_url, policy=path)
    try:
        h.emu.inject("chat.postMessage", status=429, retry_after=1, times=1)
        rid = await h.push(summary="No amount given")  # the rule's field is missing: skipped
        await h.card(rid)
        # the rule reads a field the request holds, of another type: routed as if it fired,
        # never looser (its low auto tier is not taken: a person approves)
        odd = await h.push(summary="Odd rows", params={"rows": "5"}, confidence=0.99)
        rec = await h.card(odd)
        assert rec.route.mode.value == "approve" and "rows" in rec.route.rules
        m = await scrape(h)
        assert value(m, "hitl_policy_rules_skipped", "hitl_policy_rules_skipped_total", rule="big_refund") == 2
        assert value(m, "hitl_policy_rules_undecided", "hitl_policy_rules_undecided_total", rule="rows") == 1
        assert value(m, "hitl_slack_rate_limited", "hitl_slack_rate_limited_total", component="delivery") == 1
        assert value(m, "hitl_slack_errors", "hitl_slack_errors_total", component="scheduler") == 0
    finally:
        await stop(h)


def test_large_counters_and_sums_are_exported_exactly() -> None:
    """Counters past a million and a histogram's sum are written in full, not rounded to six
    significant digits (`1.23457e+06`), which froze rate() between rounding steps."""
    from bot.metrics import _family

    text = _family("c_total", "counter", "help", [("", 1_234_567)]) + "\n"
    text += histogram("t_seconds", "help", {"x:0": 1_234_567, "x:sum": 1_234_567_891}, "x:") + "\n"
    got = {(s.name, s.labels.get("le")): s.value
           for f in text_string_to_metric_families(text) for s in f.samples}
    assert got[("c_total", None)] == 1_234_567
    assert got[("t_seconds_sum", None)] == 1_234_567.891
    assert "e+" not in text
