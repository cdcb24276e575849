"""Delivery: the outbox worker that posts and updates cards in Slack, exactly once each.

Outbox members are `post:<id>`, `update:<id>`, `batch:<batch id>`, `digest:<channel>`,
`recheck:<post or batch member>` and `settle:<update or batch member>` in a
sorted set by due time. A worker leases due members, does the Slack call, and finishes them,
renewing each lease while its operation runs (`bot.worker.kept_lease`); a worker that dies
leaves its lease to run out and another worker retries. A post that may
have reached Slack before a crash is reconciled by looking for the card's message metadata
in the channel's history, so a retry never posts a second card.

Posts are paced per channel by posting slots measured from the send (`store.pacing`): a post
holds its channel's slot until Slack's answer is back, and the next may go a window after
that answer (1/`post_rate` s, plus a small margin), so posts reach Slack at least that far
apart whatever the latency, with every replica sharing the slots in Redis. The slot covers
the `chat.postMessage` call alone (its lease renewed while the call runs): a retry's search
for a lost post happens before it is taken. Waiters queue in order and come back when their
turn is due; a wait of a few milliseconds is spent in place.
A 429 on a post closes that channel for `Retry-After` (others go on) and, since nothing was
posted, forgets the attempt, so its retry needs no `conversations.history` search; a 5xx or
timeout may have posted and keeps the search. Updates (Tier 3) are paced per workspace by a
token bucket in Redis a few calls under Slack's, so the jitter between taking a token and
Slack receiving the call cannot overrun it. 5xx and timeouts back off exponentially. Updates
that lock a decided card reserve their slot; other redraws (votes, pause) only take a free
one, so locks go first.
A card Slack refuses for good is marked undeliverable (audited once; the request still expires
by its deadline); a refused redraw of a card already in Slack is not (its next redraw, the
decision's lock, is tried all the same). A call whose outcome was unknown may still be carried
out late: a card posted after such an attempt is looked for again a `settle_ms()` later and any
other copy deleted (`recheck:`), and a card whose redraw timed out is drawn once more then
(`settle:`). Requests the policy groups go onto batch cards; a channel whose queue of
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

from bot import gateway
from bot.backlog import Backlog
from bot.gateway import Gateway, Permanent, RateLimited, SlackFailure, backoff_s
from bot.worker import DueWorker, Lease, kept_lease
from store.errors import NotFound
from store.models import Batch, Record, State, Status, utcnow
from store.pacing import Outcome, PostSlots, post_window
from store.redis_store import Store

log = logging.getLogger("hitl.delivery")

METADATA_EVENT = "hitl_request"
LEASE_MS = 30_000
POST_RATE, POST_BURST = 1.0, 1.0  # Slack: one message per second per channel (some Slacks allow bursts)
IN_PLACE_MS = 150  # a post whose slot frees this soon waits in place (keeping its lease)
EARLY_MS = 60  # a post told to wait longer comes back this early and waits the rest in place
SLOT_LEASE_MS = 20_000  # a replica that dies holding a channel's slot frees it after this long
UPDATE_RATE, UPDATE_BURST = 50 / 60, 45.0  # chat.update is Tier 3: 50 a minute; 5 calls of headroom
HISTORY_PAGES = 50  # a lost post is searched for in at most 10,000 messages after its attempt
HISTORY_SLACK_S = 60  # clock skew allowed between this host and Slack when searching


def settle_ms() -> int:
    """How long after a call whose outcome was unknown (a timeout, a 5xx) Slack may still carry it
    out: twice the Web API timeout. A card posted after such an attempt is looked at again this
    long after (`recheck:`), and a card whose redraw timed out is drawn once more (the late
    redraw must not be the last word)."""
    return int(gateway.TIMEOUT_S * 2000)

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


class Slot:
    """A channel's posting slot, held until the post's answer (`release`, once)."""

    def __init__(self, slots: PostSlots, channel: str, member: str) -> None:
        self.slots, self.channel, self.member = slots, channel, member
        self.held = True

    async def release(self, outcome: Outcome, retry_after_ms: int = 0) -> None:
        if self.held:
            self.held = False
            await self.slots.done(self.channel, self.member, outcome, retry_after_ms=retry_after_ms)

    async def keep(self) -> None:
        """Renew the lease every third of it while the call in the slot runs (cancel to stop),
        so only a replica that died or stalled loses the slot to its lease."""
        while self.held:
            await asyncio.sleep(self.slots.lease_ms / 3000)
            try:
                if not self.held or not await self.slots.keep(self.channel, self.member):
                    return
            except Exception as e:  # Redis away: the lease may end; `done` still counts the post
                log.warning("delivery: slot of %s in %s not renewed: %s", self.member, self.channel, e)


async def post_in_slot(slack: Gateway, slot: Slot, channel: str, **kwargs: Any) -> dict[str, Any]:
    """chat.postMessage to `channel` in `slot`, renewing the slot's lease while the call runs
    (a join on `not_in_channel` included) and releasing the slot as soon as Slack answers: a
    429 closes the channel for its Retry-After and counts nothing (nothing was posted), a 5xx
    or timeout counts (it may have posted), a refusal counts nothing."""
    keeper = asyncio.create_task(slot.keep())
    try:
        try:
            resp = await slack.call("chat.postMessage", join=True, channel=channel, **kwargs)
        finally:
            keeper.cancel()
            await asyncio.wait([keeper])
    except RateLimited as e:
        await slot.release("none", int(e.retry_after_s * 1000) if e.method == "chat.postMessage" else 0)
        raise
    except Permanent:
        await slot.release("none")
        raise
    except BaseException:
        await slot.release("maybe")
        raise
    await slot.release("posted")
    return resp


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
        self.slots = PostSlots(store, lease_ms=SLOT_LEASE_MS, window=self.slot_window)
        self._attempts: dict[str, int] = {}
        self._searched: dict[str, str] = {}
        """Member -> the attempt note whose lost post was looked for in vain, so a post deferred
        after its search does not search again (dropped once it posts, or is done)."""
        self.stats = {"posted": 0, "updated": 0, "rate_limited": 0, "errors": 0, "deferred": 0,
                      "undeliverable": 0, "reconciled": 0, "duplicates_deleted": 0}

    def now_ms(self) -> int:
        return _now_ms()

    def slot_window(self) -> tuple[int, int]:
        """The channel slots' `(limit, window_ms)` from `post_rate`/`post_burst` (read at each use:
        a benchmark may change them); the scheduler's posts take the same slots with the same."""
        return post_window(self.post_rate, self.post_burst)

    async def next_due_ms(self) -> int | None:
        return await self.store.next_outbox_due()

    async def run_once(self) -> int:
        """Lease and perform every due operation once; returns how many were attempted."""
        until, members = await self.store.claim_outbox(_now_ms(), LEASE_MS, self.batch)
        await asyncio.gather(*(self._perform(m, until) for m in members))
        return len(members)

    async def _perform(self, member: str, until: int) -> None:
        """Do one leased operation, its lease kept while it runs (a post searching a lost
        card's channel history on a slow Slack outlasts one lease): only a replica that died
        or stalled lets another take the same operation over meanwhile. Every step that
        finishes or reschedules it uses the lease in force (`Lease`)."""
        async with kept_lease(self.store, self.store.keys.outbox, member, until, lease_ms=LEASE_MS,
                              now_ms=_now_ms, name=self.name) as lease:
            await self._perform_leased(member, lease)

    async def _perform_leased(self, member: str, lease: Lease) -> None:
        op, _, key = member.partition(":")
        try:
            if op == "post":
                await self._post_request(key, member, lease)
            elif op == "update":
                await self._update_request(key, member, lease)
            elif op == "batch":
                await self._batch(key, member, lease)
            elif op == "digest":
                await self.backlog.refresh(self, key, member, lease)
            elif op == "recheck":
                await self._recheck(key, member, lease)
            elif op == "settle":
                await self._settle(key, member, lease)
            else:
                log.error("delivery: unknown outbox operation %r dropped", member)
                await lease.finish()
            self._attempts.pop(member, None)
            self._searched.pop(member, None)
        except Deferred:  # a search it made in vain still stands at its next try
            self.stats["deferred"] += 1
        except NotFound:
            self._searched.pop(member, None)
            await lease.finish()
        except SlackFailure as e:
            await self._failed(key, member, lease, e)

    async def pace(self, bucket: str, member: str, lease: Lease, *, reserve: bool = True) -> None:
        """Take a token from the `update` bucket or reschedule the operation and raise Deferred.
        Without `reserve` the operation takes only a free token, never a place in the queue (so
        it gives way to every operation that reserved one). Posts take a `Slot` instead."""
        now = _now_ms()
        wait = await self.store.pace(bucket, member, now, UPDATE_RATE, UPDATE_BURST, reserve=reserve)
        if wait > 0:
            await lease.finish(now + wait)
            raise Deferred(bucket)

    async def slot(self, channel: str, member: str, lease: Lease, *, front: bool = False) -> Slot:
        """`channel`'s posting slot for `member`, or the operation rescheduled to when its turn
        is due (Deferred). A turn due within IN_PLACE_MS is waited for here."""
        wait = await self.slots.acquire(channel, member, in_place_ms=IN_PLACE_MS, front=front)
        if wait == 0:
            return Slot(self.slots, channel, member)
        now = _now_ms()
        await lease.finish(now + max(1, wait - EARLY_MS))
        if not member.startswith("digest:"):
            await self.backlog.waiting(self, channel, member, now)
        raise Deferred(f"post:{channel}")

    async def post_slot(self, channel: str, member: str, lease: Lease) -> Slot:
        """`slot`, after posting the channel's backlog digest first when one is due (the digest
        takes the slot; this post then goes first in the queue)."""
        # the channel's queue is counted while the slot is taken (one round trip's wait, not two)
        counting = asyncio.ensure_future(self.backlog.state.count(channel))
        try:
            slot = await self.slot(channel, member, lease)
        except BaseException:
            counting.cancel()
            await asyncio.gather(counting, return_exceptions=True)
            raise
        try:
            digest = await self.backlog.maybe_post_digest(self, channel, slot, await counting)
        except BaseException:
            await slot.release("none")  # unless the digest's post already let it go
            raise
        if not digest:
            return slot
        return await self.slot(channel, member, lease, front=True)

    # ---- single cards -------------------------------------------------------------------

    async def _post_request(self, rid: str, member: str, lease: Lease) -> None:
        record, previous = await self.store.get_posting(rid)  # searched for before the slot
        channel = record.route.channel
        if record.ts or record.undeliverable:
            await lease.finish()
            return
        if record.route.group and _awaits_person(record):
            bid = await self.store.join_batch(record, uuid.uuid4().hex[:12], _now_ms())
            await self.store.enqueue(f"batch:{bid}", _now_ms())
            await lease.finish()
            self.kick()
            return
        key = self.store.keys.request(rid)
        found = await self._search(member, channel, "request_id", rid, previous, {})
        if not found:
            slot = await self.post_slot(channel, member, lease)
            try:
                noted = await self.store.note_post_attempt(record.id, utcnow(), channel)
                await self._same_attempt(member, lease, previous, noted)
                message = self.render(record)
                channel_id, ts = await self._post(slot, message, {"request_id": rid},
                                                  attempt=None if previous else key)
            finally:
                await slot.release("none")  # nothing was posted (failed before the call)
        if found:  # an earlier attempt took effect but its answer was lost: what it shows is unknown
            channel_id, ts = found
            async with lease.ending() as until:
                await self.store.mark_posted(record.id, member, until, channel_id, ts, utcnow(), -1)
            self.stats["reconciled"] += 1
            self.kick()
            log.info("delivery: card of %s was already posted (%s); not posting again", rid, ts)
        else:
            async with lease.ending() as until:
                verdict, earlier = await self.store.mark_posted(record.id, member, until, channel_id, ts, utcnow(),
                                                                record.version)
            if verdict == "exists" and earlier != ts:  # another replica won a race: remove ours
                await self._delete(channel_id, ts)
        if previous is not None:  # an attempt whose outcome was unknown may still post, later
            await self.store.hold_recheck(key, previous, f"recheck:{member}", _now_ms() + settle_ms())
        await self.backlog.posted(self, channel, member)

    async def _update_request(self, rid: str, member: str, lease: Lease) -> None:
        record = await self.store.get(rid)
        if record.batch:  # its card is the batch card
            await self.store.enqueue(f"batch:{record.batch}", _now_ms())
            await lease.finish()
            self.kick()
            return
        if not record.ts or not record.channel:
            await lease.finish()  # the post renders the latest state
            return
        # locking a decided card goes first; a redraw of an open one takes a free slot
        await self.pace("update", member, lease, reserve=record.state is not State.pending)
        await self._update(record.channel, record.ts, self.render(record))
        await lease.finish()

    # ---- batch cards --------------------------------------------------------------------

    async def _batch(self, bid: str, member: str, lease: Lease) -> None:
        batch = await self.store.get_batch(bid)
        records = await self.store.get_many(batch.items)
        if not records:
            await lease.finish()
            return
        message = self.render_batch(batch, records)
        rendered = _digest(message)
        if batch.ts:
            if rendered != batch.rendered:  # Slack already shows exactly this: no call
                await self.pace("update", member, lease)
                await self._update(batch.channel, batch.ts, message)
            await self.store.batch_shown(batch, batch.channel, batch.ts, utcnow(), rendered)
            await lease.finish()
            return
        key = self.store.keys.batch(bid)
        previous = await self.slots.attempt(key)  # searched for before the slot: it covers the post alone
        found = await self._search(member, batch.channel, "batch_id", bid, previous, {"channel": batch.channel})
        if found:
            channel_id, ts = found
        else:
            slot = await self.post_slot(batch.channel, member, lease)
            try:
                noted = await self.store.note_batch_attempt(bid, utcnow())
                await self._same_attempt(member, lease, previous, noted)
                channel_id, ts = await self._post(slot, message, {"batch_id": bid, "request_id": records[0].id},
                                                  attempt=None if previous else key)
            finally:
                await slot.release("none")  # nothing was posted (failed before the call)
        await self.store.batch_shown(batch, channel_id, ts, utcnow(), "" if found else rendered)
        if found:  # posted by a run that died: bring the card up to date (joins re-queue themselves)
            await self.store.enqueue(f"batch:{bid}", _now_ms())
        if previous is not None:  # an attempt whose outcome was unknown may still post, later
            note = json.dumps({**json.loads(previous), "channel": batch.channel})
            await self.store.hold_recheck(key, note, f"recheck:{member}", _now_ms() + settle_ms())
        await lease.finish()
        await self.backlog.posted(self, batch.channel, member)

    async def _recheck(self, target: str, member: str, lease: Lease) -> None:
        """A card was posted after an attempt whose outcome was unknown; that attempt may have
        reached Slack after all, later than the search before the post looked. Every copy of the
        card in the channel but the recorded one is deleted, so one card stays (and locks)."""
        kind, _, key = target.partition(":")
        hkey = self.store.keys.request(key) if kind == "post" else self.store.keys.batch(key)
        ts, note = await self.store.recheck_note(hkey)
        if ts and note:
            field = "request_id" if kind == "post" else "batch_id"
            attempt = json.loads(note)
            channel_id, copies = await self._history_cards(str(attempt.get("channel") or ""), field, key, attempt)
            for other in copies:
                if other != ts:
                    await self._delete(channel_id, other)
        await self.store.drop_recheck(hkey)
        await lease.finish()

    async def _settle(self, target: str, member: str, lease: Lease) -> None:
        """Draw a card once more, whatever Slack should show: a redraw of it whose outcome was
        unknown may have been applied late, over the newer one."""
        if target.startswith("batch:"):  # not "unchanged since last drawn": it may not be
            await self.store.forget_rendered(target.partition(":")[2])
        await self.store.enqueue(target, _now_ms())
        await lease.finish()
        self.kick()

    async def _search(self, member: str, channel: str, key: str, value: str, previous: str | None,
                      extra: dict[str, Any]) -> tuple[str, str] | None:
        """The card an unfinished attempt (`previous`, its note) posted, searched for outside the
        slot; a search already made in vain for the same attempt is not repeated."""
        if previous is None or self._searched.get(member) == previous:
            return None
        found = await self._find_posted(channel, key, value, {**json.loads(previous), **extra})
        if not found:
            self._searched[member] = previous
        return found

    async def _same_attempt(self, member: str, lease: Lease, searched: str | None, noted: str | None) -> None:
        """With the slot in hand, about to post: the attempt note must be the one searched for.
        Another began meanwhile (another replica took over a search that outlasted the outbox
        lease): post nothing, look again at once."""
        self._searched.pop(member, None)  # from here on a retry searches again
        if noted != searched:
            await lease.finish(_now_ms())
            raise Deferred(f"attempt:{member}")

    # ---- Slack calls --------------------------------------------------------------------

    async def post_message(self, slot: Slot, **kwargs: Any) -> dict[str, Any]:
        """chat.postMessage in `slot`'s channel (`post_in_slot`)."""
        resp = await post_in_slot(self.slack, slot, slot.channel, **kwargs)
        self.stats["posted"] += 1
        return resp

    async def _post(self, slot: Slot, message: dict[str, Any], payload: dict[str, Any], *,
                    attempt: str | None) -> tuple[str, str]:
        """Post a card. `attempt`: the key whose post-attempt note this very call made, dropped
        on a 429 (nothing was posted, so the retry searches no history)."""
        metadata = {"event_type": METADATA_EVENT, "event_payload": payload}
        try:
            resp = await self.post_message(slot, text=message["text"], blocks=message["blocks"],
                                           unfurl_links=False, metadata=metadata)
        except RateLimited as e:
            if attempt and e.method == "chat.postMessage":
                await self.slots.forget_attempt(attempt)
            raise
        channel_id, ts = str(resp["channel"]), str(resp["ts"])
        self.slack.remember(slot.channel, channel_id)
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
        channel_id, found = await self._history_cards(channel, key, value, attempt)
        if not found:
            return None
        first, *copies = found
        for ts in copies:
            await self._delete(channel_id, ts)
        return channel_id, first

    async def _history_cards(self, channel: str, key: str, value: str,
                             attempt: dict[str, Any]) -> tuple[str, list[str]]:
        """The channel's id and the ts of every card whose metadata has `key` == `value`, posted
        since `attempt` (its note) began, oldest first: all pages, however busy the channel."""
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
        return channel_id, sorted(found, key=float)

    async def _failed(self, key: str, member: str, lease: Lease, e: SlackFailure) -> None:
        self.stats["errors"] += 1
        if isinstance(e, RateLimited):
            self.stats["rate_limited"] += 1
            until = _now_ms() + int(e.retry_after_s * 1000)
            if e.method == "chat.update":  # (a 429'd post closed its own channel's slots)
                await self.store.block("update", _now_ms(), until)
            await lease.finish(until)
            return
        if isinstance(e, Permanent):
            await self._undeliverable(key, member, lease, e)
            return
        if e.method == "chat.update" and member.startswith(("update:", "batch:")):
            # Slack may still apply this redraw late, over a newer one (whichever replica makes
            # it): the card is drawn once more when a late call would have landed
            await self.store.enqueue_once(f"settle:{member}", _now_ms() + settle_ms())
        await self._retry_later(member, lease, e.error)

    async def _undeliverable(self, key: str, member: str, lease: Lease, e: Permanent) -> None:
        """Slack will refuse this again: say so once, never retry; deadlines still run."""
        self.stats["undeliverable"] += 1
        log.error("delivery: %s refused by Slack (%s: %s); not retried", member, e.method, e.error)
        self._attempts.pop(member, None)
        if member.startswith("post:"):
            async with lease.ending() as until:
                await self.store.mark_undeliverable(key, member, until, e.error, utcnow())
            return
        if member.startswith("update:"):  # the card stays as its last redraw left it: said once
            await self._redraw_refused(key, e.error)
        if member.startswith("batch:"):
            try:
                batch = await self.store.get_batch(key)
            except NotFound:
                batch = None
            # the items on a card in Slack whose redraw was refused are not undeliverable: people
            # see them and the next redraw (a decision's lock) is tried all the same; those that
            # joined since and are on no card are (said once, and they still expire)
            shown = {r.id for r in await self.store.get_many(batch.items) if r.ts} if batch and batch.ts else set()
            for rid in [i for i in batch.items if i in shown] if batch else []:  # as a single card's, per item
                await self._redraw_refused(rid, e.error, batch=key)
            async with lease.ending() as until:
                for rid in [i for i in batch.items if i not in shown] if batch else []:
                    await self.store.mark_undeliverable(rid, member, until, e.error, utcnow())
                await self.store.finish_outbox(member, until)
            return
        await lease.finish()

    async def _redraw_refused(self, rid: str, error: str, **detail: str) -> None:
        """Audit that the card of `rid` stays as its last redraw left it (the decision's lock
        included): once per request and error, however many redraws Slack refuses so."""
        await self.store.audit(rid, "update_refused", "system", {"error": error, **detail}, utcnow(),
                               key=f"update_refused:{rid}:{error}")

    async def _retry_later(self, member: str, lease: Lease, why: str) -> None:
        n = self._attempts[member] = self._attempts.get(member, 0) + 1
        delay = backoff_s(n)
        log.warning("delivery: %s failed (%s); retry %d in %.1fs", member, why, n, delay)
        await lease.finish(_now_ms() + int(delay * 1000))
