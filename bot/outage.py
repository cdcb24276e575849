"""Calm logging while Redis is away: one line per failed attempt (with the back-off before the
next), one line when it is back; no traceback for an outage, which is not a bug."""

from __future__ import annotations

import logging

from store.failures import Unavailable

UNREACHABLE = Unavailable
"""What an unreachable Redis raises (redis-py's own errors, or the socket's)."""
MAX_BACKOFF_S = 30.0


class Outage:
    """Counts consecutive failures of one loop; `failed()` logs and says how long to wait."""

    def __init__(self, log: logging.Logger, what: str) -> None:
        self.log = log
        self.what = what
        self.failures = 0

    def failed(self, e: BaseException) -> float:
        """Log this failure in one line; the seconds to wait before trying again."""
        self.failures += 1
        delay = min(MAX_BACKOFF_S, 0.5 * 2 ** (self.failures - 1))
        self.log.warning("%s: Redis unavailable (%s: %s); attempt %d failed, next in %.1fs",
                         self.what, type(e).__name__, str(e).splitlines()[0] if str(e) else "", self.failures, delay)
        return delay

    def ok(self) -> None:
        """A pass went through: say so once if Redis had been away."""
        if self.failures:
            self.log.warning("%s: Redis reachable again after %d failed attempts", self.what, self.failures)
            self.failures = 0
