"""Injected faults and Slack's rate limits (token buckets; strict mode for posts)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

# Calls per minute for each tier; the bucket holds a minute's worth, so short bursts pass.
TIER_PER_MINUTE = {"t1": 1, "t2": 20, "t3": 50, "t4": 100}
# chat.postMessage ("special" tier t5): 1 message per second per channel. Slack tolerates short
# bursts, modelled as a bucket of POST_BURST messages refilled at 1 per second.
POST_BURST = 3
# Strict mode: at most one chat.postMessage per channel in any rolling second, no burst,
# measured when the request arrives (the Slack a bot must never trip).
STRICT_POST_INTERVAL_S = 1.0
STRICT_ENV = "HITL_EMULATOR_STRICT"


@dataclass
class Fault:
    """What to do to the next `times` calls of a method (`times=None`: every call).

    `applied`: the call takes effect (a message is posted...) but its answer is the fault, as
    when Slack (or a proxy) fails after doing the work. `body`: answer this raw text with
    `content_type` instead of Slack's JSON (a proxy's HTML error page).
    """

    status: int = 200
    retry_after: int | None = None
    error: str | None = None
    delay: float = 0.0
    times: int | None = 1
    applied: bool = False
    body: str | None = None
    content_type: str = "text/html"


class Faults:
    """Faults queued per method; `"*"` matches every method."""

    def __init__(self) -> None:
        self._queued: dict[str, list[Fault]] = {}

    def add(self, method: str, fault: Fault) -> None:
        self._queued.setdefault(method, []).append(fault)

    def clear(self) -> None:
        self._queued.clear()

    def take(self, method: str) -> Fault | None:
        """The fault for this call, if any, counting it against its `times`."""
        for key in (method, "*"):
            queue = self._queued.get(key)
            if not queue:
                continue
            fault = queue[0]
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    queue.pop(0)
            return fault
        return None


@dataclass
class _Bucket:
    capacity: float
    per_second: float
    tokens: float
    updated: float


class RateLimiter:
    """Answers whether a call is over its tier; counts the calls it limited.

    `strict`: `chat.postMessage` allows exactly one post per channel per rolling second (no
    burst allowance): a post that arrives less than a second after the channel's last
    carried-out post is answered 429 (only posts that were carried out count). Tiers are
    unchanged."""

    def __init__(self, clock: Callable[[], float], enabled: bool = False, *, strict: bool = False) -> None:
        self.clock = clock
        self.enabled = enabled or strict
        self.strict = strict
        self.limited = 0
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._last_post: dict[str, float] = {}

    def _bucket(self, key: tuple[str, str], capacity: float, per_second: float) -> _Bucket:
        bucket = self._buckets.get(key)
        now = self.clock()
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(capacity, per_second, capacity, now)
        bucket.tokens = min(
            bucket.capacity, bucket.tokens + (now - bucket.updated) * bucket.per_second
        )
        bucket.updated = now
        return bucket

    def check(self, method: str, tier: str, channel: str | None = None, *, at: float | None = None) -> int | None:
        """None if the call may proceed, else the Retry-After in whole seconds. `at`: when the
        request arrived (default: now)."""
        if not self.enabled:
            return None
        if method == "chat.postMessage" and self.strict:
            return self._strict_post(channel or "", self.clock() if at is None else at)
        if method == "chat.postMessage":
            bucket = self._bucket((method, channel or ""), POST_BURST, 1.0)
        elif tier in TIER_PER_MINUTE:
            per_minute = TIER_PER_MINUTE[tier]
            bucket = self._bucket((method, ""), per_minute, per_minute / 60)
        else:
            return None
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return None
        self.limited += 1
        return max(1, math.ceil((1 - bucket.tokens) / bucket.per_second))

    def _strict_post(self, channel: str, at: float) -> int | None:
        last = self._last_post.get(channel)
        if last is not None and at - last < STRICT_POST_INTERVAL_S:
            self.limited += 1
            return max(1, math.ceil(STRICT_POST_INTERVAL_S - (at - last)))
        return None

    def posted(self, channel: str, at: float | None = None) -> None:
        """A post arrived at `at` was carried out (strict mode counts only those: a post Slack
        refused, for `not_in_channel` say, posted nothing)."""
        if self.strict:
            at = self.clock() if at is None else at
            self._last_post[channel] = max(self._last_post.get(channel, at), at)
