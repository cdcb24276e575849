"""Chaos (issue 10, "Done when"): a run with clicks through kill -9 of the bot, a Redis
restart from its append-only file and Slack faults (a post that takes effect but answers 500,
card updates answering 500, a 429) ends with every request decided once, every card posted
once and locked.

Everything is real: `hitl run` processes, a redis-server with AOF (`appendfsync always`),
the emulator as Slack, clicks signed as Slack signs them. Clicks that meet a dead bot or a
Redis that is restarting are lost, as in life; the reviewer clicks what still shows buttons.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from blocks.ids import ActionId
from bot.client import HitlClient
from emulator import Emulator
from store.models import Status
from tests.harness import SECRET, TOKEN
from tests.redis_server import RedisServer, free_port
from tests.util import eventually

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(180)
N = 24
CHANNEL = "#approvals"
POLICY = """
defaults: {tier: medium, channel: "#approvals"}
tiers:
  low: {mode: auto}
  medium: {mode: approve, timeout: 1h}
  high: {mode: approve, timeout: 1h}
triggers: {first_use: {enabled: false}}
batching: {enabled: false}
"""


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    e = Emulator(signing_secret=SECRET, request_url=None, bot_token=TOKEN)
    await e.start()
    yield e
    await e.stop()


@pytest.fixture
def aof_redis(tmp_path: Path) -> Any:
    server = RedisServer("--appendfsync", "always", parent=tmp_path)
    server.start(appendonly=True)
    yield server
    server.stop()


def _spawn(redis_url: str, emu: Emulator, policy: Path, log: Path) -> subprocess.Popen[bytes]:
    """A `hitl run` process as in production; the emulator's clicks go to it from now on."""
    port = free_port()
    emu.request_url = f"http://127.0.0.1:{port}/slack/events"
    env = {**os.environ, "SLACK_BOT_TOKEN": TOKEN, "SLACK_SIGNING_SECRET": SECRET,
           "SLACK_API_URL": emu.api_url, "REDIS_URL": redis_url, "HITL_PORT": str(port),
           "HITL_HOST": "127.0.0.1", "HITL_CONSUMER": "replica-1", "HITL_CLAIM_IDLE_S": "0.5",
           "HITL_POLICY": str(policy), "HITL_POST_RATE": "100", "HITL_POST_BURST": "100",
           "PYTHONPATH": str(ROOT)}
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "bot.cli", "run"], env=env, cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=out)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def _cards(emu: Emulator, rid: str) -> list[dict[str, Any]]:
    return [m for m in emu.messages(CHANNEL)
            if ((m.get("metadata") or {}).get("event_payload") or {}).get("request_id") == rid]


def _live(message: dict[str, Any]) -> bool:
    return any(b.get("type") == "actions" for b in message.get("blocks") or [])


async def _click_what_is_shown(emu: Emulator, ids: list[str], limit: int) -> int:
    """Approve up to `limit` cards that still show buttons; clicks that meet no bot are lost."""
    clicked = 0
    for rid in ids:
        if clicked >= limit:
            break
        for card in _cards(emu, rid):
            if _live(card):
                # the bot is down or Redis restarts: the click is lost, as in life
                with contextlib.suppress(Exception):
                    await emu.click("U0ALICE", CHANNEL, str(card["ts"]), ActionId.approve)
                clicked += 1
    return clicked


async def _cards_shown(emu: Emulator, ids: list[str], n: int) -> bool:
    return sum(1 for rid in ids if _cards(emu, rid)) >= n


async def test_kill_restart_and_slack_faults_end_with_each_request_decided_once_and_locked(
        emu: Emulator, aof_redis: RedisServer, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yml"
    policy.write_text(POLICY)
    log = tmp_path / "bots.log"
    # Slack faults: posts that take effect but answer 500, updates that fail, a 429
    emu.inject("chat.postMessage", status=500, applied=True, times=3)
    emu.inject("chat.update", status=500, times=3)
    emu.inject("chat.postMessage", status=429, retry_after=1, times=1)
    bot = _spawn(aof_redis.url, emu, policy, log)
    agent = HitlClient.from_url(aof_redis.url, name="chaos-agent")
    ids = [f"chaos-{i}" for i in range(N)]
    try:
        for rid in ids:
            await agent.request(agent="billing", action="refund", summary=f"Refund {rid}", id=rid,
                                params={"amount": 40})
        await eventually(lambda: _cards_shown(emu, ids, N // 3), timeout=30, what="the first cards")
        await _click_what_is_shown(emu, ids, 5)

        _kill(bot)  # kill -9 in the middle of the run, with posts and updates in flight
        bot = _spawn(aof_redis.url, emu, policy, log)
        await eventually(lambda: _cards_shown(emu, ids, 2 * N // 3), timeout=30, what="more cards")
        await _click_what_is_shown(emu, ids, 5)

        aof_redis.kill()  # Redis dies (kill -9) and comes back from its append-only file
        await asyncio.sleep(1.0)
        aof_redis.start(appendonly=True)

        async def all_decided() -> bool:
            await _click_what_is_shown(emu, ids, N)
            states = [await agent.decision(rid) for rid in ids]
            return all(d is not None for d in states)

        await eventually(all_decided, timeout=90, what=f"all {N} requests decided")
        for rid in ids:
            decision = await agent.wait(rid, timeout=10)
            assert decision.status is Status.approved, (rid, decision)

        # decided once: one decision each on the decisions stream, one `decided` audit entry each
        rows = await agent.redis.xrange("hitl:decisions")
        published = [json.loads(f["decision"])["request_id"] for _, f in rows]
        assert sorted(published) == sorted(ids), "every request published exactly once"
        audit = await agent.redis.xrange("hitl:audit")
        decided = [f["request_id"] for _, f in audit if f.get("event") == "decided"]
        assert sorted(decided) == sorted(ids), "one `decided` audit entry per request"

        # posted once and locked: one card per request, none still showing buttons
        async def one_locked_card_each() -> bool:
            return all(len(c := _cards(emu, rid)) == 1 and not _live(c[0]) for rid in ids)

        await eventually(one_locked_card_each, timeout=60, what="one locked card per request")
        posts = emu.calls_to("chat.postMessage")
        assert len([c for c in posts if c.status == 500]) == 3 and any(c.status == 429 for c in posts)
        assert len([c for c in emu.calls_to("chat.update") if c.status == 500]) == 3
    finally:
        await agent.close()
        if bot.poll() is None:
            bot.send_signal(signal.SIGTERM)
            try:
                bot.wait(15)
            except subprocess.TimeoutExpired:
                _kill(bot)
