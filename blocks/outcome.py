"""The outcome of a decided request in words: the locked card's headline and outcome line."""

from __future__ import annotations

from blocks.facts import STATUS_WORDS, deciders, mentions, reject_label
from blocks.text import clip, fmt_duration, fmt_time, fmt_value, label
from store.models import Change, Record, Status
from store.transitions import WITHDRAWN_CODE


def outcome_line(record: Record) -> str:
    """One mrkdwn line: what happened, who decided and when (`✅ Approved by <@U1> at …`)."""
    d = record.decision
    if d is None:
        return "This request is no longer waiting for a decision."
    who = mentions([v.user_id for v in deciders(record)])
    by = f" by {who}" if who else ""
    at = f" at {fmt_time(d.decided_at)}"
    reason = clip(d.reason, 1000) if d.reason else None
    if d.status is Status.approved:
        changes = d.changes or record.changes
        if changes:
            return f":pencil2: *Approved with edits*{by}{at}: {_changes(changes)}"
        return f":white_check_mark: *Approved*{by}{at}"
    if d.status is Status.rejected and d.reason_code == WITHDRAWN_CODE:
        return f":leftwards_arrow_with_hook: *Withdrawn* by the agent{at}" + (f": {reason}" if reason else "")
    if d.status is Status.rejected:
        label = reject_label(d.reason_code, record)
        why = ": ".join(x for x in (label, reason) if x)
        return f":x: *Rejected*{by}{at}" + (f" — reason: {why}" if why else "")
    if d.status is Status.expired:
        waited = record.route.timeout_s or record.request.timeout_s
        secs = waited or (d.decided_at - record.created_at).total_seconds()
        line = f":hourglass: *Expired:* no decision in {fmt_duration(secs)}, so it was not approved"
        return line + (f"\n{reason}" if reason else "")
    if d.status is Status.answered:
        answer = _answer(record)
        return f":speech_balloon: *Answered*{by}{at}" + (f": {answer}" if answer else "")
    if d.status is Status.resolved:
        return f":handshake: *Resolved*{by}{at}" + (f": {reason}" if reason else "")
    if d.status is Status.auto_approved:
        return f":robot_face: *Approved automatically* by policy{at}"
    word = STATUS_WORDS.get(d.status, d.status.value).capitalize()
    return f":no_entry: *{word}*{at}" + (f": {reason}" if reason else "")


def status_title(record: Record) -> str:
    """`Approved`, `Approved with edits`, `Rejected`, `Expired`, ...: the locked card's headline."""
    d = record.decision
    if d is None:
        return "Closed"
    if d.status is Status.approved and (d.changes or record.changes):
        return "Approved with edits"
    if d.status is Status.rejected and d.reason_code == WITHDRAWN_CODE:
        return "Withdrawn"
    return STATUS_WORDS.get(d.status, d.status.value).capitalize()


def _answer(record: Record) -> str:
    d = record.decision
    if d is None:
        return ""
    if d.option is not None:
        labels = {o.value: o.label for o in record.request.options}
        return clip(labels.get(d.option, d.option), 200)
    return clip(d.answer or "", 1500)


def _changes(changes: dict[str, Change]) -> str:
    out = []
    for key, c in list(changes.items())[:5]:
        if key == "draft":
            out.append("draft edited")
        else:
            before = fmt_value(c.before, key=key, limit=80)
            after = fmt_value(c.after, key=key, limit=80)
            out.append(f"{clip(label(key), 60)} {before} → {after}")
    if len(changes) > 5:
        out.append(f"+{len(changes) - 5} more")
    return "; ".join(out)
