"""Stats: projector throughput (audit events counted per second) and the cost of a report.

Writes a synthetic history straight into the audit stream (a day's worth of requests, each
received, routed, posted, clicked, decided, published), counts it with the real projector,
then times `/hitl stats` windows. The report's time depends on the window, not on history:
it is timed again after ten times more history.

    .venv/bin/python -m bench.bench_stats [--requests 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

from bot.stats import StatsProjector
from store.redis_store import Store
from store.stats import StatsStore
from tests.redis_server import RedisServer


async def history(store: Store, n: int, start: datetime, span_s: float) -> None:
    r = store.redis
    for chunk in range(0, n, 500):
        async with r.pipeline(transaction=False) as p:
            for i in range(chunk, min(n, chunk + 500)):
                rid = f"b{start.timestamp():.0f}-{i}"
                created = start + timedelta(seconds=span_s * i / n)
                posted, clicked = created + timedelta(seconds=2), created + timedelta(seconds=40 + i % 300)
                p.hset(store.keys.request(rid), mapping={
                    "created_at": int(created.timestamp() * 1000), "posted_at": int(posted.timestamp() * 1000),
                    "route": json.dumps({"mode": "approve"}), "changes": "{}",
                    "request": json.dumps({"agent": f"agent{i % 7}", "action": f"act{i % 13}",
                                           "summary": "Refund the duplicate charge " * 5})})
                for event, at, actor, detail in (
                        ("received", created, f"agent{i % 7}", {"action": f"act{i % 13}"}),
                        ("routed", created, "policy", {"mode": "approve", "tier": "medium"}),
                        ("posted", posted, "system", {"channel": "C1"}),
                        ("clicked", clicked, f"U{i % 20:05d}", {"choice": "approve"}),
                        ("decided", clicked, "system", {"status": "approved"}),
                        ("published", clicked, "system", {})):
                    p.xadd(store.keys.audit, {"event": event, "request_id": rid, "actor": actor,
                                              "at": at.isoformat(), "detail": json.dumps(detail)})
            await p.execute()


async def count(store: Store, url: str) -> tuple[int, float]:
    projector = StatsProjector(store, redis_url=url, consumer="bench")
    await projector.ensure_group()
    started, n = time.perf_counter(), 0
    while got := await projector.read(">", block_ms=None):
        n += got
    await projector.close()
    return n, time.perf_counter() - started


async def time_reports(store: Store) -> None:
    stats, now = StatsStore(store.redis, store.keys), datetime.now(UTC).timestamp()
    for hours in (24, 168, 720):
        runs = []
        for _ in range(5):
            started = time.perf_counter()
            await stats.report(hours, now)
            runs.append((time.perf_counter() - started) * 1000)
        print(f"  report {hours:>3}h: best {min(runs):6.1f} ms, median {sorted(runs)[2]:6.1f} ms")


async def main(requests: int) -> None:
    server = RedisServer()
    server.start()
    store = Store.from_url(server.url)
    try:
        now = datetime.now(UTC)
        await history(store, requests, now - timedelta(days=1), 86400)
        n, took = await count(store, server.url)
        print(f"projector: {n} audit events in {took:.2f}s = {n / took:,.0f} events/s")
        await time_reports(store)
        await history(store, requests * 10, now - timedelta(days=30), 29 * 86400)
        n, took = await count(store, server.url)
        print(f"after {n} more events ({took:.1f}s, {n / took:,.0f} events/s):")
        await time_reports(store)
    finally:
        await store.close()
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20000)
    asyncio.run(main(parser.parse_args().requests))
