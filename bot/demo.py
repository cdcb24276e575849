"""`hitl demo`: the whole loop on one machine, with the built-in Slack emulator.

Finds Redis at REDIS_URL or starts a private `redis-server`, starts the emulator, the bot
and a demo agent, prints the URL to open, and on Ctrl-C stops everything it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from typing import Any

import redis.asyncio as aioredis

from bot.app import build_app
from bot.client import HitlClient
from bot.config import load_settings
from emulator import Emulator

DEMO_PREFIX = "hitl-demo"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _reachable(url: str) -> bool:
    client = aioredis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(await client.ping())
    except Exception:
        return False
    finally:
        await client.aclose()


def _spawn_redis(binary: str, port: int) -> subprocess.Popen[bytes]:
    workdir = tempfile.mkdtemp(prefix="hitl-demo-redis-")
    return subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", workdir],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def find_redis(url: str) -> tuple[str, subprocess.Popen[bytes] | None]:
    """A Redis to use: the one at `url`, or a private redis-server; SystemExit if neither."""
    if await _reachable(url):
        return url, None
    binary = shutil.which("redis-server")
    if not binary:
        raise SystemExit(
            f"hitl demo needs Redis: nothing answers at {url} and redis-server is not installed.\n"
            "Install it (Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install redis)\n"
            "or point REDIS_URL at a running Redis.")
    port = _free_port()
    proc = _spawn_redis(binary, port)
    private = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        if await _reachable(private):
            return private, proc
        await asyncio.sleep(0.05)
    proc.kill()
    raise SystemExit(f"could not start a private redis-server on port {port}")


DEMO_REQUESTS: list[dict[str, Any]] = [
    {"agent": "billing-agent", "action": "refund", "id": "demo-refund",
     "summary": "Refund $250 to Ana Lima: she was charged twice for order #4711.",
     "params": {"order": "4711", "amount": 250, "customer": "Ana Lima"}, "editable": ["amount"],
     "confidence": 0.72, "risk": {"amount": 250, "currency": "USD", "reversible": False, "domain": "billing"},
     "context": {"goal": "Resolve a double-charge complaint",
                 "conversation": [{"role": "customer", "text": "I was charged twice for my order!"},
                                  {"role": "agent", "text": "I can see two charges of $250 on 3 Nov."}],
                 "recommendation": "Refund the duplicate charge of $250."}},
    {"agent": "support-agent", "action": "send_email", "kind": "review", "id": "demo-email",
     "summary": "Reply to VIP customer Globex about the delayed shipment.",
     "draft": "Dear Ms. Chen,\n\nI am sorry your shipment is late. It left our warehouse today and "
              "will arrive on Thursday. As an apology we have upgraded you to express delivery.\n\nBest,\nSupport",
     "params": {"to": "m.chen@globex.example", "subject": "Your shipment"}, "editable": ["draft", "subject"],
     "confidence": 0.81, "risk": {"tags": ["vip"]}},
    {"agent": "ops-agent", "action": "delete_record", "id": "demo-delete",
     "summary": "Delete customer record #88123 (duplicate of #88122).",
     "params": {"record": 88123}, "confidence": 0.93, "risk": {"reversible": False}},
    {"agent": "support-agent", "action": "reply", "id": "demo-legal",
     "summary": "Customer says they will contact their lawyer about a damaged delivery.",
     "confidence": 0.4, "risk": {"sentiment": -0.8},
     "context": {"goal": "Answer a complaint about a damaged sofa",
                 "conversation": [{"role": "customer", "text": "This is the third time. I'm calling my lawyer."}],
                 "recommendation": "Offer a full refund and a pickup."}},
    {"agent": "research-agent", "action": "ask", "kind": "question", "id": "demo-question",
     "summary": "Which warehouse should ship the Berlin order: Leipzig or Hamburg?",
     "options": ["Leipzig", "Hamburg"]},
    *[{"agent": "crm-agent", "action": "update_tag", "id": f"demo-tag-{i}", "batch_key": "crm-tags",
       "summary": f"Tag contact #{1000 + i} as 'churn-risk'.", "params": {"contact": 1000 + i, "tag": "churn-risk"},
       "confidence": 0.66} for i in range(5)],
    {"agent": "support-agent", "action": "lookup_order", "id": "demo-lookup",
     "summary": "Look up the status of order #4711.", "params": {"order": "4711"}, "confidence": 0.99},
]


async def demo_agent(client: HitlClient) -> None:
    """Push the demo requests and print each decision as it arrives."""
    ids = []
    for req in DEMO_REQUESTS:
        ids.append(await client.request(**{**req, "id": f"{req['id']}-{secrets.token_hex(2)}"}))

    async def report(rid: str) -> None:
        d = await client.wait(rid)
        who = ", ".join(v.name or v.user_id for v in d.decided_by) or "policy"
        print(f"  agent got: {rid} -> {d.status.value} ({who})", flush=True)

    await asyncio.gather(*(report(r) for r in ids))


async def demo(port: int = 8080, agent: bool = True) -> int:
    url, redis_proc = await find_redis(os.environ.get("REDIS_URL", "redis://localhost:6379/0"))
    secret = secrets.token_hex(16)
    bot_port = _free_port()
    emu = Emulator(signing_secret=secret, request_url=f"http://127.0.0.1:{bot_port}/slack/events",
                   bot_token="xoxb-demo")
    await emu.start(port=port)
    settings = load_settings(slack_bot_token="xoxb-demo", slack_signing_secret=secret,
                             slack_api_url=emu.api_url, redis_url=url, prefix=DEMO_PREFIX,
                             port=bot_port, host="127.0.0.1", consumer="demo")
    bot = build_app(settings)
    client = HitlClient.from_url(url, prefix=DEMO_PREFIX, name="demo-agent")
    tasks: list[asyncio.Task[None]] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await bot.store.redis.delete(*[k async for k in bot.store.redis.scan_iter(f"{DEMO_PREFIX}:*")] or ["-"])
        await bot.start()
        print(f"hitl demo is running. Open {emu.url}/ in a browser (Ctrl-C stops it).", flush=True)
        print(f"  Redis: {url}{' (private)' if redis_proc else ''}, prefix {DEMO_PREFIX}", flush=True)
        if agent:
            tasks.append(asyncio.create_task(demo_agent(client)))
        await stop.wait()
    finally:
        print("stopping…", flush=True)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.close()
        with contextlib.suppress(Exception):
            await bot.stop()
        await emu.stop()
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(5)
    return 0
