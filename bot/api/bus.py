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
import re
from collections import defaultdict
from dataclasses import dataclass, field

from store.api_requests import ApiStore, Message
from store.chain import id_order

log = logging.getLogger("hitl.api")

BLOCK_MS = 1000
READ_COUNT = 500
"""Entries of each stream read at a time."""
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


Order = tuple[tuple[int, int], int, tuple[int, int]]


@dataclass(frozen=True)
class Event:
    """One event of an event stream: a decision (`event: decision`, `id:` its stream id) or an
    interim message (`event: message`, `id: <after>.<message id>`). `order` places both kinds
    in the order they were written: a message comes after the decision it was added after."""

    order: Order
    id: str
    kind: str
    data: str

    @classmethod
    def decision(cls, entry_id: str, decision: str) -> Event:
        return cls((id_order(entry_id), 0, (0, 0)), entry_id, "decision", decision)

    @classmethod
    def message(cls, m: Message) -> Event:
        return cls((id_order(m.after), 1, id_order(m.id)), f"{m.after}.{m.id}", "message", m.message)


def position(last_event_id: str) -> Order | None:
    """Where an event stream resumes: after the event of this id (None: not one of ours)."""
    if re.fullmatch(r"\d{1,20}-\d{1,20}", last_event_id):
        return id_order(last_event_id), 0, (0, 0)
    if m := re.fullmatch(r"(\d{1,20}-\d{1,20})\.(\d{1,20}-\d{1,20})", last_event_id):
        return id_order(m[1]), 1, id_order(m[2])
    return None


def newest(decision_id: str, _audit_id: str, message_id: str) -> Order:
    """A position at or after every event of the streams whose newest ids these are (`last_ids`):
    a message's `after` is never past the newest decision, and whatever comes next is after it."""
    return id_order(decision_id), 1, id_order(message_id)


@dataclass(eq=False)
class Subscriber:
    """An event stream: the decisions and interim messages of `agents`, in order."""

    agents: frozenset[str]
    queue: asyncio.Queue[Event] = field(default_factory=lambda: asyncio.Queue(QUEUE_MAX))
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
        last_decision = last_audit = last_message = ""
        skip = False
        while True:
            try:
                if not last_decision:
                    last_decision, last_audit, last_message = await self.api.last_ids()
                elif skip:  # nobody here waited for what was added during the pause: not read
                    newest = await self.api.last_ids()
                    if self._idle():  # and nobody registered while we asked
                        last_decision, last_audit, last_message = newest
                skip = False
                decisions, audits, messages = await self.api.feeds_after(last_decision, last_audit, last_message,
                                                                         BLOCK_MS, READ_COUNT)
                self.running = True
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.running = False
                last_decision = last_audit = last_message = ""
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
            if len(messages) >= READ_COUNT:  # a full page: a decision after its last message waits for the rest
                limit = id_order(messages[-1].after)
                decisions = [d for d in decisions if id_order(d[0]) <= limit]
            if decisions:
                last_decision = decisions[-1][0]
            # a message added after a decision this read did not reach (a full page) waits for it
            known = id_order(last_decision)
            messages = [m for m in messages if id_order(m.after) <= known]
            if messages:
                last_message = messages[-1].id
            if decisions or messages:
                await self._dispatch(decisions, messages)
            if (decisions or audits or messages) and self._idle():
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

    async def _dispatch(self, rows: list[tuple[str, str, str]], messages: list[Message]) -> None:
        for _, rid, decision in rows:
            for fut in self._waiters.pop(rid, ()):
                if not fut.done():
                    fut.set_result(decision)
        if not self._subscribers:
            return
        try:
            agents = await self.api.owners_of(rows) if rows else []
            agents += await self.api.message_owners(messages) if messages else []
        except asyncio.CancelledError:
            raise
        except Exception as e:  # Redis refused the read: no stream may silently miss these
            log.warning("api: could not read whose %d decisions and messages are; event streams end and "
                        "resume by Last-Event-ID (%s)", len(rows) + len(messages), e)
            for sub in list(self._subscribers):
                sub.overflowed = True
            self._subscribers.clear()
            return
        events = [Event.decision(i, d) for i, _, d in rows] + [Event.message(m) for m in messages]
        for event, agent in sorted(zip(events, agents, strict=True), key=lambda pair: pair[0].order):
            for sub in list(self._subscribers):
                if agent in sub.agents:
                    try:
                        sub.queue.put_nowait(event)
                    except asyncio.QueueFull:
                        sub.overflowed = True  # the stream ends; the client resumes by Last-Event-ID
                        with contextlib.suppress(KeyError):
                            self._subscribers.remove(sub)
