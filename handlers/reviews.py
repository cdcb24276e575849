"""The one domain call each listener makes: authorize, transition, audit.

Reads the record, authorizes the person, computes the transition and applies it; a record
that changed meanwhile is read again. Refusals and late clicks are audited and raised.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from handlers import trust
from handlers.deps import Deps
from handlers.slack_errors import SlackFailure
from store.errors import AlreadyDecided, Conflict, NotAllowed, StoreError
from store.models import AgentMessage, Choice, Record, Review, Vote, utcnow
from store.transitions import acting_for, authorize, authorize_review, primary_choice, vote
from store.trust import Away

MAX_RETRIES = 20
UNSEEN = "-"
"""The mark of values a card did not show (no `params_mark` is ever this): an approval naming it is stale."""


async def check(d: Deps, request_id: str, user_id: str, choice: Choice) -> Record:
    """The record if `user_id` may do `choice` now (before opening a modal); raises otherwise."""
    record = await d.store.get(request_id)
    await _authorize(d, record, user_id, choice)
    return record


async def check_many(d: Deps, records: list[Record], user_id: str, choice: Choice
                     ) -> tuple[list[Record], list[tuple[str, Record | None, Exception | None]]]:
    """The records `user_id` may do `choice` on now (before opening one form for them all), and
    (request id, None, the refusal) for each other one, audited as `check` audits it."""
    mine: list[Record] = []
    refused: list[tuple[str, Record | None, Exception | None]] = []
    for record in records:
        try:
            await _authorize(d, record, user_id, choice)
            mine.append(record)
        except (NotAllowed, AlreadyDecided) as e:
            refused.append((record.id, None, e))
    return mine, refused


async def decide(d: Deps, request_id: str, user_id: str, name: str, choice: Choice, *,
                 seen: str | None = None, **kw: Any) -> Record:
    """Apply one person's choice; the record after it. Raises NotAllowed, AlreadyDecided, NotFound.

    `seen`: the `params_mark` of the values the person's card or form showed; an approval or an
    edit of values someone has edited since is refused (`stale`), audited, and the card redrawn."""
    for _ in range(MAX_RETRIES):
        record = await d.store.get(request_id)
        absent, seat = await _authorize(d, record, user_id, choice)
        if seen is not None and choice in (Choice.approve, Choice.edit) and seen != record.params_mark:
            await _stale(d, record, user_id, choice)
        try:
            t = vote(record, user_id=user_id, name=name, choice=choice, now=utcnow(), seat=seat, **kw)
            if absent:
                trust.mark_delegated(t, user_id, [seat] if seat else absent)
            record = await d.store.apply(t, utcnow(), count_trust=True)
        except Conflict:
            continue
        except AlreadyDecided as e:
            await _late(d, e, user_id, choice.value)
            raise
        d.kick()
        if record.decision is not None:
            await trust.after_decision(d, record, user_id)
        return record
    raise Conflict(f"request {request_id} kept changing; try again")


async def _stale(d: Deps, record: Record, user_id: str, choice: Choice) -> None:
    await d.store.audit(record.id, "refused", user_id, {"choice": choice.value, "reason": "stale"}, utcnow())
    await d.store.enqueue(f"update:{record.id}", int(utcnow().timestamp() * 1000))  # the card catches up
    d.kick()
    raise NotAllowed("stale", "the values changed since the card or form showed them")


async def approve_with_grant(d: Deps, request_id: str, user_id: str, name: str, *,
                             seen: str | None = None) -> dict[str, str]:
    """"Approve and allow similar" from a single card or a batch item (one path for both): the
    person's approval, then their vote for a standing grant (`trust.grant_from_card`). Refused
    before anything changes when the card offers no grant (tier `grants: false`, over the
    amount limit, a canary). The reply for them."""
    record = await d.store.get(request_id)
    if not trust.offers_grant(d, record):
        await _authorize(d, record, user_id, Choice.approve)  # a refusal of the approval says why
        await d.store.audit(record.id, "refused", user_id, {"choice": "approve_grant", "reason": "no_grant"},
                            utcnow())
        raise NotAllowed("no_grant", "this request offers no standing grant")
    record = await decide(d, request_id, user_id, name, Choice.approve, seen=seen)
    return await trust.grant_from_card(d, record, user_id, utcnow())


async def _standing(d: Deps, record: Record, user_id: str, *,
                    absences: Mapping[str, Away] | None = None) -> tuple[frozenset[str], list[str]]:
    """The groups of `record`'s approvers `user_id` is in, and the approvers away they stand in
    for (those the card names, else the targets away an escalation level brought them in for)."""
    groups = frozenset([g for g in record.route.approvers
                        if g.startswith("S") and user_id in await d.directory.members(g)])
    absent = await trust.standing_in_for(d, record, user_id, groups, absences=absences)
    return groups, acting_for(record, user_id, groups, absent)


async def may_approve(d: Deps, record: Record, user_id: str, *,
                      absences: Mapping[str, Away] | None = None) -> bool:
    """Whether `user_id` could decide `record` now (approve it; answer a question; resolve a
    handover), by the rule a click meets (approvers, user groups, standing in for someone away,
    no self-approval, a case someone else took over); nothing audited (the App Home)."""
    groups, absent = await _standing(d, record, user_id, absences=absences)
    try:
        authorize(record, user_id, primary_choice(record), groups=groups | frozenset(absent), stands_in=absent)
    except StoreError:
        return False
    return True


async def may_see(d: Deps, record: Record, user_id: str, *,
                   absences: Mapping[str, Away] | None = None) -> bool:
    """Whether `user_id` may see `record` (its line in `/hitl queue`, its audit trail, its place
    on the App Home): hitl admins; whoever may decide it by the rule a click meets (approvers,
    their user groups, people an escalation brought in, a stand-in for an approver away); its
    requester; whoever acted on it; and, when it names no approvers, the members of the channel
    its card went to (Slack's rule for that channel; when Slack cannot say, nobody more)."""
    if user_id in d.admins() or user_id == record.request.requested_by or user_id in record.actors():
        return True
    if record.route.approvers:
        groups, absent = await _standing(d, record, user_id, absences=absences)
        return record.may_decide(user_id, groups | frozenset(absent))
    if user_id in record.extra_approvers:
        return True
    try:
        return user_id in await d.directory.channel_members(record.channel or record.route.channel)
    except SlackFailure:
        return False


async def _authorize(d: Deps, record: Record, user_id: str, choice: Choice) -> tuple[list[str], str | None]:
    """Raise unless `user_id` may act; the approvers away for whom they act (else empty), and
    the one whose seat their vote takes (None: their own)."""
    groups, absent = await _standing(d, record, user_id)
    try:
        seat = authorize(record, user_id, choice, groups=groups | frozenset(absent), stands_in=absent)
    except NotAllowed as e:
        if e.reason == "not_an_approver":  # a stand-in whose absence is over is told so
            e = await trust.stood_in_before(d, record, user_id) or e
        detail: dict[str, Any] = {"choice": choice.value, "reason": e.reason}
        if absent:
            detail["for"] = absent
        await d.store.audit(record.id, "refused", user_id, detail, utcnow())
        raise e from None
    except AlreadyDecided as e:
        await _late(d, e, user_id, choice.value)
        raise
    return absent, seat


async def _late(d: Deps, e: AlreadyDecided, user_id: str, choice: str) -> None:
    """A click (`choice`: approve, reject, ..., review) on a request decided or checked already:
    audited, and its card locked."""
    record = e.record
    assert isinstance(record, Record)
    await d.store.audit(record.id, "clicked", user_id, {"choice": choice, "outcome": "already_decided"}, utcnow())
    # The card may still show buttons if the bot died before updating it: lock it now.
    await d.store.enqueue(f"update:{record.id}", int(utcnow().timestamp() * 1000))
    d.kick()


async def decide_many(d: Deps, request_ids: list[str], user_id: str, name: str, choice: Choice, *,
                      seen: dict[str, str] | None = None,
                      **kw: Any) -> list[tuple[str, Record | None, Exception | None]]:
    """The same choice on each request separately: its own authorization, quorum and decision
    (`seen`: request id -> the values' mark the card showed, as in `decide`; a request it
    gives no mark for is refused as stale: the bulk click never approves unchecked).

    Returns (request id, record after, None) or (request id, None, the refusal) per item;
    refused items stay pending."""
    out: list[tuple[str, Record | None, Exception | None]] = []
    for rid in request_ids:
        try:
            mark = None if seen is None else seen.get(rid) or UNSEEN
            out.append((rid, await decide(d, rid, user_id, name, choice, seen=mark, **kw), None))
        except (NotAllowed, AlreadyDecided, Conflict) as e:
            out.append((rid, None, e))
    return out


async def check_review(d: Deps, request_id: str, user_id: str) -> Record:
    """The record if `user_id` may review it now; refusals are audited and raised."""
    record = await d.store.get(request_id)
    groups = frozenset([g for g in record.route.approvers
                        if g.startswith("S") and user_id in await d.directory.members(g)])
    try:
        authorize_review(record, user_id, groups=groups)
    except NotAllowed as e:
        await d.store.audit(record.id, "refused", user_id, {"choice": "review", "reason": e.reason}, utcnow())
        raise
    except AlreadyDecided as e:
        await _late(d, e, user_id, "review")
        raise
    return record


async def review(d: Deps, request_id: str, user_id: str, name: str, verdict: str,
                 reason_code: str | None = None, reason: str | None = None) -> Record:
    """A person's check of an action that ran on its own; `wrong` is an override the agent hears."""
    record = await check_review(d, request_id, user_id)
    now = utcnow()
    by = Vote(user_id=user_id, name=name, choice=Choice.reject if verdict == "wrong" else Choice.approve, at=now)
    rv = Review(verdict=verdict, by=by, reason_code=reason_code, reason=reason)
    message = AgentMessage(request_id=record.id, event="override", text=reason, reason_code=reason_code,
                           by=by, at=now)
    try:
        await d.store.review(record, rv, message.model_dump_json(exclude_none=True), now)
    except AlreadyDecided as e:  # checked by someone else since `check_review`
        await _late(d, e, user_id, "review")
        raise
    d.kick()
    record = await d.store.get(request_id)
    await trust.after_review(d, record, user_id)
    return record
