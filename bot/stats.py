"""The stats projector: audit events -> hourly counters, through the `stats` consumer group.

Each replica reads `{prefix}:audit` as one consumer of the group `stats`, turns every event
into counter increments (`ops_for`) and hands a batch to `StatsStore.apply`, which counts
and acknowledges each event in one script: replicas share the stream, a crashed replica's
unacknowledged events are reclaimed by another (XAUTOCLAIM), and nothing is counted twice.
Durations come from the record (`created_at`, `posted_at`, epoch ms) and the event's time.

The events of the hot path (`received`, `routed`, `decided`: `INLINE_EVENTS`) are counted by
the accept and apply scripts that write them, in the same step; the projector acknowledges
them without reading any record, and counts every other event (posted, clicked, escalated,
invalid, refused, reviewed, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from blocks.text import escape, user_mention
from bot.outage import Outage
from bot.policy import PolicyEngine, PolicyError, ResolvedTier
from bot.policy.fields import format_duration
from store.failures import Refused, Unavailable
from store.models import Intake
from store.redis_store import Store
from store.stats import Counted, Op
from store.stats_ops import INLINE_EVENTS, event_ms, non_trivial, ops_for

__all__ = ["PauseState", "StatsProjector", "event_ms", "non_trivial", "ops_for", "policy_lines"]

log = logging.getLogger("hitl.stats")

BLOCK_MS = 1000
BATCH = 200
READ = 50
"""Events read at a time while keeping up (one read's parsing holds the event loop well under a
millisecond; a backlog is read in reads back to back, intake served between them)."""
LINGER_S = 0.2
"""After a read that found events (fewer than a batch), wait this long before the next one: under
load the projector then reads the audit stream in batches, one wake for many requests instead of
one per request (each wake took the event loop from intake's hot path). Counters lag by at most
this much more."""
RECORD_FIELDS = ("created_at", "posted_at", "route", "request", "changes", "intake")
_NEEDS_RECORD = frozenset({"clicked", "posted", "escalated", "expired", "refused", "reviewed", "overridden"})
"""Events whose count reads the record: its times, and its route (a canary's events count nowhere)."""


def _decode_record(raw: list[str | None]) -> dict[str, Any] | None:
    values = dict(zip(RECORD_FIELDS, raw, strict=True))
    if values["intake"]:  # records since issue 13 keep created_at in `intake` (store.redis_store.Intake)
        values["created_at"] = str(Intake.parse(values["intake"]).created_ms)
    if values["created_at"] is None:
        return None
    out: dict[str, Any] = {"created_at": int(values["created_at"]),
                           "posted_at": int(values["posted_at"]) if values["posted_at"] else None}
    for name in ("route", "request", "changes"):
        try:
            out[name] = json.loads(values[name] or "null")
        except ValueError:
            out[name] = None
    return out


def _honour_cancel() -> None:
    """Raise CancelledError if this task was asked to stop.

    redis-py can swallow a cancellation that lands during a read (the read then returns
    normally); the request stays on the task, so loops check it before each round.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class StatsProjector:
    """Counts audit events into the stats buckets; `run()` until cancelled."""

    def __init__(self, store: Store, *, redis_url: str, consumer: str,
                 claim_idle_s: float = 30.0) -> None:
        self.store = store
        self.stats = store.stats
        self.consumer = consumer
        self.claim_idle_ms = int(claim_idle_s * 1000)
        self.counted = 0
        self.feed = store.audit_feed(redis_url, block_ms=BLOCK_MS)

    async def close(self) -> None:
        await self.feed.close()

    async def ensure_group(self) -> None:
        """The group starts at the stream's beginning: history present at first start counts."""
        await self.feed.ensure_group()

    async def run(self) -> None:
        outage = Outage(log, "stats")
        try:
            while True:
                try:
                    await self.ensure_group()
                    outage.ok()
                    while await self.read("0", block_ms=None):  # ours from before a restart
                        pass
                    await self._loop()
                except Unavailable as e:
                    await asyncio.sleep(outage.failed(e))
                except Refused as e:  # NOGROUP after a Redis restart: create it again
                    log.warning("stats: %s; retrying in 1s", e)
                    await asyncio.sleep(1.0)
        finally:
            with contextlib.suppress(Exception):
                await self.close()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        last_claim = 0.0
        while True:
            _honour_cancel()
            if loop.time() - last_claim >= min(self.claim_idle_ms / 2000, 5.0):
                last_claim = loop.time()
                await self.reclaim()
            n = await self.read(">", block_ms=BLOCK_MS, count=READ)
            if 0 < n < READ:
                await asyncio.sleep(LINGER_S)

    async def read(self, start: str, *, block_ms: int | None, count: int = BATCH) -> int:
        """Read one batch (`>` new, `0` our unacknowledged) and count it; returns its size."""
        return await self.count(await self.feed.read(self.consumer, start, count=count, block_ms=block_ms))

    async def reclaim(self) -> int:
        """Take over events another replica read but never counted (it died meanwhile)."""
        return await self.count(await self.feed.reclaim(self.consumer, self.claim_idle_ms, count=BATCH))

    async def count(self, entries: list[tuple[str, dict[str, str] | None]]) -> int:
        """Count a batch of audit entries (deleted ones are just acknowledged)."""
        if not entries:
            return 0
        needed = sorted({f["request_id"] for _, f in entries
                         if f and f.get("event") in _NEEDS_RECORD and f.get("request_id")})
        records: dict[str, dict[str, Any] | None] = {}
        if needed:
            rows = await self.feed.record_fields(needed, RECORD_FIELDS)
            records = {rid: _decode_record(raw) for rid, raw in zip(needed, rows, strict=True)}
        # Redis's clock only when something is counted here (the hot path's events never are)
        counts = any(f and f.get("event") not in INLINE_EVENTS for _, f in entries)
        now_ms = int(await self.feed.now_ms()) if counts else 0
        batch = [Counted(i, self._ops(i, f, records, now_ms)) for i, f in entries]
        # events that add nothing here (counted when written, or never counted) are acknowledged
        # in one XACK; the others are counted and acknowledged one by one in one script
        n = await self.feed.ack([c.entry_id for c in batch if not c.ops])
        counting = [c for c in batch if c.ops]
        if counting:
            n += await self.stats.apply(counting)
        self.counted += n
        return len(entries)

    @staticmethod
    def _ops(entry_id: str, fields: dict[str, str] | None,
             records: dict[str, dict[str, Any] | None], now_ms: int) -> list[Op]:
        if not fields or fields.get("event") in INLINE_EVENTS:  # deleted, or counted when written
            return []
        try:
            return ops_for(fields, event_ms(entry_id, fields),
                           records.get(fields.get("request_id", "")), now_ms)
        except (TypeError, ValueError, KeyError) as e:  # a malformed entry must not stall stats
            log.warning("stats: audit entry %s not counted: %s", entry_id, e)
            return []


# ---- what the commands and the App Home are given --------------------------------------------


class PauseState:
    """This replica's copy of the pause switch, for rendering cards (which cannot wait on Redis).

    `run()` re-reads it every second; the pause command updates it at once via `note`.
    """

    def __init__(self, store: Store, every_s: float = 1.0) -> None:
        self.store = store
        self.every_s = every_s
        self.paused = False
        self.reason: str | None = None

    def note(self, paused: bool, reason: str | None) -> None:
        self.paused, self.reason = paused, (reason or None) if paused else None

    def current(self) -> tuple[bool, str | None]:
        return self.paused, self.reason

    async def refresh(self) -> None:
        control = await self.store.control()
        self.note(control.get("paused") == "1", control.get("reason"))

    async def run(self) -> None:
        while True:
            _honour_cancel()
            try:
                await self.refresh()
            except Exception as e:  # Redis away: keep the last known state
                log.debug("pause state: %s", e)
            await asyncio.sleep(self.every_s)


_MODE_WORDS = {
    "auto": "acts alone",
    "audit": "acts at once and is reviewed afterwards",
    "shadow": "a person decides without seeing the agent's recommendation",
    "escalate": "handed to a person, who takes over",
    "deny": "refused",
}


def _who(ids: tuple[str, ...] | list[str]) -> str:
    return ", ".join(user_mention(i) if not i.startswith("S") else f"<!subteam^{i}>" for i in ids)


def _tier_words(t: ResolvedTier) -> str:
    mode = t.mode.value
    if mode == "approve":
        words = "a person approves first" if t.quorum == 1 else (
            f"{t.quorum} different people approve first")
    else:
        words = _MODE_WORDS.get(mode, mode)
    if mode in ("auto", "audit"):
        share = "every one" if t.sample >= 1 else f"{t.sample:.0%}" if t.sample else None
        if share and mode == "auto":
            words += f"; {share} sampled for review afterwards"
        elif mode == "audit":
            words = f"acts at once; {share or 'none'} reviewed afterwards"
        return words
    if mode == "deny":
        return words
    words += f", in {escape(t.channel)}"
    words += f"; only {_who(t.approvers)} may decide" if t.approvers else "; anyone may decide"
    outcome = "rejected" if t.on_timeout.value == "reject" else "approved"
    words += f"; unanswered after {format_duration(t.timeout_s)} it is {outcome}"
    if t.reminder is not None:
        at = "at " if t.reminder.at is not None else ""
        words += f"; reminder {at}{escape(t.reminder.describe())}"
    for level in t.escalation:
        notify = ", ".join(escape(n) if n.startswith("#") else _who([n]) for n in level.notify)
        words += f"; after {format_duration(level.after)} {notify} is notified"
    return words


def policy_lines(engine: PolicyEngine, rejected: PolicyError | None = None) -> list[str]:
    """The active policy in plain words (mrkdwn; anything from the file is escaped), led by the
    errors of the last reload when it was refused (the policy in force is then the older one)."""
    p = engine.policy
    lines = []
    if rejected is not None:
        errors = "; ".join(escape(e) for e in rejected.errors[:5])
        lines.append(f"⚠️ *The last change to {escape(rejected.source)} was refused*, so this older "
                     f"policy is still in force: {errors}")
    lines.append(f"*Source:* {escape(engine.source)}")
    for t in engine.tiers.values():
        lines.append(f"*{escape(t.name.capitalize())} tier:* {_tier_words(t)}.")
    lines.append(f"*No rule applies:* the {escape(p.defaults.tier)} tier.")
    trig = p.triggers
    if trig.confidence.enabled:
        c = p.confidence
        lines.append(f"*Confidence:* {c.autonomous:.0%} or more adds no scrutiny; "
                     f"{c.review:.0%}-{c.autonomous:.0%} acts and is reviewed afterwards; "
                     f"under {c.review:.0%} a person takes over. Risk rules always win.")
    for r in p.rules:
        effect = " and ".join(x for x in (
            f"tier {escape(r.tier)}" if r.tier else "", f"mode {r.mode.value}" if r.mode else "")
            if x)
        why = f" ({escape(r.reason)})" if r.reason else ""
        lines.append(f"*Rule {escape(r.name)}:* when `{escape(r.when)}` → {effect}{why}.")
    on = [name for name, t in trig if t.enabled]
    off = [name for name, t in trig if not t.enabled]
    details = {
        "amount_over_limit": f"amounts over {trig.amount_over_limit.limit:g}",
        "tool_call_loop": f"more than {trig.tool_call_loop.limit} tool calls",
        "negative_sentiment": f"sentiment under {trig.negative_sentiment.below:g}",
    }
    named = [f"{n} ({details[n]})" if n in details else n for n in on]
    lines.append(f"*Built-in triggers on:* {escape(', '.join(named)) or 'none'}"
                 + (f"; off: {escape(', '.join(off))}." if off else "."))
    lines.append(_trust_words(engine))
    lines.append(f"*Admins* (may pause and resume): {_who(list(engine.admins))}." if engine.admins
                 else "*Admins:* none, so nobody may pause or resume (set `admins:` in the file).")
    return lines


def _trust_words(engine: PolicyEngine) -> str:
    """Graduated autonomy, promotion steps, grants per tier and canaries in one line."""
    t = engine.policy.trust
    words = (f"*Trust:* a new action goes to a person until approved {t.after} times with no override"
             if engine.policy.triggers.first_use.enabled else "*Trust:* off (the first_use trigger is off)")
    for step in t.promote:
        words += f"; after {step.after} clean approvals its default tier drops by {step.lower_tier}"
    grants = []
    for name in engine.tiers:
        terms = engine.grant_terms(name)
        if terms is not None:
            cap = f" up to {terms.max_amount:g}" if terms.max_amount is not None else ""
            grants.append(f"{escape(name)} {format_duration(terms.duration_s)}{cap}")
    words += f"; standing grants: {', '.join(grants) or 'none'}"
    if t.canaries.file and engine.canaries:
        words += f"; canaries: {t.canaries.share:.0%} ({len(engine.canaries)} in the file)"
    return words + "."
