"""Auto-routed intake throughput, CPU and Redis memory per request, beside the floor.

The floor is a plain redis-py consumer-group loop (XREADGROUP of 100, then XADD of a reply
and XACK per entry), run as its own process, on a stream of its own in the same private
redis-server, in the same run. Each round starts the consumers (one or two processes), pushes
N requests in one pipelined burst and times until every reply is there; CPU is the consumer
processes' user + system time (and redis-server's, from INFO) over the round, divided by N; for
`hitl run` the round's CPU runs on until its housekeeping process has sealed the audit trail and
counted the stats of those requests, and includes that process.

    .venv/bin/python -m bench.bench_intake [--n 10000] [--root DIR]

`--root` runs `hitl run` from another checkout (the code before a change, for a before/after).
Memory: INFO used_memory after minus before a round of auto-routed requests (N), and of
requests waiting for approval (--pending, cards posted to the emulator), after the requests
stream is trimmed (acknowledged entries are dropped by every consumer alike).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis.asyncio as aioredis

from bench.bench_loop import cpu_s
from bench.bench_memory import by_key, print_by_key, sealed
from emulator import Emulator
from tests.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent
SECRET, TOKEN = "bench-secret", "xoxb-bench"
AUTO = """
defaults: {tier: low}
tiers:
  low: {mode: auto, sample: 0}
  medium: {mode: approve}
  high: {mode: approve}
triggers:
  first_use: {enabled: false}
batching: {enabled: false}
"""
APPROVE = AUTO.replace("low: {mode: auto, sample: 0}", "low: {mode: approve}")  # every request waits for a person
FLOOR_STREAM, FLOOR_GROUP, REPLY = "floor:requests", "floor", "bench:replies"


def request(i: int, tag: str) -> str:
    return json.dumps({"id": f"{tag}-{i}", "agent": "billing-agent", "action": "lookup_order",
                       "summary": f"Look up order #{4000 + i} for the customer", "params": {"order": 4000 + i},
                       "confidence": 0.93, "reply_to": REPLY})


# ---- the floor consumer (run as `python -m bench.bench_intake --floor URL NAME`) -------------

async def floor_consumer(url: str, name: str) -> None:
    r = aioredis.Redis.from_url(url, decode_responses=True)
    while True:
        rows = await r.xreadgroup(FLOOR_GROUP, name, {FLOOR_STREAM: ">"}, count=100, block=1000)
        for _, entries in rows or []:
            for entry_id, fields in entries:
                req = json.loads(fields["request"])
                await r.xadd(REPLY, {"request_id": req["id"], "decision": json.dumps(
                    {"request_id": req["id"], "status": "auto_approved"})})
                await r.xack(FLOOR_STREAM, FLOOR_GROUP, entry_id)


# ---- the benchmark ------------------------------------------------------------------------------

async def redis_cpu(r: aioredis.Redis) -> float:
    info = await r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


class Bench:
    def __init__(self, n: int, root: Path) -> None:
        self.n, self.root = n, root
        self.redis = RedisServer()
        self.redis.start()
        self.r = aioredis.Redis.from_url(self.redis.url, decode_responses=True)
        self.emu: Emulator | None = None
        self.round = 0

    async def close(self) -> None:
        await self.r.aclose()
        if self.emu:
            await self.emu.stop()
        self.redis.stop()

    async def _drain(self, procs: list[subprocess.Popen[bytes]], key: str, count: int, t0: float,
                     cpu0: float, rcpu0: float, prefix: str | None) -> tuple[float, float, float]:
        while await self.r.xlen(key) < count:
            if any(p.poll() is not None for p in procs):
                raise SystemExit("a consumer exited")
            await asyncio.sleep(0.002)
        took = time.perf_counter() - t0
        if prefix is not None:  # hitl: CPU until its housekeeping (sealer, stats) has caught up too
            t1 = time.perf_counter()
            while True:
                if await sealed(self.r, prefix) and await self._counted(prefix):
                    break
                await asyncio.sleep(0.01)
            print(f"  (all {count} replies after {took:.2f} s; audit sealed and stats counted "
                  f"{time.perf_counter() - t1:.2f} s later: CPU below counts that too)", flush=True)
        cpu = sum(cpu_s(p.pid) for p in procs) - cpu0
        return self.n / took, cpu / self.n * 1000, (await redis_cpu(self.r) - rcpu0) / self.n * 1000

    async def _counted(self, prefix: str) -> bool:
        return sum(int(g.get("lag") or 0) + int(g.get("pending") or 0)
                   for g in await self.r.xinfo_groups(f"{prefix}:audit")) == 0

    async def floor(self, consumers: int) -> tuple[float, float, float]:
        await self.r.delete(FLOOR_STREAM, REPLY)
        await self.r.xgroup_create(FLOOR_STREAM, FLOOR_GROUP, id="0", mkstream=True)
        procs = [subprocess.Popen([sys.executable, "-m", "bench.bench_intake", "--floor", self.redis.url, f"f{i}"],
                                  cwd=ROOT) for i in range(consumers)]
        try:
            await asyncio.sleep(1.0)  # started and blocked in XREADGROUP
            return await self._push_and_drain(procs, FLOOR_STREAM, "floor", None)
        finally:
            for p in procs:
                p.terminate()
                p.wait(10)

    async def _push_and_drain(self, procs: list[subprocess.Popen[bytes]], stream: str,
                              tag: str, prefix: str | None) -> tuple[float, float, float]:
        self.round += 1
        cpu0 = sum(cpu_s(p.pid) for p in procs)
        rcpu0 = await redis_cpu(self.r)
        t0 = time.perf_counter()
        async with self.r.pipeline(transaction=False) as p:
            for i in range(self.n):
                p.xadd(stream, {"request": request(i, f"{tag}{self.round}")})
            await p.execute()
        return await self._drain(procs, REPLY, self.n, t0, cpu0, rcpu0, prefix)

    def _bots(self, count: int, policy: str, prefix: str) -> list[subprocess.Popen[bytes]]:
        path = Path(self.redis.dir) / f"policy-{prefix}.yml"
        path.write_text(policy)
        assert self.emu is not None
        procs = []
        for i in range(count):
            env = {**os.environ, "SLACK_BOT_TOKEN": TOKEN, "SLACK_SIGNING_SECRET": SECRET,
                   "SLACK_API_URL": self.emu.api_url, "REDIS_URL": self.redis.url, "HITL_PORT": str(free_port()),
                   "HITL_HOST": "127.0.0.1", "HITL_POLICY": str(path), "HITL_LOG_LEVEL": "WARNING",
                   "HITL_PREFIX": prefix, "HITL_CONSUMER": f"replica-{i}", "PYTHONPATH": str(self.root),
                   "HITL_POST_RATE": "100", "HITL_POST_BURST": "100"}
            procs.append(subprocess.Popen([sys.executable, "-m", "bot.cli", "run"], env=env, cwd=self.root))
        return procs

    async def _start_emulator(self) -> None:
        if self.emu is None:
            self.emu = Emulator(signing_secret=SECRET, request_url="http://127.0.0.1:9/unused", bot_token=TOKEN)
            await self.emu.start()

    async def hitl(self, replicas: int) -> tuple[float, float, float]:
        await self._start_emulator()
        prefix = f"b{self.round + 1}"
        await self.r.delete(REPLY)
        procs = self._bots(replicas, AUTO, prefix)
        try:
            await self._wait_groups(f"{prefix}:requests", replicas)
            await asyncio.sleep(1.0)  # every replica's start-up work done
            return await self._push_and_drain(procs, f"{prefix}:requests", prefix, prefix)
        finally:
            await self._stop(procs)

    async def _wait_groups(self, stream: str, consumers: int) -> None:
        for _ in range(600):
            try:
                groups = await self.r.xinfo_groups(stream)
                if any(g["name"] == "hitl" and g["consumers"] >= consumers for g in groups):
                    return
            except aioredis.ResponseError:
                pass
            await asyncio.sleep(0.05)
        raise SystemExit("hitl run did not start reading")

    async def _stop(self, procs: list[subprocess.Popen[bytes]]) -> None:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(30)

    async def memory(self, policy: str, n: int, tag: str) -> float:
        """Bytes of Redis memory per request left after `n` requests (requests stream trimmed)."""
        await self._start_emulator()
        prefix = f"m{tag}"
        procs = self._bots(1, policy, prefix)
        try:
            await self._wait_groups(f"{prefix}:requests", 1)
            await asyncio.sleep(1.0)
            await self.r.delete(REPLY)
            before = await self._used()
            async with self.r.pipeline(transaction=False) as p:
                for i in range(n):
                    p.xadd(f"{prefix}:requests", {"request": request(i, tag)})
                await p.execute()
            while True:  # decided (auto) or on a posted card (approve), and counted by stats
                done = await self.r.xlen(REPLY) if policy is AUTO else await self._posted(prefix, tag, n)
                lag = sum(int(g.get("lag") or 0) + int(g.get("pending") or 0)
                          for g in await self.r.xinfo_groups(f"{prefix}:audit"))
                outbox = await self.r.zcard(f"{prefix}:outbox")
                if done >= n and lag == 0 and outbox == 0 and await sealed(self.r, prefix):
                    break
                await asyncio.sleep(0.05)
            await self.r.xtrim(f"{prefix}:requests", maxlen=0)
            per = (await self._used() - before) / n
            print_by_key(await by_key(self.r, prefix, n, REPLY if policy is AUTO else None))
            return per
        finally:
            await self._stop(procs)

    async def _posted(self, prefix: str, tag: str, n: int) -> int:
        """Requests whose card is on Slack (the record has the card's `ts`)."""
        async with self.r.pipeline(transaction=False) as p:
            for i in range(n):
                p.hexists(f"{prefix}:req:{tag}-{i}", "ts")
            return sum(map(bool, await p.execute()))

    async def _used(self) -> int:
        await asyncio.sleep(0.2)
        return int((await self.r.info("memory"))["used_memory"])


def line(name: str, rate: float, cpu: float, rcpu: float, floor: tuple[float, float, float] | None = None) -> None:
    extra = ""
    if floor:
        extra = f"   = {rate / floor[0]:.2f} of the floor's rate, CPU {cpu / floor[1]:.1f}x the floor's"
    print(f"{name:<28} {rate:8.0f} req/s   consumer CPU {cpu:5.2f} ms/req   redis CPU {rcpu:5.2f} ms/req{extra}",
          flush=True)


async def main(n: int, root: Path, pending: int) -> None:
    b = Bench(n, root)
    try:
        f1 = await b.floor(1)
        line("floor, 1 consumer", *f1)
        h1 = await b.hitl(1)
        line("hitl run, 1 replica", *h1, floor=f1)
        f2 = await b.floor(2)
        line("floor, 2 consumers", *f2)
        h2 = await b.hitl(2)
        line("hitl run, 2 replicas", *h2, floor=f2)
        floor_gain, hitl_gain = f2[0] / f1[0] - 1, h2[0] / h1[0] - 1
        print(f"gain of a second consumer: floor +{floor_gain:.0%}, hitl +{hitl_gain:.0%} "
              f"(= {hitl_gain / floor_gain if floor_gain > 0 else float('nan'):.2f} of the floor's gain)")
        auto = await b.memory(AUTO, n, "auto")
        print(f"Redis memory per auto-routed request: {auto:7.0f} B (requests stream trimmed)")
        if pending:
            waiting = await b.memory(APPROVE, pending, "pending")
            print(f"Redis memory per pending approval:    {waiting:7.0f} B (card posted, {pending} requests)")
        floor_mem = await floor_memory(b, n)
        print(f"floor: Redis memory per request:      {floor_mem:7.0f} B (its reply, same trimming)")
    finally:
        await b.close()


async def floor_memory(b: Bench, n: int) -> float:
    await b.r.delete(FLOOR_STREAM, REPLY)
    await b.r.xgroup_create(FLOOR_STREAM, FLOOR_GROUP, id="0", mkstream=True)
    before = await b._used()
    procs = [subprocess.Popen([sys.executable, "-m", "bench.bench_intake", "--floor", b.redis.url, "fm"], cwd=ROOT)]
    try:
        await b._push_and_drain(procs, FLOOR_STREAM, "floormem", None)
    finally:
        procs[0].terminate()
        procs[0].wait(10)
    await b.r.xtrim(FLOOR_STREAM, maxlen=0)
    return (await b._used() - before) / n


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--pending", type=int, default=1000, help="requests for the pending-approval memory figure")
    parser.add_argument("--root", type=Path, default=ROOT, help="checkout to run `hitl run` from")
    parser.add_argument("--floor", nargs=2, metavar=("URL", "NAME"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor:
        asyncio.run(floor_consumer(*args.floor))
    else:
        asyncio.run(main(args.n, args.root.resolve(), args.pending))
