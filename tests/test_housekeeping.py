"""`hitl run`'s housekeeping process (bot.housekeeping): the audit sealer and the stats projector
run beside the bot at nice 19, are started again when they die, end with the bot (even when it is
killed), and `HITL_HOUSEKEEPING=off` leaves them to a `hitl housekeep` run elsewhere.

Real processes throughout: `hitl run` and `hitl housekeep` as subprocesses, a private
redis-server, the emulator for Slack."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from hitl import AsyncClient

from bot.app import build_app
from bot.config import ConfigError, load_settings
from emulator import Emulator
from store.redis_store import Store
from store.stats import StatsStore
from tests import procs
from tests.harness import SECRET, TOKEN
from tests.redis_server import free_port
from tests.util import eventually

ROOT = Path(__file__).resolve().parent.parent
POLICY = ("tiers:\n  low: {mode: auto, sample: 0}\n  medium: {mode: approve}\n  high: {mode: approve}\n"
          "defaults: {tier: low}\ntriggers:\n  first_use: {enabled: false}\n")


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    async with Emulator(signing_secret=SECRET, request_url=None, bot_token=TOKEN) as e:
        yield e


@pytest.fixture
def env(emu: Emulator, redis_url: str, tmp_path: Path) -> dict[str, str]:
    policy = tmp_path / "policy.yml"
    policy.write_text(POLICY)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "HITL_"))}
    return {**base, "SLACK_BOT_TOKEN": TOKEN, "SLACK_SIGNING_SECRET": SECRET, "SLACK_API_URL": emu.api_url,
            "REDIS_URL": redis_url, "HITL_HOST": "127.0.0.1", "HITL_POLICY": str(policy),
            "HITL_CONSUMER": "hk-test", "HITL_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}


class Running:
    def __init__(self, proc: subprocess.Popen[bytes], port: int) -> None:
        self.proc, self.port = proc, port

    async def health(self) -> dict[str, str]:
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{self.port}/healthz") as r:
            return dict(await r.json())

    def companions(self) -> list[int]:
        """Live (not zombie) `hitl housekeep` children of this `hitl run`."""
        return [p for p in procs.children(self.proc.pid) if b"housekeep" in procs.cmdline(p)]


@pytest.fixture
def run(env: dict[str, str]) -> Iterator[list[Running]]:
    started: list[Running] = []
    yield started
    for r in started:
        kids = r.companions()
        if r.proc.poll() is None:
            r.proc.kill()
            r.proc.wait(10)
        for k in kids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(k, signal.SIGKILL)


async def _start(env: dict[str, str], started: list[Running], **extra: str) -> Running:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "run"], env={**env, "HITL_PORT": str(port), **extra},
                            cwd=ROOT)
    r = Running(proc, port)
    started.append(r)

    async def healthy() -> bool:
        assert proc.poll() is None, f"hitl run exited with {proc.returncode}"
        try:
            return (await r.health()).get("intake") == "running"
        except aiohttp.ClientError:
            return False

    await eventually(healthy, 30, "hitl run healthy")
    return r


async def _value(value: object) -> object:
    return value


async def _work(redis_url: str, store: Store, n: int) -> None:
    """`n` auto-approved requests (audit entries to seal) and one malformed entry (an `invalid`
    event: the stats projector counts it, the hot path's scripts do not)."""
    async with AsyncClient.from_url(redis_url, agent="hk") as agent:
        for i in range(n):
            d = await agent.ask(action="lookup", summary=f"Look up {i}", timeout=10)
            assert d.status == "auto_approved"
    await store.redis.xadd(store.keys.requests, {"request": "{not json"})


async def _sealed_and_counted(store: Store, invalid: int) -> bool:
    status = await store.chain.status()
    total = await store.redis.xlen(store.keys.audit)
    counted = (await StatsStore(store.redis, store.keys).totals()).get("invalid", 0)
    return status is not None and status.sealed_seq == total and counted == invalid


async def test_run_starts_housekeeping_at_lowest_priority_and_it_seals_and_counts(
        env: dict[str, str], run: list[Running], redis_url: str, store: Store) -> None:
    bot = await _start(env, run)
    kids = await eventually(lambda: _value(bot.companions()), what="the housekeeping process")
    assert len(kids) == 1
    # it lowers its priority first thing, before any import of the work
    await eventually(lambda: _value(procs.stat(kids[0])[16] == "19"), what="housekeeping at nice 19")
    assert procs.stat(bot.proc.pid)[16] == "0"  # the bot itself keeps its priority
    assert (await bot.health())["housekeeping"] == "running"
    await _work(redis_url, store, 5)
    await eventually(lambda: _sealed_and_counted(store, 1), 15, "audit sealed and the invalid entry counted")
    bot.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(bot.proc.wait, 30) == 0
    await eventually(lambda: _value(not procs.alive(kids[0])), what="housekeeping stopped with the bot")


async def test_a_killed_housekeeping_process_is_started_again(
        env: dict[str, str], run: list[Running], redis_url: str, store: Store) -> None:
    bot = await _start(env, run)
    first = (await eventually(lambda: _value(bot.companions()), what="housekeeping"))[0]
    os.kill(first, signal.SIGKILL)

    async def replaced() -> list[int]:
        kids = [k for k in bot.companions() if k != first]
        return kids if kids and (await bot.health())["housekeeping"] == "running" else []

    await eventually(replaced, 15, "a new housekeeping process")
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{bot.port}/metrics") as r:
        text = await r.text()
    assert "hitl_housekeeping_up 1" in text and "hitl_housekeeping_restarts_total 1" in text
    await _work(redis_url, store, 2)  # the new one seals and counts
    await eventually(lambda: _sealed_and_counted(store, 1), 15, "sealed and counted by the new process")


async def test_housekeeping_ends_when_the_bot_is_killed(env: dict[str, str], run: list[Running]) -> None:
    bot = await _start(env, run)
    kid = (await eventually(lambda: _value(bot.companions()), what="housekeeping"))[0]
    bot.proc.kill()  # SIGKILL: the bot cannot stop it; the kernel's parent-death signal does
    bot.proc.wait(10)
    await eventually(lambda: _value(not procs.alive(kid)), 10, "housekeeping ended with its parent")


async def test_off_runs_none_and_hitl_housekeep_does_it_elsewhere(
        env: dict[str, str], run: list[Running], redis_url: str, store: Store) -> None:
    bot = await _start(env, run, HITL_HOUSEKEEPING="off")
    assert bot.companions() == [] and (await bot.health())["housekeeping"] == "off"
    await _work(redis_url, store, 3)
    await eventually(lambda: store.redis.xlen(store.keys.dead), what="the malformed entry dead-lettered")
    assert await store.chain.status() is None  # nobody seals: that is what off means
    assert (await StatsStore(store.redis, store.keys).totals()).get("invalid", 0) == 0
    elsewhere = subprocess.Popen([sys.executable, "-m", "bot.cli", "housekeep"], env=env, cwd=ROOT)
    try:
        await eventually(lambda: _sealed_and_counted(store, 1), 15, "sealed and counted by `hitl housekeep`")
        assert procs.stat(elsewhere.pid)[16] == "19"
        elsewhere.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(elsewhere.wait, 15) == 0
    finally:
        if elsewhere.poll() is None:
            elsewhere.kill()


def test_an_unknown_housekeeping_mode_is_a_clear_error() -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(housekeeping="sometimes")
    assert "HITL_HOUSEKEEPING" in str(e.value) and "'process', 'inline' or 'off'" in str(e.value)


@pytest.mark.parametrize(("mode", "tasks", "companion"), [
    ("process", set(), True), ("inline", {"sealer", "stats"}, False), ("off", set(), False)])
def test_where_each_mode_runs_the_duties(redis_url: str, mode: str, tasks: set[str], companion: bool) -> None:
    bot = build_app(load_settings(slack_bot_token=TOKEN, slack_signing_secret=SECRET, redis_url=redis_url,
                                  housekeeping=mode))
    assert {"sealer", "stats"} & set(bot.background) == tasks
    assert (bot.companion is not None) is companion


@pytest.mark.parametrize(("hosts", "secret", "on"), [("", None, False), ("hooks.example.com", None, False),
                                                     ("hooks.example.com", "s3cret", True)])
def test_the_webhook_enqueuer_runs_only_when_webhooks_are_enabled(redis_url: str, hosts: str,
                                                                  secret: str | None, on: bool) -> None:
    # off, the API refuses every callback_url (test_api), so no new delivery can be queued; the
    # worker still runs for those queued while they were on
    bot = build_app(load_settings(slack_bot_token=TOKEN, slack_signing_secret=SECRET, redis_url=redis_url,
                                  webhook_hosts=hosts, webhook_secret=secret))
    assert ("webhook-enqueue" in bot.background) is on
    assert {"api-decisions", "webhooks"} <= set(bot.background)


def test_the_docs_name_every_mode() -> None:
    text = (ROOT / "README.md").read_text() + (ROOT / "docs" / "deploy.md").read_text()
    for word in ("HITL_HOUSEKEEPING", "hitl housekeep", "`process`", "`inline`", "`off`"):
        assert word in text, word


async def test_the_supervisor_outlives_a_companion_that_cannot_start(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:
    """A child that exits at once is started again with a growing back-off; one that cannot be
    started at all (no such program) leaves the supervisor trying, never dead."""
    from bot import housekeeping

    monkeypatch.setattr(housekeeping, "RESTART_S", (0.05, 0.2))
    runs = tmp_path / "runs"
    companion = housekeeping.Companion(
        argv=[sys.executable, "-c", f"open({str(runs)!r}, 'a').write('x')"], env=dict(os.environ))
    await companion.start()
    try:
        await eventually(lambda: _value(runs.exists() and len(runs.read_text()) >= 3), 10, "three runs")
        companion.argv = [str(tmp_path / "no-such-program")]
        await eventually(lambda: _value(companion.proc is None and companion.state == "restarting"), 10,
                         "a start that failed")
        before = len(runs.read_text())
        companion.argv = [sys.executable, "-c", "import time; time.sleep(60)"]
        await eventually(lambda: _value(companion.state == "running"), 10, "started again")
        assert len(runs.read_text()) == before and companion.starts >= 4
    finally:
        await companion.stop()
    assert companion.state == "stopped" and companion.proc is not None and companion.proc.returncode is not None
