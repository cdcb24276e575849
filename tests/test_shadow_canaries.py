"""Canaries among shadow-mode work: a canary of an action people decide in shadow mode looks
like the real cards around it (the agent's view hidden) and never counts as shadow agreement."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from blocks.ids import ActionId
from store.models import Mode, Status
from tests.harness import Harness, running
from tests.util import eventually

POLICY = """
defaults: {tier: medium}
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
trust:
  canaries: {file: canaries.jsonl, share: 0.5}
"""

CANARY = {"agent": "mail-bot", "action": "send_email", "summary": "Email Bo his card number",
          "confidence": 0.93, "context": {"recommendation": "Send it, Bo asked for it"},
          "answer": "reject", "why": "Card numbers are never sent by email."}


@pytest.fixture
async def h(redis_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    (tmp_path / "canaries.jsonl").write_text(json.dumps(CANARY) + "\n")
    async with running(redis_url, tmp_path, POLICY) as harness:
        yield harness


async def _first_canary(h: Harness) -> str:
    for i in range(16):
        await h.push(agent="mail-bot", action="send_email", summary=f"Email customer {i}", id=f"real-{i}",
                     confidence=0.91, context={"recommendation": "Send it now"})

    async def found() -> str | None:
        ids = [i for i in await h.store.pending_ids(500) if not i.startswith("real-")]
        return ids[0] if ids else None

    return str(await eventually(found, what="a canary"))


async def test_a_canary_of_a_shadow_action_hides_the_agents_view_like_its_real_cards(h: Harness) -> None:
    canary = await _first_canary(h)
    real, fake = await h.card("real-0"), await h.card(canary)
    assert real.route.mode is Mode.shadow and fake.route.canary
    shown = json.dumps(h.message(fake)["blocks"])
    # the real cards of this action hide the agent's confidence and recommendation: so does the canary's
    assert "93%" not in shown and "Bo asked for it" not in shown
    assert "recommendation and confidence are hidden" in shown
    assert fake.route.mode is real.route.mode
    # deciding it scores the reviewer and is no shadow agreement (nor disagreement)
    await h.click(fake, "U0BOB", ActionId.approve)
    await h.decided(canary)

    async def scored() -> dict[str, tuple[int, int]] | None:
        s = await h.store.trust.canary_scores()
        return s or None

    assert await eventually(scored, what="the canary scored") == {"U0BOB": (0, 1)}
    assert [e.event for e in await h.store.trail(canary) if e.event == "shadow_compared"] == []


CLOCK_APPROVES = """
defaults: {tier: medium}
tiers:
  low:    {mode: auto}
  medium: {mode: approve, timeout: 1h, on_timeout: approve}
  high:   {mode: approve}
batching: {enabled: false}
triggers:
  first_use: {enabled: false}
trust:
  canaries: {file: canaries.jsonl, share: 0.5}
"""


async def test_a_canary_nobody_decides_is_never_approved_by_the_clock(redis_url: str, tmp_path: Path) -> None:
    """The tier approves what nobody decides in time; its canary looks the same (its reminder
    says so too), but when the time is up it expires: a known-answer item is never approved
    automatically, whatever its answer."""
    (tmp_path / "canaries.jsonl").write_text(json.dumps({**CANARY, "action": "refund", "confidence": None}) + "\n")
    async with running(redis_url, tmp_path, CLOCK_APPROVES) as h:
        canary = None
        for i in range(16):
            await h.push(action="refund", summary=f"Refund order {i}", id=f"real-{i}")

        async def found() -> str | None:
            ids = [i for i in await h.store.pending_ids(500) if not i.startswith("real-")]
            return ids[0] if ids else None

        canary = str(await eventually(found, what="a canary"))
        fake, real = await h.card(canary), await h.card("real-0")
        assert fake.route.on_timeout == real.route.on_timeout == "approve"  # the same words on both cards
        assert h.bot.scheduler is not None
        h.bot.scheduler.clock = lambda: time.time() + 3700  # type: ignore[misc]
        h.bot.scheduler.kick()
        assert (await h.decided("real-0")).decision.status is Status.auto_approved  # type: ignore[union-attr]
        done = (await h.decided(canary)).decision
        assert done is not None and done.status is Status.expired
