"""A person in Slack, for agent tests: find the card of an agent's request, then approve, edit,
reject or answer it with signed clicks and modal submissions through the emulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from blocks.ids import ActionId, BatchActionId, BlockId, batch_item_block_id, param_block_id
from store.models import Record
from tests.harness import Harness, running
from tests.util import eventually

# Approvals are the point of these tests: everything medium (approve) unless a test says so,
# read-only lookups auto-approved, no first-use trigger, no batching of unrelated calls.
POLICY = """
tiers:
  low:    {mode: auto}
  medium: {mode: approve}
  high:   {mode: approve}
batching: {similar: false}
triggers:
  first_use: {enabled: false}
rules:
  - name: no_crypto
    when: '"crypto" in request.risk.tags'
    mode: deny
    reason: crypto payments are not allowed
"""


@pytest.fixture
async def h(redis_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    async with running(redis_url, tmp_path, POLICY) as harness:
        yield harness


async def card_for(h: Harness, action: str, *, seen: set[str] | None = None, timeout: float = 20) -> Record:
    """The posted card of the (next) pending request for `action`."""

    async def find() -> Record | None:
        for rid in await h.store.redis.zrange(h.store.keys.pending, 0, -1):
            if seen is not None and rid in seen:
                continue
            rec = await h.store.get(rid)
            if rec.request.action == action and rec.ts and rec.decision is None:
                if seen is not None:
                    seen.add(rid)
                return rec
        return None

    return await eventually(find, timeout, f"a card for {action}")


async def _press(h: Harness, rec: Record, user: str, action: ActionId, choice: str) -> None:
    """A card's button, or the item's menu when the request sits on a batch card."""
    if rec.batch:
        assert rec.channel and rec.ts
        await h.emu.click(user, rec.channel, rec.ts, BatchActionId.item, value=choice,
                          block_id=batch_item_block_id(rec.batch, rec.id))
    else:
        await h.click(rec, user, action)


async def approve(h: Harness, rec: Record, user: str = "U0ALICE") -> None:
    await _press(h, rec, user, ActionId.approve, "approve")
    await h.decided(rec.id)


async def edit(h: Harness, rec: Record, values: dict[str, Any], user: str = "U0ALICE") -> None:
    await h.click(rec, user, ActionId.edit)
    view = await eventually(lambda: _top(h, user), what="edit modal")
    result = await h.emu.submit_view(user, view.id, {param_block_id(k): {"value": str(v)} for k, v in values.items()})
    assert result.closed, result.errors
    await h.decided(rec.id)


async def reject(h: Harness, rec: Record, reason: str, code: str = "wrong_params", user: str = "U0BOB") -> None:
    await _press(h, rec, user, ActionId.reject, "reject")
    view = await eventually(lambda: _top(h, user), what="reject modal")
    result = await h.emu.submit_view(user, view.id, {BlockId.reason_code.value: {"value": code},
                                                     BlockId.reason_text.value: {"value": reason}})
    assert result.closed, result.errors
    await h.decided(rec.id)


async def answer(h: Harness, rec: Record, text: str, user: str = "U0CAROL") -> None:
    await h.click(rec, user, ActionId.answer)
    view = await eventually(lambda: _top(h, user), what="answer modal")
    result = await h.emu.submit_view(user, view.id, {BlockId.answer_text.value: {"value": text}})
    assert result.closed, result.errors
    await h.decided(rec.id)


def edit_offered(h: Harness, rec: Record) -> bool:
    msg = h.message(rec)
    return any(e.get("action_id") == ActionId.edit for b in msg.get("blocks", []) if b["type"] == "actions"
               for e in b["elements"])


async def _top(h: Harness, user: str) -> Any:
    return h.emu.top_view(user)


__all__ = ["POLICY", "answer", "approve", "card_for", "edit", "edit_offered", "h", "reject"]
