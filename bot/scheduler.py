"""Scheduler: fires the timed events of pending requests (reminders, escalation levels, expiry).

Deadlines live in Redis, in the sorted set `{prefix}:deadlines` (members `remind:<id>`,
`escalate:<id>`, `expire:<id>` scored by due time; one of each at most; and, for absences,
`away:<user>` at its date and `awaydraw:<user>` to redraw the cards naming them, see
`bot.autonomy`). Intake schedules
them atomically with the request; any decision removes them in the same script that records
it. Every replica runs a scheduler: `claim_due` leases due members (their score moves to the
lease's end), so each fires on one replica; the lease is renewed while the event runs, and a
replica that dies mid-event leaves its lease to run out and another one fires it. Deadlines that came due while every replica was down are
simply due members, fired at the next start.

An escalation level grants first (the people it will notify may decide before they are told),
then sends its notices (each remembered once sent, so a retry sends only what is missing), then
applies its transition (which reschedules the next event and records counts), so a crash in
between repeats at most one notice rather than losing it. Slack 429s and transient failures
retry the event later; a target Slack refuses for good (`channel_not_found`) is recorded in the
audit entry and the chain goes on. Every Slack call goes through `bot.gateway`.

Posts (reminders and notes in a card's thread, notices to a channel, DMs) take their channel's
posting slot as delivery's cards do (`store.pacing`, the same slot key and window), so a
reminder due just after a card was posted waits its turn instead of drawing a 429 from a
strict Slack. A turn due within delivery's IN_PLACE_MS is waited for in place; a later one
retries the event when it is due (its place in the channel's queue kept: the slot's member is
`sched:<event>`). The slots run on Redis's clock, in real milliseconds, whatever `clock` says.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from blocks.escalation import (
    batch_reminder_message,
    escalation_note,
    escalation_notice,
    reminder_message,
)
from blocks.text import fmt_duration
from bot.autonomy import absence_due, redraw_naming
from bot.delivery import EARLY_MS as SLOT_EARLY_MS
from bot.delivery import IN_PLACE_MS, POST_BURST, POST_RATE, SLOT_LEASE_MS, Slot, post_in_slot
from bot.directory import SlackDirectory
from bot.gateway import Gateway, Permanent, RateLimited, SlackFailure, Transient
from bot.policy import ResolvedTier
from bot.timing import (
    expire_at_ms,
    is_escalation,
    level,
    level_due_ms,
    next_level_ms,
    next_reminder_ms,
    on_timeout,
    reminder_due_ms,
    tier_of,
    timeout_s,
    trigger_ms,
)
from bot.worker import DueWorker, kept_lease
from store.errors import AlreadyDecided, Conflict, NotFound
from store.models import Record, State, Status, from_epoch, utcnow
from store.pacing import PostSlots, post_window
from store.redis_store import Store
from store.transitions import Transition, escalate, expire, grant, not_voted, remind
from store.trust import Away, stand_ins

log = logging.getLogger("hitl.scheduler")

LEASE_MS = 30_000
MAX_WAIT_S = 1.0
EARLY_MS = 50
MAX_BACKOFF_S = 300.0
MAX_MEMBERS = 1000
ROUND_WAIT_MS = 1000
"""How soon a batch card's item looks again while another item of the card sends their
escalation level's round (it records its own level once the round was sent)."""

Make = Callable[[Record], Transition | None]
Window = Callable[[], tuple[int, int]]


class RetryLater(Exception):
    """The event cannot complete now (Slack throttling or down, or its channel's posting slot
    taken: `paced`); try again at `at_ms`, or after a growing back-off when None."""

    def __init__(self, at_ms: int | None, why: str, *, paced: bool = False) -> None:
        super().__init__(why)
        self.at_ms = at_ms
        self.paced = paced


@dataclass
class Told:
    """Whom an escalation level lets decide and tells: the targets' own people (users, group and
    channel members) and, for a target away, who stands in for them with whom that lets decide."""

    approvers: list[str]
    stand_ins: dict[str, tuple[str, list[str]]]

    def stood_in(self, record: Record) -> dict[str, str]:
        """Targets away by who stands in for them on `record`: not its requester (they cannot
        decide it, so the target is told as before), nor anyone for a target who is its
        requester (nobody decides for them: the target is told as before, and cannot decide)."""
        requester = record.request.requested_by
        return {t: d for t, (d, _) in self.stand_ins.items() if requester not in (d, t)}

    def for_item(self, record: Record) -> list[str]:
        """Whom the level lets decide `record` (nobody new where anyone may decide already): the
        targets' own people, and who stands in for a target the card does not name (on that
        target's seat: `seats_for`). Who stands in for a target the card names as an approver is
        not added: they decide for them already (`store.trust.stand_ins`, the click's rule)."""
        if not record.route.approvers:
            return []
        return list(dict.fromkeys([*self.approvers, *self.seats_for(record)]))

    def seats_for(self, record: Record) -> dict[str, list[str]]:
        """The people the level brings in on `record` only to stand in for a target away the card
        does not name, with those targets: their vote takes the target's seat (the target
        holds their own seat as someone the level notified), so the two are one vote of a
        quorum, never two. Someone the level also brings in in their own right is not listed."""
        if not record.route.approvers:
            return {}
        standing = self.stood_in(record)
        named, own = set(record.route.approvers), set(self.approvers)
        seats: dict[str, list[str]] = {}
        for t, (_, people) in self.stand_ins.items():
            if t in standing and t not in named:
                for u in people:
                    if u not in own:
                        seats.setdefault(u, []).append(t)
        return seats

    def recipients(self, targets: list[str], items: list[Record]) -> list[tuple[str, str | None]]:
        """Who is told, once each, and the target away they stand in for (None: their own)."""
        out: dict[str, str | None] = {}
        for target in targets:
            for item in items:
                d = self.stood_in(item).get(target)
                out.setdefault(d or target, target if d else None)
        return list(out.items())

    def dump(self) -> str:
        return json.dumps({"approvers": self.approvers, "stand_ins": self.stand_ins})

    @classmethod
    def load(cls, raw: str) -> Told:
        data = json.loads(raw)
        return cls(list(data.get("approvers") or []),
                   {t: (str(v[0]), list(v[1])) for t, v in (data.get("stand_ins") or {}).items()})


class Scheduler(DueWorker):
    """Fires due deadlines; `run()` until `stop()`, `kick()` to look again at once.

    `clock` (epoch seconds) is injectable so tests move time instead of sleeping.
    `slot_window`: the channel slots' `(limit, window_ms)`, read at each post; the bot passes
    delivery's (`Delivery.slot_window`), so both pace a channel alike. Default: Slack's limit.
    """

    name = "scheduler"

    def __init__(self, store: Store, slack: Gateway, policy: Callable[[], Any], *,
                 clock: Callable[[], float] = time.time, lease_ms: int = LEASE_MS,
                 batch: int = 50, on_change: Callable[[], None] = lambda: None,
                 slot_window: Window | None = None, directory: SlackDirectory | None = None) -> None:
        super().__init__()
        self.directory = directory or SlackDirectory(slack)
        """Who is in a channel a level notifies (shared with the handlers' who-may-see)."""
        self.max_wait_s = MAX_WAIT_S
        self.store = store
        self.slack = slack
        self.policy = policy
        self.clock = clock
        self.lease_ms = lease_ms
        self.batch = batch
        self.on_change = on_change
        self.slot_window: Window = slot_window or (lambda: post_window(POST_RATE, POST_BURST))
        self.slots = PostSlots(store, lease_ms=SLOT_LEASE_MS, window=lambda: self.slot_window())
        self._attempts: dict[str, int] = {}
        self.recount: Callable[[str], Awaitable[bool]] | None = None
        """Counts a decision's or review's trust when its replica did not (`trust:<id>`;
        `handlers.trust.recount`, set once the handlers' dependencies exist)."""
        self.stats = {"reminded": 0, "escalated": 0, "expired": 0, "auto_approved": 0,
                      "retried": 0, "errors": 0, "rate_limited": 0, "paced": 0}

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def next_due_ms(self) -> int | None:
        return await self.store.next_due(self.store.keys.deadlines)

    async def run_once(self) -> int:
        """Lease and fire every due deadline once; returns how many were leased."""
        lease, members = await self.store.claim_due(
            self.store.keys.deadlines, self.now_ms(), self.lease_ms, self.batch)
        results = await asyncio.gather(*(self._fire(m, lease) for m in members),
                                       return_exceptions=True)
        for member, result in zip(members, results, strict=True):
            if isinstance(result, BaseException):
                log.error("scheduler: %s failed; retried when its lease runs out", member,
                          exc_info=result)
        return len(members)

    async def _fire(self, member: str, lease: int) -> None:
        """Fire one leased member, its lease kept while it runs (a level telling several people
        on a slow Slack outlasts one lease): only a replica that died or stalled lets another
        fire the same event, so a reminder or a notice is not sent twice meanwhile."""
        async with kept_lease(self.store, self.store.keys.deadlines, member, lease, lease_ms=self.lease_ms,
                              now_ms=self.now_ms, name=self.name) as held:
            retry_at = await self._run_event(member)
            await held.finish(retry_at)

    async def _run_event(self, member: str) -> int | None:
        """Fire `member`'s event; None when it is done, else when to try again."""
        kind, _, rid = member.partition(":")
        retry_at: int | None = None
        try:
            retry_at = await self._handle(kind, rid)
            self._attempts.pop(member, None)
        except (NotFound, AlreadyDecided):
            retry_at = None
        except RetryLater as e:
            if e.paced:  # its channel's posting slot is taken: back when its turn is due
                self.stats["paced"] += 1
                log.debug("scheduler: %s waits for its slot: %s", member, e)
                retry_at = e.at_ms
            else:
                self.stats["retried"] += 1
                if e.at_ms is not None:  # only a 429 names when to come back
                    self.stats["rate_limited"] += 1
                if e.at_ms is None:
                    retry_at = self._backoff(member, str(e))
                else:
                    log.warning("scheduler: %s postponed: %s", member, e)
                    retry_at = e.at_ms
        except Permanent as e:  # refused for good (the card's channel is gone, ...): expiry still comes
            log.error("scheduler: %s: Slack refused %s (%s); not retried", member, e.method, e.error)
            await self.store.audit(rid, "notify_failed", "system", {"event": kind, "error": e.error}, utcnow())
            retry_at = None
        except SlackFailure as e:  # transient (5xx, an error page, a timeout): back off
            self.stats["retried"] += 1
            retry_at = self._backoff(member, f"Slack error {e.error}")
        return retry_at

    async def _handle(self, kind: str, rid: str) -> int | None:
        """Fire one event; None when done (or rescheduled by its transition), else retry time."""
        if kind == "away":  # `away:<user>`: a person's absence reached its date (docs/trust.md)
            await absence_due(self.store, rid, from_epoch(self.clock()))
            return None
        if kind == "awaydraw":  # their absence changed: redraw the open cards naming them
            if await redraw_naming(self.store, rid):
                self.on_change()
            return None
        if kind == "trust":  # a decision's or review's trust count its replica did not make
            if self.recount is not None and not await self.recount(rid):
                raise RetryLater(None, "the trust count failed")
            return None
        record = await self.store.get(rid)
        if record.state is not State.pending:
            return None
        tier = tier_of(self.policy(), record.route)
        if kind == "expire":
            return await self._expire(record, tier)
        if self.now_ms() >= expire_at_ms(record):
            return None  # its expiry is due too and wins: no reminder for a closed request
        if kind == "remind":
            return await self._remind(record, tier)
        if kind == "escalate":
            return await self._escalate(record, tier)
        log.warning("scheduler: unknown deadline kind %r for %s", kind, rid)
        return None

    # ---- events ---------------------------------------------------------------------------

    async def _outcome(self, record: Record, tier: ResolvedTier | None) -> Status:
        """What nobody deciding in time leads to: the tier's `on_timeout`, except that nothing
        is approved by the clock while automation is paused (`/hitl pause` stops everything
        running on its own) or for a request routed while it was."""
        status = on_timeout(record, tier)
        if status is Status.auto_approved and (record.route.paused or await self._paused()):
            return Status.expired
        return status

    async def _paused(self) -> bool:
        """The pause switch as Redis holds it now (every replica's `/hitl pause`)."""
        return (await self.store.control()).get("paused") == "1"

    async def _expire(self, record: Record, tier: ResolvedTier | None) -> int | None:
        status = await self._outcome(record, tier)
        waited = fmt_duration(timeout_s(record.request, record.route))
        reason = f"No decision in {waited}"
        if status is Status.auto_approved and record.route.canary:
            # a known-answer item is never approved by automation, whatever its answer; its card
            # and reminders said what a real request's say (the same shape), only the end differs
            status = Status.expired
        elif status is not on_timeout(record, tier):
            reason += f"; the {record.route.tier} tier would approve it, but automation is paused"
        elif status is Status.auto_approved:
            reason += f"; the {record.route.tier} tier approves what nobody decides in time"
        now = from_epoch(self.clock())
        if await self._apply(record.id, lambda r: expire(r, now=now, status=status, reason=reason)):
            self.stats["auto_approved" if status is Status.auto_approved else "expired"] += 1
            self.on_change()
        return None

    async def _remind(self, record: Record, tier: ResolvedTier | None) -> int | None:
        due = reminder_due_ms(record, tier, record.reminders)
        if record.owner is not None or due is None:
            return None  # someone owns the case, or the policy no longer reminds
        if not record.ts or not record.channel:  # an undeliverable card never comes: expiry ends it
            return None if record.undeliverable else self._card_wait(due)
        if self.now_ms() < due - EARLY_MS:
            return due  # counted from posting, which came later than receipt
        posts = True
        if record.batch is not None and tier is not None and tier.reminder is not None:
            # a batch card gets one reminder per round, not one per item: the first item due
            # posts it, the card's other items due about then count theirs without posting
            interval_ms = tier.reminder.delay_s(timeout_s(record.request, record.route)) * 1000
            posts = await self.store.claim_batch_reminder(record.batch, record.id, self.now_ms(), interval_ms // 2)
        who: list[str] = []
        if posts:
            who, message = await self._reminder(record, tier)
            current = await self.store.get(record.id)
            if current.state is not State.pending or current.reminders != record.reminders:
                return None  # decided meanwhile, or another replica sent this reminder
            await self._post(record.channel, record.route.channel, f"remind:{record.id}",
                             thread_ts=record.ts, reply_broadcast=not who, **message)
        now = from_epoch(self.clock())
        now_ms = self.now_ms()
        await self._apply(record.id, lambda r: remind(
            r, now=now, mentioned=who, next_due_ms=next_reminder_ms(r, tier, now_ms), batch=record.batch)
            if r.reminders == record.reminders else None)  # counted once
        self.stats["reminded"] += 1
        return None

    async def _reminder(self, record: Record, tier: ResolvedTier | None) -> tuple[list[str], dict[str, Any]]:
        """Whom the reminder mentions and the message: the request's, or for a batch card's
        item the card's (how many of its items wait, whoever should decide any of them)."""
        if record.batch is None:
            left = (expire_at_ms(record) - self.now_ms()) / 1000
            who = self._reminded(record, await self.store.trust.absences())
            return who, reminder_message(record, who, left, await self._outcome(record, tier))
        try:
            ids = (await self.store.get_batch(record.batch)).items
        except NotFound:
            ids = [record.id]
        waiting = [r for r in await self.store.get_many(ids) if r.state is State.pending] or [record]
        first = min(waiting, key=expire_at_ms)
        absences = await self.store.trust.absences()  # read once for the card's items
        who = list(dict.fromkeys([w for r in waiting for w in self._reminded(r, absences)]))
        left = (expire_at_ms(first) - self.now_ms()) / 1000
        outcome = await self._outcome(first, tier_of(self.policy(), first.route))
        return who, batch_reminder_message(len(waiting), who, left, outcome)

    def _reminded(self, record: Record, absences: Mapping[str, Away]) -> list[str]:
        """Whom a reminder mentions: the approvers who have not voted yet (a quorum's voters are
        not told to decide again), each away one by whoever stands in for them (the rule the
        card and the click use, `store.trust.stand_ins`), unless that stand-in asked for this
        request themselves (they cannot decide it: the approver is told)."""
        waiting = not_voted(record)
        if not waiting:
            return []
        away = stand_ins(waiting, absences, from_epoch(self.clock()))
        who = [away[a].delegate if a in away and away[a].delegate != record.request.requested_by else a
               for a in waiting]
        return list(dict.fromkeys(who))

    async def _escalate(self, record: Record, tier: ResolvedTier | None) -> int | None:
        if is_escalation(record.request, record.route) and record.time_to_escalate_s is None:
            return await self._escalation_card_shown(record, tier)
        n = record.escalation_level
        lv, due = level(tier, n), level_due_ms(record, tier, n)
        if record.owner is not None or lv is None or due is None or tier is None:
            return None
        if not record.ts or not record.channel or record.posted_at is None:
            return None if record.undeliverable else self._card_wait(due)
        if self.now_ms() < due - EARLY_MS:
            return due
        targets = list(lv.notify)
        if record.batch is None:
            return await self._level(record, tier, due, targets, [record], None)
        # a batch card's level tells each target once per round, not once per item: the first
        # item due sends it for the card's items at this level, the others record theirs once
        # it was sent (store/lua/batch_round.lua)
        batch = record.batch
        gap_ms = max(1000, int((lv.repeat or lv.after) * 500))
        digest = hashlib.sha1("\n".join(targets).encode()).hexdigest()[:12]
        name, ttl_s = f"level:{n}:{digest}", max(3600, 2 * gap_ms // 1000)
        held, done, holder = await self.store.claim_batch_round(batch, name, record.id, self.now_ms(), gap_ms, ttl_s)
        if done is None and not held and holder is not None:
            if await self._owes_level(holder, n):
                return self.now_ms() + ROUND_WAIT_MS  # its holder is telling people: recorded once it did
            # the item that took the round was decided (or taken over) before it told anyone:
            # this one tells them instead, for the items still waiting
            if not await self.store.take_batch_round(batch, name, record.id, holder, ttl_s):
                return self.now_ms() + ROUND_WAIT_MS // 10  # sent meanwhile, or another item took it
        elif done is not None:  # the card's targets were told: this item records its level
            told = Told.load(done)
            await self._apply(record.id, lambda r: grant(r, approvers=told.for_item(r), seats_of=told.seats_for(r)))
            await self._record_level(record, tier, due, targets, told, {}, batch)
            return None
        items = await self._round_items(record, tier, n, targets, gap_ms)
        return await self._level(record, tier, due, targets, items, name)

    async def _level(self, record: Record, tier: ResolvedTier, due: int, targets: list[str],
                     items: list[Record], round_name: str | None) -> int | None:
        """Run escalation level `record.escalation_level` for `items` (the request, or the
        items of its batch card at this level, `round_name` the card's round): grant, tell each
        target once (a target away: whoever stands in for them), note it in the card's thread,
        then record the level on `record`."""
        n = record.escalation_level
        number = min(n, len(tier.escalation) - 1) + 1
        assert record.posted_at is not None and record.channel and record.ts
        waited = (self.now_ms() - int(record.posted_at.timestamp() * 1000)) / 1000
        told = await self._told(targets, items)
        # Who may decide first, then tell them: a notified person's click must never be refused.
        for item in items:
            await self._apply(item.id, lambda r: grant(r, approvers=told.for_item(r), seats_of=told.seats_for(r)))
        if not await self._owes_level(record.id, n):  # decided (or escalated elsewhere) meanwhile
            return None  # a batch card's other items at this level take the round over
        batch = record.batch
        key = None if batch is None or round_name is None else self.store.keys.batch_round(batch, round_name) + ":notices"
        first = items[0] if items else record
        permalink = await self._permalink(record.channel, record.ts)
        sent = await self.store.notices_sent(record.id, key=key)
        failed: dict[str, str] = {}
        stood_in = {t: d for item in items for t, d in told.stood_in(item).items()}
        for recipient, for_ in told.recipients(targets, items):
            if f"{n}:{recipient}" in sent:
                continue  # this level is being retried: each notice goes out once
            if batch is not None and not await self._owes_level(record.id, n):
                return None  # decided meanwhile: another item of the card takes the round over
            try:
                await self._notify(first, recipient, number, waited, permalink,
                                   waiting=len(items), standing_in_for=for_)
            except Permanent as e:
                log.error("scheduler: escalation of %s to %s failed: %s", record.id, recipient, e.error)
                failed[recipient] = e.error
            await self.store.note_notice(record.id, f"{n}:{recipient}", key=key)
        if f"{n}:card_thread" not in sent:
            note = escalation_note(first, number, targets, waited, stood_in)
            try:
                await self._post(record.channel, record.route.channel, f"escalate:{record.id}",
                                 thread_ts=record.ts, **note)
            except (Transient, RetryLater) as e:
                if isinstance(e, RetryLater) and e.paced:
                    raise  # its turn in the card's channel comes soon: retried (alone) then
                if any(t.startswith("S") for t in [*targets, *stood_in.values()]):
                    raise  # user groups are told only in the card's thread: retried (alone)
                failed["card_thread"] = "rate_limited"
            except Permanent as e:  # the notices went out; the thread note is a courtesy
                failed["card_thread"] = e.error
            await self.store.note_notice(record.id, f"{n}:card_thread", key=key)
        if batch is not None and round_name is not None:
            await self.store.batch_round_done(batch, round_name, record.id, told.dump())
        await self._record_level(record, tier, due, targets, told, failed, batch)
        return None

    async def _record_level(self, record: Record, tier: ResolvedTier, due: int, targets: list[str],
                            told: Told, failed: dict[str, str], batch: str | None) -> None:
        """Record level `record.escalation_level` on `record` (its audit `escalated`, its time
        to escalate, the next level), once: a replica that ran the same level (its lease ran
        out under a slow Slack) finds the level recorded already and records nothing."""
        n = record.escalation_level
        number = min(n, len(tier.escalation) - 1) + 1
        now_ms = self.now_ms()
        seconds = max(0.0, (now_ms - due) / 1000)
        now = from_epoch(self.clock())
        applied = await self._apply(record.id, lambda r: escalate(
            r, now=now, level=number, targets=targets, approvers=told.for_item(r), seats_of=told.seats_for(r),
            seconds=seconds,
            failed=failed, next_due_ms=next_level_ms(r, tier, now_ms), stood_in=told.stood_in(r),
            batch=batch) if r.escalation_level == n else None)
        if applied:
            self.stats["escalated"] += 1
            self.on_change()

    async def _owes_level(self, rid: str, level: int) -> bool:
        """Whether `rid` still waits for escalation level `level` to tell people (pending, not
        taken over, the level not recorded yet)."""
        try:
            record = await self.store.get(rid)
        except NotFound:
            return False
        return record.state is State.pending and record.owner is None and record.escalation_level == level

    async def _round_items(self, record: Record, tier: ResolvedTier, n: int, targets: list[str],
                           gap_ms: int) -> list[Record]:
        """The items of `record`'s batch card a level round is for: waiting at level `n` for
        the same targets, due within `gap_ms` (`record` first)."""
        assert record.batch is not None
        try:
            ids = (await self.store.get_batch(record.batch)).items
        except NotFound:
            ids = []
        now = self.now_ms()
        items = [record]
        for r in await self.store.get_many([i for i in ids if i != record.id]):
            t = tier_of(self.policy(), r.route)
            lv, due = level(t, n), level_due_ms(r, t, n)
            if (r.state is State.pending and r.owner is None and r.escalation_level == n and lv is not None
                    and due is not None and due <= now + gap_ms and list(lv.notify) == targets):
                items.append(r)
        return items

    async def _told(self, targets: list[str], items: list[Record]) -> Told:
        """Whom a level's `targets` let decide `items`, and who stands in for a target away
        (`store.trust.stand_ins`, the rule the card, the click and reminders use)."""
        restricted = any(r.route.approvers for r in items)
        people: list[str] = []
        for target in targets:
            people += await self._people(target) if restricted else []
        users = [t for t in targets if t[:1] in "UW"]
        away = stand_ins(users, await self.store.trust.absences(), from_epoch(self.clock())) if users else {}
        standing: dict[str, tuple[str, list[str]]] = {}
        for target, absence in away.items():
            d = absence.delegate
            standing[target] = (d, await self._people(d) if restricted else [])
        return Told(list(dict.fromkeys(people)), standing)

    async def _escalation_card_shown(self, record: Record, tier: ResolvedTier | None) -> int | None:
        """Level 0: the handover card itself notified people; record how long that took."""
        if record.posted_at is None:  # an undeliverable card never comes: expiry ends it
            return None if record.undeliverable else self._card_wait(trigger_ms(record))
        posted_ms = int(record.posted_at.timestamp() * 1000)
        seconds = max(0.0, (posted_ms - trigger_ms(record)) / 1000)
        now = from_epoch(self.clock())
        channel = record.channel or record.route.channel
        # recorded once: a replica that ran this too (its lease ran out) finds the time recorded
        await self._apply(record.id, lambda r: escalate(
            r, now=now, level=0, targets=[channel], approvers=[], seconds=seconds,
            next_due_ms=level_due_ms(r, tier, r.escalation_level)) if r.time_to_escalate_s is None else None)
        return None

    # ---- Slack ----------------------------------------------------------------------------

    async def _people(self, target: str) -> list[str]:
        """The users notifying `target` makes approvers (a level grants them only when the
        route restricts approvers: otherwise anyone may decide already)."""
        if target.startswith("S"):
            return await self._group_members(target)
        if target[:1] in "UW":
            return [target]
        return await self._channel_members(target)

    async def _notify(self, record: Record, target: str, number: int, waited: float,
                      permalink: str | None, *, waiting: int = 1, standing_in_for: str | None = None) -> None:
        """Notify one target (a user group is mentioned in the card's thread note instead)."""
        notice = escalation_notice(record, number, waited, permalink, waiting=waiting,
                                   standing_in_for=standing_in_for)
        event = f"escalate:{record.id}"
        if target.startswith("S"):
            return
        if target[:1] in "UW":
            opened = await self._call("conversations.open", users=target)
            dm = str((opened.get("channel") or {}).get("id") or target)
            await self._post(dm, dm, event, **notice)
            return
        await self._post(target, target, event, **notice)

    async def _call(self, method: str, **kwargs: Any) -> dict[str, Any]:
        """One Web API call; a 429 becomes RetryLater at Slack's Retry-After (the event is
        retried then), other transient failures a growing back-off."""
        try:
            return await self.slack.call(method, **kwargs)
        except RateLimited as e:
            raise RetryLater(self.now_ms() + int(e.retry_after_s * 1000), "Slack rate limit") from e

    async def _post(self, channel: str, slot_key: str, event: str, **kwargs: Any) -> None:
        """chat.postMessage, joining a public channel the bot is not in, in the posting slot of
        `slot_key`: the key delivery paces the same channel by (a card's thread: its route's
        channel; a configured target: the target as written; a DM: its own D channel). The slot
        is held until Slack answers (its lease renewed meanwhile): a post counts from then, a
        5xx or timeout counts too (it may have posted), a 429 counts nothing and closes the
        channel for its Retry-After."""
        slot = await self._slot(slot_key, f"sched:{event}")
        try:
            await post_in_slot(self.slack, slot, channel, unfurl_links=False, **kwargs)
        except RateLimited as e:
            raise RetryLater(self.now_ms() + int(e.retry_after_s * 1000), "Slack rate limit") from e

    async def _slot(self, key: str, member: str) -> Slot:
        """`key`'s posting slot for `member`, waited for in place when its turn is due within
        IN_PLACE_MS; else RetryLater (`paced`) a little before its turn, its place in the queue
        kept (a member that never comes back loses it after the slots' grace)."""
        wait = await self.slots.acquire(key, member, in_place_ms=IN_PLACE_MS)
        if wait == 0:
            return Slot(self.slots, key, member)
        # the wait is real milliseconds on Redis's clock; `clock` runs at its own pace in tests
        raise RetryLater(self.now_ms() + max(1, wait - SLOT_EARLY_MS), f"the posting slot of {key} is taken",
                         paced=True)

    async def _permalink(self, channel: str, ts: str) -> str | None:
        try:
            resp = await self._call("chat.getPermalink", channel=channel, message_ts=ts)
        except Permanent:
            return None
        link = resp.get("permalink")
        return str(link) if link else None

    async def _group_members(self, group: str) -> list[str]:
        try:
            resp = await self._call("usergroups.users.list", usergroup=group)
        except Permanent as e:
            log.warning("scheduler: members of %s unknown: %s", group, e.error)
            return []
        users: list[Any] = resp.get("users") or []
        return [str(u) for u in users][:MAX_MEMBERS]

    async def _channel_members(self, channel: str) -> list[str]:
        """The people in `channel` (the directory's listing, shared with who-may-see). Slack
        refusing for good (no such channel, not in it): logged, nobody; a 429: the level is
        retried at Slack's Retry-After; other transient failures propagate (retried with a
        growing back-off): a level is never recorded as if the channel were empty."""
        try:
            members = await self.directory.channel_members(channel)
        except RateLimited as e:
            raise RetryLater(self.now_ms() + int(e.retry_after_s * 1000), "Slack rate limit") from e
        except Permanent as e:
            log.warning("scheduler: members of %s unknown: %s", channel, e.error)
            return []
        return sorted(m for m in members if m[:1] in "UW")[:MAX_MEMBERS]

    # ---- helpers --------------------------------------------------------------------------

    async def _apply(self, rid: str, make: Make) -> Record | None:
        """Apply `make(record)` to the latest record; re-read on Conflict. None if it ended."""
        for _ in range(20):
            try:
                record = await self.store.get(rid)
            except NotFound:
                return None
            if record.state is not State.pending:
                return None
            t = make(record)
            if t is None:
                return None
            try:
                # Stamped with the wall clock: the outbox and audit run on it. The injectable
                # clock only decides what is due (and the decision's time).
                return await self.store.apply(t, utcnow())
            except Conflict:
                continue
            except AlreadyDecided:
                return None
        raise Conflict(f"request {rid} kept changing")

    def _card_wait(self, since_ms: int) -> int:
        """When to look again for a card that is not posted yet: soon, then less often."""
        late = max(0, self.now_ms() - since_ms)
        return self.now_ms() + min(2000, max(100, late // 2))

    def _backoff(self, member: str, why: str) -> int:
        n = self._attempts[member] = self._attempts.get(member, 0) + 1
        delay = min(MAX_BACKOFF_S, 0.5 * 2 ** (n - 1))
        self.stats["errors"] += 1
        log.warning("scheduler: %s failed (%s); retry %d in %.1fs", member, why, n, delay)
        return self.now_ms() + int(delay * 1000)
