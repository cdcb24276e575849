"""Questions end to end ("human as a tool"): answered by an option button or in the Answer
modal; either way the agent gets `answered` with `option` or `answer`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from blocks.ids import ActionId, BlockId, CallbackId
from blocks.payloads import ButtonValue
from store.models import Status
from tests.harness import Harness, start, stop
from tests.util import eventually

OPTIONS = [{"value": "ship", "label": "Ship today", "style": "primary"},
           {"value": "wait", "label": "Wait for stock"}]


@pytest.fixture
async def h(redis_url: str) -> AsyncIterator[Harness]:
    harness = await start(redis_url)
    yield harness
    await stop(harness)


def buttons(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for b in message.get("blocks", []) if b["type"] == "actions" for e in b["elements"]]


async def test_answered_by_an_option(h: Harness) -> None:
    rid = await h.push(kind="question", action="ask_shipping",
                       summary="Order 88 is half in stock: ship what we have?", options=OPTIONS)
    rec = await h.card(rid)
    elements = buttons(h.message(rec))
    assert [e["action_id"] for e in elements] == ["hitl.option:0", "hitl.option:1", ActionId.answer]
    assert ButtonValue.unpack(elements[1]["value"]).o == "wait"
    await h.click(rec, "U0BOB", "hitl.option:1")
    decision = await h.client.wait(rid, timeout=10)
    assert decision.status is Status.answered and decision.option == "wait"
    assert decision.answer is None and decision.decided_by[0].user_id == "U0BOB"

    async def locked() -> bool:
        m = h.message(await h.store.get(rid))
        return not buttons(m) and "Wait for stock" in json.dumps(m["blocks"])

    await eventually(locked, what="card locked with the answer")


@pytest.mark.cluster_too
async def test_answered_in_the_modal(h: Harness) -> None:
    rid = await h.push(kind="question", action="ask_policy",
                       summary="Can we refund after 60 days?")
    rec = await h.card(rid)
    assert [e["action_id"] for e in buttons(h.message(rec))] == [ActionId.answer]
    await h.click(rec, "U0CAROL", ActionId.answer)
    view = await eventually(lambda: _top(h, "U0CAROL"), what="answer modal")
    assert view.spec["callback_id"] == CallbackId.answer_modal
    empty = await h.emu.submit_view("U0CAROL", view.id, {BlockId.answer_text.value: {"value": " "}})
    assert not empty.closed and BlockId.answer_text in empty.errors
    done = await h.emu.submit_view("U0CAROL", view.id, {
        BlockId.answer_text.value: {"value": "Only for gold customers"}})
    assert done.closed
    decision = await h.client.wait(rid, timeout=10)
    assert decision.status is Status.answered and decision.answer == "Only for gold customers"
    assert decision.option is None


async def test_the_requester_cannot_answer_and_a_forged_option_is_refused(h: Harness) -> None:
    rid = await h.push(kind="question", summary="Proceed?", options=["yes", "no"],
                       requested_by="U0ALICE")
    rec = await h.card(rid)
    await h.click(rec, "U0ALICE", "hitl.option:0")
    await eventually(lambda: _ephemeral(h, "U0ALICE"), what="refusal")
    assert "cannot approve it yourself" in json.dumps(h.emu.ephemerals("U0ALICE"))
    forged = ButtonValue(r=rid, o="maybe").pack()
    assert rec.channel and rec.ts
    await h.emu.click("U0BOB", rec.channel, rec.ts, "hitl.option:1", value=forged)
    await eventually(lambda: _ephemeral(h, "U0BOB"), what="refusal")
    assert (await h.store.get(rid)).decision is None
    await h.click(rec, "U0BOB", "hitl.option:1")
    assert (await h.client.wait(rid, timeout=10)).option == "no"


async def _top(h: Harness, user: str) -> Any:
    return h.emu.top_view(user)


async def _ephemeral(h: Harness, user: str) -> bool:
    return bool(h.emu.ephemerals(user))
