"""Issue 10 over the real app: signed HTTP from the emulator, a real redis-server.

Edited values are held to the bounds of requests (inline modal errors, never a traceback), and
a click decides even when the agent's reply key became something other than a stream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from blocks.ids import ActionId, param_block_id
from store.models import State, Status
from tests.harness import Harness, start, stop
from tests.util import eventually


@pytest.fixture
async def h(redis_url: str) -> AsyncIterator[Harness]:
    harness = await start(redis_url)
    yield harness
    await stop(harness)


async def _edit_modal(h: Harness, rid: str) -> Any:
    rec = await h.card(rid)
    await h.click(rec, "U0ALICE", ActionId.edit)

    async def top() -> Any:
        return h.emu.top_view("U0ALICE")

    return await eventually(top, what="edit modal")


REFUSED = [
    ("401-digit decimal", "1" * 400 + ".5"),
    ("5000-digit integer", "9" * 5000),
    ("10^30", "1" + "0" * 30),
    ("just past 1e15", "1000000000000000.5"),
    ("negative past 1e15", "-2000000000000000"),
    ("infinity", "Infinity"),
    ("NaN", "NaN"),
    ("exponent", "1e400"),
]


@pytest.mark.parametrize(("case", "typed"), REFUSED, ids=[c[0] for c in REFUSED])
async def test_an_out_of_range_edit_is_an_inline_error(h: Harness, case: str, typed: str) -> None:
    rid = await h.push(params={"amount": 250.5, "count": 3}, editable=["amount", "count"])
    view = await _edit_modal(h, rid)
    for name in ("amount", "count"):
        others = {param_block_id(n): {"value": "1"} for n in ("amount", "count") if n != name}
        result = await h.emu.submit_view("U0ALICE", view.id, {param_block_id(name): {"value": typed}, **others})
        assert not result.closed, case
        assert param_block_id(name) in result.errors, result.errors
    rec = await h.store.get(rid)
    assert rec.state is State.pending and rec.decision is None and rec.params["amount"] == 250.5
    # the largest allowed value still goes through, exactly
    result = await h.emu.submit_view("U0ALICE", view.id, {param_block_id("amount"): {"value": "1000000000000000"},
                                                          param_block_id("count"): {"value": "-1000000000000000"}})
    assert result.closed
    decision = await h.client.wait(rid, timeout=10)
    assert decision.status is Status.approved
    assert decision.params == {"amount": 1e15, "count": -10**15}


async def test_approve_decides_when_reply_to_became_a_hash(h: Harness) -> None:
    """Issue 3: the click is answered, the decision stored and published to {prefix}:decisions,
    the card updated, and the failure to reach reply_to is in the audit trail."""
    rid = await h.push(reply_to="agent:box")
    rec = await h.card(rid)
    await h.store.redis.hset("agent:box", "k", "v")  # the agent's key is not a stream any more
    reply = await h.click(rec, "U0ALICE", ActionId.approve)
    assert reply.status == 200
    rec = await h.decided(rid)
    assert rec.decision is not None and rec.decision.status is Status.approved
    rows = await h.store.redis.xrange(h.store.keys.decisions)
    assert [json.loads(f["decision"])["request_id"] for _, f in rows] == [rid]
    published = [e.detail for e in await h.store.trail(rid) if e.event == "published"]
    assert published == [{"streams": [h.store.keys.decisions], "reply_failed": "agent:box is a hash, not a stream"}]

    async def locked() -> bool:
        return ActionId.approve not in json.dumps(h.message(await h.store.get(rid)))

    await eventually(locked, what="card locked")
