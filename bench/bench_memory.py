"""Redis memory per request, for sizing `maxmemory` (docs/deploy.md).

The whole loop as in production: `hitl run` in its own process, the emulator as Slack, a
private redis-server with AOF. N realistic requests (a refund with context, like the demo's)
are pushed and posted as cards; then each is approved by a click. `used_memory` is read after
each phase; the floor beside it is the size of the request JSON itself, which no store can
go below.

    .venv/bin/python -m bench.bench_memory [--n 2000] [--root DIR]

`--root` runs `hitl run` from another checkout (the code before a change, for a before/after).
After each phase it prints MEMORY USAGE per kind of key, per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bench.bench_loop import _wait_healthy
from bot.client import HitlClient
from emulator import Emulator
from tests.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent
SECRET, TOKEN = "0123456789abcdef0123456789abcdef", "xoxb-bench"
POLICY = "triggers:\n  first_use: {enabled: false}\nbatching: {enabled: false}\n"


def request(i: int) -> dict[str, Any]:
    return {
        "agent": "billing-agent", "action": "refund", "id": f"mem-{i}",
        "summary": f"Refund ${100 + i % 400} to customer #{10_000 + i}: charged twice for order #{4711 + i}.",
        "params": {"order": str(4711 + i), "amount": 100 + i % 400, "customer": f"Customer {i}"},
        "editable": ["amount"], "confidence": 0.72,
        "risk": {"amount": 100 + i % 400, "currency": "USD", "reversible": False, "domain": "billing"},
        "context": {"goal": "Resolve a double-charge complaint",
                    "conversation": [{"role": "customer", "text": "I was charged twice for my order!"},
                                     {"role": "agent", "text": "I can see two identical charges."}],
                    "recommendation": "Refund the duplicate charge."},
    }


async def by_key(r: aioredis.Redis, prefix: str, n: int, reply: str | None = None) -> list[tuple[str, float]]:
    """Bytes per request of each kind of key under `prefix` (MEMORY USAGE, every element
    counted: SAMPLES 0), plus the agent's `reply` stream; largest first."""
    kinds: dict[str, int] = {}
    async for key in r.scan_iter(f"{prefix}:*", count=1000):
        rest = key[len(prefix) + 1:]
        kind = f"{prefix}:{rest.split(':', 1)[0]}:<id>" if rest.startswith(("req:", "trail:")) else key
        kinds[kind] = kinds.get(kind, 0) + int(await r.memory_usage(key, samples=0) or 0)
    if reply:
        kinds[reply] = int(await r.memory_usage(reply, samples=0) or 0)
    return sorted(((k, v / n) for k, v in kinds.items()), key=lambda kv: -kv[1])


def print_by_key(rows: list[tuple[str, float]], least: float = 1.0) -> None:
    shown = [(k, v) for k, v in rows if v >= least]
    for key, per in shown:
        print(f"    {per:8,.0f} B  {key}", flush=True)
    print(f"    {sum(v for _, v in shown):8,.0f} B  in all (keys of at least {least:g} B per request; "
          "MEMORY USAGE, so without Redis's own per-key table)", flush=True)


async def sealed(r: aioredis.Redis, prefix: str) -> bool:
    """Whether the audit chain's sealer has caught up (one seal per audit entry is memory too)."""
    head = await r.hget(f"{prefix}:chain:head", "seq")
    return int(head or 0) >= int(await r.xlen(f"{prefix}:audit"))


async def used(r: aioredis.Redis) -> int:
    return int((await r.info("memory"))["used_memory"])


async def until(what: str, check: Any, tries: int = 6000) -> None:
    for _ in range(tries):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


async def main(n: int, root: Path = ROOT) -> None:
    redis = RedisServer()
    redis.start(appendonly=True)
    port = free_port()
    emu = Emulator(signing_secret=SECRET, request_url=f"http://127.0.0.1:{port}/slack/events", bot_token=TOKEN)
    await emu.start()
    policy = Path(redis.dir) / "policy.yml"
    policy.write_text(POLICY)
    env = {**os.environ, "SLACK_BOT_TOKEN": TOKEN, "SLACK_SIGNING_SECRET": SECRET, "SLACK_API_URL": emu.api_url,
           "REDIS_URL": redis.url, "HITL_PORT": str(port), "HITL_HOST": "127.0.0.1", "HITL_POLICY": str(policy),
           "HITL_LOG_LEVEL": "WARNING", "HITL_POST_RATE": "100", "HITL_POST_BURST": "100",
           "PYTHONPATH": str(root)}
    bot = subprocess.Popen([sys.executable, "-m", "bot.cli", "run"], env=env, cwd=root)
    client = HitlClient.from_url(redis.url, name="bench-agent")
    r = aioredis.Redis.from_url(redis.url, decode_responses=True)
    try:
        await _wait_healthy(port)
        before = await used(r)
        floor = 0
        for i in range(n):
            req = request(i)
            floor += len(json.dumps(req).encode())
            await client.request(**req)

        async def posted() -> bool:
            return len(emu.messages("#approvals")) >= n
        await until("every card posted", posted)
        await until("the audit chain sealed", lambda: sealed(r, "hitl"))
        pending = await used(r)
        print("pending, by key:", flush=True)
        print_by_key(await by_key(r, "hitl", n))
        cards = {m["metadata"]["event_payload"]["request_id"]: m["ts"]
                 for m in emu.messages("#approvals") if m.get("metadata")}
        for ts in cards.values():
            await emu.click("U0ALICE", "#approvals", ts, "hitl.approve")

        async def decided() -> bool:
            return int(await r.zcard("hitl:pending")) == 0
        await until("every request decided", decided)
        await until("the audit chain sealed", lambda: sealed(r, "hitl"))
        done = await used(r)
        print("decided, by key (the agent's reply stream is hitl:results:bench-agent):", flush=True)
        print_by_key(await by_key(r, "hitl", n))
        print(f"requests: {n}; request JSON (the floor): {floor / n:,.0f} bytes each", flush=True)
        print(f"pending, card posted:  {(pending - before) / n:8,.0f} bytes per request in Redis "
              f"({(pending - before) / floor:.1f}x the floor)", flush=True)
        print(f"decided and published: {(done - before) / n:8,.0f} bytes per request in Redis "
              f"({(done - before) / floor:.1f}x the floor; record, audit entries, decision "
              "streams, stats)", flush=True)
        print(f"used_memory: {before:,} before, {pending:,} pending, {done:,} decided", flush=True)
    finally:
        await r.aclose()
        await client.close()
        bot.terminate()
        bot.wait(20)
        await emu.stop()
        redis.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--root", type=Path, default=ROOT, help="checkout to run `hitl run` from")
    args = parser.parse_args()
    asyncio.run(main(args.n, args.root.resolve()))
