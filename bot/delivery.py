"""Delivery: the outbox worker that posts and updates cards in Slack, exactly once each.

Outbox members are `post:<id>`, `update:<id>`, `batch:<batch id>` and `digest:<channel>` in a
sorted set by due time. A worker leases due members, does the Slack call, and finishes them;
a worker that dies leaves its lease to run out and another worker retries. A post that may
have reached Slack before a crash is reconciled by looking for the card's message metadata
in the channel's history, so a retry never posts a second card.

Posts are paced per channel and updates per workspace by token buckets in Redis, shared by
every replica, so a burst never turns into a 429 storm; a 429 that happens anyway closes the
bucket for `Retry-After`. 5xx and timeouts back off exponentially. Updates that lock a decided
card reserve their slot; other redraws (votes, pause) only take a free one, so locks go first.
A card Slack refuses for good is marked undeliverable (audited once; the request still expires
by its deadline). Requests the policy groups go onto batch cards; a channel whose queue of
unposted cards grows gets a backlog digest. Every call goes through `bot.gateway`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from bot.backlog import Backlog
from bot.gateway import Gateway, Permanent, RateLimited, SlackFailure, backoff_s
from bot.worker import DueWorker
from store.errors import NotFound
from store.models import Batch, Record, State, Status, utcnow
from store.redis_store import Store

log = logging.getLogger("hitl.delivery")

METADATA_EVENT = "hitl_request"
LEASE_MS = 30_000
POST_RATE, POST_BURST = 1.0, 2.0  # Slack: about one message per second per channel, short bursts
UPDATE_RATE, UPDATE_BURST = 50 / 60, 50.0  # chat.update is Tier 3: 50 a minute, a minute's burst
HISTORY_PAGES = 50  # a lost post is searched for in at most 10,000 messages after its attempt
HISTORY_SLACK_S = 60  # clock skew allowed between this host and Slack when searching

Render = Callable[[Record], dict[str, Any]]
RenderBatch = Callable[[Batch, list[Record]], dict[str, Any]]


def _now_ms() -> int:
    return int(time.time() * 1000)


def _digest(message: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(message, sort_keys=True).encode(), usedforsecurity=False).hexdigest()


def _awaits_person(record: Record) -> bool:
    """Pending a decision, or (review batches) ran on its own and not yet checked."""
    if record.state is State.pending:
        return True
    d = record.decision
    return (d is not None and d.status is Status.auto_approved and record.route.sampled
            and record.review is None)


class Deferred(Exception):
    """The call must wait for its pacing bucket; the operation was rescheduled."""


class Delivery(DueWorker):
    """Posts and updates cards from the outbox; `run()` until `stop()`, `kick()` to wake it."""

    name = "delivery"

    def __init__(self, store: Store, slack: Gateway, render: Render, render_batch: RenderBatch,
                 *, batch: int = 20, backlog: Backlog | None = None, post_rate: float = POST_RATE,
                 post_burst: float = POST_BURST) -> None:
        super().__init__()
        self.store = store
        self.slack = slack
        self.render = render
        self.render_batch = render_batch
        self.batch = batch
        self.backlog = backlog or Backlog(store)
        self.post_rate, self.post_burst = post_rate, post_burst
        self._attempts: dict[str, int] = {}
        self.stats = {"posted": 0, "updated": 0, "rate_limited": 0, "errors": 0, "deferred": 0,
                      "undeliverable": 0, "reconciled": 0, "duplicates_deleted": 0}

    def now_ms(self) -> int:
        return _now_ms()

    async def next_due_ms(self) -> int | None:
        return await self.store.next_outbox_due()

    async def run_once(self) -> int:
        """Lease and perform every due operation once; returns how many were attempted."""
        lease, members = await self.store.claim_outbox(_now_ms(), LEASE_MS, self.batch)
        await asyncio.gather(*(self._perform(m, lease) for m in members))
        return len(members)

    async def _perform(self, member: str, lease: int) -> None:
        op, _, key = member.partition(":")
        bucket = f"post:{key}" if op == "digest" else "update"
        try:
            if op == "post":
                bucket = await self._post_request(key, member, lease)
            elif op == "update":
                await self._update_request(key, member, lease)
            elif op == "batch":
                bucket = await self._batch(key, member, lease)
            elif op == "digest":
                await self.backlog.refresh(self, key, member, lease)
            else:
                log.error("delivery: unknown outbox operation %r dropped", member)
                await self.store.finish_outbox(member, lease)
            self._attempts.pop(member, None)
        except Deferred:
            self.stats["deferred"] += 1
        except NotFound:
            await self.store.finish_outbox(member, lease)
        except SlackFailure as e:
            await self._failed(key, member, lease, e, bucket)

    async def pace(self, bucket: str, member: str, lease: int, *, reserve: bool = True) -> None:
        """Take a token from `bucket` or reschedule the operation and raise Deferred. Without
        `reserve` the operation takes only a free token, never a place in the queue (so it
        gives way to every operation that reserved one)."""
        post = bucket.startswith("post:")
        rate, burst = (self.post_rate, self.post_burst) if post else (UPDATE_RATE, UPDATE_BURST)
        now = _now_ms()
        wait = await self.store.pace(bucket, member, now, rate, burst, reserve=reserve)
        if wait > 0:
            await self.store.finish_outbox(member, lease, now + wait)
            if post and not member.startswith("digest:"):
                await self.backlog.waiting(self, bucket[5:], member, now)
            raise Deferred(bucket)

    # ---- single cards -------------------------------------------------------------------

    async def _post_request(self, rid: str, member: str, lease: int) -> str:
        record = await self.store.get(rid)
        channel = record.route.channel
        if record.ts or record.undeliverable:
            await self.store.finish_outbox(member, lease)
            return f"post:{channel}"
        if record.route.group and _awaits_person(record):
            bid = await self.store.join_batch(record, uuid.uuid4().hex[:12], _now_ms())
            await self.store.enqueue(f"batch:{bid}", _now_ms())
            await self.store.finish_outbox(member, lease)
            self.kick()
            return f"post:{channel}"
        await self.pace(f"post:{channel}", member, lease)
        if await self.backlog.maybe_post_digest(self, channel):
            await self.pace(f"post:{channel}", member, lease)  # the digest took this slot
        previous = await self.store.note_post_attempt(record.id, utcnow(), channel)
        found = await self._find_posted(channel, "request_id", rid, json.loads(previous)) if previous else None
        if found:  # an earlier attempt took effect but its answer was lost: what it shows is unknown
            channel_id, ts = found
            await self.store.mark_posted(record.id, member, lease, channel_id, ts, utcnow(), -1)
            self.stats["reconciled"] += 1
            self.kick()
            log.info("delivery: card of %s was already posted (%s); not posting again", rid, ts)
        else:
            message = self.render(record)
            channel_id, ts = await self._post(channel, message, {"request_id": rid})
            verdict, earlier = await self.store.mark_posted(record.id, member, lease, channel_id, ts, utcnow(),
                                                            record.version)
            if verdict == "exists" and earlier != ts:  # another replica won a race: remove ours
                await self._delete(channel_id, ts)
        await self.backlog.posted(self, channel, member)
        return f"post:{channel}"

    async def _update_request(self, rid: str, member: str, lease: int) -> None:
        record = await self.store.get(rid)
        if record.batch:  # its card is the batch card
            await self.store.enqueue(f"batch:{record.batch}", _now_ms())
            await self.store.finish_outbox(member, lease)
            self.kick()
            return
        if not record.ts or not record.channel or record.undeliverable:
            await self.store.finish_outbox(member, lease)  # the post renders the latest state
            return
        # locking a decided card goes first; a redraw of an open one takes a free slot
        await self.pace("update", member, lease, reserve=record.state is not State.pending)
        await self._update(record.channel, record.ts, self.render(record))
        await self.store.finish_outbox(member, lease)

    # ---- batch cards --------------------------------------------------------------------

    async def _batch(self, bid: str, member: str, lease: int) -> str:
        batch = await self.store.get_batch(bid)
        bucket = f"post:{batch.channel}"
        records = await self.store.get_many(batch.items)
        if not records:
            await self.store.finish_outbox(member, lease)
            return bucket
        message = self.render_batch(batch, records)
        rendered = _digest(message)
        if batch.ts:
            if rendered != batch.rendered:  # Slack already shows exactly this: no call
                await self.pace("update", member, lease)
                await self._update(batch.channel, batch.ts, message)
            await self.store.batch_shown(batch, batch.channel, batch.ts, utcnow(), rendered)
            await self.store.finish_outbox(member, lease)
            return "update"
        await self.pace(bucket, member, lease)
        if await self.backlog.maybe_post_digest(self, batch.channel):
            await self.pace(bucket, member, lease)  # the digest took this slot
        previous = await self.store.note_batch_attempt(bid, utcnow())
        attempt = {**json.loads(previous), "channel": batch.channel} if previous else None
        found = await self._find_posted(batch.channel, "batch_id", bid, attempt) if attempt else None
        if found:
            channel_id, ts = found
        else:
            channel_id, ts = await self._post(batch.channel, message, {"batch_id": bid, "request_id": records[0].id})
        await self.store.batch_shown(batch, channel_id, ts, utcnow(), "" if found else rendered)
        if found:  # posted by a run that died: bring the card up to date (joins re-queue themselves)
            await self.store.enqueue(f"batch:{bid}", _now_ms())
        await self.store.finish_outbox(member, lease)
        await self.backlog.posted(self, batch.channel, member)
        return bucket

    # ---- Slack calls --------------------------------------------------------------------

    async def _post(self, channel: str, message: dict[str, Any], payload: dict[str, Any]) -> tuple[str, str]:
        metadata = {"event_type": METADATA_EVENT, "event_payload": payload}
        resp = await self.slack.call("chat.postMessage", join=True, channel=channel, text=message["text"],
                                     blocks=message["blocks"], unfurl_links=False, metadata=metadata)
        channel_id, ts = str(resp["channel"]), str(resp["ts"])
        self.slack.remember(channel, channel_id)
        self.stats["posted"] += 1
        return channel_id, ts

    async def _update(self, channel: str, ts: str, message: dict[str, Any]) -> None:
        await self.slack.call("chat.update", channel=channel, ts=ts, text=message["text"], blocks=message["blocks"])
        self.stats["updated"] += 1

    async def _delete(self, channel_id: str, ts: str) -> None:
        """Remove a duplicate card (one a lost answer or a lost race left behind)."""
        try:
            await self.slack.call("chat.delete", retries=2, channel=channel_id, ts=ts)
            self.stats["duplicates_deleted"] += 1
            log.warning("delivery: duplicate card %s in %s deleted", ts, channel_id)
        except SlackFailure as e:
            log.error("delivery: duplicate card %s in %s could not be deleted: %s", ts, channel_id, e.error)

    async def channel_id(self, channel: str) -> str:
        """The id of a `#name` channel (cached), or the id itself."""
        return await self.slack.channel_id(channel)

    async def _find_posted(self, channel: str, key: str, value: str,
                           attempt: dict[str, Any] | None) -> tuple[str, str] | None:
        """The card an earlier, unfinished attempt posted, found by its message metadata in
        everything the channel received since that attempt (all pages, however busy the
        channel); any further copy is deleted, so one card stays."""
        if attempt is None:
            return None
        channel_id = await self.channel_id(str(attempt.get("channel") or channel))
        oldest = f"{max(0.0, float(attempt.get('at', 0)) - HISTORY_SLACK_S):.6f}"
        found: list[str] = []
        cursor = None
        for _ in range(HISTORY_PAGES):
            resp = await self.slack.call("conversations.history", channel=channel_id, oldest=oldest, limit=200,
                                         include_all_metadata=True, cursor=cursor)
            for m in resp.get("messages") or []:
                meta = m.get("metadata") or {}
                if meta.get("event_type") == METADATA_EVENT and (meta.get("event_payload") or {}).get(key) == value:
                    found.append(str(m["ts"]))
            cursor = (resp.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                break
        if not found:
            return None
        first, *copies = sorted(found, key=float)
        for ts in copies:
            await self._delete(channel_id, ts)
        return channel_id, first

    async def _failed(self, key: str, member: str, lease: int, e: SlackFailure, bucket: str) -> None:
        self.stats["errors"] += 1
        if isinstance(e, RateLimited):
            self.stats["rate_limited"] += 1
            until = _now_ms() + int(e.retry_after_s * 1000)
            await self.store.block(bucket, _now_ms(), until)
            await self.store.finish_outbox(member, lease, until)
            return
        if isinstance(e, Permanent):
            await self._undeliverable(key, member, lease, e)
            return
        await self._retry_later(member, lease, e.error)

    async def _undeliverable(self, key: str, member: str, lease: int, e: Permanent) -> None:
        """Slack will refuse this again: say so once, never retry; deadlines still run."""
        self.stats["undeliverable"] += 1
        log.error("delivery: %s refused by Slack (%s: %s); not retried", member, e.method, e.error)
        self._attempts.pop(member, None)
        if member.startswith(("post:", "update:")):
            await self.store.mark_undeliverable(key, member, lease, e.error, utcnow())
            return
        if member.startswith("batch:"):
            try:
                batch = await self.store.get_batch(key)
            except NotFound:
                batch = None
            for rid in batch.items if batch else []:
                await self.store.mark_undeliverable(rid, member, lease, e.error, utcnow())
        await self.store.finish_outbox(member, lease)

    async def _retry_later(self, member: str, lease: int, why: str) -> None:
        n = self._attempts[member] = self._attempts.get(member, 0) + 1
        delay = backoff_s(n)
        log.warning("delivery: %s failed (%s); retry %d in %.1fs", member, why, n, delay)
        await self.store.finish_outbox(member, lease, _now_ms() + int(delay * 1000))
