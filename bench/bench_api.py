"""The HTTP API: submit + long-poll decision round trip for an auto-routed request (p99,
beside a bare aiohttp echo round trip measured in the same run), requests/s for one replica
(beside the echo server's), and HumanLayer's decision-to-function latency under its 3 s
polling (beside hitl's own long poll after the same click).

Topology as in production: `hitl run` in its own process; the echo server in its own
process; the clients, the emulator (Slack) and the HumanLayer SDK in this one.

    .venv/bin/python -m bench.bench_api [--n 500] [--concurrency 32] [--hl 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.bench_loop import POLICY as LOOP_POLICY
from bench.bench_loop import (
    ROOT,
    SECRET,
    TOKEN,
    _wait_healthy,
    cpu_s,
    machine,
    pct,
    report,
    verdict,
)
from bench.bench_sdk import _pythonpath
from emulator import Emulator
from store.api_keys import ApiKeys
from store.models import utcnow
from store.redis_store import Store
from tests.redis_server import RedisServer, free_port

ECHO = """
import sys
from aiohttp import web
async def echo(request):
    return web.json_response(await request.json())
app = web.Application()
app.router.add_post("/echo", echo)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""
POLICY = LOOP_POLICY + "batching:\n  enabled: false\n"  # one card per request, to click
LOOKUP = {"agent": "bench", "action": "lookup_order", "summary": "Look up order 4711", "confidence": 0.95}


async def round_trips(session: aiohttp.ClientSession, n: int, one: Any) -> list[float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        await one(session, i)
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def throughput(session: aiohttp.ClientSession, total: int, concurrency: int, one: Any) -> float:
    counter = iter(range(total))

    async def worker() -> None:
        for i in counter:
            await one(session, i)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - t0)


async def main(n: int, concurrency: int, hl_n: int, root: Path = ROOT) -> None:
    redis = RedisServer()
    redis.start()
    port, echo_port = free_port(), free_port()
    emu = Emulator(signing_secret=SECRET, request_url=f"http://127.0.0.1:{port}/slack/events", bot_token=TOKEN)
    await emu.start()
    policy = Path(redis.dir) / "policy.yml"
    policy.write_text(POLICY)
    env = {**os.environ, "SLACK_BOT_TOKEN": TOKEN, "SLACK_SIGNING_SECRET": SECRET, "SLACK_API_URL": emu.api_url,
           "REDIS_URL": redis.url, "HITL_PORT": str(port), "HITL_HOST": "127.0.0.1", "HITL_POLICY": str(policy),
           "HITL_LOG_LEVEL": "WARNING", "PYTHONPATH": _pythonpath(root), "HITL_API_RATE": "100000",
           "HITL_API_BURST": "100000", "HITL_POST_RATE": "100", "HITL_POST_BURST": "100"}
    bot = subprocess.Popen([sys.executable, "-m", "bot.cli", "run"], env=env, cwd=root)
    echo = subprocess.Popen([sys.executable, "-c", ECHO, str(echo_port)], cwd=ROOT)
    store = Store.from_url(redis.url)
    key, _ = await ApiKeys(store.redis).create(["bench"], utcnow())
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {key}"}
    try:
        await _wait_healthy(port)
        async with aiohttp.ClientSession() as s:
            for _ in range(200):
                try:
                    async with s.post(f"http://127.0.0.1:{echo_port}/echo", json={}) as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)

            async def echo_once(session: aiohttp.ClientSession, i: int) -> None:
                async with session.post(f"http://127.0.0.1:{echo_port}/echo", json={**LOOKUP, "id": f"e-{i}"}) as r:
                    await r.read()

            async def submit_and_wait(session: aiohttp.ClientSession, i: int, prefix: str = "rt") -> None:
                async with session.post(base + "/v1/requests", json={**LOOKUP, "id": f"{prefix}-{i}"},
                                        headers=auth) as r:
                    assert r.status == 201, await r.text()
                async with session.get(f"{base}/v1/requests/{prefix}-{i}/decision?wait=10", headers=auth) as r:
                    assert r.status == 200 and (await r.json())["status"] == "auto_approved"

            async def submit_tp(session: aiohttp.ClientSession, i: int) -> None:
                await submit_and_wait(session, i, "tp")

            await round_trips(s, 20, echo_once)  # warm-up
            print(f"machine: {machine()}", flush=True)
            report("floor: aiohttp echo round trip", await round_trips(s, n, echo_once))
            cpu = cpu_s(bot.pid)
            timed = await round_trips(s, n, submit_and_wait)
            bot_ms = (cpu_s(bot.pid) - cpu) * 1000 / n
            report("submit + decision (auto), HTTP", timed)
            echo_rps = await throughput(s, n * 4, concurrency, echo_once)
            api_rps = await throughput(s, n * 4, concurrency, submit_tp)
            print(f"{'requests/s, one replica':<34} submit+decision {api_rps:8.0f}/s   floor (echo, "
                  f"same concurrency {concurrency}) {echo_rps:8.0f}/s   ratio {api_rps / echo_rps:.2f}", flush=True)
            print(f"{'hitl run CPU per submit + decision':<34} {bot_ms:.2f} ms (user + system, sequential series)",
                  flush=True)
            verdict("submit + decision (auto) p99 over HTTP (issue 15)", pct(timed, 99), 10.0)
            if hl_n:
                await humanlayer_latency(s, emu, base, key, auth, hl_n)
    finally:
        await store.close()
        bot.terminate()
        echo.terminate()
        bot.wait(20)
        echo.wait(5)
        await emu.stop()
        redis.stop()


async def humanlayer_latency(s: aiohttp.ClientSession, emu: Emulator, base: str, key: str,
                             auth: dict[str, str], n: int) -> None:
    """Click -> the decorated function runs (the SDK polls every 3 s), and click -> hitl's own
    long poll answers, for the same kind of request."""

    sdk_ms, poll_ms = [], []
    for i in range(n):
        sdk_ms.append(await _one_sdk_call(emu, base, key, i))
        # the same click -> decision path, answered by hitl's long poll
        async with s.post(base + "/v1/requests", json={"agent": "bench", "action": "refund", "id": f"lp-{i}",
                                                      "summary": f"Refund #{i}"}, headers=auth) as r:
            assert r.status == 201
        ts = await _card_ts(emu, f"lp-{i}")
        waiting = asyncio.ensure_future(s.get(f"{base}/v1/requests/lp-{i}/decision?wait=30", headers=auth))
        await asyncio.sleep(0.05)
        t0 = time.perf_counter()
        await emu.click("U0ALICE", "#approvals", ts, "hitl.approve")
        async with await waiting as r:
            assert r.status == 200
            poll_ms.append((time.perf_counter() - t0) * 1000)
    report("HumanLayer SDK: click -> function", sdk_ms)
    report("hitl long poll: click -> decision", poll_ms)


async def _one_sdk_call(emu: Emulator, base: str, key: str, i: int) -> float:
    """Click -> the decorated function runs, in ms."""
    from humanlayer import HumanLayer

    loop = asyncio.get_running_loop()
    ran: asyncio.Future[float] = loop.create_future()
    hl = HumanLayer(api_key=key, api_base_url=base + "/humanlayer/v1", genid=lambda _: f"bench-{i}")

    def mark(at: float) -> None:
        if not ran.done():
            ran.set_result(at)

    @hl.require_approval()
    def refund(amount: int) -> str:
        loop.call_soon_threadsafe(mark, time.perf_counter())
        return "ok"

    call = asyncio.ensure_future(asyncio.to_thread(refund, amount=i))
    ts = await _card_ts(emu, f"hl-fn-bench-{i}", call)
    await asyncio.sleep(3.0 * (i % 3) / 3)  # clicks land at different points of the SDK's poll cycle
    t0 = time.perf_counter()
    await emu.click("U0ALICE", "#approvals", ts, "hitl.approve")
    took = (await ran - t0) * 1000
    await call
    return took


async def _card_ts(emu: Emulator, rid: str, call: asyncio.Future[Any] | None = None) -> str:
    for _ in range(20_000):
        if call is not None and call.done():
            raise SystemExit(f"the SDK gave up: {call.result()}")
        for m in emu.messages("#approvals"):
            if ((m.get("metadata") or {}).get("event_payload") or {}).get("request_id") == rid:
                return str(m["ts"])
        await asyncio.sleep(0.001)
    raise SystemExit(f"no card for {rid}; messages: {[m.get('metadata') for m in emu.messages('#approvals')][-3:]}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--hl", type=int, default=5, help="HumanLayer round trips (each takes up to 3 s)")
    parser.add_argument("--root", type=Path, default=ROOT, help="checkout to run `hitl run` from (a before/after)")
    args = parser.parse_args()
    asyncio.run(main(args.n, args.concurrency, args.hl, args.root.resolve()))
