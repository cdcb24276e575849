"""Short ephemeral replies to one person: refusals, late clicks and errors.

All user-facing refusal text lives in MESSAGES, keyed by the codes the domain raises
(`NotAllowed.reason`), so wording is changed in one place and handlers only pass errors.
"""

from __future__ import annotations

from typing import Any

from blocks.facts import STATUS_WORDS, deciders, mentions
from blocks.kit import section
from blocks.payloads import PayloadError
from blocks.text import ago, clip
from store.errors import AlreadyDecided, Conflict, NotAllowed, NotFound
from store.models import Record, Status

MESSAGES: dict[str, str] = {
    "self_approval": "You asked for this action, so you cannot approve it yourself. "
    "Another approver has to decide.",
    "requester_seat": "The approver you stand in for asked for this action themselves, so nobody can "
    "approve it for them. Another approver has to decide. Nothing was changed.",
    "not_an_approver": "You are not one of the approvers for this request.",
    "already_voted": "You have already voted on this request; another person has to "
    "approve it to reach the quorum.",
    "approver_voted": "The approver you stand in for has already voted on this request themselves. "
    "An approver and their stand-in hold one seat of the quorum, so another approver has to decide. "
    "Nothing was changed.",
    "delegate_voted": "Your stand-in already voted on this request for you while you were away. "
    "You and your stand-in hold one seat of the quorum, so another approver has to decide. "
    "Nothing was changed.",
    "seat_taken": "Someone else already stood in on this request for the approver you stand in for; "
    "one seat of the quorum votes once, so another approver has to decide. Nothing was changed.",
    "delegation_over": "You stood in for an approver of this request while they were away; that "
    "absence is over, so only the approvers the card names can decide it now. Nothing was changed.",
    "no_grant": "This request offers no standing grant (its tier allows none, or it is above the "
    "amount limit for grants). Nothing was changed: approve it on its own if you mean to.",
    "stale": "Someone edited this request after your card or form showed it, so your approval would "
    "cover values you have not seen. Nothing was changed: look at the updated card and decide again.",
    "not_admin": "Only hitl admins can do this.",
    "outsider": "You are here from another organisation, so you cannot act on these requests "
    "(only people of the workspace that runs hitl can, unless its policy names yours). "
    "Nothing was changed.",
    "not_reviewable": "Only an action that ran on its own can be checked afterwards, and this one did not: "
    "people decide it on its card (approve or reject it there if it is still waiting). Nothing was changed.",
    "wrong_choice": "This request does not take that answer (a question is answered, a handover "
    "taken over, resolved or handed back, an approval approved or rejected). Nothing was changed.",
    "not_found": "I can't find this request any more; nothing was changed.",
    "conflict": "Several people clicked at once and I couldn't record yours; please try again.",
    "bad_payload": "This button or form isn't one I recognise (it may be from an old card); "
    "nothing was changed.",
    "error": "Something went wrong on my side and nothing was changed. Please try again; "
    "if it keeps happening, tell an admin.",
}
"""Reason code -> what the person is told. Codes match `NotAllowed.reason` where they overlap."""


def message_for(code: str) -> str:
    """The user-facing text of a refusal or error code (the generic error for unknown codes)."""
    return MESSAGES.get(code, MESSAGES["error"])


def already_decided_message(record: Record) -> dict[str, Any]:
    """`{"text", "blocks"}` telling a late clicker who decided and when; nothing changed."""
    d = record.decision
    if d is None:
        text = "This request is no longer waiting for a decision — nothing changed."
        return _reply(text)
    when = ago(d.decided_at)
    who = mentions([v.user_id for v in deciders(record)])
    word = STATUS_WORDS.get(d.status, d.status.value)
    if d.status is Status.expired:
        text = f"This request already expired {when} — nothing changed."
    elif d.status in (Status.auto_approved, Status.denied, Status.invalid) or not who:
        text = f"Already {word} {when} — nothing changed."
    else:
        text = f"Already {word} by {who} {when} — nothing changed."
    return _reply(text)


def not_allowed_message(message: str) -> dict[str, Any]:
    """`{"text", "blocks"}` of a refusal; `message` is escaped, whatever its source."""
    return _reply(f":no_entry_sign: {clip(message, 2000)}")


def error_message(text: str) -> dict[str, Any]:
    """`{"text", "blocks"}` of an error notice; `text` is escaped and cut to fit."""
    return _reply(f":warning: {clip(text, 2000)}")


def _reply(text: str) -> dict[str, Any]:
    return {"text": text, "blocks": [section(text)]}


def refusal_message(error: Exception) -> dict[str, Any]:
    """The ephemeral reply for a domain error raised while handling someone's click."""
    if isinstance(error, AlreadyDecided) and isinstance(error.record, Record) and error.record.review:
        rv = error.record.review
        verdict = "looks right" if rv.verdict == "ok" else "flagged as wrong"
        return _reply(f"Already checked by {mentions([rv.by.user_id])} {ago(rv.by.at)} ({verdict}) "
                      "— nothing changed.")
    if isinstance(error, AlreadyDecided) and isinstance(error.record, Record):
        return already_decided_message(error.record)
    if isinstance(error, NotAllowed):
        return not_allowed_message(MESSAGES.get(error.reason, error.message))
    code = ("not_found" if isinstance(error, NotFound) else "conflict" if isinstance(error, Conflict)
            else "bad_payload" if isinstance(error, PayloadError) else "error")
    return error_message(message_for(code))
