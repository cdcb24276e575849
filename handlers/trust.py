"""Trust, as handlers use it: count what people made of a request (autonomy and calibration),
score canaries, standing grants from a card, delegates of people away. docs/trust.md.

Each function is one domain step after (or around) a person's decision; Slack words come from
`blocks.trust`, Redis from `store.trust`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta

from blocks.trust import canary_feedback, demotion_notice, grant_reply
from handlers.deps import Deps
from store.errors import NotAllowed, NotFound
from store.models import Choice, Kind, Mode, Record, Status, utcnow
from store.transitions import VOTING, Transition, acting_for
from store.trust import Away, Grant, GrantTerms, stand_ins

log = logging.getLogger("hitl.trust")


def outcome_kind(record: Record) -> str | None:
    """What a person's decision says about the agent's proposal: clean (approved as proposed),
    edited, rejected, or override (a shadow disagreement); None when it says nothing."""
    d = record.decision
    if d is None or record.request.kind is not Kind.approval:
        return None
    shadow = record.route.mode is Mode.shadow
    if d.status is Status.approved:
        if d.changes:
            return "override" if shadow else "edited"
        return "clean"
    if d.status is Status.rejected:
        return "override" if shadow else "rejected"
    return None


async def after_decision(d: Deps, record: Record, user_id: str) -> bool:
    """Once a request is decided by people: count its outcome (once per request), or score it
    when it was a canary. Never raises into the click: a failure is logged, and the count is
    made later by the scheduler (`trust:<id>`, scheduled with the decision); False then."""
    try:
        if record.route.canary:
            await d.store.trust_counted(record.id)  # scored once at most: a crash loses a score, never doubles one
            await score_canary(d, record)
            return True
        kind = outcome_kind(record)
        if kind is not None:
            await _count(d, record, kind, user_id)
        await d.store.trust_counted(record.id)
        return True
    except Exception:
        log.exception("trust: counting the outcome of %s failed; the scheduler counts it later", record.id)
        return False


async def after_review(d: Deps, record: Record, user_id: str) -> bool:
    """A person checked an action that ran on its own: `ok` is a clean approval, `wrong` an
    override (demotes a trusted action). False: it failed, and the scheduler counts it later."""
    try:
        if record.review is not None and not record.route.canary:
            await _count(d, record, "clean" if record.review.verdict == "ok" else "override", user_id)
        await d.store.trust_counted(record.id)
        return True
    except Exception:
        log.exception("trust: counting the review of %s failed; the scheduler counts it later", record.id)
        return False


async def recount(d: Deps, request_id: str) -> bool:
    """The count a replica did not make after a decision or review by people (it died, Redis
    failed): made now (`trust:<id>` came due). A count already made is not made again (the
    record keeps which one was: `TrustStore.outcome` answers `dup`). False: try again later."""
    try:
        record = await d.store.get(request_id)
    except NotFound:
        return True
    if record.review is not None:
        return await after_review(d, record, record.review.by.user_id)
    if record.decision is not None and record.decision.decided_by:
        return await after_decision(d, record, record.decision.decided_by[-1].user_id)
    await d.store.trust_counted(request_id)
    return True


async def _count(d: Deps, record: Record, kind: str, user_id: str) -> None:
    result, _, _ = await d.store.trust.outcome(record.request, kind, d.trust_after(), utcnow(),
                                               agree=kind == "clean", actor=user_id)
    if result == "demoted" and d.dm is not None:
        notice = demotion_notice(record, user_id, kind, d.trust_after())
        for admin in sorted(d.admins()):
            await d.dm(admin, notice)


async def score_canary(d: Deps, record: Record) -> None:
    """Score each person who decided a canary; tell those who got it wrong, privately."""
    known = await d.store.trust.canary_answer(record.id)
    if known is None or record.decision is None:
        return
    for v in record.decision.decided_by:
        if v.choice not in VOTING:
            continue
        said = "reject" if v.choice is Choice.reject else "approve"
        caught = said == known.get("answer")
        if not await d.store.trust.score_canary(record.id, v.user_id, caught):
            continue
        await d.store.audit(record.id, "canary_scored", v.user_id,
                            {"caught": caught, "answer": known.get("answer"), "said": said},
                            utcnow(), key=f"canary:{record.id}:{v.user_id}")
        if not caught and d.dm is not None:
            await d.dm(v.user_id, canary_feedback(record, said, known))


# ---- standing grants ------------------------------------------------------------------------


def offers_grant(d: Deps, record: Record) -> bool:
    """Whether `record`'s card offers "Approve and allow similar": its route was offered one at
    intake and its tier's terms (as the policy says now) still allow this request. A canary's
    card offers it like any other card (the click approves it and makes no grant)."""
    terms = d.grant_terms(record.route.tier)
    return terms is not None and bool(record.route.grant_offer_s) and terms.allows(record.request)


def _grant_of(record: Record, terms: GrantTerms, offer: int, now: datetime) -> Grant:
    r = record.request
    return Grant(id=f"g-{record.id}"[:80], agent=r.agent, action=r.action, tier=record.route.tier,
                 request_id=record.id, bounds=terms.bounds_for(r), created_at=now,
                 expires_at=now + timedelta(seconds=min(offer, terms.duration_s)),
                 approvers=list(record.route.approvers), quorum=record.route.quorum,
                 seats=sorted({v.seat for v in record.approvals() if v.seat}))


async def grant_from_card(d: Deps, record: Record, user_id: str, now: datetime) -> dict[str, str]:
    """After `user_id` approved `record` from "Approve and allow similar": their vote for a
    grant (created once the request's quorum of people asked for it). A reply for them.

    Only an approval that took a seat gets here (`reviews.decide` refuses a second vote for a
    seat), so the people a grant counts hold distinct seats: an approver and their stand-in
    never make a grant of quorum 2 between them.

    A canary is a plain approval: no grant is made of it (it never reached an agent, and no
    agent's request may be covered by it), and the reply reads as it would on a real card."""
    terms = d.grant_terms(record.route.tier)
    offer = record.route.grant_offer_s
    if terms is None or not offer or not offers_grant(d, record):
        return grant_reply("refused", None, record.route.quorum, 0)
    grant = _grant_of(record, terms, offer, now)
    if record.route.canary:
        quorum = record.route.quorum
        n = len(record.approvals())
        return grant_reply("created" if record.decision is not None or n >= quorum else "waiting", grant,
                           quorum, min(n, quorum))
    status, n = await d.store.trust.vote_grant(grant, user_id, record.route.quorum, now, redact=d.store.redact,
                                               current=[v.user_id for v in record.approvals()])
    if status == "waiting" and record.decision is not None:
        status = "unmet"  # decided: nobody can ask for this grant any more, so none follows
    return grant_reply(status, grant, record.route.quorum, n)


async def revoke_grant(d: Deps, grant_id: str, user_id: str, *, where: str = "command") -> Grant:
    """Revoke a grant (a granter or an admin); NotFound, NotAllowed otherwise (audited
    `refused`, `where`: `command` or `home`)."""
    grant = next((g for g in await d.store.trust.grants() if g.id == grant_id), None)
    if grant is None:
        raise NotFound(grant_id)
    if not may_revoke(d, grant, user_id):
        await d.store.audit(grant.request_id, "refused", user_id,
                            {"command": "grants revoke", "grant": grant.id, "reason": "not_granter", "from": where},
                            utcnow())
        raise NotAllowed("not_granter", f"Only the people who granted {grant.id} or an admin may revoke it; "
                                        "it stays in force.")
    if not await d.store.trust.revoke(grant_id, user_id, utcnow(), redact=d.store.redact):
        raise NotFound(grant_id)
    return grant


def may_revoke(d: Deps, grant: Grant, user_id: str) -> bool:
    """Its granters and the policy's admins may revoke a grant."""
    return user_id in grant.by or user_id in d.admins()


async def live_grants(d: Deps) -> list[Grant]:
    """Grants in force now (expired ones are removed, audited)."""
    now = utcnow()
    out = []
    for g in await d.store.trust.grants():
        if g.expires_at <= now:
            await d.store.trust.revoke(g.id, "system", now, redact=d.store.redact, event="grant_expired")
        else:
            out.append(g)
    return out


# ---- delegation -----------------------------------------------------------------------------


async def standing_in_for(d: Deps, record: Record, user_id: str, groups: frozenset[str], *,
                          absences: Mapping[str, Away] | None = None) -> list[str]:
    """Approvers of `record` away now whose delegate is `user_id` (or a group they are in);
    empty when they may decide in their own right. Reads the absences as they are now (or
    takes them as just read, `absences`), with the rule the card's words use
    (`store.trust.stand_ins`)."""
    if not record.route.approvers:
        return []
    if record.may_decide(user_id, groups) and not acting_for(record, user_id, groups):
        return []  # in their own right (a level brought them in only as a stand-in: not that)
    if absences is None:
        absences = await d.store.trust.absences()
    live = stand_ins(record.route.approvers, absences, utcnow())
    return [a for a, away in live.items() if await _is_delegate(d, away.delegate, user_id)]


async def _is_delegate(d: Deps, delegate: str, user_id: str) -> bool:
    return delegate == user_id or (delegate.startswith("S") and user_id in await d.directory.members(delegate))


async def stood_in_before(d: Deps, record: Record, user_id: str) -> NotAllowed | None:
    """A refusal that says why, for someone who stood in for an approver of `record` whose
    absence is over (they came back, or the date passed); None if that is not the case."""
    absences = await d.store.trust.absences()
    now = utcnow()
    for approver in record.route.approvers:
        a = absences.get(approver)
        if a is not None and not a.live(now) and await _is_delegate(d, a.delegate, user_id):
            return NotAllowed("delegation_over", f"{approver} is no longer away; {user_id} stood in until "
                                                 f"{(a.ended_at or a.until).isoformat()}")
    return None


def mark_delegated(t: Transition, user_id: str, absent: list[str]) -> None:
    """The audit says who decided for whom: `clicked` carries `for` (the approver whose seat the
    vote takes, or the approvers away for a choice that takes no seat), plus a `delegated` entry."""
    for _, actor, detail in t.audit:
        if actor == user_id:
            detail["for"] = absent
    t.audit.append(("delegated", user_id, {"for": absent}))
