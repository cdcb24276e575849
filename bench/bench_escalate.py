"""Time to escalate: from the trigger to the first person notified in Slack.

Two measurements on the real bot, the Slack emulator and a private redis-server:
- handover cards (level 0): from the request reaching the queue (its stream entry's time) to
  the card posted, for requests of kind `escalation`;
- escalation levels: from the level coming due (1s after posting) to its notifications sent
  (a channel post and a DM), for approval requests nobody answers.

Slack's one-message-per-second-per-channel pacing is lifted (the target is "when Slack is not
throttling"); requests arrive at a steady rate. Target: p99 under 1 s (the guides: 10 s).

Run: .venv/bin/python bench/bench_escalate.py [N]   (REDIS_URL to use a running Redis)
"""

from __future__ import annotations

import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.harness import Harness, start, stop
from tests.redis_server import RedisServer

POLICY = """
defaults: {channel: "#approvals"}
tiers:
  low: {mode: auto}
  medium:
    mode: approve
    timeout: 1h
    escalation: [{after: 1s, notify: ["#approvals-leads", "U0DAVE"]}]
  high: {mode: approve}
triggers: {first_use: {enabled: false}}
batching: {enabled: false}
"""
RATE = 20.0  # requests per second


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))]


def report(name: str, seconds: list[float]) -> None:
    ms = [s * 1000 for s in seconds]
    print(f"{name:<34} n={len(ms):<5} p50 {pct(ms, 0.5):7.1f} ms   p99 {pct(ms, 0.99):7.1f} ms"
          f"   max {max(ms):7.1f} ms   mean {statistics.fmean(ms):7.1f} ms")


async def escalated(h: Harness, rid: str, level: int) -> float | None:
    for e in await h.store.trail(rid):
        if e.event == "escalated" and e.detail.get("level") == level:
            return float(e.detail["seconds"])
    return None


async def collect(h: Harness, ids: list[str], level: int, timeout: float) -> list[float]:
    deadline = time.monotonic() + timeout
    found: dict[str, float] = {}
    while len(found) < len(ids) and time.monotonic() < deadline:
        for rid in ids:
            if rid not in found and (s := await escalated(h, rid, level)) is not None:
                found[rid] = s
        await asyncio.sleep(0.1)
    if len(found) < len(ids):
        print(f"  ({len(ids) - len(found)} of {len(ids)} not escalated within {timeout:.0f}s)")
    return list(found.values())


async def push_steadily(h: Harness, n: int, **fields: object) -> list[str]:
    ids = []
    started = time.monotonic()
    for i in range(n):
        ids.append(await h.push(**fields))
        await asyncio.sleep(max(0.0, started + (i + 1) / RATE - time.monotonic()))
    return ids


async def main(n: int) -> None:
    logging.basicConfig(level=logging.WARNING)
    server = None
    url = os.environ.get("REDIS_URL")
    if not url:
        server = RedisServer()
        server.start()
        url = server.url
    with tempfile.TemporaryDirectory() as tmp:
        policy = Path(tmp) / "policy.yml"
        policy.write_text(POLICY)
        h = await start(url, policy=policy)
        try:
            await h.store.redis.flushdb()
            delivery = h.bot.delivery
            if hasattr(delivery, "post_rate"):  # not throttling: the pipeline's own latency
                delivery.post_rate, delivery.post_burst = 10_000.0, 10_000.0
            print(f"time to escalate, {n} requests per measurement at {RATE:.0f}/s")
            handovers = await push_steadily(h, n, kind="escalation", action="handover",
                                            summary="The customer asked for a person")
            report("handover card posted (level 0)", await collect(h, handovers, 0, 60))
            approvals = await push_steadily(h, n, action="refund", summary="Refund $40")
            report("escalation level 1 notified", await collect(h, approvals, 1, 60))
        finally:
            await stop(h)
            if server is not None:
                server.stop()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200))
