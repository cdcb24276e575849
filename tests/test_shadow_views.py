"""Shadow mode: what the person who decides can see before deciding, wherever they look."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from blocks.ids import ActionId
from tests.harness import Harness, running

POLICY = """
tiers:
  low:    {mode: auto}
  medium: {mode: approve}
  high:   {mode: approve}
rules:
  - name: shadow_emails
    when: request.action == "send_email"
    mode: shadow
batching: {enabled: false}
triggers:
  first_use: {enabled: false}
"""


@pytest.fixture
async def h(redis_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    async with running(redis_url, tmp_path, POLICY) as harness:
        yield harness


async def _audit(h: Harness, user: str, rid: str) -> str:
    reply = await h.emu.slash_command(user, "C0GENERAL", "/hitl", f"audit {rid}")
    return json.dumps(reply.json())


@pytest.mark.parametrize("confidence", [0.91, 0.6])
async def test_the_audit_trail_of_a_waiting_shadow_request_does_not_give_away_the_confidence(
        h: Harness, confidence: float) -> None:
    """The card hides the agent's confidence, even as the name of the band it fell in; the
    request id on the card is what `/hitl audit` takes, so the trail must not say it either
    while the request waits. Once decided, the trail is whole."""
    rid = await h.push(action="send_email", summary="Email Ana about her refund", confidence=confidence)
    rec = await h.card(rid)
    pct = f"{round(confidence * 100)}%"
    card = json.dumps(h.message(rec)["blocks"])
    assert "confidence_" not in card and pct not in card
    before = await _audit(h, "U0ALICE", rid)
    assert "routed" in before and "shadow" in before
    assert "confidence_" not in before and pct not in before
    await h.click(rec, "U0ALICE", ActionId.approve)
    await h.decided(rid)
    assert "confidence_" in await _audit(h, "U0ALICE", rid)
