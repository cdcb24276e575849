"""The feeds of the HTTP API: one reader of `{prefix}:decisions` and `{prefix}:audit` per
replica, fanned out to long-poll waiters and submitters (by request id) and event streams
(by agent). A submitter learns from the audit stream that intake routed its request, saw it
as a duplicate or refused it, whichever replica's intake took the entry.

Every replica reads the one shared stream, so a decision taken anywhere reaches a waiter
connected to any replica. Waiters always re-read the record after registering, so a decision
published between their first read and their registration is not missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from dataclasses import dataclass, field

from store.api_requests import ApiStore

log = logging.getLogger("hitl.api")

BLOCK_MS = 1000
QUEUE_MAX = 1000
IDLE_LINGER_S = 1.0
"""With nobody to tell on this replica (no long-poll, submitter or event stream), the feeds are
read at most this often, and what was added during a pause that nobody registered for is
skipped (one read of the newest ids instead): the reader no longer wakes and parses entries for
every request of an agent fleet that never calls the API, which took the event loop from
intake's hot path. Anyone registering ends the pause at once, and a pause during which anyone
registered skips nothing (a waiter re-reads its record after registering, and the feed covers
everything after that)."""
INTAKE_EVENTS = frozenset({"routed", "duplicate", "invalid"})
"""Audit events that end intake's handling of an entry (the record exists, or never will)."""


@dataclass(eq=False)
class Subscriber:
    """An event stream: the decisions of `agents`, as (stream id, request id, decision JSON)."""

    agents: frozenset[str]
    queue: asyncio.Queue[tuple[str, str, str]] = field(default_factory=lambda: asyncio.Queue(QUEUE_MAX))
    overflowed: bool = False


class DecisionBus:
    def __init__(self, api: ApiStore) -> None:
        self.api = api
        self._waiters: dict[str, set[asyncio.Future[str]]] = defaultdict(set)
        self._intake: dict[str, set[asyncio.Future[str]]] = defaultdict(set)
        self._subscribers: set[Subscriber] = set()
        self._wanted = asyncio.Event()
        """Set when someone registers: ends the idle pause between reads."""
        self.running = False

    def waiter(self, request_id: str) -> asyncio.Future[str]:
        """A future for the decision JSON of `request_id`; call `forget` when done with it."""
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiters[request_id].add(fut)
        self._wanted.set()
        return fut

    def intake_waiter(self, request_id: str) -> asyncio.Future[str]:
        """A future for the next intake event (`routed`, `duplicate`, `invalid`) of `request_id`."""
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._intake[request_id].add(fut)
        self._wanted.set()
        return fut

    def forget(self, request_id: str, fut: asyncio.Future[str]) -> None:
        for table in (self._waiters, self._intake):
            waiting = table.get(request_id)
            if waiting is not None:
                waiting.discard(fut)
                if not waiting:
                    del table[request_id]

    def subscribe(self, agents: frozenset[str]) -> Subscriber:
        sub = Subscriber(agents)
        self._subscribers.add(sub)
        self._wanted.set()
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subscribers.discard(sub)

    def close(self) -> None:
        """End every event stream (the bot is stopping)."""
        for sub in list(self._subscribers):
            sub.overflowed = True
        self._subscribers.clear()

    async def run(self) -> None:
        """Read new entries until cancelled; after a Redis outage, starts again at the newest
        (waiters re-read their records, so nothing waits forever on a missed entry)."""
        try:
            await self._read()
        finally:
            self.close()

    async def _read(self) -> None:
        last_decision = last_audit = ""
        skip = False
        while True:
            try:
                if not last_decision:
                    last_decision, last_audit = await self.api.last_ids()
                elif skip:  # nobody here waited for what was added during the pause: not read
                    newest = await self.api.last_ids()
                    if self._idle():  # and nobody registered while we asked
                        last_decision, last_audit = newest
                skip = False
                decisions, audits = await self.api.feeds_after(last_decision, last_audit, BLOCK_MS)
                self.running = True
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.running = False
                last_decision = last_audit = ""
                log.warning("api: decisions feed unavailable (%s); retrying in 1s", e)
                await asyncio.sleep(1.0)
                continue
            if audits:
                last_audit = audits[-1][0]
                for _, rid, event in audits:
                    if event in INTAKE_EVENTS:
                        for fut in self._intake.pop(rid, ()):
                            if not fut.done():
                                fut.set_result(event)
            if decisions:
                last_decision = decisions[-1][0]
                await self._dispatch(decisions)
            if (decisions or audits) and self._idle():
                await self._pause()
                skip = self._idle()

    def _idle(self) -> bool:
        return not self._waiters and not self._intake and not self._subscribers

    async def _pause(self) -> None:
        """Wait IDLE_LINGER_S, or less if someone registers meanwhile."""
        self._wanted.clear()
        wanted = asyncio.ensure_future(self._wanted.wait())
        try:
            await asyncio.wait({wanted}, timeout=IDLE_LINGER_S)
        finally:
            wanted.cancel()

    async def _dispatch(self, rows: list[tuple[str, str, str]]) -> None:
        for _, rid, decision in rows:
            for fut in self._waiters.pop(rid, ()):
                if not fut.done():
                    fut.set_result(decision)
        if not self._subscribers:
            return
        try:
            agents = await self.api.owners_of(rows)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # Redis refused the read: no stream may silently miss these
            log.warning("api: could not read whose %d decisions are; event streams end and resume by "
                        "Last-Event-ID (%s)", len(rows), e)
            for sub in list(self._subscribers):
                sub.overflowed = True
            self._subscribers.clear()
            return
        for row, agent in zip(rows, agents, strict=True):
            for sub in list(self._subscribers):
                if agent in sub.agents:
                    try:
                        sub.queue.put_nowait(row)
                    except asyncio.QueueFull:
                        sub.overflowed = True  # the stream ends; the client resumes by Last-Event-ID
                        with contextlib.suppress(KeyError):
                            self._subscribers.remove(sub)
