"""What a record says, as small display-ready pieces shared by cards, modals and messages.

The rejection taxonomy lives here too, because both the reject modal (to ask) and the
locked card (to show) need the labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from blocks.text import escape, fmt_amount, fmt_value, user_mention
from store.models import Choice, Kind, Mode, Record, Status, Vote

REJECT_REASONS: tuple[tuple[str, str], ...] = (
    ("wrong_action", "Wrong action"),
    ("wrong_params", "Wrong details/amount"),
    ("policy", "Against policy"),
    ("needs_info", "Needs more information"),
    ("risky", "Too risky"),
    ("other", "Other"),
)
"""(code, label) pairs offered in the reject modal, in display order."""


def reject_reasons(record: Record) -> tuple[tuple[str, str], ...]:
    """The reasons a reviewer picks from: the request's own (a HumanLayer call's
    `reject_options`, kept in `metadata.humanlayer`), else the taxonomy."""
    hl = (record.request.metadata.model_extra or {}).get("humanlayer")
    options = hl.get("reject_options") if isinstance(hl, dict) else None
    own: dict[str, str] = {}  # an option's value holds 150 characters, its text 75
    for o in (options or [])[:10]:
        if isinstance(o, dict) and o.get("name") and len(name := str(o["name"])) <= OPTION_VALUE_MAX:
            title = str(o.get("title") or "")
            own.setdefault(name, (title if title.strip() else name)[:75])
    return tuple(own.items()) or REJECT_REASONS


OPTION_VALUE_MAX = 150

_TITLES = {
    Kind.approval: "Approval needed",
    Kind.review: "Review needed",
    Kind.question: "Question",
    Kind.escalation: "Handover needed",
}

_MODES = {
    Mode.auto: "ran on its own, sampled for review",
    Mode.audit: "ran on its own, reviewed afterwards",
    Mode.shadow: "approve first (shadow: the agent's view hidden)",
    Mode.approve: "approve first: nothing runs until a person approves",
    Mode.escalate: "handed to a person",
    Mode.deny: "denied by policy",
}

STATUS_WORDS = {
    Status.approved: "approved",
    Status.rejected: "rejected",
    Status.expired: "expired",
    Status.answered: "answered",
    Status.resolved: "resolved",
    Status.auto_approved: "approved automatically",
    Status.denied: "denied by policy",
    Status.invalid: "refused as invalid",
}

_DECIDING_CHOICES = {
    Status.approved: (Choice.approve, Choice.edit),
    Status.rejected: (Choice.reject,),
    Status.answered: (Choice.answer,),
    Status.resolved: (Choice.resolve,),
}


def reject_label(code: str | None, record: Record | None = None) -> str | None:
    """The label of a rejection code as mrkdwn: the title of one of `record`'s own reasons
    (`reject_reasons`), else the taxonomy's label; unknown codes come back escaped, None stays None."""
    if code is None:
        return None
    own = dict(reject_reasons(record)) if record is not None else {}
    if code in own:
        return escape(own[code])
    return dict(REJECT_REASONS).get(code) or escape(code)


def kind_title(record: Record) -> str:
    """`Approval needed`, `Review needed`, `Question` or `Handover needed`."""
    return _TITLES.get(record.request.kind, "Approval needed")


def mode_label(mode: Mode) -> str:
    """The routing mode in a few plain words (`approve first: ...`), for open cards."""
    return _MODES.get(mode, mode.value)


def current_params(record: Record) -> dict[str, Any]:
    """The params as they stand now (after any edits), falling back to the request's."""
    return record.params or record.request.params


def current_draft(record: Record) -> str | None:
    """The draft as it stands now: the last edit of it, else the agent's draft."""
    return record.draft


def hides_agent_view(record: Record) -> bool:
    """Shadow mode: people decide without seeing the agent's recommendation or confidence."""
    return record.route.mode is Mode.shadow


def deciders(record: Record) -> list[Vote]:
    """The votes that made the decision (the approvers of an approval, the rejecter, ...)."""
    d = record.decision
    if d is None:
        return []
    choices = _DECIDING_CHOICES.get(d.status)
    votes = [v for v in d.decided_by if choices is None or v.choice in choices]
    return votes or list(d.decided_by)


def mentions(user_ids: list[str]) -> str:
    """`<@U1>`, `<@U1> and <@U2>`, `<@U1>, <@U2> and <@U3>` (invalid ids as escaped text)."""
    return _listed([user_mention(u) for u in dict.fromkeys(user_ids)])


def voters(votes: Sequence[Vote]) -> str:
    """Who voted, as `mentions` lists them; a stand-in as `<@BOB> for <@ALICE>` (the seat taken)."""
    def one(v: Vote) -> str:
        seat = getattr(v, "seat", None)  # a plain Vote (a decision's) took its voter's own seat
        return user_mention(v.user_id) + (f" for {user_mention(seat)}" if seat and seat != v.user_id else "")

    return _listed([one(v) for v in votes])


def _listed(names: list[str]) -> str:
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def shown_value(record: Record, key: str, value: Any, *, limit: int = 60) -> str:
    """A param's value as mrkdwn; an edited one in place as `new, edited from old`."""
    money = record.request.risk.currency if key.lower() == "amount" and _is_number(value) else None
    text = fmt_amount(float(value), money) if money else fmt_value(value, key=key, limit=limit)
    change = record.changes.get(key)
    if change is not None:
        before = change.before
        was = (fmt_amount(float(before), money) if money and _is_number(before)
               else fmt_value(before, key=key, limit=limit))
        text += f", _edited from {was}_"
    return text


def edited_amount_key(record: Record) -> str | None:
    """The `amount` param when a person changed it (it then replaces the agent's risk amount)."""
    return next((k for k in record.changes if k.lower() == "amount"), None)
