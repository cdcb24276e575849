"""Redis failing under the bot: replies lost after a write landed, memory full, data lost.

A real redis-server, reached through a TCP proxy (tests/cut_proxy.py) where a test needs a
reply lost; never a mock of Redis."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from blocks.ids import ActionId
from store.redis_store import Store
from tests.cut_proxy import CutProxy
from tests.harness import Harness, running, start, stop
from tests.util import eventually

REVIEWED = """
tiers:
  low:    {mode: auto, sample: 1.0}
  medium: {mode: approve}
  high:   {mode: approve}
batching: {enabled: false}
triggers:
  first_use: {enabled: false}
"""


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
