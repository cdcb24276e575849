"""When things happen to a pending request: its deadlines, reminders and escalation levels.

Pure functions of a request (or record), its route and its tier, so intake (scheduling at
accept) and the scheduler (rescheduling after each event) compute the same times. All times
are epoch milliseconds. Expiry counts from receipt (the agent's wait); reminders and
escalation levels count from the card's posting, as docs/policy.md says.
"""

from __future__ import annotations

from typing import Any

from bot.policy import ResolvedTier
from bot.policy.model import EscalationLevel, OnTimeout
from store.models import EscalationReason, Kind, Mode, Record, Request, Route, Status

DEFAULT_TIMEOUT_S = 4 * 3600
"""Timeout of a request whose route has none (a router without tiers)."""

USER_REQUESTED = "user_requested_human"
"""The rule name (the policy's built-in trigger) of an end user asking for a person."""

USER_REQUESTED_REASON = "The user asked for a person: handed over at once"


def tier_of(router: Any, route: Route) -> ResolvedTier | None:
    """The route's tier in the policy in force, or None (no policy engine, or tier removed)."""
    get = getattr(router, "tier", None)
    if get is None:
        return None
    try:
        tier = get(route.tier)
    except KeyError:
        return None
    return tier if isinstance(tier, ResolvedTier) else None


def timeout_s(request: Request, route: Route) -> int:
    """Seconds a request may wait for people: the route's (policy), else its own, else 4h."""
    return route.timeout_s or request.timeout_s or DEFAULT_TIMEOUT_S


def is_escalation(request: Request, route: Route) -> bool:
    """Whether the request is handed to a person (escalation card), not asked about."""
    if request.kind is Kind.question:
        return False
    return request.kind is Kind.escalation or route.mode is Mode.escalate


def user_requested(request: Request, route: Route) -> bool:
    """The end user asked for a person (the policy's trigger fired, or the agent says so)."""
    reason = request.context.escalation_reason
    return USER_REQUESTED in route.rules or reason is EscalationReason.user_requested


def honour_user_request(request: Request, route: Route) -> Route:
    """A user who asks for a person gets one at once, whatever the policy: mode `escalate`
    (even over `deny` or a paused switch), never sampled or decided by automation."""
    if not user_requested(request, route):
        return route
    rules = route.rules if USER_REQUESTED in route.rules else [USER_REQUESTED, *route.rules]
    reasons = [r for r in route.reasons if r != USER_REQUESTED_REASON]
    if route.mode is Mode.deny:
        reasons = []  # a deny rule's reasons would read as the outcome; the person decides
    update: dict[str, Any] = {"mode": Mode.escalate, "rules": rules, "sampled": False,
                              "reasons": [USER_REQUESTED_REASON, *reasons]}
    if "group" in Route.model_fields:
        update["group"] = None  # a handover gets a card of its own, never a batch's line
    return route.model_copy(update=update)


def plan(request: Request, route: Route, tier: ResolvedTier | None, received_ms: int
         ) -> tuple[tuple[str, int], ...]:
    """The deadlines intake schedules for a request people decide: expiry, the first reminder,
    and the first escalation event (at once for an escalation: its card is level 0)."""
    rid = request.id
    expire_at = received_ms + timeout_s(request, route) * 1000
    out = [(f"expire:{rid}", expire_at)]
    if tier is not None and tier.reminder is not None:
        first = received_ms + tier.reminder.delay_s(timeout_s(request, route)) * 1000
        if first < expire_at:
            out.append((f"remind:{rid}", first))
    if is_escalation(request, route):
        out.append((f"escalate:{rid}", received_ms))
    elif tier is not None and tier.escalation:
        first = received_ms + tier.escalation[0].after * 1000
        if first < expire_at:
            out.append((f"escalate:{rid}", first))
    return tuple(out)


def _ms(record: Record, field: str) -> int | None:
    at = getattr(record, field)
    return None if at is None else int(at.timestamp() * 1000)


def expire_at_ms(record: Record) -> int:
    """When the request expires (receipt + timeout)."""
    created = _ms(record, "created_at")
    assert created is not None
    return created + timeout_s(record.request, record.route) * 1000


def trigger_ms(record: Record) -> int:
    """When the request reached the queue (its stream entry's time), else when it was read."""
    entry = record.entry_id or ""
    head, _, seq = entry.partition("-")
    if head.isdigit() and seq.isdigit():
        return int(head)
    created = _ms(record, "created_at")
    assert created is not None
    return created


def reminder_due_ms(record: Record, tier: ResolvedTier | None, count: int) -> int | None:
    """Due time of reminder number `count` (0 = the first), from posting; None when there is
    no such reminder (none configured, not repeating, or after expiry)."""
    if tier is None or tier.reminder is None or (count > 0 and not tier.reminder.repeat):
        return None
    base = _ms(record, "posted_at") or _ms(record, "created_at")
    assert base is not None
    due = base + (count + 1) * tier.reminder.delay_s(timeout_s(record.request, record.route)) * 1000
    return due if due < expire_at_ms(record) else None


def next_reminder_ms(record: Record, tier: ResolvedTier | None, now_ms: int) -> int | None:
    """After a reminder was sent at `now_ms`: when the next one is due. A reminder missed
    while the bot was down is not repeated in a burst: the next comes an interval later."""
    due = reminder_due_ms(record, tier, record.reminders + 1)
    if due is None or tier is None or tier.reminder is None:
        return None
    if due <= now_ms:
        due = now_ms + tier.reminder.delay_s(timeout_s(record.request, record.route)) * 1000
    return due if due < expire_at_ms(record) else None


def level(tier: ResolvedTier | None, n: int) -> EscalationLevel | None:
    """The n-th escalation event's level (0-based): the list, then the last one repeating."""
    if tier is None or not tier.escalation:
        return None
    levels = tier.escalation
    if n < len(levels):
        return levels[n]
    return levels[-1] if levels[-1].repeat else None


def level_due_ms(record: Record, tier: ResolvedTier | None, n: int) -> int | None:
    """Due time of escalation event `n` (0-based), from posting; None if there is none or it
    would come after expiry."""
    lv = level(tier, n)
    if lv is None or tier is None:
        return None
    base = _ms(record, "posted_at") or _ms(record, "created_at")
    assert base is not None
    levels = tier.escalation
    after = lv.after if n < len(levels) else lv.after + (n - len(levels) + 1) * (lv.repeat or 0)
    due = base + after * 1000
    return due if due < expire_at_ms(record) else None


def next_level_ms(record: Record, tier: ResolvedTier | None, now_ms: int) -> int | None:
    """After escalation event `record.escalation_level` fired at `now_ms`: when the next is
    due. Levels missed while the bot was down fire one after the other (each should have
    been told); repeats of the last level never come in a burst."""
    n = record.escalation_level + 1
    due = level_due_ms(record, tier, n)
    if due is None or tier is None:
        return None
    if due <= now_ms and n >= len(tier.escalation):
        due = now_ms + (tier.escalation[-1].repeat or 0) * 1000
    return due if due < expire_at_ms(record) else None


def on_timeout(record: Record, tier: ResolvedTier | None) -> Status:
    """`auto_approved` only where the tier says `on_timeout: approve` for an action people
    approve, both when the request was routed (`route.on_timeout`: what its card said) and now
    (a policy reloaded since may make it stricter, never looser); questions and escalations
    always expire."""
    approves = (tier is not None and tier.on_timeout is OnTimeout.approve
                and record.route.on_timeout == "approve")
    kind_ok = record.request.kind in (Kind.approval, Kind.review)
    if approves and kind_ok and not is_escalation(record.request, record.route):
        return Status.auto_approved
    return Status.expired
