"""The loop shared by the outbox worker and the scheduler: work through what is due, then
sleep until the next due time or a `kick()`, whichever comes first; and `cancel_all`, how the
bot and its housekeeping process stop their background tasks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from bot.outage import UNREACHABLE, Outage

log = logging.getLogger("hitl.worker")


class DueWorker:
    """Subclasses implement `run_once()` (how many items it took) and `next_due_ms()`."""

    name = "worker"
    max_wait_s = 1.0

    def __init__(self) -> None:
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self.outage = Outage(log, self.name)

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
            task = asyncio.current_task()
            if task is not None and task.cancelling():  # a cancel some library swallowed: honour it
                raise asyncio.CancelledError
            self._wake.clear()  # before the pass: a kick during it makes the wait below return
            wait = self.max_wait_s
            try:
                done = await self.run_once()
                self.outage.ok()
            except UNREACHABLE as e:  # Redis away: the queue is durable, look again after a back-off
                done, wait = 0, self.outage.failed(e)
            except Exception:  # a bug: logged in full, the loop goes on
                log.exception("%s: pass failed", self.name)
                done = 0
            if done:
                continue
            if self.outage.failures:  # kicks do not shorten the back-off; stop() does
                await _until(self._stopping, wait)
                continue
            try:
                due = await self.next_due_ms()
                if due is not None:
                    wait = min(self.max_wait_s, max(0.0, (due - self.now_ms()) / 1000))
            except Exception:
                log.debug("%s: could not read the next due time", self.name)
            await _until(self._wake, wait)


async def _until(event: asyncio.Event, seconds: float) -> None:
    """Wait for `event` at most `seconds`. Unlike `wait_for`, a cancellation that arrives as the
    event is set is never swallowed (so a cancelled worker stops at once)."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=seconds)
    finally:
        waiter.cancel()


SUPERVISE_FIRST_S = 1.0
SUPERVISE_MAX_S = 30.0
SUPERVISE_STEADY_S = 60.0


async def supervised(name: str, run: Callable[[], Awaitable[None]], *, first_s: float = SUPERVISE_FIRST_S,
                     max_s: float = SUPERVISE_MAX_S, steady_s: float = SUPERVISE_STEADY_S) -> None:
    """`run()` until it returns or is cancelled. A failure it lets out (a bug met by a
    background duty: the API's decision feed, the webhook worker, a watcher) is logged in full
    and `run()` is started again after a back-off (doubling from `first_s` to `max_s`, back to
    `first_s` once a run lasted `steady_s`): one bad moment never leaves a duty dead for good
    while /healthz says the bot runs."""
    loop = asyncio.get_running_loop()
    delay = first_s
    while True:
        started = loop.time()
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            if loop.time() - started >= steady_s:
                delay = first_s
            log.exception("%s: failed; starting it again in %.1f s", name, delay)
        await asyncio.sleep(delay)
        delay = min(max_s, delay * 2)


async def cancel_all(tasks: list[asyncio.Task[Any]], rounds: int = 20, wait_s: float = 0.25) -> None:
    """Cancel `tasks` and wait for them, cancelling again any that go on: on Python 3.11 a
    cancellation that meets a timeout expiring inside a Redis read can be swallowed (the
    asyncio `wait_for` race, fixed in 3.12), which left a stop waiting 15 s."""
    pending = {t for t in tasks if not t.done()}
    for _ in range(rounds):
        if not pending:
            return
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=wait_s)
