"""Agent SDK overhead: `@require_approval` on an auto-approved call, and the MCP tool's round trip.

Topology as in production: `hitl run` in its own process (policy: the action is auto-approved),
the agent in this one, a private redis-server. Beside each figure, floors measured in the same
run on the same Redis: a plain XADD seen by a blocking XREAD (one hop), and a plain echo round
trip of the SDK's shape (XADD -> a consumer's blocking XREADGROUP -> XADD reply -> the agent's
blocking XREAD), done with redis-py and no hitl code, and the bot's own auto round trip driven by
raw redis-py (what the SDK adds is the decorator's figure minus this one).

    .venv/bin/python -m bench.bench_sdk [--n 500] [--mcp 200]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from hitl import AsyncClient, Client, require_approval
from redis.exceptions import ResponseError

from bench.bench_loop import SECRET, TOKEN, _wait_healthy, cpu_s, machine, pct, report, verdict
from emulator import Emulator
from tests.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent
PACED_S = 0.01
POLICY = ("tiers:\n  low: {mode: auto, sample: 0}\n  medium: {mode: approve}\n  high: {mode: approve}\n"
          "triggers:\n  first_use: {enabled: false}\n")


def _pythonpath(root: Path) -> str:
    """The bot's import path for a checkout: it, and its SDK when it has one."""
    return os.pathsep.join(str(p) for p in (root, root / "sdk") if p.is_dir())


async def floor_one_hop(url: str, n: int) -> list[float]:
    """XADD, and the time until a reader blocked in XREAD has it."""
    writer, reader = aioredis.Redis.from_url(url), aioredis.Redis.from_url(url)
    out = []
    try:
        last = "0-0"  # a new stream: not "$", which misses the XADD when the first XREAD is sent after it
        for i in range(n):
            read = asyncio.create_task(reader.xread({"floor:one": last}, block=5000, count=1))
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            t0 = time.perf_counter()
            await writer.xadd("floor:one", {"i": i})
            rows = await read
            out.append((time.perf_counter() - t0) * 1000)
            last = rows[0][1][0][0]
    finally:
        await writer.aclose()
        await reader.aclose()
    return out


async def floor_echo(url: str, n: int, gap_s: float = 0.0) -> list[float]:
    """The SDK's shape with plain redis-py: XADD request -> XREADGROUP consumer -> XADD reply -> XREAD
    (`gap_s` apart: the paced series' floor)."""
    agent, blocking, consumer = (aioredis.Redis.from_url(url, decode_responses=True) for _ in range(3))
    with contextlib.suppress(ResponseError):  # made by an earlier series
        await consumer.xgroup_create("floor:req", "g", id="$", mkstream=True)
    stop = asyncio.Event()

    async def echo() -> None:
        while not stop.is_set():
            rows = await consumer.xreadgroup("g", "c", {"floor:req": ">"}, count=10, block=200)
            for _, entries in rows or []:
                for entry_id, fields in entries:
                    await consumer.xadd("floor:reply", {"request_id": fields["id"], "decision": "{}"})
                    await consumer.xack("floor:req", "g", entry_id)

    task = asyncio.create_task(echo())
    out = []
    try:
        for i in range(n):
            t0 = time.perf_counter()
            last = (await agent.xrevrange("floor:reply", count=1) or [("0-0", None)])[0][0]
            await agent.xadd("floor:req", {"id": str(i), "request": json.dumps({"summary": "x" * 80})})
            while True:
                rows = await blocking.xread({"floor:reply": last}, block=5000, count=10)
                hit = False
                for _, entries in rows or []:
                    for entry_id, fields in entries:
                        last = entry_id
                        hit = hit or fields["request_id"] == str(i)
                if hit:
                    break
            out.append((time.perf_counter() - t0) * 1000)
            if gap_s:
                await asyncio.sleep(gap_s)
    finally:
        stop.set()
        await task
        for c in (agent, blocking, consumer):
            await c.aclose()
    return out


async def raw_hitl(url: str, n: int) -> list[float]:
    """The bot's own auto round trip without the SDK: XADD a request JSON, blocking XREAD its decision."""
    agent, blocking = (aioredis.Redis.from_url(url, decode_responses=True) for _ in range(2))
    out = []
    try:
        for i in range(n):
            t0 = time.perf_counter()
            last = (await agent.xrevrange("hitl:results:raw", count=1) or [("0-0", None)])[0][0]
            request = {"id": f"raw-{i}", "agent": "bench", "action": "lookup_order", "summary": f"Look up {i}",
                       "params": {"order": f"R-{i}"}, "reply_to": "hitl:results:raw"}
            await agent.xadd("hitl:requests", {"request": json.dumps(request)})
            done = False
            while not done:
                rows = await blocking.xread({"hitl:results:raw": last}, block=5000, count=10)
                for _, entries in rows or []:
                    for entry_id, fields in entries:
                        last = entry_id
                        done = done or fields.get("request_id") == f"raw-{i}"
            out.append((time.perf_counter() - t0) * 1000)
    finally:
        await agent.aclose()
        await blocking.aclose()
    return out


async def decorated(url: str, n: int) -> tuple[list[float], list[float], list[float]]:
    """Per call: plain function, async decorated (AsyncClient), sync decorated (Client, in a thread)."""
    async with AsyncClient.from_url(url, agent="bench") as aclient:
        sync_client = await asyncio.to_thread(Client, url, agent="bench")

        async def plain_lookup(order: str) -> str:
            return order

        async_lookup = require_approval(action="lookup_order", client=aclient)(plain_lookup)

        def plain_sync(order: str) -> str:
            return order

        sync_lookup = require_approval(action="lookup_order", client=sync_client)(plain_sync)

        def sync_series() -> list[float]:
            out = []
            for i in range(n):
                t0 = time.perf_counter()
                sync_lookup(f"S-{i}")
                out.append((time.perf_counter() - t0) * 1000)
            return out

        try:
            plain, timed = [], []
            for i in range(n):
                t0 = time.perf_counter()
                await plain_lookup(f"P-{i}")
                plain.append((time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                await async_lookup(f"A-{i}")
                timed.append((time.perf_counter() - t0) * 1000)
            return plain, timed, await asyncio.to_thread(sync_series)
        finally:
            await asyncio.to_thread(sync_client.close)


async def paced(url: str, n: int, gap_s: float) -> list[float]:
    """`@require_approval` (async), one call every `gap_s`: an agent that thinks between its tool
    calls. Every process then sleeps between calls, and each call starts on cold CPUs."""
    async with AsyncClient.from_url(url, agent="bench") as client:
        @require_approval(action="lookup_order", client=client)
        async def lookup(order: str) -> str:
            return order

        out = []
        for i in range(n):
            t0 = time.perf_counter()
            await lookup(f"G-{i}")
            out.append((time.perf_counter() - t0) * 1000)
            await asyncio.sleep(gap_s)
        return out


async def mcp_round_trips(env: dict[str, str], n: int, transport: str) -> list[float]:
    from mcp import Client as McpClient
    from mcp.client.stdio import StdioServerParameters

    proc = None
    if transport == "stdio":
        server: Any = StdioServerParameters(command=sys.executable, args=["-m", "hitl", "mcp"], env=env)
    else:
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "hitl", "mcp", "--transport", "http", "--port", str(port)],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        server = f"http://127.0.0.1:{port}/mcp"
        await _wait_port(port)
    out = []
    try:
        async with McpClient(server) as client:
            for i in range(n):
                t0 = time.perf_counter()
                result = await client.call_tool("request_approval", {"action": "lookup_order",
                                                                     "summary": f"Look up order {i}"})
                out.append((time.perf_counter() - t0) * 1000)
                assert '"auto_approved"' in result.content[0].text, result  # type: ignore[union-attr]
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
    return out


async def _wait_port(port: int) -> None:
    for _ in range(600):
        with contextlib.suppress(OSError):
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        await asyncio.sleep(0.05)
    raise SystemExit("the MCP server did not start")


async def main(n: int, n_mcp: int, root: Path = ROOT) -> None:
    redis = RedisServer()
    redis.start()
    port = free_port()
    emu = Emulator(signing_secret=SECRET, request_url=f"http://127.0.0.1:{port}/slack/events", bot_token=TOKEN)
    await emu.start()
    policy = Path(redis.dir) / "policy.yml"
    policy.write_text(POLICY)
    env = {**os.environ, "SLACK_BOT_TOKEN": TOKEN, "SLACK_SIGNING_SECRET": SECRET, "SLACK_API_URL": emu.api_url,
           "REDIS_URL": redis.url, "HITL_PORT": str(port), "HITL_HOST": "127.0.0.1", "HITL_POLICY": str(policy),
           "HITL_LOG_LEVEL": "WARNING", "PYTHONPATH": _pythonpath(root), "HITL_AGENT": "bench"}
    bot = subprocess.Popen([sys.executable, "-m", "bot.cli", "run"], env=env, cwd=root)
    try:
        await _wait_healthy(port)
        print(f"machine: {machine()}", flush=True)
        report("floor: XADD -> blocking XREAD", await floor_one_hop(redis.url, n))
        report("floor: plain echo round trip", await floor_echo(redis.url, n))
        cpu = cpu_s(bot.pid)
        report("hitl auto round trip, raw redis-py", await raw_hitl(redis.url, n))
        bot_ms = (cpu_s(bot.pid) - cpu) * 1000 / n
        plain, timed, sync_timed = await decorated(redis.url, n)
        report("plain function call", plain)
        report("@require_approval async (auto)", timed)
        report("@require_approval sync (auto)", sync_timed)
        print(f"{'hitl run CPU per auto request':<34} {bot_ms:.2f} ms (user + system, during the raw series)",
              flush=True)
        verdict("@require_approval async (auto) p99, decision included (issue 14)", pct(timed, 99), 2.0)
        report(f"floor: echo, one every {PACED_S * 1000:.0f} ms", await floor_echo(redis.url, n // 4, PACED_S))
        report(f"@require_approval, one every {PACED_S * 1000:.0f} ms", await paced(redis.url, n // 4, PACED_S))
        if n_mcp:
            report("MCP request_approval, stdio", await mcp_round_trips(env, n_mcp, "stdio"))
            report("MCP request_approval, HTTP", await mcp_round_trips(env, n_mcp, "http"))
    finally:
        bot.terminate()
        bot.wait(20)
        await emu.stop()
        redis.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--mcp", type=int, default=200)
    parser.add_argument("--root", type=Path, default=ROOT,
                        help="checkout to run `hitl run` from (a before/after; for the SDK's own figures "
                             "put that checkout's sdk/ first on PYTHONPATH)")
    args = parser.parse_args()
    asyncio.run(main(args.n, args.mcp, args.root.resolve()))
