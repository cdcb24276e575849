"""The scheduler's own posts take their channel's posting slot, as cards do (issue 13, point 3).

Against the emulator's strict mode (one post per channel per rolling second, measured when the
request arrives), a reminder or an escalation notice that comes due right after a card was
posted in the same channel waits for the channel's slot instead of drawing a 429: it reaches
Slack at least a second after the card did. The bot's scheduler runs on a clock moved ahead of
real time (never slept); the slots run on Redis's clock, in real milliseconds.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from emulator.webapi import Call
from store.pacing import PostSlots
from tests.harness import Harness, running
from tests.util import eventually

POLICY = """
defaults: {channel: "#approvals"}
tiers:
  low: {mode: auto}
  medium:
    mode: approve
    timeout: 1h
    reminder: {at: 0.2}
  high:
    mode: approve
    timeout: 1h
    escalation:
      - {after: 10m, notify: ["#approvals"]}
rules:
  - {name: big, when: "request.risk.amount > 500", tier: high}
batching: {enabled: false}
triggers: {first_use: {enabled: false}}
"""
STRICT = {"strict_limits": True, "post_rate": 1.0, "post_burst": 1.0}
WINDOW_S = 1.0  # the strict emulator's rolling second


def later(h: Harness, seconds: float) -> None:
    """Move the bot's scheduler clock `seconds` ahead of real time and wake it."""
    assert h.bot.scheduler is not None
    h.bot.scheduler.clock = lambda: time.time() + seconds
    h.bot.scheduler.kick()


def posts(h: Harness) -> list[Call]:
    """Every chat.postMessage the emulator received, in the order they arrived."""
    return sorted(h.emu.calls_to("chat.postMessage"), key=lambda c: c.received or c.at)


def gaps(calls: list[Call]) -> list[float]:
    return [(b.received or b.at) - (a.received or a.at) for a, b in itertools.pairwise(calls)]


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    await eventually(check, 20, what)


async def test_a_reminder_due_right_after_a_card_waits_for_the_channel_slot(redis_url: str, tmp_path: Path) -> None:
    async with running(redis_url, tmp_path, POLICY, **STRICT) as h:
        rid = await h.push()
        rec = await h.card(rid)
        later(h, 13 * 60)  # the reminder (12 min after the card) is due now, a moment after the card

        async def reminded() -> bool:
            return (await h.store.get(rid)).reminders == 1

        await until(reminded, "the reminder")
        card, reminder = posts(h)
        assert [card.status, reminder.status] == [200, 200]
        assert reminder.args.get("thread_ts") == rec.ts  # in the card's thread, the card's channel
        assert reminder.response["channel"] == card.response["channel"]
        assert gaps([card, reminder])[0] >= WINDOW_S
        assert h.emu.rate_limited == 0
        assert h.bot.scheduler is not None and h.bot.scheduler.stats["rate_limited"] == 0


async def test_an_escalation_notice_to_the_cards_channel_waits_for_the_slot(redis_url: str, tmp_path: Path) -> None:
    async with running(redis_url, tmp_path, POLICY, **STRICT) as h:
        rid = await h.push(summary="Refund $900 to Cy", risk={"amount": 900, "currency": "USD"})
        rec = await h.card(rid)
        later(h, 11 * 60)  # level 1 is due now: a notice to #approvals, then a note in the card's thread

        async def escalated() -> bool:
            return (await h.store.get(rid)).escalation_level == 1

        await until(escalated, "escalation level 1")
        calls = posts(h)
        assert [c.status for c in calls] == [200, 200, 200]
        _card, notice, note = calls
        assert notice.args.get("channel") == "#approvals" and not notice.args.get("thread_ts")
        assert note.args.get("thread_ts") == rec.ts
        assert {c.response["channel"] for c in calls} == {rec.channel}
        assert min(gaps(calls)) >= WINDOW_S
        assert h.emu.rate_limited == 0
        escalated_entries = [e for e in await h.store.trail(rid) if e.event == "escalated"]
        assert "failed" not in escalated_entries[-1].detail  # the thread note waited, not dropped


async def test_a_reminder_that_gave_up_its_place_does_not_hold_up_the_channel(redis_url: str, tmp_path: Path) -> None:
    async with running(redis_url, tmp_path, POLICY, **STRICT) as h:
        assert h.bot.scheduler is not None
        first = await h.push()
        rec = await h.card(first)
        later(h, 13 * 60)
        queue = PostSlots(h.store).keys("#approvals")[1]
        member = f"sched:remind:{first}"

        async def waiting() -> bool:
            return await h.store.redis.zscore(queue, member) is not None

        await until(waiting, "the reminder waiting for the channel's slot")
        later(h, 0)  # its retry (a second away) is not due on this clock: the decision comes first
        await h.click(rec, "U0ALICE", "hitl.approve")  # decided: its reminder is never fired again
        await h.decided(first)
        second = await h.push(summary="Refund $30 to Bo")
        await h.card(second, timeout=20)  # the place it left is pruned; the next card goes
        assert await h.store.redis.zscore(queue, member) is None
        assert h.emu.rate_limited == 0
        assert min(gaps([c for c in posts(h) if c.ok])) >= WINDOW_S
