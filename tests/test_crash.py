"""Kill -9 of a real `hitl run` process at the worst moments: nothing lost, nothing doubled."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from blocks.ids import ActionId, BlockId
from emulator import Emulator
from store.models import Mode, Record, Status
from store.redis_store import Store
from tests.harness import SECRET, TOKEN, Harness, start_bot
from tests.redis_server import free_port
from tests.util import eventually, shown_request_ids

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def emu() -> AsyncIterator[Emulator]:
    e = Emulator(signing_secret=SECRET, request_url=None, bot_token=TOKEN)
    await e.start()
    yield e
    await e.stop()


async def _crashing_bot(redis_url: str, emu: Emulator, point: str, mark: Path,
                       **env_extra: str) -> subprocess.Popen[bytes]:
    port = free_port()
    emu.request_url = f"http://127.0.0.1:{port}/slack/events"
    env = {**os.environ, "SLACK_BOT_TOKEN": TOKEN, "SLACK_SIGNING_SECRET": SECRET,
           "SLACK_API_URL": emu.api_url, "REDIS_URL": redis_url, "HITL_PORT": str(port),
           "HITL_HOST": "127.0.0.1", "HITL_CONSUMER": "replica-1", "HITL_CLAIM_IDLE_S": "0.5",
           "HITL_TEST_PAUSE_AT": point, "HITL_TEST_MARK": str(mark), "PYTHONPATH": str(ROOT), **env_extra}
    with (mark.parent / "bot.log").open("wb") as log:
        return subprocess.Popen([sys.executable, str(ROOT / "tests" / "crashing_bot.py")], env=env,
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)


async def _kill_at_mark(proc: subprocess.Popen[bytes], mark: Path) -> None:
    deadline = time.monotonic() + 20
    while not mark.exists():
        if proc.poll() is not None:
            raise AssertionError(f"bot exited early: {(mark.parent / 'bot.log').read_text()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("the bot never reached the pause point")
        await asyncio.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


async def _restart(redis_url: str, emu: Emulator, **overrides: Any) -> Harness:
    from bot.client import HitlClient

    port = free_port()
    emu.request_url = f"http://127.0.0.1:{port}/slack/events"
    bot = await start_bot(redis_url, emu, port=port, consumer="replica-1", claim_idle_s=0.5, **overrides)
    return Harness(redis_url, emu, bot, HitlClient.from_url(redis_url, name="agent"), [bot])


async def test_killed_between_read_and_ack(redis_url: str, emu: Emulator, tmp_path: Path) -> None:
    mark = tmp_path / "mark"
    proc = await _crashing_bot(redis_url, emu, "before_accept", mark)
    from bot.client import HitlClient

    async with HitlClient.from_url(redis_url, name="agent") as agent:
        rid = await agent.request(agent="billing", action="refund", summary="Refund $40", id="crash-1")
        await _kill_at_mark(proc, mark)
        h = await _restart(redis_url, emu)
        try:
            assert (await h.store.redis.xpending(h.store.keys.requests, "hitl"))["pending"] in (0, 1)
            rec = await h.card(rid)
            await h.click(rec, "U0ALICE", ActionId.approve)
            decision = await agent.wait(rid, timeout=10)
            assert decision.status is Status.approved
            await asyncio.sleep(0.3)
            assert len(emu.messages(rec.channel or "")) == 1
            assert await h.store.redis.xlen(h.store.keys.decisions) == 1
            assert (await h.store.redis.xpending(h.store.keys.requests, "hitl"))["pending"] == 0
        finally:
            await h.client.close()
            await h.bot.stop()


async def test_killed_after_posting_before_storing_the_ts(redis_url: str, emu: Emulator, tmp_path: Path) -> None:
    mark = tmp_path / "mark"
    proc = await _crashing_bot(redis_url, emu, "after_post", mark)
    from bot.client import HitlClient

    async with HitlClient.from_url(redis_url, name="agent") as agent:
        rid = await agent.request(agent="billing", action="refund", summary="Refund $40", id="crash-2")
        await _kill_at_mark(proc, mark)
        assert len(emu.messages("#approvals")) == 1  # the card reached Slack; its ts was never stored
        h = await _restart(redis_url, emu)
        try:
            # the dead replica's leases run out
            for member in await h.store.redis.zrange(h.store.keys.outbox, 0, -1):
                await h.store.redis.zadd(h.store.keys.outbox, {member: 0})
            h.bot.delivery.kick()
            rec = await h.card(rid)
            assert len(emu.messages("#approvals")) == 1
            assert rec.ts == emu.messages("#approvals")[0]["ts"]
            await h.click(rec, "U0BOB", ActionId.approve)
            assert (await agent.wait(rid, timeout=10)).status is Status.approved
        finally:
            await h.client.close()
            await h.bot.stop()


async def test_sigterm_finishes_cleanly(redis_url: str, emu: Emulator, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "SLACK_BOT_TOKEN": TOKEN, "SLACK_SIGNING_SECRET": SECRET,
           "SLACK_API_URL": emu.api_url, "REDIS_URL": redis_url, "HITL_PORT": str(port),
           "HITL_HOST": "127.0.0.1", "PYTHONPATH": str(ROOT)}
    with (tmp_path / "bot.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "run"], env=env, cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=log)
    from bot.client import HitlClient

    try:
        async with HitlClient.from_url(redis_url, name="agent") as agent:
            rid = await agent.request(agent="billing", action="refund", summary="Refund", id="term-1")

            async def posted() -> bool:
                return bool(emu.calls_to("chat.postMessage"))

            await eventually(posted, 20, "card posted by the subprocess")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0
            assert await agent.decision(rid) is None
    finally:
        if proc.poll() is None:
            proc.kill()


async def test_killed_mid_batch_completes_the_card_without_a_duplicate(
        redis_url: str, emu: Emulator, tmp_path: Path) -> None:
    mark = tmp_path / "mark"
    proc = await _crashing_bot(redis_url, emu, "after_post", mark)
    from bot.client import HitlClient

    async with HitlClient.from_url(redis_url, name="agent") as agent:
        ids = [await agent.request(agent="files", action="delete_file", summary=f"Delete report-{i}.csv",
                                   batch_key="cleanup", id=f"del-{i}") for i in range(5)]
        await _kill_at_mark(proc, mark)
        assert len(emu.messages("#approvals")) == 1  # the batch card reached Slack, nothing was stored
        h = await _restart(redis_url, emu)
        try:
            for member in await h.store.redis.zrange(h.store.keys.outbox, 0, -1):
                await h.store.redis.zadd(h.store.keys.outbox, {member: 0})  # the dead replica's leases end
            h.bot.delivery.kick()

            async def complete() -> bool:
                msgs = emu.messages("#approvals")
                return len(msgs) == 1 and set(ids) <= shown_request_ids(msgs[0])

            await eventually(complete, 15, "the batch card completed in place")
            await asyncio.sleep(0.5)
            assert len(emu.messages("#approvals")) == 1
            assert len([c for c in emu.calls_to("chat.postMessage") if c.ok]) == 1
        finally:
            await h.client.close()
            await h.bot.stop()


SAMPLED = """
defaults: {tier: low}
tiers:
  low: {mode: auto, sample: 1.0}
  medium: {mode: approve}
  high: {mode: approve}
batching: {enabled: false}
trust: {after: 2}
"""


async def test_killed_before_an_override_is_counted(redis_url: str, emu: Emulator, tmp_path: Path) -> None:
    """A reviewer flags a trusted action's run as wrong; the replica stores the review and dies
    before counting it. The override still demotes the action (the scheduler counts it once its
    replica did not): the next request waits for a person. Found by an adversarial review."""
    policy = tmp_path / "policy.yml"
    policy.write_text(SAMPLED)
    mark = tmp_path / "mark"
    proc = await _crashing_bot(redis_url, emu, "before_trust_count", mark, HITL_POLICY=str(policy))
    from bot.client import HitlClient

    async with HitlClient.from_url(redis_url, name="agent") as agent:
        h = Harness(redis_url, emu, None, agent, [])  # type: ignore[arg-type]
        probe = Store.from_url(redis_url, "hitl")
        try:
            for i in range(2):  # the action earns trust: two clean approvals (first use goes to a person)
                rid = await agent.request(agent="crm-bot", action="tag", summary=f"Tag {i}")
                rec = await _posted(probe, rid)
                await emu.click("U0CAROL", rec.channel or "", rec.ts or "", ActionId.approve)
                assert (await agent.wait(rid, timeout=10)).status is Status.approved
            rid = await agent.request(agent="crm-bot", action="tag", summary="Tag 3")
            assert (await agent.wait(rid, timeout=10)).status is Status.auto_approved
            rec = await _posted(probe, rid)  # sampled: a review card
            await emu.click("U0BOB", rec.channel or "", rec.ts or "", ActionId.review_wrong)
            view = await eventually(lambda: asyncio.sleep(0, emu.top_view("U0BOB")), what="the reason form")
            submitting = asyncio.ensure_future(emu.submit_view(
                "U0BOB", view.id, {BlockId.reason_code.value: {"value": "wrong_action"}}))
            await _kill_at_mark(proc, mark)
            await asyncio.gather(submitting, return_exceptions=True)
            assert (await probe.get(rid)).review.verdict == "wrong"  # type: ignore[union-attr]
            assert not (await probe.trust.state("crm-bot", "tag")).overrides  # not counted: it died
            h = await _restart(redis_url, emu, policy=policy)
            # the count's due time (a minute after the review) comes: as if that minute passed
            assert await probe.redis.zscore(probe.keys.deadlines, f"trust:{rid}") is not None
            await probe.redis.zadd(probe.keys.deadlines, {f"trust:{rid}": 0})
            h.bot.scheduler.kick()

            async def demoted() -> bool:
                state = await probe.trust.state("crm-bot", "tag")
                return state.overrides == 1 and not state.trusted
            await eventually(demoted, what="the override counted by the scheduler")
            assert await probe.redis.zscore(probe.keys.deadlines, f"trust:{rid}") is None
            nxt = await agent.request(agent="crm-bot", action="tag", summary="Tag 4")
            assert (await _posted(probe, nxt)).route.mode is Mode.approve
        finally:
            if proc.poll() is None:
                proc.kill()
            await probe.close()
            if h.bot is not None:
                await h.bot.stop()


async def _posted(store: Store, rid: str) -> Record:
    async def found() -> Record | None:
        if not await store.exists(rid):
            return None
        rec = await store.get(rid)
        return rec if rec.ts else None
    return await eventually(found, 15, f"card of {rid}")
