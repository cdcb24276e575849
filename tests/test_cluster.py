"""The core loop on a real 3-master Redis Cluster (`REDIS_URL=redis+cluster://...`).

A request XADDed by an agent, routed by intake, a card posted to the emulator, a signed click
over HTTP, the decision in the agent's reply stream; then two teams (two hash-tagged prefixes)
whose keys live on different shards, each deciding on its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import aiohttp
import pytest
import redis
from hitl.errors import InvalidRequest

from blocks.ids import ActionId
from bot.client import HitlClient
from bot.config import ConfigError, load_settings
from bot.doctor.redis_checks import redis_checks
from bot.doctor.report import Status as CheckStatus
from store.backlog import BacklogStore
from store.models import Route, Status, utcnow
from store.redis_store import GROUP, Accepted, Store
from tests.harness import Harness, start, stop
from tests.redis_cluster import LocalCluster
from tests.test_store import _request
from tests.util import eventually

pytestmark = pytest.mark.cluster


@pytest.fixture
async def h(cluster_url: str) -> AsyncIterator[Harness]:
    harness = await start(cluster_url, prefix="{hitl}")
    yield harness
    await stop(harness)


async def test_the_loop_on_a_cluster(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    assert h.store.cluster
    rid = await h.push(params={"order": "4711", "amount": 250})
    waiting = asyncio.create_task(h.client.wait(rid, timeout=10))
    rec = await h.card(rid)
    assert "Refund $250 to Ana" in json.dumps(h.message(rec)["blocks"])
    assert (await h.click(rec, "U0ALICE", ActionId.approve)).status == 200
    decision = await waiting
    assert decision.status is Status.approved and [v.user_id for v in decision.decided_by] == ["U0ALICE"]
    rows = await h.store.redis.xrange(h.client.reply_to)  # the agent's own stream, `{hitl}:results:...`
    assert [json.loads(f["decision"])["status"] for _, f in rows] == ["approved"]
    assert json.loads((await h.store.redis.xrange(h.store.keys.decisions))[0][1]["decision"])["request_id"] == rid
    events = [e.event for e in await h.store.trail(rid)]
    for expected in ("received", "routed", "posted", "clicked", "decided", "published"):
        assert expected in events, events
    assert (await h.store.redis.xpending(h.store.keys.requests, GROUP))["pending"] == 0
    # every card posted ends the delivery pass cleanly (the backlog's count of waiting cards
    # once failed on a cluster after each post: "delivery: pass failed", no digest refresh)
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def test_the_backlog_counts_on_a_cluster(h: Harness) -> None:
    state = BacklogStore(h.store)
    assert await state.add("#approvals", "post:a", 1) == 1
    assert await state.add("#approvals", "post:b", 2) == 2
    assert await state.remove("#approvals", "post:a") == (1, False)
    await state.set_digest("#approvals", "C0APPROVALS", "1.0")
    assert await state.remove("#approvals", "post:b") == (0, True)


async def test_health_and_metrics_on_a_cluster(h: Harness) -> None:
    async def healthy() -> bool:
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{h.bot.port}/healthz") as r:
            return r.status == 200 and (await r.json())["redis"] == "ok"

    await eventually(healthy, what="healthz 200 (the cluster client maps the slots on first use)")
    await h.push()
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{h.bot.port}/metrics") as r:
        text = await r.text()
    assert "hitl_queue_depth" in text and "hitl_outbox_depth" in text and "hitl_dead_letters" in text


async def test_a_reply_to_in_another_slot_is_refused_with_a_reason(h: Harness) -> None:
    """The decision is written in the same script as the state change, so the agent's stream must
    share the prefix's slot; a stream elsewhere would fail every time, so it is refused up front."""
    # an agent without the Python client (which refuses it before sending)
    await h.push_raw({"id": "elsewhere", "agent": "billing-agent", "action": "refund", "summary": "Refund",
                      "reply_to": "agent:inbox"})
    good = await h.push(reply_to="agent:{hitl}:inbox", id="same-slot")

    async def dead() -> list[dict[str, str]]:
        return [f for _, f in await h.store.redis.xrange(h.store.keys.dead)]

    rows = await eventually(dead, what="dead-lettered entry")
    assert "another Redis Cluster slot" in rows[0]["error"] and "{hitl}" in rows[0]["error"]
    assert not await h.store.exists("elsewhere")
    assert (await h.client.wait("elsewhere", timeout=5)).status is Status.invalid  # told on {hitl}:decisions
    rec = await h.card(good)
    await h.click(rec, "U0ALICE", ActionId.approve)
    await h.decided(good)
    assert await h.store.redis.xlen("agent:{hitl}:inbox") == 1


async def test_two_teams_on_different_shards(redis_cluster: LocalCluster, cluster_url: str) -> None:
    """Each prefix is one slot; different hash tags spread the teams over the masters."""
    prefixes = ("{team-a}", "{team-b}")
    ports = {p: redis_cluster.master_port(f"{p}:requests") for p in prefixes}
    assert len(set(ports.values())) == 2, ports  # the tags were chosen to land on two masters
    teams = [await start(cluster_url, prefix=p) for p in prefixes]
    try:
        ids = [await t.push(summary=f"Refund for {p}") for t, p in zip(teams, prefixes, strict=True)]
        for t, rid, user in zip(teams, ids, ("U0ALICE", "U0BOB"), strict=True):
            rec = await t.card(rid)
            await t.click(rec, user, ActionId.approve)
            decision = await t.client.wait(rid, timeout=10)
            assert decision.status is Status.approved and decision.decided_by[0].user_id == user
        # each team's keys are on its own master and nowhere else
        for p, t in zip(prefixes, teams, strict=True):
            for node in redis_cluster.nodes:
                with redis.Redis(port=node.port, decode_responses=True) as c:
                    keys = list(c.scan_iter(match=f"{p}:*", count=1000))
                assert bool(keys) == (node.port == ports[p]), (p, node.port, keys)
            assert await t.store.redis.xlen(t.store.keys.decisions) == 1
    finally:
        for t in teams:
            await stop(t)


async def test_requests_that_start_together_on_a_new_client_each_go_out_once(cluster_url: str) -> None:
    """An agent that starts and sends at once: commands issued together on a new cluster client
    picked their node before it knew the slots, and the redirections that followed closed
    connections others were using, failing some ('cannot reach Redis') and sending others twice."""
    store = Store.from_url(cluster_url, prefix="{hitl}")
    client = HitlClient.from_url(cluster_url, prefix="{hitl}", name="eager")
    try:
        ids = await asyncio.gather(*(client.request(agent="billing", action="refund", summary=f"Refund #{i}")
                                     for i in range(40)))
        sent = [json.loads(f["request"])["id"] for _, f in await store.redis.xrange(store.keys.requests)]
        assert sorted(sent) == sorted(ids)
    finally:
        await client.close()
        await store.close()


async def test_a_burst_wider_than_the_connection_pool_waits_for_connections(cluster_url: str) -> None:
    """All of a prefix's keys are on one master, so every concurrent command takes a connection
    to it: past the pool's 64, redis-py's cluster client failed at once (MaxConnectionsError)
    where a single server's pool waits. An agent's burst then failed as 'cannot reach Redis', and
    intake's 100-entry batch (its accepts side by side) as 'Redis unavailable'."""
    store = Store.from_url(cluster_url, prefix="{hitl}")
    client = HitlClient.from_url(cluster_url, prefix="{hitl}", name="burst")
    try:
        await store.ensure_group()
        ids = await asyncio.gather(*(client.request(agent="billing", action="refund", summary=f"Refund #{i}")
                                     for i in range(150)))
        rows = await store.redis.xreadgroup(GROUP, "t", {store.keys.requests: ">"}, count=150)
        items = [(str(e), Accepted(_request(json.loads(f["request"])["id"]), Route(), None, post=False))
                 for e, f in rows[0][1]]
        assert await store.accept_many(items, utcnow()) == ["accepted"] * 150
        assert sorted(await store.pending_ids(limit=200)) == sorted(ids)
    finally:
        await client.close()
        await store.close()


async def test_the_client_refuses_up_front_what_a_cluster_cannot_carry(cluster_url: str) -> None:
    """The agent's side of the bot's two cluster rules. A prefix without a hash tag named keys
    the bot (which refuses such a prefix) never reads: every ask waited out its timeout. A
    reply_to in another slot is dead-lettered, but the client watched it together with
    `{hitl}:decisions` (a CROSSSLOT error out of ask) or alone (no answer until the timeout)."""
    with pytest.raises(ValueError, match=r"HITL_PREFIX='\{hitl\}'"):
        HitlClient.from_url(cluster_url, prefix="hitl")
    async with HitlClient.from_url(cluster_url, prefix="{hitl}", name="agent") as client:
        for chosen in ({"id": "own-stream"}, {}):
            with pytest.raises(InvalidRequest, match=r"reply_to 'agent:inbox' is in another Redis Cluster slot"):
                await client.ask(agent="billing", action="refund", summary="Refund", reply_to="agent:inbox",
                                 timeout=2, **chosen)
        assert not await client.redis.exists("{hitl}:requests")  # nothing was sent
        rid = await client.request(agent="billing", action="refund", summary="Refund", reply_to="agent:{hitl}:inbox")
        assert rid


async def test_doctor_reads_the_master_that_holds_the_prefix(redis_cluster: LocalCluster, cluster_url: str) -> None:
    """`hitl doctor` judged persistence and eviction from whichever master redis-py sends INFO
    and CONFIG GET to by default, not the one holding the prefix's slot: a master that would
    evict hitl's records, or keep nothing on disk, was reported as fine."""
    port = redis_cluster.master_port("{hitl}:requests")
    with redis.Redis(port=port) as c:
        c.config_set("maxmemory-policy", "allkeys-lru")
        c.config_set("appendonly", "no")
        c.config_set("save", "")
    try:
        checks = {c.name: c for c in await redis_checks(load_settings(redis_url=cluster_url, prefix="{hitl}"))}
        assert checks["redis.eviction"].status is CheckStatus.error and "allkeys-lru" in checks["redis.eviction"].detail
        assert checks["redis.persistence"].status is CheckStatus.error
    finally:
        with redis.Redis(port=port) as c:
            c.config_set("maxmemory-policy", "noeviction")
            c.config_set("appendonly", "yes")


def test_a_cluster_url_needs_a_hash_tagged_prefix(cluster_url: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(redis_url=cluster_url, prefix="hitl")
    assert "HITL_PREFIX" in str(e.value) and "{hitl}" in str(e.value) and "one slot" in str(e.value)
    assert load_settings(redis_url=cluster_url, prefix="{hitl}").prefix == "{hitl}"


async def test_the_redis_clock_is_read_on_the_master_holding_the_prefix(redis_cluster: LocalCluster,
                                                                        cluster_url: str) -> None:
    """The sealer's and the stats projector's clock is "Redis's, shared by every replica": on a
    cluster it was read from whichever node redis-py sends keyless commands to, so replicas (and
    the scripts, which run on the prefix's master) could read different machines' clocks."""
    from store.audit_feed import AuditFeed

    def time_calls() -> dict[int, int]:
        out = {}
        for node in redis_cluster.nodes:
            with redis.Redis(port=node.port, decode_responses=True) as c:
                out[node.port] = int(c.info("commandstats").get("cmdstat_time", {}).get("calls", 0))
        return out

    for prefix in ("{hitl}", "{team-a}", "{team-b}"):
        store = Store.from_url(cluster_url, prefix=prefix)
        feed = AuditFeed(cluster_url, store.redis, store.keys, block_ms=100)
        try:
            before = time_calls()
            await store.chain.now_ms()
            await feed.now_ms()
            after = time_calls()
        finally:
            await feed.close()
            await store.close()
        holder = redis_cluster.master_port(f"{prefix}:requests")
        assert {p: after[p] - before[p] for p in after} == {p: 2 if p == holder else 0 for p in after}, prefix
