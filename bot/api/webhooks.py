"""Signed webhooks: each decision of a request with a `callback_url` is POSTed to it, and so
is each interim message (take over, reply, override) of `{prefix}:messages` (event `message`).

The enqueuer reads `{prefix}:decisions` through the consumer group `webhooks` and stores one
durable delivery per decision (store.webhooks); the worker leases due deliveries, signs and
POSTs them, retries with exponential backoff for `HITL_WEBHOOK_GIVE_UP_S`, audits every
attempt, and dead-letters a delivery no receiver accepted. A webhook never changes a decision:
the decision is stored and published before any delivery is tried.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp

from bot.api.callbacks import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    CallbackPolicy,
    CheckedResolver,
    sign,
)
from bot.worker import DueWorker
from store.redis_store import Store
from store.webhooks import Delivery, WebhookStore

log = logging.getLogger("hitl.webhooks")

LEASE_MS = 30_000
HTTP_TIMEOUT_S = 10.0
CLAIM = 10
"""Deliveries leased at a time."""
MAX_IN_FLIGHT = 40
"""Attempts a replica makes at once. Each runs on its own: a receiver that hangs holds its own
attempt until HTTP_TIMEOUT_S, never a pass of other deliveries waiting for it to end."""
PER_AGENT = 4
"""Of those, at most this many for one agent's decisions: an agent whose receiver hangs (or a
key that points its callbacks at a tarpit) holds a few slots, never every other agent's."""
DEFER_MS = 500
"""A delivery leased while its agent has PER_AGENT attempts running is due again this much
later (nothing is attempted or counted)."""
MAX_BACKOFF_S = 600.0
READ_BLOCK_MS = 1000
READ_COUNT = 25  # decisions per read: one read's handling holds the event loop well under a millisecond
LINGER_S = 0.2
"""After a read that found decisions (fewer than a batch), wait this long before the next one:
under load the enqueuer then takes decisions in batches, one wake and three round trips for many
instead of for each (every wake took the event loop from intake's hot path). A webhook is sent
at most this much later."""


def _now_ms() -> int:
    return int(time.time() * 1000)


class Enqueuer:
    """Decisions -> deliveries (one per decided request with a callback_url); with `messages`,
    interim messages of `{prefix}:messages` -> deliveries (one per message), event `message`."""

    def __init__(self, hooks: WebhookStore, consumer: str, kick: Callable[[], None] = lambda: None,
                 *, claim_idle_s: float = 30.0, messages: bool = False) -> None:
        self.hooks = hooks
        self.consumer = consumer
        self.kick = kick
        self.claim_idle_ms = int(claim_idle_s * 1000)
        self.messages = messages
        self.stream = hooks.keys.messages if messages else hooks.keys.decisions

    async def reclaim(self) -> int:
        """Take over decisions another replica read but never stored as deliveries (it was
        stopped or died in between, and may never come back under its consumer name)."""
        rows = await self.hooks.reclaim(self.consumer, self.claim_idle_ms, READ_COUNT, self.stream)
        if rows:
            log.info("webhooks: took over %d decisions another replica had read", len(rows))
            await self.process(rows)
        return len(rows)

    async def run(self) -> None:
        own = True  # first our own unacknowledged entries (after a crash), then new ones
        grouped = False  # the group is made once, and again after any failure (a Redis restart)
        loop = asyncio.get_running_loop()
        last_claim = 0.0
        while True:
            try:
                if not grouped:
                    await self.hooks.ensure_group(self.stream)
                    grouped = True
                if not own and loop.time() - last_claim >= min(self.claim_idle_ms / 2000, 5.0):
                    last_claim = loop.time()
                    while await self.reclaim() == READ_COUNT:
                        pass
                rows = await self.hooks.read(self.consumer, own, READ_BLOCK_MS, READ_COUNT, self.stream)
                if own and not rows:
                    own = False
                    continue
                await self.process(rows)
                if not own and 0 < len(rows) < READ_COUNT:
                    await asyncio.sleep(LINGER_S)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhooks: reading decisions failed; retrying in 1s")
                own, grouped = True, False
                await asyncio.sleep(1.0)

    async def process(self, rows: list[tuple[str, str, str]]) -> int:
        if not rows:
            return 0
        if self.messages:
            targets = await self.hooks.message_targets(rows)
        else:
            targets = await self.hooks.callback_urls(rows)  # only decisions that are their request's own
        kind = "message" if self.messages else "decision"
        n = 0
        items: list[tuple[str, str, str | None, str]] = []
        for (entry_id, rid, data), (url, agent) in zip(rows, targets, strict=True):
            body = ""
            if url and data:
                n += 1
                body = json.dumps({"event": kind, "request_id": rid, "agent": agent,
                                   kind: json.loads(data)}, separators=(",", ":"))
            member = f"{rid}@{entry_id}" if self.messages else rid
            items.append((entry_id, member, url if body else None, body))
        await self.hooks.enqueue_many(items, _now_ms(), self.stream)
        if n:
            self.kick()
        return n


class WebhookWorker(DueWorker):
    name = "webhooks"

    def __init__(self, store: Store, hooks: WebhookStore, policy: CallbackPolicy, *,
                 retry_s: float, give_up_s: float) -> None:
        super().__init__()
        self.store = store
        self.hooks = hooks
        self.policy = policy
        self.retry_s = retry_s
        self.give_up_s = give_up_s
        self._session: aiohttp.ClientSession | None = None
        self._flying: set[asyncio.Task[None]] = set()
        self._per_agent: Counter[str] = Counter()

    def now_ms(self) -> int:
        return _now_ms()

    async def next_due_ms(self) -> int | None:
        return await self.hooks.next_due_ms()

    async def close(self) -> None:
        """Stop the attempts under way (their leases run out: they are attempted again)."""
        for task in list(self._flying):
            task.cancel()
        await asyncio.gather(*self._flying, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def run_once(self) -> int:
        """Lease due deliveries and start an attempt of each (not waiting for them); how many
        were started or finished."""
        room = min(CLAIM, MAX_IN_FLIGHT - len(self._flying))
        if room <= 0:
            return 0  # an attempt ending kicks the worker
        lease, members = await self.store.claim_due(self.hooks.due, _now_ms(), LEASE_MS, room)
        done = 0
        for rid in members:
            d = await self.hooks.get(rid)
            if d is None or d.state != "pending":  # accepted (or given up) already: never again
                await self.store.finish_due(self.hooks.due, rid, lease)
                done += 1
            elif self._per_agent[d.agent] >= PER_AGENT:  # its agent's turn comes again shortly
                await self.store.finish_due(self.hooks.due, rid, lease, retry_at_ms=_now_ms() + DEFER_MS)
            else:
                self._start(d, lease)
                done += 1
        return done

    def _start(self, d: Delivery, lease: int) -> None:
        self._per_agent[d.agent] += 1
        task = asyncio.create_task(self._deliver(d, lease), name=f"webhook:{d.request_id}")
        self._flying.add(task)

        def ended(t: asyncio.Task[None]) -> None:
            self._flying.discard(t)
            self._per_agent[d.agent] -= 1
            if self._per_agent[d.agent] <= 0:
                del self._per_agent[d.agent]
            if not t.cancelled() and (e := t.exception()) is not None:  # its lease runs out: retried then
                log.error("webhooks: the attempt for %s failed", d.request_id, exc_info=e)
            self.kick()

        task.add_done_callback(ended)

    async def _deliver(self, d: Delivery, lease: int) -> None:
        rid, member = d.request_id, d.member
        status, error, final = await self._post(d.url, d.body)
        attempt = d.attempts + 1
        now = datetime.now(UTC)
        detail: dict[str, Any] = {"attempt": attempt, "url": d.url, "status": status, "error": error}
        if member != rid:  # an interim message's delivery: which one
            detail["message"] = member.partition("@")[2]
        if error is None:
            await self.hooks.attempted(member, attempt=attempt, state="delivered", error=None, status=status)
            await self.store.audit(rid, "webhook_delivered", "system", detail, now)
            await self.store.finish_due(self.hooks.due, member, lease)
            return
        waited_s = (_now_ms() - d.created_ms) / 1000
        backoff = min(self.retry_s * 2 ** (attempt - 1), MAX_BACKOFF_S)
        if final or waited_s + backoff > self.give_up_s:
            await self.hooks.attempted(member, attempt=attempt, state="dead", error=error, status=status)
            await self.store.audit(rid, "webhook_failed", "system", detail, now)
            await self.store.audit(rid, "webhook_dead", "system",
                                   {"attempts": attempt, "url": d.url, "error": error}, now)
            log.warning("webhooks: gave up on %s after %d attempts: %s", member, attempt, error)
            await self.store.finish_due(self.hooks.due, member, lease)
            return
        await self.hooks.attempted(member, attempt=attempt, state="pending", error=error, status=status)
        await self.store.audit(rid, "webhook_failed", "system", {**detail, "retry_in_s": backoff}, now)
        await self.store.finish_due(self.hooks.due, member, lease, retry_at_ms=_now_ms() + int(backoff * 1000))

    async def _post(self, url: str, body: str) -> tuple[int | None, str | None, bool]:
        """(HTTP status, error or None when accepted, whether the error is final)."""
        try:  # within the attempt's time too: a DNS that hangs must not outlast the lease (another
            # replica would then attempt the same delivery)
            await asyncio.wait_for(self.policy.resolve(url), HTTP_TIMEOUT_S)
        except TimeoutError:
            return None, f"the callback host did not resolve within {HTTP_TIMEOUT_S:g} s", False
        except ValueError as e:
            return None, f"refused: {e}", True
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S),
                connector=aiohttp.TCPConnector(resolver=CheckedResolver(self.policy)))
        ts = int(time.time())
        raw = body.encode()
        assert self.policy.secret is not None
        headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: str(ts),
                   SIGNATURE_HEADER: sign(self.policy.secret, ts, raw), "User-Agent": "hitl-webhooks/1"}
        try:
            async with self._session.post(url, data=raw, headers=headers, allow_redirects=False) as resp:
                # the status is the answer: the body is never read (one that never ends, or
                # gigabytes of it, would hold the attempt or the memory); leaving the block
                # closes a connection whose body was not read
                if 200 <= resp.status < 300:
                    return resp.status, None, False
                return resp.status, f"HTTP {resp.status}", False
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            return None, f"{type(e).__name__}: {e}"[:500], False
