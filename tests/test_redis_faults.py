"""Redis failing under the bot: replies lost after a write landed, memory full, data lost.

A real redis-server, reached through a TCP proxy (tests/cut_proxy.py) where a test needs a
reply lost; never a mock of Redis."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from blocks.ids import ActionId
from store.redis_store import Store
from tests.cut_proxy import CutProxy
from tests.harness import Harness, running, start, stop
from tests.test_forms_hardening import REVIEW_POLICY
from tests.util import eventually

REVIEWED = REVIEW_POLICY  # every auto-routed action sampled for review


async def _loaded(redis_url: str, script: str) -> bytes:
    """The SHA of one of the store's scripts, with every script loaded (a first EVALSHA that
    meets NOSCRIPT runs nothing: the reply the proxy loses must be one of a script that ran)."""
    s = Store.from_url(redis_url)
    try:
        for sc in s._scripts.values():
            await s.redis.script_load(sc.script)
        return s._scripts[script].sha.encode()
    finally:
        await s.close()


@pytest.fixture
async def cut_apply(redis_url: str) -> AsyncIterator[tuple[CutProxy, Harness]]:
    async with CutProxy(redis_url, await _loaded(redis_url, "apply")) as proxy:
        h = await start(proxy.url)
        try:
            yield proxy, h
        finally:
            await stop(h)


async def test_a_click_whose_reply_was_lost_is_not_told_it_came_too_late(
        cut_apply: tuple[CutProxy, Harness]) -> None:
    """Alice's approval is stored, the connection drops before its reply, and the client sends
    the script again: that retry met the request decided (by her own first send) and she was
    told 'Already approved by @alice — nothing changed', with a false 'too late' click audited
    and the decision's follow-up (her trust count) skipped. The retry now finds its own write."""
    proxy, h = cut_apply
    rid = await h.push(id="lost-reply")
    rec = await h.card(rid)
    await h.click(rec, "U0ALICE", ActionId.approve)
    assert proxy.cut.is_set()

    async def settled() -> bool:  # the listener's work is done: trust counted, or a reply sent
        counted = await h.store.redis.zscore(h.store.keys.deadlines, f"trust:{rid}") is None
        return counted or bool(h.emu.ephemerals("U0ALICE"))

    await eventually(settled, what="the click handled")
    assert h.emu.ephemerals("U0ALICE") == []
    trail = [(e.event, e.actor, e.detail) for e in await h.store.trail(rid)]
    assert [t for t in trail if t[0] in ("clicked", "decided")] == [
        ("clicked", "U0ALICE", {"choice": "approve"}), ("decided", "system", {"status": "approved"})]
    assert len(await h.store.redis.xrange(h.store.keys.decisions)) == 1


async def test_a_vote_whose_reply_was_lost_is_not_refused_as_a_second_vote(
        redis_url: str, tmp_path: Path) -> None:
    """A vote towards a quorum of 2: the retry met the record one version on (her own vote),
    read it again and refused her 'already voted', audited as a refusal."""
    async with CutProxy(redis_url, await _loaded(redis_url, "apply")) as proxy, \
            running(proxy.url, tmp_path, "defaults: {quorum: 2}\n" + REVIEWED) as h:
        rid = await h.push(id="lost-vote")
        rec = await h.card(rid)
        await h.click(rec, "U0ALICE", ActionId.approve)
        assert proxy.cut.is_set()
        await h.click(rec, "U0BOB", ActionId.approve)
        await h.decided(rid)
        assert h.emu.ephemerals("U0ALICE") == []
        trail = [(e.event, e.actor) for e in await h.store.trail(rid) if e.actor.startswith("U0")]
        assert trail == [("clicked", "U0ALICE"), ("clicked", "U0BOB")]


async def test_a_check_whose_reply_was_lost_is_not_told_someone_checked_first(
        redis_url: str, tmp_path: Path) -> None:
    """The same for "Looks right" on an action that ran on its own (review.lua)."""
    async with CutProxy(redis_url, await _loaded(redis_url, "review")) as proxy, \
            running(proxy.url, tmp_path, REVIEWED) as h:
        rid = await h.push(action="lookup_order", summary="Look up order 9", confidence=0.95)
        rec = await h.card(rid)
        await h.click(rec, "U0ALICE", ActionId.review_ok)
        assert proxy.cut.is_set()

        async def settled() -> bool:
            counted = await h.store.redis.zscore(h.store.keys.deadlines, f"trust:{rid}") is None
            return counted or bool(h.emu.ephemerals("U0ALICE"))

        await eventually(settled, what="the check handled")
        assert h.emu.ephemerals("U0ALICE") == []
        trail = [(e.event, e.detail) for e in await h.store.trail(rid) if e.actor == "U0ALICE"]
        assert trail == [("reviewed", {"verdict": "ok", "reason_code": None})]
        assert json.loads((await h.store.redis.hget(h.store.keys.request(rid), "review")) or "{}")["verdict"] == "ok"


async def _health(h: Harness) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{h.bot.port}/healthz") as r:
        return r.status, await r.json()


async def test_a_redis_refusing_writes_is_reported_as_such_and_intake_comes_back(
        redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """A Redis that answers but refuses writes (here `min-replicas-to-write` with no replica; a
    demoted master's READONLY, or OOM, the same) stopped intake with 'unexpected failure' and a
    traceback every second, and /healthz said only that intake was stopped while Redis was ok.
    Now one line per attempt says Redis refused and why, /healthz says so, and intake runs
    again by itself once Redis takes writes."""
    h = await start(redis_url)
    r = h.store.redis
    try:
        await r.config_set("min-replicas-to-write", "1")
        caplog.clear()

        async def refused() -> dict[str, object] | None:
            status, body = await _health(h)
            return body if status == 503 and "intake_error" in body else None

        body = await eventually(refused, 10, "/healthz saying why intake stopped")
        assert body["redis"] == "ok" and "Redis refused: NOREPLICAS" in str(body["intake_error"])
        intake = [rec for rec in caplog.records if rec.name == "hitl.intake"]
        assert intake and "Redis refused a command" in intake[0].getMessage()
        assert [rec.getMessage() for rec in caplog.records if rec.name.startswith("hitl")
                and (rec.levelname != "WARNING" or rec.exc_info)] == []
    finally:
        await r.config_set("min-replicas-to-write", "0")
    try:
        await eventually(lambda: _is_up(h), 10, "/healthz 200 once Redis takes writes")
        rid = await h.push(id="after-refusal")
        assert (await h.card(rid)).ts
    finally:
        await stop(h)


async def _is_up(h: Harness) -> bool:
    status, body = await _health(h)
    return status == 200 and "intake_error" not in body


async def test_a_card_whose_accept_reply_was_lost_is_posted_at_once(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Intake's accept ran, its reply was lost and the client sent it again: that resend found
    the entry acknowledged ('redelivered') and delivery was not woken, so the card waited for
    delivery's next look (here set to a minute) instead of going out at once."""
    from bot.delivery import Delivery

    monkeypatch.setattr(Delivery, "max_wait_s", 60.0)  # only a wake-up posts the card within the test
    async with CutProxy(redis_url, await _loaded(redis_url, "accept")) as proxy:
        h = await start(proxy.url)
        try:
            await h.card(await h.push(id="lost-accept"), timeout=10)
            assert proxy.cut.is_set()
        finally:
            await stop(h)


async def test_a_canary_score_whose_reply_was_lost_counts_once(redis_url: str) -> None:
    """Scoring a reviewer on a canary was a mark (HSETNX) and then a count (HINCRBY): the count's
    resend after a lost reply counted it twice (and a crash between the two lost it). Both are
    one script now, and its resend finds the mark."""
    s = Store.from_url(redis_url)
    try:
        for sc in s.trust._scripts.values():
            await s.redis.script_load(sc.script)
    finally:
        await s.close()
    async with CutProxy(redis_url, b"canary_scores") as proxy:
        store = Store.from_url(proxy.url)
        try:
            await store.trust.score_canary("can-1", "U0BOB", caught=False)
            assert proxy.cut.is_set()
            assert await store.trust.canary_scores() == {"U0BOB": (0, 1)}
            assert not await store.trust.score_canary("can-1", "U0BOB", caught=False)  # once
            assert await store.trust.canary_scores() == {"U0BOB": (0, 1)}
        finally:
            await store.close()
