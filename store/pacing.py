"""Posting slots per channel, measured from the send (`store/lua/post_slot.lua`).

Slack counts a post when it receives it; a bot that spaces its posts by when it was allowed
to send them (a token taken before the call) lets the network and its own scheduling bunch
them up, and a strict Slack answers 429. Here a post holds its channel's slot until its answer
is back (`done`), and the next post may go `window_ms` after that answer, so two posts reach
Slack at least `window_ms` apart whatever the latency; the slots live in Redis and run on
Redis's clock, so every replica shares them. A holder renews its lease while its call runs
(`keep`); a holder that dies frees the slot when the lease ends, and one that was only late
still counts its post from its answer (`done`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from importlib import resources
from typing import Any, Literal

from store.redis_store import Store

log = logging.getLogger("hitl.pacing")

POST_MARGIN_MS = 20  # added to each post's window (answers already come after Slack counted the post)

Outcome = Literal["posted", "maybe", "none"]
"""How a post that held a slot ended: `posted`; `maybe` (5xx, timeout: it may have reached
Slack, so it counts); `none` (nothing was posted: a 429, a refusal, a card found in history)."""


def post_window(post_rate: float, post_burst: float) -> tuple[int, int]:
    """The slots' `(limit, window_ms)` for `post_burst` posts per `post_burst / post_rate` s (each
    window `POST_MARGIN_MS` longer): what every poster of a channel uses (delivery's cards, the
    scheduler's reminders and notices), so they share the channel's limit."""
    limit = max(1, int(post_burst))
    return limit, int(limit * 1000 / post_rate) + POST_MARGIN_MS


def _lua() -> str:
    return (resources.files("store") / "lua" / "post_slot.lua").read_text()


class PostSlots:
    """`take` a channel's posting slot (0) or learn how long to wait; `done` when answered."""

    def __init__(self, store: Store, *, limit: int = 1, window_ms: int = 1000, lease_ms: int = 20_000,
                 grace_ms: int = 2000, window: Callable[[], tuple[int, int]] | None = None) -> None:
        """`limit` posts per `window_ms`; or, with `window`, the `(limit, window_ms)` it gives at
        each call (the posters' rate settings, read when used: a benchmark may change them)."""
        self.store = store
        self.limit, self.window_ms, self.lease_ms, self.grace_ms = limit, window_ms, lease_ms, grace_ms
        self.window = window
        self._script = store.redis.register_script(_lua())

    def keys(self, channel: str) -> list[str]:
        """The channel's slots (hash) and its queue of waiters (sorted set)."""
        slots = self.store.keys.rate(f"send:{channel}")
        return [slots, f"{slots}:queue"]

    async def _run(self, channel: str, args: list[Any]) -> int:
        limit, window_ms = self.window() if self.window is not None else (self.limit, self.window_ms)
        base = [limit, window_ms, self.lease_ms, self.grace_ms]
        return int(await self._script(keys=self.keys(channel), args=[args[0], args[1], *base, *args[2:]]))

    async def take(self, channel: str, member: str, *, front: bool = False) -> int:
        """0: the slot is `member`'s (post, then call `done`); else milliseconds to wait, keeping
        its place in the channel's queue. `front`: before every waiter (its slot went elsewhere)."""
        return await self._run(channel, ["take", member, "1" if front else "0"])

    async def keep(self, channel: str, member: str) -> bool:
        """Renew `member`'s lease (its call is still running): it now ends `lease_ms` from now.
        False: the slot is not held (the lease ended before, or it was never granted)."""
        return await self._run(channel, ["keep", member]) == 0

    async def done(self, channel: str, member: str, outcome: Outcome, *, retry_after_ms: int = 0) -> None:
        """The post that held the slot was answered. `retry_after_ms`: it was a 429, so the
        channel closes that long and the post goes first when it opens. A `posted`/`maybe`
        counts from now even if the lease already ended. Safe to call for a member that holds
        nothing (a `take` cancelled before its answer was read: `none` frees what Redis may
        have granted it)."""
        await self._run(channel, ["done", member, outcome, retry_after_ms])

    async def acquire(self, channel: str, member: str, *, in_place_ms: int, front: bool = False) -> int:
        """`take`, waiting here for a turn due within `in_place_ms`: 0 when the slot is
        `member`'s, else the milliseconds until its turn (its place in the queue kept). A task
        cancelled while taking gives back what Redis may have granted, instead of holding the
        channel until the lease ends."""
        wait = 0
        for _ in range(10):
            try:
                wait = await self.take(channel, member, front=front)
            except asyncio.CancelledError:
                try:
                    await self.done(channel, member, "none")
                except Exception as e:  # the lease frees it later
                    log.warning("pacing: slot of %s in %s not given back: %s", member, channel, e)
                raise
            if wait == 0 or wait > in_place_ms:
                return wait
            await asyncio.sleep(wait / 1000)
        return wait

    async def attempt(self, key: str) -> str | None:
        """The note of an unfinished post attempt (`post_attempt` on a request or batch), read
        without writing one: a retry searches history for it before taking a slot."""
        note = await self.store.redis.hget(key, "post_attempt")
        return str(note) if note is not None else None

    async def forget_attempt(self, key: str) -> None:
        """Drop the note that a post is under way (`post_attempt` on a request or batch) when it
        is known that nothing was posted (a 429): its retry then needs no history search."""
        await self.store.redis.hdel(key, "post_attempt")
