"""Intake: read requests through the consumer group, validate, route, store, acknowledge.

On start the consumer first re-reads its own pending entries, then new ones. Entries left
pending by a dead consumer are reclaimed with XAUTOCLAIM once idle; an entry delivered too
many times goes to the dead-letter stream. Nothing is acknowledged before its effects are
stored: the accept and dead-letter scripts do both in one step.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot.routing import Router, immediate_decision, needs_card
from bot.timing import honour_user_request, plan, tier_of
from store.connect import connect
from store.models import MAX_ENTRY_BYTES, Decision, Request, Status, utcnow
from store.redis_store import GROUP, Accepted, Entry, Store

log = logging.getLogger("hitl.intake")

BLOCK_MS = 2000
CONCURRENCY = 16  # entries of one read processed at once (each a few Redis round trips)


class Invalid(Exception):
    """A queue entry that can never become a request; the message says why, in plain words."""


def describe(e: ValidationError) -> str:
    """Pydantic errors as `field.path: message; ...`, the text agents see in `reason`."""
    parts = []
    for err in e.errors()[:10]:
        loc = ".".join(str(x) for x in err["loc"]) or "request"
        parts.append(f"{loc}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


class Intake:
    """The consumer-group reader; `run()` until `stop()`."""

    def __init__(
        self,
        store: Store,
        router: Callable[[], Router],
        *,
        redis_url: str,
        consumer: str,
        claim_idle_s: float = 30.0,
        max_deliveries: int = 5,
        on_accepted: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.router = router
        self.consumer = consumer
        self.claim_idle_ms = int(claim_idle_s * 1000)
        self.max_deliveries = max_deliveries
        self.on_accepted = on_accepted
        self._paused = False
        # XREADGROUP BLOCK needs a socket timeout that outlasts the block.
        self._blocking: Any = connect(redis_url, socket_timeout=BLOCK_MS / 1000 + 10, retry=False)
        self._stopping = asyncio.Event()
        self._failures: dict[str, int] = {}
        self.running = False
        self.processed = 0

    def stop(self) -> None:
        self._stopping.set()

    async def close(self) -> None:
        await self._blocking.aclose()

    async def run(self) -> None:
        """Process entries until stopped; survives Redis restarts by re-reading its pending entries."""
        while not self._stopping.is_set():
            try:
                await self.store.ensure_group()
                self.running = True
                await self._drain_own_pending()
                await self._loop()
            except (RedisConnectionError, RedisTimeoutError, OSError) as e:
                self.running = False
                log.warning("intake: Redis unavailable (%s); retrying in 1s", e)
                await self._sleep(1.0)
            except Exception:  # a bug must not leave intake dead while /healthz says it runs
                self.running = False
                log.exception("intake: unexpected failure; restarting in 1s")
                await self._sleep(1.0)
        self.running = False

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _drain_own_pending(self) -> None:
        while not self._stopping.is_set():
            rows = await self._blocking.xreadgroup(
                GROUP, self.consumer, {self.store.keys.requests: "0"}, count=100)
            entries = [Entry(i, f) for i, f in rows[0][1]] if rows else []
            entries = [e for e in entries if e.fields]  # deleted entries come back empty
            if not entries:
                return
            # re-read after a restart: an entry that crashed us every time must not loop forever
            await self._process(await self._without_poison(entries))

    async def _loop(self) -> None:
        last_claim = 0.0
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            if loop.time() - last_claim >= min(self.claim_idle_ms / 2000, 5.0):
                last_claim = loop.time()
                await self.reclaim()
            rows = await self._read_or_stop(min(BLOCK_MS, max(self.claim_idle_ms // 2, 100)))
            if rows:
                await self._process([Entry(i, f) for i, f in rows[0][1]])

    async def _read_or_stop(self, block_ms: int) -> Any:
        """A blocking read that `stop()` interrupts; entries it had taken stay pending for us."""
        read = asyncio.ensure_future(self._blocking.xreadgroup(
            GROUP, self.consumer, {self.store.keys.requests: ">"}, count=100, block=block_ms))
        stopped = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({read, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not read.done():
            read.cancel()
            await asyncio.gather(read, return_exceptions=True)
            return None
        return read.result()

    async def reclaim(self) -> int:
        """Take over entries another consumer left idle; dead-letter those delivered too often."""
        k = self.store.keys
        _, rows, _ = await self.store.redis.xautoclaim(
            k.requests, GROUP, self.consumer, self.claim_idle_ms, "0-0", count=100)
        entries = [Entry(i, f) for i, f in rows if f]
        if not entries:
            return 0
        log.info("intake: reclaimed %d idle entries", len(entries))
        await self._process(await self._without_poison(entries))
        return len(entries)

    async def _without_poison(self, entries: list[Entry]) -> list[Entry]:
        """Dead-letter entries delivered more than `max_deliveries` times; the rest to process."""
        k = self.store.keys
        async with self.store.redis.pipeline(transaction=False) as p:
            for e in entries:
                p.xpending_range(k.requests, GROUP, e.id, e.id, 1)
            infos = await p.execute()
        keep = []
        for e, info in zip(entries, infos, strict=True):
            n = int(info[0]["times_delivered"]) if info else 1
            if n > self.max_deliveries:
                await self._dead(e, f"delivered {n} times without being processed "
                                    "(a consumer crashed on it each time)")
            else:
                keep.append(e)
        return keep

    async def _process(self, entries: list[Entry]) -> None:
        # Read the pause switch once per batch, so a pause reaches every replica at once.
        self._paused = (await self.store.control()).get("paused") == "1"
        limit = asyncio.Semaphore(CONCURRENCY)

        async def bounded(e: Entry) -> None:
            async with limit:
                await self._one(e)

        await asyncio.gather(*(bounded(e) for e in entries))

    async def _one(self, entry: Entry) -> None:
        try:
            await self.handle(entry)
            self._failures.pop(entry.id, None)
        except (RedisConnectionError, RedisTimeoutError):
            raise
        except Exception as e:  # an unexpected bug: retry, then dead-letter with the reason
            n = self._failures[entry.id] = self._failures.get(entry.id, 0) + 1
            log.exception("intake: entry %s failed (attempt %d)", entry.id, n)
            if n >= self.max_deliveries:
                self._failures.pop(entry.id, None)
                await self._dead(entry, f"internal error while processing: {type(e).__name__}: {e}")

    async def handle(self, entry: Entry) -> str:
        """Validate, route and store one entry; returns the store's verdict."""
        try:
            request = self.parse(entry)
        except Invalid as e:
            return await self._dead(entry, str(e))
        assert request.id is not None
        router = self.router()
        first_use = not await self.store.action_seen(request.action)
        route = honour_user_request(request, router.route(request, first_use=first_use,
                                                          paused=self._paused))
        decision = immediate_decision(request, route)
        now = utcnow()
        deadlines = plan(request, route, tier_of(router, route), int(now.timestamp() * 1000))
        verdict = await self.store.accept(
            entry.id, Accepted(request, route, decision, post=needs_card(route),
                               deadlines=() if decision else deadlines), now)
        self.processed += 1
        if verdict == "accepted":
            self.on_accepted()
        return verdict

    def parse(self, entry: Entry) -> Request:
        """The entry's request, or Invalid with a readable reason."""
        raw = entry.fields.get("request")
        if raw is None:
            raise Invalid(f"entry has no 'request' field (fields: {', '.join(sorted(entry.fields)) or 'none'})")
        if len(raw.encode()) > MAX_ENTRY_BYTES:
            raise Invalid(f"request is {len(raw.encode())} bytes; the limit is {MAX_ENTRY_BYTES}")
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as e:
            raise Invalid(f"request is not valid JSON: {e}") from e
        if not isinstance(data, dict):
            raise Invalid(f"request must be a JSON object, not {type(data).__name__}")
        try:
            request = Request.model_validate(data)
        except ValidationError as e:
            raise Invalid(describe(e)) from e
        if request.reply_to and self.store.keys.owns(request.reply_to):
            raise Invalid(f"reply_to {request.reply_to!r} names one of the bot's own keys; use a stream "
                          f"of your own or {self.store.keys.results_prefix}<name>")
        if request.reply_to and (problem := self.store.reply_to_problem(request.reply_to)):
            raise Invalid(problem)
        if request.id is None:
            request = request.model_copy(update={"id": entry.id})
        return request

    def _usable_reply_to(self, entry: Entry) -> str | None:
        try:
            data: Any = json.loads(entry.fields.get("request") or "")
        except (json.JSONDecodeError, TypeError):
            return None
        reply = data.get("reply_to") if isinstance(data, dict) else None
        if isinstance(reply, str) and 0 < len(reply) <= 256 and not self.store.keys.owns(reply) \
                and not self.store.reply_to_problem(reply):
            return reply
        return None

    def _request_id(self, entry: Entry) -> str:
        try:
            data: Any = json.loads(entry.fields.get("request") or "")
            rid = data.get("id") if isinstance(data, dict) else None
        except (json.JSONDecodeError, TypeError):
            rid = None
        return rid if isinstance(rid, str) and 0 < len(rid) <= 128 else entry.id

    async def _dead(self, entry: Entry, error: str) -> str:
        reply_to = self._usable_reply_to(entry)
        rid = self._request_id(entry)
        decision = Decision(request_id=rid, status=Status.invalid, reason=error, decided_at=utcnow())
        log.warning("intake: dead-lettered %s: %s", entry.id, error)
        return await self.store.dead_letter(entry, error, utcnow(), request_id=rid,
                                            decision=decision, reply_to=reply_to)
