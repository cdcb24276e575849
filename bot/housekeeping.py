"""Housekeeping: the duties no decision waits for, run where they cannot delay one.

Sealing the audit chain (bot.evidence.sealer) and projecting the stats counters
(bot.stats.StatsProjector) follow the audit stream behind intake: nothing an agent or a reviewer
waits for depends on them. Run inside the bot's process they still took the event loop, and on
a machine with few cores a burst of their work queued the next request behind it (on 2 cores
it raised the p99 of an auto-approved request from about 1.8 ms to 3.5 ms). So `hitl run` runs
them in a companion process at the lowest CPU priority (nice 19): the kernel gives intake's
processes the CPU first whenever they want it, and housekeeping the rest. (Redis serves both
alike: the sealer spreads its own work in small steps, bot.evidence.sealer.READ.)

`HITL_HOUSEKEEPING` (bot.config.Settings.housekeeping):
- `process` (the default): `hitl run` starts `hitl housekeep` beside itself, restarts it if it
  dies, and stops it when it stops; the child also ends when its parent dies (even by SIGKILL).
- `inline`: the duties run as tasks in the bot's own process (tests, the demo, platforms that
  allow one process).
- `off`: this replica runs none; another replica or a `hitl housekeep` elsewhere does (both
  duties are safe to run anywhere: the sealer holds a lease, the projector is a consumer group).

Under a sustained CPU overload the duties lag (`unsealed` in `hitl audit verify` and `/hitl
stats` counters behind) and catch up when the load eases: nothing is lost, since nothing trims
unsealed audit entries and the projector's consumer group keeps its place.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from bot.config import Settings
from bot.worker import cancel_all

if TYPE_CHECKING:
    from store.redis_store import Store

log = logging.getLogger("hitl.housekeeping")

NICE = 19
PARENT_ENV = "HITL_HOUSEKEEPING_PARENT"
"""The pid of the `hitl run` that started this `hitl housekeep`: it ends when that process does."""
RESTART_S = (1.0, 30.0)
"""Back-off before starting a companion that ended on its own again: first, at most."""
STOP_S = 10.0
_PR_SET_PDEATHSIG = 1


class Companion:
    """The parent's side: start `hitl housekeep`, restart it when it ends, stop it with the bot."""

    def __init__(self, argv: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        self.argv = argv or [sys.executable, "-m", "bot.cli", "housekeep"]
        self.env = env
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def state(self) -> str:
        """`running`, `restarting` (ended; started again after a back-off) or `stopped`."""
        if self.proc is not None and self.proc.returncode is None:
            return "running"
        return "stopped" if self._stopping or self._task is None else "restarting"

    async def start(self) -> None:
        await self._spawn()
        self._task = asyncio.create_task(self._supervise(), name="housekeeping")
        self._task.add_done_callback(_ended)

    async def _spawn(self) -> None:
        env = {**(self.env if self.env is not None else os.environ), PARENT_ENV: str(os.getpid())}
        # its own session: a terminal's hangup or Ctrl-C reaches the bot alone, which stops it
        # (the parent-death signal still ends it if the bot dies)
        self.proc = await asyncio.create_subprocess_exec(*self.argv, env=env, stdin=asyncio.subprocess.DEVNULL,
                                                         start_new_session=True)
        self.starts += 1
        log.info("housekeeping: started pid %s (nice %s)", self.proc.pid, NICE)

    async def _supervise(self) -> None:
        delay = RESTART_S[0]
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            if self.proc is not None:
                code = await self.proc.wait()
                if self._stopping:
                    return
                if loop.time() - started >= RESTART_S[1]:  # it ran a while: a new failure, not a loop
                    delay = RESTART_S[0]
                log.error("housekeeping: pid %s ended (exit %s); starting it again in %.0fs",
                          self.proc.pid, code, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESTART_S[1])
            try:
                await self._spawn()
            except Exception as e:  # cannot start at all now (no memory, no such file): try again later
                self.proc = None
                log.error("housekeeping: cannot start %s: %s", self.argv, e)

    async def terminate(self) -> None:
        """No more restarts, and SIGTERM to the child (the bot stops it first, then drains its
        own work while the child finishes; `stop` then waits)."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()

    async def stop(self) -> None:
        """`terminate`, then SIGKILL after STOP_S; waits until it has ended."""
        await self.terminate()
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        try:
            await asyncio.wait_for(proc.wait(), STOP_S)
        except TimeoutError:
            log.warning("housekeeping: pid %s did not stop in %.0fs; killed", proc.pid, STOP_S)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


def _ended(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("housekeeping: the supervisor ended: %r; the process is no longer restarted", task.exception())


def duties(settings: Settings, store: Store) -> dict[str, Callable[[], Coroutine[Any, Any, None]]]:
    """The housekeeping tasks of this replica, by name (`sealer`, `stats`)."""
    from bot.evidence import wiring as evidence
    from bot.stats import StatsProjector

    stats = StatsProjector(store, redis_url=settings.redis_url, consumer=settings.consumer,
                           claim_idle_s=settings.claim_idle_s)
    return {"sealer": evidence.sealer(settings, store).run, "stats": stats.run}


def _die_with_parent(parent: int) -> bool:
    """Ask Linux to SIGTERM this process when its parent dies; False when the parent is gone already."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    return os.getppid() == parent


def lower_priority() -> None:
    """Nice 19 (a process may lower its own priority, never raise it back)."""
    current = os.nice(0)
    if current < NICE:
        os.nice(NICE - current)


async def run(settings: Settings) -> int:
    """`hitl housekeep`: the duties alone, at the lowest CPU priority, until SIGTERM/SIGINT (or,
    when a `hitl run` started it, until that process ends)."""
    lower_priority()
    parent = int(os.environ.get(PARENT_ENV, "0") or 0)
    if parent and not _die_with_parent(parent):
        return 0
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    from store.redis_store import Store

    store = Store.from_url(settings.redis_url, settings.prefix, wait_replicas=settings.redis_wait_replicas)
    tasks = [asyncio.create_task(fn(), name=name) for name, fn in duties(settings, store).items()]
    log.info("housekeeping: %s running (pid %s)", ", ".join(t.get_name() for t in tasks), os.getpid())
    watcher = asyncio.create_task(_watch_parent(parent, stop)) if parent else None
    ended = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({ended, *tasks}, return_when=asyncio.FIRST_COMPLETED)
    failed = [t for t in done if t is not ended]
    for t in failed:  # a duty that returned or raised: say so and end (the parent starts us again)
        log.error("housekeeping: %s ended: %r", t.get_name(), t.exception() if not t.cancelled() else "cancelled")
    await cancel_all([*tasks, ended, *([watcher] if watcher else [])])
    await store.close()
    return 1 if failed else 0


async def _watch_parent(parent: int, stop: asyncio.Event) -> None:
    """Where no parent-death signal exists: end once the parent is gone (we are re-parented)."""
    # nothing to wait on: the kernel says it only by re-parenting us
    while os.getppid() == parent:  # noqa: ASYNC110
        await asyncio.sleep(1.0)
    log.warning("housekeeping: parent %s is gone; stopping", parent)
    stop.set()
