"""The request state machine as pure functions: who may act, and what changes when they do.

A transition is computed from a record read at some version; `Store.apply` writes it only if
the record is still at that version, so the check and the write cannot be separated.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from store.errors import AlreadyDecided, NotAllowed
from store.models import (
    AgentMessage,
    Ballot,
    Change,
    Choice,
    Decision,
    Kind,
    Mode,
    Record,
    State,
    Status,
    Vote,
    approves,
    params_mark,
    stale,
)

REFUSAL_CODES = ("self_approval", "requester_seat", "not_an_approver", "already_voted", "approver_voted", "delegate_voted",
                 "seat_taken", "owned", "already_owner", "not_reviewable", "bad_option", "stale",
                 "wrong_choice")
"""Codes of NotAllowed; the words people read are in `blocks.messages` and `blocks.escalation`."""

DECIDING = frozenset({Choice.approve, Choice.edit, Choice.answer, Choice.resolve,
                      Choice.take_over, Choice.reply, Choice.hand_back})
"""Choices the requester may never make on their own request."""

VOTING = frozenset({Choice.approve, Choice.edit, Choice.reject, Choice.answer})
"""Choices a person makes once per request, and a seat once (the quorum counts seats: an
approver, or the approver away whom a stand-in votes for; never clicks)."""

QUESTION_CHOICES = frozenset({Choice.answer})
HANDOVER_CHOICES = frozenset({Choice.take_over, Choice.reply, Choice.resolve, Choice.hand_back})
ACTION_CHOICES = frozenset({Choice.approve, Choice.edit, Choice.reject})

MAX_MESSAGES = 50
MAX_EXTRA_APPROVERS = 1000
TIMEOUT_CODE = "timeout"
"""`reason_code` of a decision taken because nobody decided in time."""
WITHDRAWN_CODE = "withdrawn"
"""`reason_code` of a `rejected` decision the agent itself asked for (it withdrew the request)."""


@dataclass
class Transition:
    """Everything one change writes, as computed from `record` at `record.version`."""

    record: Record
    fields: dict[str, str] = field(default_factory=dict)
    audit: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    decision: Decision | None = None
    update_card: bool = True
    schedule: list[tuple[str, int]] = field(default_factory=list)
    """Timed events to (re)schedule: (`<kind>:<id>`, due epoch ms); see DEADLINE_KINDS."""
    message: str | None = None
    """An interim AgentMessage (JSON) for the agent's reply stream; the request stays open."""

    @property
    def request_id(self) -> str:
        return self.record.id

    @property
    def final(self) -> bool:
        return self.decision is not None


def authorize(
    record: Record,
    user_id: str,
    choice: Choice,
    *,
    groups: frozenset[str] = frozenset(),
    stands_in: Sequence[str] = (),
) -> str | None:
    """Raise AlreadyDecided or NotAllowed unless `user_id` may do `choice` on `record` now; the
    seat their vote takes when they stand in (`stands_in`: the approvers away they act for).

    Approvers are the route's, widened by escalation levels; once someone has taken a case
    over only they may act on it; a person votes once, but may reply as often as needed; each
    seat votes once (`seat_for`).
    """
    if record.state is not State.pending:
        raise AlreadyDecided(record)
    if choice in DECIDING and record.request.requested_by == user_id:
        raise NotAllowed("self_approval", "the requester cannot approve their own request")
    if choice not in offered(record):
        # no card offers it (a payload made by hand): an approval is never "answered" or
        # "resolved", a question never "approved" or "rejected", a handover never "approved"
        raise NotAllowed("wrong_choice", f"a {record.request.kind.value} cannot be given {choice.value!r}")
    stands_in = acting_for(record, user_id, groups, stands_in)
    requester = record.request.requested_by
    if choice in DECIDING and requester is not None and requester in stands_in:
        # the requester's seat is one nobody fills: who stands in for them acts in their name
        stands_in = [a for a in stands_in if a != requester]
        if not stands_in:
            raise NotAllowed("requester_seat", f"{requester} asked for this request, so nobody decides it for them")
    if not record.may_decide(user_id, groups):
        raise NotAllowed("not_an_approver", "not an approver of this request")
    owner = record.owner
    if owner is not None and owner.user_id != user_id:
        raise NotAllowed("owned", f"{owner.name or owner.user_id} has taken over this case")
    if choice is Choice.take_over and owner is not None:
        raise NotAllowed("already_owner", "you have already taken over this case")
    mark = record.params_mark
    if choice in VOTING and any(
        v.user_id == user_id and v.choice in VOTING and not stale(v, mark) for v in record.votes
    ):
        raise NotAllowed("already_voted", "already voted on this request")
    return seat_for(record, user_id, stands_in) if choice in VOTING else None


def acting_for(record: Record, user_id: str, groups: frozenset[str] = frozenset(),
               stands_in: Sequence[str] = ()) -> list[str]:
    """The approvers away `user_id` acts for on `record`: `stands_in` (those the card names,
    by the click's rule), then, for someone an escalation level brought in only to stand in for
    a target away (`Record.extra_seats`), those targets, so their vote takes whichever of these
    seats is still free; empty for whoever decides in their own right (an approver named, a
    member of a group named, someone a level notified), who holds a seat of their own."""
    targets = record.extra_seats.get(user_id) or []
    named = set(record.route.approvers)
    if user_id in named or groups & named:
        targets = []
    return list(dict.fromkeys([*stands_in, *targets]))


def offered(record: Record) -> frozenset[Choice]:
    """The choices the request's card offers, the only ones a person may make on it: a question
    is answered; a handover of kind `escalation` taken over, replied to, resolved or handed back;
    an approval or review approved, edited or rejected, and also handled as a handover when its
    route is `escalate` (the card of each: blocks.cards, blocks.escalation)."""
    kind = record.request.kind
    if kind is Kind.question:
        return QUESTION_CHOICES
    if kind is Kind.escalation:
        return HANDOVER_CHOICES
    if record.route.mode is Mode.escalate:
        return HANDOVER_CHOICES | ACTION_CHOICES
    return ACTION_CHOICES


def primary_choice(record: Record) -> Choice:
    """The choice that decides the request as its card means it to be decided (whether someone
    may decide it: the App Home's "waiting for you")."""
    kind = record.request.kind
    return Choice.answer if kind is Kind.question else Choice.resolve if kind is Kind.escalation else Choice.approve


def seat_for(record: Record, user_id: str, stands_in: Sequence[str] = ()) -> str | None:
    """The seat `user_id`'s vote takes: None (their own) when they vote in their own right, else
    the first approver in `stands_in` whose seat has not voted. An approver and their stand-ins
    share one seat, so whoever votes second for it is refused (NotAllowed): the approver after
    a stand-in voted for them (`delegate_voted`), a stand-in after the approver voted
    (`approver_voted`) or after another stand-in did, e.g. a second member of a group standing
    in (`seat_taken`)."""
    mark = record.params_mark
    taken = {v.holder: v for v in record.votes if v.choice in VOTING and not stale(v, mark)}
    if not stands_in:
        by = taken.get(user_id)
        if by is not None and by.user_id != user_id:
            raise NotAllowed("delegate_voted", f"{by.user_id} already voted for {user_id} while they were away")
        return None
    free = [a for a in stands_in if a not in taken]
    if free:
        return free[0]
    approver = stands_in[0]
    if taken[approver].user_id == approver:
        raise NotAllowed("approver_voted", f"{approver} already voted on this request themselves")
    raise NotAllowed("seat_taken", f"{taken[approver].user_id} already voted for {approver}")


def not_voted(record: Record) -> list[str]:
    """The approvers the card names whose seat has no vote yet: whom a reminder is for. A vote
    their stand-in cast fills the seat; an approval of values edited since does not (its voter
    has to approve the new values). The requester's seat is nobody's to fill (`requester_seat`)."""
    mark = record.params_mark
    taken = {v.holder for v in record.votes if v.choice in VOTING and not stale(v, mark)}
    return [a for a in record.route.approvers if a not in taken and a != record.request.requested_by]


def _decision(
    record: Record, status: Status, votes: list[Ballot], now: datetime, **extra: Any
) -> Decision:
    return Decision(
        request_id=record.id,
        status=status,
        params=_tool_params(record, extra.pop("params", record.params)),
        changes=extra.pop("changes", record.changes),
        decided_by=[v.vote() for v in votes],
        decided_at=now,
        route=record.route,
        **extra,
    )


def vote(
    record: Record,
    *,
    user_id: str,
    name: str,
    choice: Choice,
    now: datetime,
    edits: dict[str, Any] | None = None,
    reason_code: str | None = None,
    reason: str | None = None,
    answer: str | None = None,
    option: str | None = None,
    seat: str | None = None,
) -> Transition:
    """One person's choice: the vote, and the decision once it is final.

    `seat` is the approver a stand-in votes for (from `authorize`; None: their own seat).
    approve/edit count towards the quorum, one per seat; reject, answer (a question), resolve and hand_back
    (an escalation: `answered` with the instructions in `answer`) decide at once; take_over
    and reply keep the request open and send the agent an interim message.
    """
    if option is not None and option not in {o.value for o in record.request.options}:
        raise NotAllowed("bad_option", "that is not one of this question's options")
    v = Vote(user_id=user_id, name=name, choice=choice, at=now)
    t = Transition(record)
    detail: dict[str, Any] = {"choice": choice.value}
    params, changes, mark = record.params, record.changes, record.params_mark
    if edits:
        params, changes = _edited(record, edits)
        dumped = _dumped(changes)
        if not same_value(params, record.params) or not same_value(dumped, _dumped(record.changes)):
            t.fields["params"] = _dump(params)
            t.fields["changes"] = _dump(dumped)
            t.audit.append(("edited", user_id, {"changes": _edit_detail(record, edits, changes)}))
            draft = changes["draft"].after if "draft" in changes else None
            mark = params_mark(params, draft)
        else:
            params, changes = record.params, record.changes
    approving = choice in (Choice.approve, Choice.edit)
    votes = [*record.votes, Ballot(**v.model_dump(), seat=seat, p=mark if approving else None)]
    t.fields["votes"] = _dump_list(votes)
    if approving and (outdated := [x.user_id for x in votes if stale(x, mark)]) and mark != record.params_mark:
        detail["stale_approvals"] = outdated  # approvals of the values this edit changed: they count no more
    if reason_code or reason:
        detail["reason_code"], detail["reason"] = reason_code, reason
    t.audit.append(("clicked", user_id, detail))
    votes = [x for x in votes if not stale(x, mark)]  # what decides, and who the decision names
    approvals = len({x.holder for x in votes if approves(x, mark)})
    if choice is Choice.reject:
        t.decision = _decision(
            record, Status.rejected, votes, now, reason=reason, reason_code=reason_code
        )
    elif choice is Choice.answer:
        t.decision = _decision(record, Status.answered, votes, now, answer=answer, option=option)
    elif choice is Choice.resolve:
        t.decision = _decision(record, Status.resolved, votes, now, reason=reason)
    elif choice is Choice.hand_back:
        t.decision = _decision(record, Status.answered, votes, now, answer=answer)
    elif choice is Choice.take_over:
        t.fields["owner"] = v.model_dump_json()
        t.audit.append(("taken_over", user_id, {"name": name}))
        _tell_agent(t, record, "taken_over", None, v, now)
    elif choice is Choice.reply:
        if record.owner is None:  # replying makes the person the case's owner
            t.fields["owner"] = v.model_dump_json()
        t.audit.append(("replied", user_id, {"chars": len(answer or "")}))
        _tell_agent(t, record, "reply", answer, v, now)
    elif choice in (Choice.approve, Choice.edit) and approvals >= record.route.quorum:
        t.decision = _decision(record, Status.approved, votes, now, params=params, changes=changes)
    if t.decision is not None and record.route.mode is Mode.shadow and not record.route.canary:
        _compare_shadow(t, record)  # a canary is no agent's proposal: it says nothing of agreement
    return t


def same_value(a: Any, b: Any) -> bool:
    """Whether two param values are the same, compared as canonical JSON: `100` and `100.0`
    (or `true` and `1`) are different values, as an agent's JSON parser sees them."""
    return _canonical(a) == _canonical(b)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _edited(record: Record, edits: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Change]]:
    """The params and changes after a person's `edits` (name -> value; `draft` names the
    request's own draft, never a param of that name).

    A field left as it stands changes nothing. An edited draft is kept in `changes["draft"]`
    only, never in `params` (they are the tool's arguments). A change whose value is back to
    the agent's is no change: it is dropped."""
    params, changes = dict(record.params), dict(record.changes)
    for key, after in edits.items():
        if key == "draft":
            before, current = record.request.draft, record.draft
        else:
            before, current = record.request.params.get(key), params.get(key)
        if same_value(current, after):
            continue  # an untouched field changes nothing (and leaves others' approvals standing)
        if key != "draft":
            params[key] = after
        else:  # a draft edit of a version before drafts were kept apart, in params too: undone
            params = _tool_params(record, params)
        original = changes[key].before if key in changes else before
        if same_value(original, after):
            changes.pop(key, None)  # put back to the agent's value
        else:
            changes[key] = Change(before=original, after=after)
    return params, changes


def _tool_params(record: Record, params: dict[str, Any]) -> dict[str, Any]:
    """`params` as the agent's tool takes them. A draft edit is never a param (no reviewer edits
    a param named `draft`: `editable: ["draft"]` is the request's draft), but versions before it
    was kept apart wrote it into `params["draft"]` too: a record edited then and decided now
    (its draft edit kept, or put back since) gets the agent's own `draft` param back, or none
    when it sent none."""
    if "draft" not in params or params["draft"] == record.request.params.get("draft", _NONE):
        return params
    out = {k: v for k, v in params.items() if k != "draft"}
    if "draft" in record.request.params:
        out["draft"] = record.request.params["draft"]
    return out


_NONE = object()


def _dumped(changes: dict[str, Change]) -> dict[str, Any]:
    return {k: c.model_dump(mode="json") for k, c in changes.items()}


def _edit_detail(record: Record, edits: dict[str, Any], changes: dict[str, Change]) -> dict[str, Any]:
    """The audit's `edited` detail: each field this edit moved, as its change now stands
    (`before`: the agent's value), or `{"after": <the agent's value>, "restored": true}` when it
    was put back to the agent's value."""
    out: dict[str, Any] = {}
    for key in edits:
        was, now = record.changes.get(key), changes.get(key)
        if now is not None and (was is None or not same_value(was.after, now.after)):
            out[key] = now.model_dump(mode="json")
        elif now is None and was is not None:
            out[key] = {"after": was.before, "restored": True}
    return out


def _compare_shadow(t: Transition, record: Record) -> None:
    """Shadow mode: the agent proposed the action; did the person, who did not see its
    recommendation, agree? Kept in the audit trail (and counted by stats)."""
    assert t.decision is not None
    approved = t.decision.status is Status.approved
    t.audit.append(("shadow_compared", "system", {
        "agreed": approved and not t.decision.changes, "agreed_action": approved,
        "confidence": record.request.confidence, "status": t.decision.status.value}))


def reviewable(record: Record) -> bool:
    """Whether `record` is an action that ran on its own and a person may check afterwards:
    approved automatically (`auto_approved`) and sampled for review, or routed in audit mode.
    A request people decided (or an expiry, a grant's or a timeout's approval, a denial) is not:
    a review of it could tell the agent to undo what a person approved."""
    d = record.decision
    return (record.state is State.decided and d is not None and d.status is Status.auto_approved
            and (record.route.sampled or record.route.mode is Mode.audit))


def authorize_review(record: Record, user_id: str, *, groups: frozenset[str] = frozenset()) -> None:
    """Raise unless `user_id` may review an action that ran on its own (once, not their own)."""
    if record.state is State.pending or record.decision is None:
        raise NotAllowed("not_reviewable", "this request is still waiting for a decision")
    if record.review is not None:
        raise AlreadyDecided(record)
    if not reviewable(record):
        raise NotAllowed("not_reviewable", "only an action that ran on its own can be checked afterwards")
    if record.request.requested_by == user_id:
        raise NotAllowed("self_approval", "the requester cannot review their own request")
    approvers = set(record.route.approvers) | set(record.extra_approvers)
    if approvers and user_id not in approvers and not (groups & approvers):
        raise NotAllowed("not_an_approver", "not an approver of this request")


def _tell_agent(
    t: Transition, record: Record, event: str, text: str | None, by: Vote, now: datetime
) -> None:
    msg = AgentMessage(request_id=record.id, event=event, text=text, by=by, at=now)
    t.message = msg.model_dump_json(exclude_none=True)
    kept = [*record.messages, msg][-MAX_MESSAGES:]
    t.fields["messages"] = "[" + ",".join(m.model_dump_json() for m in kept) + "]"


def expire(
    record: Record, *, now: datetime, status: Status = Status.expired, reason: str
) -> Transition:
    """Nobody decided in time: the request ends with `status` (expired unless the tier says
    `on_timeout: approve`, then auto_approved), `reason_code` "timeout", audited `expired`."""
    if record.state is not State.pending:
        raise AlreadyDecided(record)
    t = Transition(record)
    t.decision = _decision(
        record, status, list(record.votes), now, reason=reason, reason_code=TIMEOUT_CODE
    )
    t.audit.append(("expired", "system", {"status": status.value, "reason": reason}))
    return t


def withdraw(record: Record, *, now: datetime, by: str, reason: str | None = None) -> Transition:
    """The agent withdrew its request: it ends `rejected` with `reason_code` "withdrawn" (so an
    agent that runs only approved actions never runs it), audited `withdrawn`, card locked."""
    if record.state is not State.pending:
        raise AlreadyDecided(record)
    t = Transition(record)
    t.decision = _decision(record, Status.rejected, list(record.votes), now,
                           reason=reason or "withdrawn by the agent", reason_code=WITHDRAWN_CODE)
    t.audit.append(("withdrawn", by, {"reason": reason}))
    return t


def remind(
    record: Record, *, now: datetime, mentioned: list[str], next_due_ms: int | None,
    batch: str | None = None,
) -> Transition:
    """A reminder was posted: count it and schedule the next one (the card is unchanged).
    `batch`: a batch card's item, reminded by the card's one reminder of this round."""
    if record.state is not State.pending:
        raise AlreadyDecided(record)
    t = Transition(record, update_card=False)
    count = record.reminders + 1
    t.fields["reminders"] = str(count)
    detail: dict[str, Any] = {"count": count, "mentioned": mentioned}
    if batch is not None:
        detail["batch"] = batch
    t.audit.append(("reminded", "system", detail))
    if next_due_ms is not None:
        t.schedule.append((f"remind:{record.id}", next_due_ms))
    return t


def escalate(
    record: Record,
    *,
    now: datetime,
    level: int,
    targets: list[str],
    approvers: list[str],
    seconds: float,
    next_due_ms: int | None,
    failed: dict[str, str] | None = None,
    counts_level: bool = True,
    stood_in: dict[str, str] | None = None,
    batch: str | None = None,
    seats_of: dict[str, list[str]] | None = None,
) -> Transition:
    """Escalation level `level` notified `targets`: widen who may decide, record the time to
    escalate (audit `escalated` with `seconds` and `level`), schedule the next level.

    Level 0 is the escalation card itself (no targets, nobody added); levels 1.. are the
    tier's `escalation` list, counted in `escalation_level`. Without `counts_level` (an
    agent's own escalation, bot.api.humanlayer) people are brought in and no policy level is
    used up: the tier's levels still come at their times, each telling its people.
    `stood_in`: targets away, by whoever stands in for them and was told instead. `batch`: a
    batch card's item whose card was told once for all its items (its level round).
    `seats_of`: of `approvers`, those brought in only to stand in for targets away, with those
    targets (kept in `extra_seats`: their votes take those targets' seats).
    """
    if record.state is not State.pending:
        raise AlreadyDecided(record)
    t = Transition(record)
    if level > 0:
        if counts_level:
            t.fields["escalation_level"] = str(record.escalation_level + 1)
        notified = list(dict.fromkeys([*record.escalated_to, *targets]))
        t.fields["escalated_to"] = _dump(notified)
        extra, seats = _widened(record, approvers, seats_of)
        t.fields["extra_approvers"] = _dump(extra)
        if seats != record.extra_seats:
            t.fields["extra_seats"] = _dump(seats)
    else:
        t.update_card = False
    if record.time_to_escalate_s is None:
        t.fields["time_to_escalate_s"] = f"{seconds:.3f}"
    detail: dict[str, Any] = {"seconds": round(seconds, 3), "level": level, "targets": targets}
    if failed:
        detail["failed"] = failed
    if stood_in:
        detail["stood_in"] = stood_in
    if batch is not None:
        detail["batch"] = batch
    t.audit.append(("escalated", "system", detail))
    if next_due_ms is not None:
        t.schedule.append((f"escalate:{record.id}", next_due_ms))
    return t


def _widened(record: Record, approvers: list[str], seats_of: dict[str, list[str]] | None = None
             ) -> tuple[list[str], dict[str, list[str]]]:
    """The extra approvers with `approvers` added, at most MAX_EXTRA_APPROVERS (the people a
    level is about to notify first: each of them may decide when told, then earlier ones), and
    whose seat each stand-in among them takes (`Record.extra_seats`).

    Someone brought in in their own right (in `approvers`, not in `seats_of`; or already an
    extra approver with no seat kept) holds their own seat from then on; a stand-in standing in
    for several targets takes the first of their seats still free, as on the card."""
    seats_of = seats_of or {}
    extra = list(dict.fromkeys([*approvers, *record.extra_approvers]))[:MAX_EXTRA_APPROVERS]
    own = {a for a in approvers if a not in seats_of}
    own |= {a for a in record.extra_approvers if a not in record.extra_seats}
    seats = {a: list(t) for a, t in record.extra_seats.items() if a not in own}
    for a, targets in seats_of.items():
        if a not in own:
            seats[a] = list(dict.fromkeys([*seats.get(a, []), *targets]))
    kept = set(extra)
    return extra, {a: t for a, t in seats.items() if a in kept}


def grant(record: Record, *, approvers: list[str], seats_of: dict[str, list[str]] | None = None
          ) -> Transition | None:
    """Let the people an escalation level is about to notify decide, before they are told
    (None: they already may); `seats_of` as in `escalate`. The card is not redrawn; `escalate`
    records the level."""
    if record.state is not State.pending:
        raise AlreadyDecided(record)
    extra, seats = _widened(record, approvers, seats_of)
    if extra == record.extra_approvers and seats == record.extra_seats:
        return None
    t = Transition(record, update_card=False)
    t.fields["extra_approvers"] = _dump(extra)
    if seats != record.extra_seats:
        t.fields["extra_seats"] = _dump(seats)
    return t


def _dump(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), default=str)


def _dump_list(votes: list[Ballot]) -> str:
    return "[" + ",".join(v.model_dump_json(exclude_none=True) for v in votes) + "]"
