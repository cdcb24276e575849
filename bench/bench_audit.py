"""Audit evidence: how fast the sealer chains the audit stream, and `verify` over 1,000,000 entries.

In one run, on a private redis-server:
1. a plain one-at-a-time XADD loop: the floor of any single appender;
2. rounds that alternate the bot's intake (real `Intake`, auto-routed requests, no Slack),
   whose audit entries per second are what the sealer must keep up with, and the sealer
   chaining those entries plus 100,000 more (so both see the same, shared, machine);
3. the XRANGE read floor: reading the stream alone, in the sealer's page size;
4. `verify` over a chain of `--verify-n` entries (default 1,000,000; generated, then sealed),
   with signed checkpoints checked.

    .venv/bin/python -m bench.bench_audit [--requests 2000] [--rounds 3] [--verify-n 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bot.evidence.sealer import Sealer
from bot.evidence.signing import NO_KEY, Signer
from bot.evidence.verify import verify_live
from bot.intake import Intake
from bot.policy import PolicyHolder
from store.chain import ChainStore
from store.models import Request
from store.redis_store import Store
from tests.redis_server import RedisServer

POLICY = ("defaults: {tier: low}\ntiers:\n  low: {mode: auto}\n  medium: {mode: auto}\n  high: {mode: auto}\n"
          "triggers:\n  first_use: {enabled: false}\n")


async def intake_rate(store: Store, url: str, n: int, start: int = 0) -> tuple[float, int]:
    """Audit entries per second written by the real intake for n auto-routed requests."""
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        f.write(POLICY)
    holder = PolicyHolder(Path(f.name))
    os.unlink(f.name)
    await store.ensure_group()
    for chunk in range(0, n, 500):
        async with store.redis.pipeline(transaction=False) as p:
            for i in range(chunk, min(n, chunk + 500)):
                req = Request(id=f"b{start + i}", agent="bench", action="refund", summary="Refund $5", params={"amount": 5})
                p.xadd(store.keys.requests, {"request": req.model_dump_json()})
            await p.execute()
    intake = Intake(store, holder, redis_url=url, consumer=f"bench{start}")
    before = await store.redis.xlen(store.keys.audit)
    started = time.perf_counter()
    task = asyncio.create_task(intake.run())
    while intake.processed < n:  # noqa: ASYNC110 (a benchmark polling a counter)
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    intake.stop()
    await task
    await intake.close()
    entries = await store.redis.xlen(store.keys.audit) - before
    return entries / elapsed, entries


async def xadd_floor(store: Store, n: int) -> float:
    key = "bench:floor"
    fields = {"event": "clicked", "request_id": "r1", "actor": "U1", "at": "2026-01-01T00:00:00+00:00",
              "detail": json.dumps({"choice": "approve"})}
    started = time.perf_counter()
    for _ in range(n):
        await store.redis.xadd(key, fields)
    rate = n / (time.perf_counter() - started)
    await store.redis.delete(key)
    return rate


async def synthetic(store: Store, n: int) -> None:
    for chunk in range(0, n, 5000):
        async with store.redis.pipeline(transaction=False) as p:
            for i in range(chunk, min(n, chunk + 5000)):
                p.xadd(store.keys.audit, {"event": "clicked", "request_id": f"r{i % 1000}", "actor": f"U{i % 50}",
                                          "at": "2026-01-01T00:00:00+00:00",
                                          "detail": json.dumps({"choice": "approve", "i": i})})
            await p.execute()


async def read_floor(chain: ChainStore) -> float:
    """Entries/s of just reading the audit stream in sealer-sized pages: no reader is faster."""
    started, n, after = time.perf_counter(), 0, "0-0"
    while rows := await chain.read_after(after, 2000):
        n, after = n + len(rows), rows[-1][0]
    return n / (time.perf_counter() - started)


async def seal_rate(sealer: Sealer) -> tuple[float, int]:
    started = time.perf_counter()
    n = await sealer.seal_all()
    return n / (time.perf_counter() - started), n


async def main(requests: int, verify_n: int, rounds: int) -> None:
    server = RedisServer()
    server.start()
    store = Store.from_url(server.url, "bench")
    try:
        signer = Signer(Ed25519PrivateKey.generate())
        chain = ChainStore(store.redis, "bench")
        sealer = Sealer(chain, signer, owner="bench")
        floor = await xadd_floor(store, 20000)
        print(f"plain XADD floor (1 client): {floor:10,.0f} entries/s")
        # Rounds alternate intake and sealer, so both see the same machine (a shared one varies).
        ratios, n1 = [], 0
        for r in range(rounds):
            intake, written = await intake_rate(store, server.url, requests, start=r * requests)
            await synthetic(store, 100_000)
            rate, n = await seal_rate(sealer)
            n1 += n
            ratios.append(rate / intake)
            print(f"round {r + 1}: intake (real, auto-routed) {intake:8,.0f} audit entries/s ({written:,}); "
                  f"sealer {rate:8,.0f} entries/s ({n:,}) = {rate / intake:.1f}x intake")
        read = await read_floor(chain)
        await sealer.checkpoint(force=True)
        print(f"XRANGE read floor:          {read:10,.0f} entries/s (reading alone, pages of 2000)")
        print(f"median: the sealer keeps up with {statistics.median(ratios):.1f}x the intake's audit rate "
              "(target: >= 10x)")
        n2 = 0
        await synthetic(store, max(0, verify_n - n1 - n2))
        started = time.perf_counter()
        await sealer.seal_all()
        seal_s = time.perf_counter() - started
        await sealer.checkpoint(force=True)
        started = time.perf_counter()
        report = await verify_live(chain, [signer.public], NO_KEY)
        verify_s = time.perf_counter() - started
        print(f"verify: {report.entries:,} entries in {verify_s:.1f}s ({report.entries / verify_s:,.0f} entries/s), "
              f"{len(report.problems)} problems, signed through seq {report.signed_through} "
              f"(sealing them took {seal_s:.1f}s)")
    finally:
        await store.close()
        server.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--verify-n", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    asyncio.run(main(a.requests, a.verify_n, a.rounds))
