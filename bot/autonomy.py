"""Trust at intake: the action's autonomy into the route, standing grants, delegates of people
away, and canaries (known-answer items mixed into the work people see); and absences over
time (this replica's copy for rendering cards, the end of a window). docs/trust.md.

Risk is never relaxed here: a grant only turns a plain approval (mode `approve`, no pause)
into an automatic one, within the bounds people set; deny, escalate and shadow stay as routed.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from datetime import datetime

from hitl.protocol import GrantRef

from bot.policy.engine import PolicyEngine, sample_point
from bot.routing import Router
from store.models import Kind, Mode, Request, Route, utcnow
from store.redis_store import Store
from store.trust import Away, TrustState

log = logging.getLogger("hitl.trust")


def engine_of(router: Router) -> PolicyEngine | None:
    """The policy engine behind `router` (possibly wrapped by one that narrows its routes, such
    as the HumanLayer hints), or None for a plain router."""
    inner = getattr(router, "inner", router)
    return inner if isinstance(inner, PolicyEngine) else None


async def route(store: Store, router: Router, request: Request, *, paused: bool, now: datetime,
                first_use: bool | None = None, looked_up: tuple[TrustState, bool] | None = None) -> Route:
    """Where `request` goes once its action's trust, live grants and absences are known.

    `first_use`: for a router other than the policy engine, whether the action is new (None:
    asked of Redis); intake passes its in-process copy, which accept.lua checks.
    `looked_up`: the request's `TrustStore.lookup`, when the caller read it already (intake
    reads a whole batch's in one round trip)."""
    assert request.id is not None
    engine = engine_of(router)
    if engine is None:
        if first_use is None:
            first_use = not await store.action_seen(request.action)
        return router.route(request, first_use=first_use, paused=paused)
    state, canary = looked_up if looked_up is not None else await store.trust.lookup(request)
    r = router.route(request, paused=paused, trust=state)
    terms = engine.grant_terms(r.tier)
    if canary:
        # it must look exactly like a real request of its route: the same card where the policy
        # sends real ones to a person (also "Approve and allow similar" where a real request
        # would offer it: handlers.trust makes no grant of it; the agent's view hidden where its
        # action is in shadow mode), and no card where real ones run or are refused alone (the
        # canary file refuses such canaries; a promotion of their action can still route one
        # there): forcing it to a person would show a card no real request of its route gets.
        # Never batched, never covered by a grant, never sampled for review; its decision
        # reaches no agent
        offer = None
        if (r.mode is Mode.approve and not paused and request.kind is Kind.approval and terms is not None
                and terms.allows(request)):
            offer = r.grant_offer_s or terms.duration_s
        return r.model_copy(update={"canary": True, "sampled": False, "group": None, "grant_offer_s": offer})
    update: dict[str, object] = {}
    if (r.mode is Mode.approve and not paused and request.kind is Kind.approval and terms is not None
            and terms.allows(request)):
        grant = await store.trust.matching_grant(request, now, r, same=terms.same, redact=store.redact)
        if grant is not None:
            by = ", ".join(f"<@{u}>" for u in grant.by)
            update.update(mode=Mode.auto, group=None, grant_offer_s=None, sampled=False,
                          grant=GrantRef(id=grant.id, by=grant.by, expires_at=grant.expires_at),
                          rules=[*r.rules, "grant"],
                          reasons=[f"Standing grant {grant.id} by {by} until "
                                   f"{grant.expires_at:%Y-%m-%d %H:%M} UTC ({grant.bounds.describe(store.redact)})",
                                   *r.reasons])
        elif not terms.allows(request):
            update["grant_offer_s"] = None
    elif terms is not None and not terms.allows(request):
        update["grant_offer_s"] = None
    if r.approvers and update.get("mode") is not Mode.auto:
        away = await store.trust.away(now)
        delegates = {a: away[a].delegate for a in r.approvers if a in away}
        if delegates:
            update["delegates"] = delegates
    return r.model_copy(update=update) if update else r


async def maybe_canary(store: Store, router: Router, request: Request, route: Route) -> str | None:
    """Now and then (the policy's `trust.canaries.share` of requests people see), queue a
    canary; its id, or None."""
    engine = engine_of(router)
    if engine is None or not engine.canaries or route.canary:
        return None
    if route.mode not in (Mode.approve, Mode.shadow) or request.kind is not Kind.approval:
        return None
    assert request.id is not None
    share = engine.policy.trust.canaries.share
    if share <= 0 or sample_point(f"{request.id}:canary", engine.sample_salt) >= share:
        return None
    pick = engine.canaries[int(sample_point(f"{request.id}:which", engine.sample_salt) * len(engine.canaries))]
    body = dict(pick["request"])  # type: ignore[call-overload]
    body["id"] = uuid.uuid4().hex  # like the agent client's ids: nothing on the card gives it away
    try:
        await store.trust.queue_canary(body, {"answer": pick["answer"], "why": pick["why"]})
    except Exception:  # the real request is stored already; a lost canary must not touch it
        log.exception("trust: queueing a canary after %s failed", request.id)
        return None
    log.info("trust: queued canary %s", body["id"])
    return str(body["id"])


class AwayState:
    """This replica's copy of everyone's latest absence, for rendering cards (which cannot wait
    on Redis), like the pause switch's. `run()` re-reads it every second; cards apply it at the
    moment they are drawn (`store.trust.stand_ins`), and redraws after a change wait longer
    than a re-read (`handlers.trust.REDRAW_AFTER_MS`)."""

    def __init__(self, store: Store, every_s: float = 1.0) -> None:
        self.store = store
        self.every_s = every_s
        self.absences: Mapping[str, Away] = {}

    def current(self) -> Mapping[str, Away]:
        return self.absences

    def note(self, away: Away) -> None:
        """An absence started or ended on this replica: drawn so at once."""
        self.absences = {**self.absences, away.user: away}

    async def refresh(self) -> None:
        self.absences = await self.store.trust.absences()

    async def run(self) -> None:
        while True:
            task = asyncio.current_task()
            if task is not None and task.cancelling():  # redis-py can swallow a cancellation
                raise asyncio.CancelledError
            try:
                await self.refresh()
            except Exception as e:  # Redis away: keep the last known state
                log.debug("away state: %s", e)
            await asyncio.sleep(self.every_s)


MAX_REDRAW = 1000
"""Open cards looked at for a redraw after a change of absence (the oldest first)."""


async def absence_due(store: Store, user: str, now: datetime) -> bool:
    """The scheduler's `away:<user>` deadline: end the absence if its date has passed (once,
    audited `away_ended` by `system`; its redraw is scheduled with it). False when there was
    nothing to end (back already, or away again for longer)."""
    return await store.trust.end_away(user, now, "system", "window_end") is not None


async def redraw_naming(store: Store, user: str) -> int:
    """The scheduler's `awaydraw:<user>`: queue a redraw of every posted open card that names
    `user` as an approver (single cards and batch cards, through the paced outbox like any
    redraw), so its words about absences follow theirs. How many cards were queued."""
    records = await store.get_many(await store.pending_ids(MAX_REDRAW))
    members = sorted({f"batch:{r.batch}" if r.batch else f"update:{r.id}"
                      for r in records if user in r.route.approvers and r.ts})
    if members:
        await store.enqueue_many(members, int(utcnow().timestamp() * 1000))
    return len(members)
