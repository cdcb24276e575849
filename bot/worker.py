"""The loop shared by the outbox worker and the scheduler: work through what is due, then
sleep until the next due time or a `kick()`, whichever comes first."""

from __future__ import annotations

import asyncio
import contextlib
import logging

log = logging.getLogger("hitl.worker")


class DueWorker:
    """Subclasses implement `run_once()` (how many items it took) and `next_due_ms()`."""

    name = "worker"
    max_wait_s = 1.0

    def __init__(self) -> None:
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()

    def now_ms(self) -> int:
        raise NotImplementedError

    async def run_once(self) -> int:
        raise NotImplementedError

    async def next_due_ms(self) -> int | None:
        raise NotImplementedError

    def kick(self) -> None:
        """Look again at once (something was just queued)."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        """Until `stop()`: passes back to back while there is work, else wait for the next item."""
        while not self._stopping.is_set():
            self._wake.clear()  # before the pass: a kick during it makes the wait below return
            try:
                done = await self.run_once()
            except Exception:  # Redis briefly away: the queue is durable, look again shortly
                log.exception("%s: pass failed", self.name)
                done = 0
            if done:
                continue
            wait = self.max_wait_s
            try:
                due = await self.next_due_ms()
                if due is not None:
                    wait = min(self.max_wait_s, max(0.0, (due - self.now_ms()) / 1000))
            except Exception:
                log.debug("%s: could not read the next due time", self.name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
