"""Sentinel failover during a run (`REDIS_URL=redis+sentinel://...`): a master, one replica and
three sentinels that the test starts; the master is killed with SIGKILL mid-run.

What docs/redis.md promises: the bot follows the new master by itself and keeps deciding; with
`HITL_REDIS_WAIT_REPLICAS=1` nothing the bot acted on (a card posted, a decision published) is
lost; without it, a write the replica had not yet received is lost, and the loop still decides
that request exactly once afterwards.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from pathlib import Path

import pytest
import redis

from blocks.ids import ActionId
from store.models import Route, Status, utcnow
from store.redis_store import Accepted, Store
from tests.harness import Harness, start, stop
from tests.redis_cluster import LocalSentinel
from tests.test_store import _push_and_read, _request

pytestmark = pytest.mark.sentinel


async def _decide(h: Harness, rid: str, user: str = "U0ALICE") -> None:
    rec = await h.card(rid)
    assert (await h.click(rec, user, ActionId.approve)).status == 200
    assert (await h.client.wait(rid, timeout=20)).status is Status.approved


async def test_the_bot_follows_a_failover_and_keeps_deciding(redis_sentinel: LocalSentinel) -> None:
    h = await start(redis_sentinel.url, redis_wait_replicas=1)
    try:
        assert h.store.wait_replicas == 1  # HITL_REDIS_WAIT_REPLICAS reaches the store
        before = await h.push(agent="agent-1", summary="Decided before the failover")
        await _decide(h, before)
        waiting = await h.push(agent="agent-2", summary="Carded before, clicked during the failover")
        rec = await h.card(waiting)
        old = redis_sentinel.master_port()
        redis_sentinel.master.kill()  # SIGKILL: no shutdown, no last sync
        # a click and an agent's push while no master answers: both are retried onto the new one
        click = asyncio.create_task(h.click(rec, "U0BOB", ActionId.approve))
        pushed = asyncio.create_task(h.push(agent="agent-3", summary="Pushed during the failover"))
        new_port = await asyncio.to_thread(redis_sentinel.wait_failover, old)
        assert new_port == redis_sentinel.replica.port
        # everything the bot acted on is on the new master: WAIT 1 made the replica have it
        assert (await h.store.get(before)).decision is not None
        assert (await h.store.get(waiting)).ts == rec.ts
        assert (await click).status == 200
        assert (await h.client.wait(waiting, timeout=20)).status is Status.approved
        after = await pushed
        await _decide(h, after)
        decided = [json.loads(f["decision"])["request_id"]
                   for _, f in await h.store.redis.xrange(h.store.keys.decisions)]
        assert decided == [before, waiting, after]  # each exactly once
        info = await h.store.redis.info("replication")
        assert info["role"] == "master"
    finally:
        await stop(h)


async def test_without_wait_a_failover_can_lose_the_last_writes(redis_sentinel: LocalSentinel) -> None:
    """Replication is asynchronous: a decision the old master had not yet sent to the replica is
    gone after the failover, although Slack already showed it. The request is not lost: it is
    pending again (so expiry or escalation still resolves it), and the loop keeps deciding."""
    h = await start(redis_sentinel.url)
    try:
        rid = await h.push(agent="agent-1", summary="Decided while the replica is cut off")
        rec = await h.card(rid)
        await asyncio.to_thread(redis_sentinel.wait_replicated)  # the request and its card: on both
        replica = redis_sentinel.replica.proc
        assert replica is not None
        replica.send_signal(signal.SIGSTOP)
        try:
            with redis.Redis(port=redis_sentinel.master_port()) as master:  # cut the replication link:
                master.client_kill_filter(_type="replica")  # the replica receives nothing from here on
            await h.click(rec, "U0ALICE", ActionId.approve)
            assert (await h.decided(rid)).decision is not None  # acknowledged by the old master
            old = redis_sentinel.master_port()
            redis_sentinel.master.kill()
        finally:
            replica.send_signal(signal.SIGCONT)
        await asyncio.to_thread(redis_sentinel.wait_failover, old)
        lost = await h.store.get(rid)
        assert lost.decision is None and lost.ts == rec.ts  # the decision is lost, the card is not
        assert rid in await h.store.pending_ids()
        assert await h.store.redis.xlen(h.store.keys.decisions) == 0
        after = await h.push(agent="agent-2", summary="Pushed after the failover")
        await _decide(h, after)
    finally:
        await stop(h)


async def test_wait_follows_the_write_on_its_own_connection(
        redis_sentinel: LocalSentinel, caplog: pytest.LogCaptureFixture) -> None:
    """WAIT counts the replicas that have this connection's writes: with the replica frozen (its
    link still up) a state change reports 0 of 1, where a WAIT on another connection says 1."""
    store = Store.from_url(redis_sentinel.url, wait_replicas=1)
    try:
        entry = await _push_and_read(store, _request("w1"))
        await asyncio.to_thread(redis_sentinel.wait_replicated)
        replica = redis_sentinel.replica.proc
        assert replica is not None
        replica.send_signal(signal.SIGSTOP)
        try:
            with caplog.at_level(logging.WARNING, logger="hitl.store"):
                acc = Accepted(_request("w1"), Route(), None, post=False)
                assert await store.accept(entry, acc, utcnow()) == "accepted"
        finally:
            replica.send_signal(signal.SIGCONT)
        assert "accept reached 0 of 1 replicas" in caplog.text
        with caplog.at_level(logging.WARNING, logger="hitl.store"):
            caplog.clear()
            await asyncio.to_thread(redis_sentinel.wait_replicated)
            assert await store.accept(entry, acc, utcnow()) == "redelivered"
        assert "replicas" not in caplog.text
    finally:
        await store.close()


async def _waits(master: redis.asyncio.Redis) -> int:
    stats = await master.info("commandstats")
    return int((stats.get("cmdstat_wait") or {}).get("calls", 0))


async def test_the_pause_switch_and_trust_changes_are_waited_for_like_a_decision(
        redis_sentinel: LocalSentinel, tmp_path: Path) -> None:
    """`/hitl pause` is told to the admin and trust changes to admins and agents' routes: with
    HITL_REDIS_WAIT_REPLICAS=1 each is on a replica first, as a decision is (a failover inside the
    replication lag must not undo a pause the admin was told of). Found by an adversarial review."""
    policy = tmp_path / "policy.yml"
    policy.write_text('admins: ["U0ADMIN"]\n')
    h = await start(redis_sentinel.url, redis_wait_replicas=1, policy=policy)
    master = redis.asyncio.Redis(port=redis_sentinel.master_port())
    try:
        before = await _waits(master)
        reply = await h.emu.slash_command("U0ADMIN", "C0GENERAL", "/hitl", "pause incident 42")
        assert reply.status == 200 and (await h.store.control()).get("paused") == "1"
        assert await _waits(master) > before, "the pause was confirmed before any replica had it"
        before = await _waits(master)
        await h.store.trust.set("pin", "billing", "refund", "U0ADMIN", utcnow())
        assert await _waits(master) > before, "a trust change was made before any replica had it"
    finally:
        await master.aclose()
        await stop(h)
