"""The request state machine as pure functions: who may act, and what changes when they do.

A transition is computed from a record read at some version; `Store.apply` writes it only if
the record is still at that version, so the check and the write cannot be separated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from store.errors import AlreadyDecided, NotAllowed
from store.models import Change, Choice, Decision, Record, State, Status, Vote

REFUSAL_CODES = ("self_approval", "not_an_approver", "already_voted")
"""Codes of NotAllowed; the words people read are in `blocks.messages`."""


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
) -> None:
    """Raise AlreadyDecided or NotAllowed unless `user_id` may do `choice` on `record` now."""
    if record.state is not State.pending:
        raise AlreadyDecided(record)
    approving = choice in (Choice.approve, Choice.edit, Choice.answer, Choice.resolve)
    if approving and record.request.requested_by == user_id:
        raise NotAllowed("self_approval", "the requester cannot approve their own request")
    approvers = set(record.route.approvers)
    if approvers and user_id not in approvers and not (groups & approvers):
        raise NotAllowed("not_an_approver", "not an approver of this request")
    if user_id in record.voter_ids():
        raise NotAllowed("already_voted", "already voted on this request")


def _decision(
    record: Record, status: Status, votes: list[Vote], now: datetime, **extra: Any
) -> Decision:
    return Decision(
        request_id=record.id,
        status=status,
        params=extra.pop("params", record.params),
        changes=extra.pop("changes", record.changes),
        decided_by=votes,
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
) -> Transition:
    """One person's approve/edit/reject/answer: the vote, and the decision once it is final."""
    v = Vote(user_id=user_id, name=name, choice=choice, at=now)
    votes = [*record.votes, v]
    t = Transition(record)
    t.fields["votes"] = _dump_list(votes)
    detail: dict[str, Any] = {"choice": choice.value}
    params, changes = record.params, dict(record.changes)
    if edits:
        params = dict(record.params)
        for key, after in edits.items():
            before = record.request.params.get(key) if key != "draft" else record.request.draft
            if params.get(key) == after:
                continue
            params[key] = after
            changes[key] = Change(
                before=changes[key].before if key in changes else before, after=after
            )
        t.fields["params"] = _dump(params)
        t.fields["changes"] = _dump({k: c.model_dump(mode="json") for k, c in changes.items()})
        edited = {k: changes[k].model_dump(mode="json") for k in edits if k in changes}
        t.audit.append(("edited", user_id, {"changes": edited}))
    if reason_code or reason:
        detail["reason_code"], detail["reason"] = reason_code, reason
    t.audit.append(("clicked", user_id, detail))
    approvals = sum(1 for x in votes if x.choice in (Choice.approve, Choice.edit))
    if choice is Choice.reject:
        t.decision = _decision(
            record, Status.rejected, votes, now, reason=reason, reason_code=reason_code
        )
    elif choice is Choice.answer:
        t.decision = _decision(record, Status.answered, votes, now, answer=answer, option=option)
    elif choice is Choice.resolve:
        t.decision = _decision(record, Status.resolved, votes, now, reason=reason)
    elif approvals >= record.route.quorum:
        t.decision = _decision(record, Status.approved, votes, now, params=params, changes=changes)
    return t


def expire(
    record: Record, *, now: datetime, status: Status = Status.expired, reason: str
) -> Transition:
    """Nobody decided in time: the request ends with `status` (expired unless policy says so)."""
    if record.state is not State.pending:
        raise AlreadyDecided(record)
    t = Transition(record)
    t.decision = _decision(record, status, list(record.votes), now, reason=reason)
    t.audit.append(("expired", "system", {"status": status.value, "reason": reason}))
    return t


def _dump(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), default=str)


def _dump_list(votes: list[Vote]) -> str:
    return "[" + ",".join(v.model_dump_json() for v in votes) + "]"
