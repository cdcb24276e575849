"""The loop shared by the outbox worker and the scheduler: work through what is due, then
sleep until the next due time or a `kick()`, whichever comes first; `kept_lease`, how both keep
the lease on a member they work on; and `cancel_all`, how the bot and its housekeeping process
stop their background tasks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from bot.outage import UNREACHABLE, Outage

if TYPE_CHECKING:
    from store.redis_store import Store

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


class Lease:
    """The lease on one member of a due set (`Store.claim_due`: its score is the lease's end)
    while a replica works on it. `kept_lease` renews it, which moves its end: read `until` at
    each use, and end it through `finish` or `ending` (renewals stop there; one under way
    completes first, so the end used is the one in force)."""

    def __init__(self, store: Store, key: str, member: str, until: int) -> None:
        self.store, self.key, self.member = store, key, member
        self.until = until
        self.ended = False
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def ending(self) -> AsyncIterator[int]:
        """The lease's end in force, for a call that ends the lease (finishes, reschedules or
        records the work in one script, checking the lease); no renewal follows."""
        async with self._lock:
            self.ended = True
            yield self.until

    async def finish(self, retry_at_ms: int | None = None) -> bool:
        """Remove the member (or reschedule it at `retry_at_ms`) if the lease is still held."""
        async with self.ending() as until:
            return await self.store.finish_due(self.key, self.member, until, retry_at_ms)

    async def keep(self, lease_ms: int, now_ms: Callable[[], int], name: str) -> None:
        """Renew the lease every third of `lease_ms` until it ends; stops once it was lost (a
        renewal is `finish_due` with the new end: a lease already lost is not taken back)."""
        while True:
            await asyncio.sleep(lease_ms / 3000)
            async with self._lock:
                if self.ended:
                    return
                until = now_ms() + lease_ms
                try:
                    renewed = await self.store.finish_due(self.key, self.member, self.until, until)
                except Exception as e:  # Redis away: the lease may end and another replica take over
                    log.warning("%s: the lease of %s not renewed: %s", name, self.member, e)
                    continue
                if not renewed:
                    log.warning("%s: the lease of %s ended before it was renewed", name, self.member)
                    self.ended = True
                    return
                self.until = until


@contextlib.asynccontextmanager
async def kept_lease(store: Store, key: str, member: str, until: int, *, lease_ms: int,
                     now_ms: Callable[[], int], name: str) -> AsyncIterator[Lease]:
    """`member` of the due set `key`, claimed until `until` for `lease_ms`, its lease renewed
    every third of it while the block runs (work on a slow Slack may outlast one lease): only a
    replica that died or stalled lets another do the same work meanwhile. The block ends the
    lease through the `Lease` (or lets it run out, if it raises); renewals stop on leaving."""
    lease = Lease(store, key, member, until)
    keeper = asyncio.create_task(lease.keep(lease_ms, now_ms, name), name=f"lease:{member}")
    try:
        yield lease
    finally:
        try:
            async with lease.ending():  # a renewal under way completes first
                pass
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)


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
