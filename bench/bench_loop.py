"""Core-loop latency: request -> card posted, and click -> decision in the waiting agent's hands.

Topology as in production: `hitl run` in its own process; Slack (the emulator) and the agent
(the Python client, blocked in `wait`) in this one; a private redis-server.

    .venv/bin/python -m bench.bench_loop [--n 1000]

Beside each, its floor measured in the same run: for request -> card, a one-process relay
(XREADGROUP, then chat.postMessage over a kept-alive connection); for click -> agent, an XADD
waking an XREAD blocked on another connection (and the same with an HTTP hop in front).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

from bot.client import HitlClient
from emulator import Emulator
from tests import procs
from tests.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent
SECRET, TOKEN = "bench-secret", "xoxb-bench"
SPACING_S = 0.011  # HITL_POST_RATE=100 below: 100 posts in 1,020 ms (the slots' 20 ms margin), one per 10.2 ms
POLICY = "triggers:\n  first_use: {enabled: false}\nbatching:\n  enabled: false\n"  # one card per request: latency


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def report(name: str, ms: list[float]) -> None:
    print(f"{name:<34} n={len(ms):<5} p50={pct(ms, 50):7.2f} ms  p90={pct(ms, 90):7.2f} ms  "
          f"p99={pct(ms, 99):7.2f} ms  mean={statistics.fmean(ms):7.2f} ms", flush=True)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds so far of process `pid` and its live children (`hitl run`'s
    housekeeping process: bot.housekeeping), from Linux /proc (0 elsewhere): a steadier figure
    than latency on a shared machine."""
    return procs.cpu_s(pid)


def machine() -> str:
    """The load average and core count, printed at the start of a run (the machine is shared)."""
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return f"{os.cpu_count()} cores"
    return f"load average {one:.2f} (1 min) {five:.2f} (5 min), {os.cpu_count()} cores"


def verdict(name: str, figure: float, target: float, unit: str = "ms") -> None:
    """One line: a figure beside its target, and whether it is met."""
    print(f"target: {name} < {target:g} {unit}: {figure:.2f} {unit} -> {'met' if figure < target else 'NOT met'}",
          flush=True)


async def main(n: int, root: Path = ROOT) -> None:
    redis = RedisServer()
    redis.start()
    port = free_port()
    emu = Emulator(signing_secret=SECRET, request_url=f"http://127.0.0.1:{port}/slack/events", bot_token=TOKEN)
    await emu.start()
    policy = Path(redis.dir) / "policy.yml"
    policy.write_text(POLICY)
    env = {**os.environ, "SLACK_BOT_TOKEN": TOKEN, "SLACK_SIGNING_SECRET": SECRET, "SLACK_API_URL": emu.api_url,
           "REDIS_URL": redis.url, "HITL_PORT": str(port), "HITL_HOST": "127.0.0.1", "HITL_POLICY": str(policy),
           "HITL_LOG_LEVEL": "WARNING", "PYTHONPATH": str(root),
           # latency with Slack not throttling: pacing (1 post/s/channel) has bench_burst
           "HITL_POST_RATE": "100", "HITL_POST_BURST": "100"}
    bot = subprocess.Popen([sys.executable, "-m", "bot.cli", "run"], env=env, cwd=root)
    client = HitlClient.from_url(redis.url, name="bench-agent")
    try:
        await _wait_healthy(port)
        # request -> card posted (one at a time: latency, not throughput)
        to_card: list[float] = []
        ids = []
        for i in range(n):
            rid = f"bench-{i}"
            t0 = time.time()
            await client.request(agent="bench", action="refund", summary=f"Refund #{i}", id=rid,
                                 params={"amount": 10 + i})
            call = await _card_call(emu, rid, t0)
            to_card.append((call - t0) * 1000)
            ids.append(rid)
            # one request per SPACING_S: under the 100 posts a second the bot is set to, so what is
            # timed is the path to the card, not a wait for the channel's posting slot
            await asyncio.sleep(max(0.0, t0 + SPACING_S - time.time()))
        report("request -> card posted", to_card)
        relay = await relay_floor(redis.url, emu, n)
        report("floor: a one-process relay", relay)
        print(f"request -> card over the relay floor: p50 {pct(to_card, 50) / pct(relay, 50):.1f}x, "
              f"p99 {pct(to_card, 99) / pct(relay, 99):.1f}x", flush=True)
        verdict("request -> card p99 over the relay floor's (issue 13)", pct(to_card, 99) / pct(relay, 99), 2.0, "x")
        # click -> decision in the waiting agent's hands
        to_agent: list[float] = []
        channel = emu.messages("#approvals")
        by_id = {m["metadata"]["event_payload"]["request_id"]: m["ts"] for m in channel if m.get("metadata")}
        for rid in ids:
            waiting = asyncio.create_task(client.wait(rid, timeout=30))
            await asyncio.sleep(0)  # the agent is blocked in XREAD before the click
            t0 = time.perf_counter()
            done = asyncio.get_running_loop().create_future()
            waiting.add_done_callback(lambda _t, f=done: f.done() or f.set_result(time.perf_counter()))
            await emu.click("U0ALICE", "#approvals", by_id[rid], "hitl.approve")
            t1 = await done
            assert (await waiting).status.value == "approved"
            to_agent.append((t1 - t0) * 1000)
        report("click -> decision in the agent", to_agent)
        acks = [r.elapsed * 1000 for r in emu.sent if r.kind == "block_actions"]
        if acks:
            report("click -> HTTP ack to Slack", acks)
        floor = await xread_floor(redis.url, n)
        report("floor: XADD wakes a blocked XREAD", floor)
        report("floor + an HTTP hop (POST -> XADD)", await http_floor(redis.url, n))
        print(f"click -> agent over the floor: p50 {pct(to_agent, 50) / pct(floor, 50):.1f}x, "
              f"p99 {pct(to_agent, 99) / pct(floor, 99):.1f}x", flush=True)
    finally:
        await client.close()
        bot.terminate()
        bot.wait(20)
        await emu.stop()
        redis.stop()


async def relay_floor(url: str, emu: Emulator, n: int) -> list[float]:
    """The floor of request -> card: a relay in its own process that reads the request with
    XREADGROUP and POSTs chat.postMessage over one kept-alive connection, then XACKs; timed from
    the XADD to the emulator's receipt of the post, as the bot's cards are, in the same run."""
    import json

    import redis.asyncio as aioredis

    out: list[float] = []
    async with _floor_server(_RELAY_FLOOR, url, emu.api_url, TOKEN), \
            aioredis.Redis.from_url(url, decode_responses=True) as writer:
        for _ in range(600):  # its group is there: it reads
            groups = await writer.xinfo_groups("floor:relay") if await writer.exists("floor:relay") else []
            if any(g["consumers"] for g in groups):
                break
            await asyncio.sleep(0.05)
        for i in range(n):
            rid = f"relay-{i}"
            t0 = time.time()
            await writer.xadd("floor:relay", {"request": json.dumps({"id": rid, "summary": f"Refund #{i}"})})
            out.append((await _card_call(emu, rid, t0) - t0) * 1000)
    return out


@contextlib.asynccontextmanager
async def _floor_server(code: str, *args: str) -> AsyncIterator[None]:
    """`code` run by Python in its own process (a floor's other end) for the block's duration."""
    server = subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT)
    try:
        yield
    finally:
        server.terminate()
        server.wait(10)


_RELAY_FLOOR = """
import asyncio, json, sys, aiohttp, redis.asyncio as aioredis
async def main(url, api, token):
    r = aioredis.Redis.from_url(url, decode_responses=True)
    await r.xgroup_create("floor:relay", "relay", id="$", mkstream=True)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as s:
        while True:
            for _, entries in await r.xreadgroup("relay", "c", {"floor:relay": ">"}, count=10, block=1000) or []:
                for entry_id, fields in entries:
                    req = json.loads(fields["request"])
                    body = {"channel": "#approvals", "text": req["summary"], "metadata": {
                        "event_type": "hitl_request", "event_payload": {"request_id": req["id"]}}}
                    async with s.post(api.rstrip("/") + "/chat.postMessage", json=body) as resp:
                        await resp.read()
                    await r.xack("floor:relay", "relay", entry_id)
asyncio.run(main(*sys.argv[1:4]))
"""


async def xread_floor(url: str, n: int) -> list[float]:
    """The floor of click -> agent: an XADD from one connection waking an XREAD blocked on
    another (as the agent's client is), timed the same way as the click, in the same run."""
    import redis.asyncio as aioredis

    writer = aioredis.Redis.from_url(url, decode_responses=True)
    reader = aioredis.Redis.from_url(url, decode_responses=True)
    out = []
    try:
        last = "0-0"
        for i in range(n):
            waiting = asyncio.create_task(reader.xread({"floor:wake": last}, block=30_000, count=1))
            await asyncio.sleep(0.001)  # the reader is blocked before the write
            t0 = time.perf_counter()
            done = asyncio.get_running_loop().create_future()
            waiting.add_done_callback(lambda _t, f=done: f.done() or f.set_result(time.perf_counter()))
            await writer.xadd("floor:wake", {"decision": f"{i}"})
            t1 = await done
            last = (await waiting)[0][1][0][0]
            out.append((t1 - t0) * 1000)
    finally:
        await writer.aclose()
        await reader.aclose()
    return out


async def http_floor(url: str, n: int) -> list[float]:
    """The XADD floor with an HTTP hop in front, as a click has: a POST to a bare aiohttp
    server in its own process that XADDs and answers, waking the XREAD here."""
    import aiohttp
    import redis.asyncio as aioredis

    port = free_port()
    out: list[float] = []
    async with _floor_server(_HTTP_FLOOR, url, str(port)), \
            aioredis.Redis.from_url(url, decode_responses=True) as reader, aiohttp.ClientSession() as s:
        for _ in range(300):
            try:
                async with s.post(f"http://127.0.0.1:{port}/", data=b"warm"):
                    break
            except aiohttp.ClientError:
                await asyncio.sleep(0.05)
        last = (await reader.xrevrange("floor:http", count=1))[0][0]
        for _ in range(n):
            waiting = asyncio.create_task(reader.xread({"floor:http": last}, block=30_000, count=1))
            await asyncio.sleep(0.001)
            t0 = time.perf_counter()
            done = asyncio.get_running_loop().create_future()
            waiting.add_done_callback(lambda _t, f=done: f.done() or f.set_result(time.perf_counter()))
            async with s.post(f"http://127.0.0.1:{port}/", data=b"payload=click") as r:
                await r.read()
            t1 = await done
            last = (await waiting)[0][1][0][0]
            out.append((t1 - t0) * 1000)
    return out


_HTTP_FLOOR = """
import sys, redis.asyncio as aioredis
from aiohttp import web
r = aioredis.Redis.from_url(sys.argv[1])
async def hit(request):
    await r.xadd("floor:http", {"decision": await request.read()})
    return web.Response(text="")
app = web.Application()
app.router.add_post("/", hit)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), print=None)
"""


async def _wait_healthy(port: int) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as s:
        for _ in range(300):
            try:
                async with s.get(f"http://127.0.0.1:{port}/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise SystemExit("the bot did not become healthy")


async def _card_call(emu: Emulator, rid: str, since: float) -> float:
    """When the emulator received the card of `rid`, pushed at `since` (calls are in arrival
    order: the scan stops at the first call older than the push)."""
    for _ in range(10_000):
        for call in reversed(emu.calls_to("chat.postMessage")):
            if call.at < since:
                break
            meta = call.args.get("metadata") or {}
            if isinstance(meta, dict) and (meta.get("event_payload") or {}).get("request_id") == rid:
                return call.at
        await asyncio.sleep(0.0005)
    raise SystemExit(f"no card for {rid}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--root", type=Path, default=ROOT, help="checkout to run `hitl run` from (a before/after)")
    args = parser.parse_args()
    asyncio.run(main(args.n, args.root.resolve()))
