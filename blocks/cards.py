"""Request cards: the pending card people decide on, and the locked card after a decision.

Layout, in reading order: header, summary in plain language, key facts as fields, the
agent's recommendation and goal, the draft (reviews), a short conversation excerpt, then a
context line that explains why the card is here. All agent text is escaped and cut to fit.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from blocks.escalation import (
    escalation_card,
    is_handover,
    locked_escalation_card,
    status_lines,
)
from blocks.facts import (
    current_draft,
    current_params,
    edited_amount_key,
    hides_agent_view,
    kind_title,
    mode_label,
    reject_label,
    shown_value,
    voters,
)
from blocks.ids import ActionId, BlockId
from blocks.kit import (
    FALLBACK_MAX,
    MESSAGE_BLOCKS_MAX,
    Block,
    button,
    context,
    fields,
    fit_blocks,
    header,
    section,
)
from blocks.outcome import outcome_line, status_title
from blocks.payloads import ButtonValue
from blocks.text import (
    clip,
    fmt_amount,
    fmt_confidence,
    fmt_duration,
    fmt_time,
    label,
    truncate,
    user_mention,
)
from blocks.trust import delegation_line
from store.models import Kind, Mode, Record, State, Status
from store.transitions import TIMEOUT_CODE
from store.trust import Away, stand_ins

MAX_PARAM_FIELDS = 6
PARAM_VALUE_MAX = 300
EXCERPT_TURNS = 3
TURN_MAX = 280
DRAFT_MAX = 2900
SUMMARY_MAX = 3000


def card(
    record: Record,
    *,
    paused: bool = False,
    paused_reason: str | None = None,
    details: bool = False,
    absences: Mapping[str, Away] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The message for `record` as it stands: the pending card, or the locked one once decided.

    Handovers (kind `escalation`, or mode `escalate`) get the escalation card. `absences` (each
    person's latest absence) and `now`: an open card naming an approver away at `now` says who
    decides for them, by the rule the click check uses (`store.trust.stand_ins`). Its text
    fits Slack's limit for a whole message (`fit_blocks`)."""
    message = _card(record, paused=paused, paused_reason=paused_reason, details=details, absences=absences,
                    now=now)
    return {**message, "blocks": fit_blocks(message["blocks"])}


def _card(record: Record, *, paused: bool, paused_reason: str | None, details: bool,
          absences: Mapping[str, Away] | None, now: datetime | None) -> dict[str, Any]:
    pending = record.state is State.pending and record.decision is None
    note = delegation_note(record, absences, now) if pending else ""
    if is_handover(record):
        if not pending:
            return locked_escalation_card(record)
        return _with_pause(_with_note(escalation_card(record), note), paused, paused_reason)
    if pending:
        return approval_card(record, paused=paused, paused_reason=paused_reason, details=details,
                             delegation=note)
    if needs_review(record) or record.review is not None:
        return review_card(record)  # it ran already: a pause changes nothing for it
    return locked_card(record)


def delegation_note(record: Record, absences: Mapping[str, Away] | None, now: datetime | None) -> str:
    """Who decides for the card's approvers who are away at `now` ('' when none is)."""
    if not absences or now is None or not record.route.approvers:
        return ""
    return delegation_line(stand_ins(record.route.approvers, absences, now), record.request.requested_by)


def _with_note(message: dict[str, Any], note: str) -> dict[str, Any]:
    """The message with `note` as a context line just above its buttons."""
    if not note:
        return message
    blocks = list(message["blocks"])
    at = len(blocks) - 1 if blocks and blocks[-1].get("type") == "actions" else len(blocks)
    blocks.insert(at, context([note]))
    return {**message, "blocks": blocks[:MESSAGE_BLOCKS_MAX]}


def pause_banner(paused_reason: str | None) -> Block:
    """The notice every open card carries while automation is paused, with the reason."""
    why = clip(paused_reason, 500) if paused_reason else "every request needs a person"
    return section(f"⏸ *Automation paused:* {why}")


def _with_pause(message: dict[str, Any], paused: bool, paused_reason: str | None) -> dict[str, Any]:
    if not paused:
        return message
    return {**message, "blocks": [pause_banner(paused_reason), *message["blocks"]][:MESSAGE_BLOCKS_MAX]}


def approval_card(
    record: Record,
    *,
    paused: bool = False,
    paused_reason: str | None = None,
    details: bool = False,
    delegation: str = "",
) -> dict[str, Any]:
    """`{"text", "blocks"}` of a pending card with its buttons, within Slack's message limits.

    `details` adds a "Details" button (`ActionId.show_context`, opens `context_modal`);
    `delegation` (mrkdwn, `delegation_note`) says who decides for approvers away.
    """
    blocks: list[Block] = []
    if paused:
        blocks.append(pause_banner(paused_reason))
    blocks += _body(record, delegation=delegation)
    if record.route.quorum > 1:
        blocks.append(context([_quorum(record)]))
    if status := status_lines(record):
        blocks.append(context(status))
    blocks.append(_actions(record, details=details))
    return {"text": _fallback(record, paused=paused), "blocks": blocks[:MESSAGE_BLOCKS_MAX]}


def needs_review(record: Record) -> bool:
    """An action that ran on its own and was sampled for a person's check, not yet checked."""
    d = record.decision
    return (d is not None and d.status is Status.auto_approved and record.route.sampled
            and record.review is None)


def review_card(record: Record) -> dict[str, Any]:
    """`{"text", "blocks"}` of an action that already ran: check it (Looks right / This was
    wrong), or, once checked, who checked it and the verdict."""
    rv = record.review
    if rv is None:
        lead = ("🔍 *This already ran on its own* (" + ("act, then review" if record.route.mode is Mode.audit
                else "a sample of automatic actions") + "). Please check it: was it right?")
    elif rv.verdict == "ok":
        lead = f"✅ *Checked:* looks right, by {user_mention(rv.by.user_id)} at {fmt_time(rv.by.at)}"
    else:
        why = ": ".join(x for x in (reject_label(rv.reason_code, record), clip(rv.reason, 500) if rv.reason else None) if x)
        lead = (f"⚠️ *Flagged as wrong* by {user_mention(rv.by.user_id)} at {fmt_time(rv.by.at)}"
                + (f" — {why}" if why else "") + ". The agent was told.")
    blocks: list[Block] = [header(f"Ran automatically: {record.request.action}"), section(lead),
                           *_body(record, with_header=False)]
    if rv is None:
        value = ButtonValue(r=record.id).pack()
        blocks.append({"type": "actions", "block_id": BlockId.actions.value, "elements": [
            button("Looks right", ActionId.review_ok, value, style="primary"),
            button("This was wrong", ActionId.review_wrong, value, style="danger")]})
    text = clip(f"Ran automatically: {record.request.action} — {record.request.summary}", 300)
    return {"text": truncate(text, FALLBACK_MAX), "blocks": blocks[:MESSAGE_BLOCKS_MAX]}


def locked_card(record: Record) -> dict[str, Any]:
    """`{"text", "blocks"}` of a decided card: the same facts and the outcome, no buttons."""
    outcome = outcome_line(record)
    d = record.decision
    if d is not None and d.reason_code == TIMEOUT_CODE and d.status is Status.auto_approved:
        outcome += f"\n:hourglass: {clip(d.reason or 'No decision in time', 500)}"
    blocks = [
        header(f"{status_title(record)}: {record.request.action}"),
        section(outcome),
        *_body(record, with_header=False),
    ]
    text = clip(f"{status_title(record)}: {record.request.action} — {record.request.summary}", 300)
    return {"text": truncate(text, FALLBACK_MAX), "blocks": blocks[:MESSAGE_BLOCKS_MAX]}


def _fallback(record: Record, *, paused: bool) -> str:
    r = record.request
    text = f"{kind_title(record)}: {r.action} — {r.summary}"
    return clip(("⏸ Automation paused. " if paused else "") + text, 300)


def _body(record: Record, *, with_header: bool = True, delegation: str = "") -> list[Block]:
    r = record.request
    blocks: list[Block] = []
    if with_header:
        blocks.append(header(f"{kind_title(record)}: {r.action}"))
    if record.changes:  # the summary is the agent's words; the edited values are below
        blocks.append(section(truncate(clip(r.summary, SUMMARY_MAX - 80) + "\n_The agent's original summary; "
                                       "edited values are marked below._", SUMMARY_MAX)))
    else:
        blocks.append(section(clip(r.summary, SUMMARY_MAX)))
    facts, more = _facts(record)
    blocks.append(fields(facts))
    if more:
        blocks.append(context([more]))
    if text := _advice(record):
        blocks.append(section(text))
    blocks += _draft(record)
    if r.context.conversation:
        blocks.append(_excerpt(record))
    blocks.append(context(_explainer(record, delegation)))
    return blocks


def _facts(record: Record) -> tuple[list[str], str | None]:
    r = record.request
    items = [f"*Agent*\n{clip(r.agent, 200)}", f"*Action*\n{clip(r.action, 200)}"]
    if r.confidence is not None and not hides_agent_view(record):
        items.append(f"*Confidence*\n{fmt_confidence(r.confidence)}")
    edited_amount = edited_amount_key(record)
    if r.risk.amount is not None and edited_amount is None:
        items.append(f"*Amount*\n{fmt_amount(r.risk.amount, r.risk.currency)}")
    risk = _risk(record)
    if risk:
        items.append(f"*Risk*\n{risk}")
    params = current_params(record)
    # a param that only repeats the risk amount already shown as "Amount" is not shown twice
    # (an edited one is, in place of the agent's amount: "$200.00, edited from $250.00")
    same = {k for k, v in params.items() if k.lower() == "amount" and k not in record.changes
            and isinstance(v, int | float) and not isinstance(v, bool) and v == r.risk.amount}
    room = min(MAX_PARAM_FIELDS, 10 - len(items))
    shown = [k for k in params if k not in same][:room]
    for key in shown:
        items.append(f"*{clip(label(key), 100)}*\n{shown_value(record, key, params[key], limit=PARAM_VALUE_MAX)}")
    hidden = len(params) - len(same) - len(shown)
    more = f"+{hidden} more param{'s' if hidden != 1 else ''}" if hidden else None
    return items, more


def _risk(record: Record) -> str:
    risk = record.request.risk
    parts = []
    if risk.reversible is False:
        parts.append(":warning: *Irreversible*")
    if risk.domain:
        parts.append(f"domain: {clip(risk.domain, 60)}")
    if risk.sentiment is not None:
        mood = (
            "negative"
            if risk.sentiment < -0.2
            else "positive"
            if risk.sentiment > 0.2
            else "neutral"
        )
        parts.append(f"sentiment: {mood} ({risk.sentiment:+.1f})")
    if risk.tags:
        parts.append("tags: " + clip(", ".join(risk.tags), 300))
    return " · ".join(parts)


def _advice(record: Record) -> str:
    ctx = record.request.context
    lines = []
    if ctx.recommendation and not hides_agent_view(record):
        lines.append(f"*Agent recommends:* {clip(ctx.recommendation, 800)}")
    if ctx.goal:
        lines.append(f"*Goal:* {clip(ctx.goal, 500)}")
    if ctx.failure_reason:
        lines.append(f"*Why the agent stopped:* {clip(ctx.failure_reason, 500)}")
    for a in ctx.actions_attempted[-3:]:
        mark = "•" if a.ok is None else "✓" if a.ok else "✗"
        result = f" — {clip(a.result, 150)}" if a.result else ""
        lines.append(f"{mark} tried {clip(a.action, 100)}{result}")
    if ctx.alternatives and not hides_agent_view(record):
        lines.append("*Alternatives:* " + clip("; ".join(ctx.alternatives), 400))
    return "\n".join(lines)


def _draft(record: Record) -> list[Block]:
    draft = current_draft(record)
    if draft is None or (record.request.kind is not Kind.review and not draft):
        return []
    text = clip(draft, DRAFT_MAX) if draft else "(empty)"
    edited = " (edited)" if "draft" in record.changes else ""
    blocks = [section(f"*Draft*{edited}\n{text}")]
    if text.endswith("…") and len(text) >= DRAFT_MAX - 6:
        where = (
            "open Edit to see all of it"
            if "draft" in record.request.editable
            else "it was cut to fit"
        )
        blocks.append(context([f"Draft shortened here ({len(draft):,} characters); {where}."]))
    return blocks


def _excerpt(record: Record) -> Block:
    turns = record.request.context.conversation
    last = turns[-EXCERPT_TURNS:]
    head = "*Conversation*" + (
        f" (last {len(last)} of {len(turns)})" if len(turns) > len(last) else ""
    )
    lines = [f"*{clip(t.role or 'message', 40)}:* {clip(t.text, TURN_MAX)}" for t in last]
    return context([head, *lines])


def _explainer(record: Record, delegation: str = "") -> list[str]:
    """One line that explains the card, consistent with its state: the mode's words while it
    waits (approve first / ran, review it), none once decided (the outcome line says it);
    why it is here; and the request id (small, copyable: what `/hitl audit` takes)."""
    route = record.route
    parts = [f"{clip(route.tier, 40).capitalize()} tier"]
    if record.state is State.pending and record.decision is None:
        parts.append(mode_label(route.mode))
    elif needs_review(record):
        parts.append("ran on its own, review it")
    if route.paused:
        parts.append("sent to people because automation is paused")
    why = route.reasons or [f"rule: {r}" for r in route.rules]
    if hides_agent_view(record):  # shadow mode: nothing that gives away the agent's own view
        why = [w for w in why if "confidence" not in w.lower() and "recommend" not in w.lower()]
        parts.append("decide on the facts: the agent's recommendation and confidence are hidden")
    if why:
        parts.append(clip("; ".join(why), 1200))
    items = [" · ".join(parts)]
    if record.request.requested_by:
        items.append(f"Requested for {user_mention(record.request.requested_by)}")
    if delegation:
        items.append(delegation)
    items.append(f"Request `{record.id}`")
    return items


def _quorum(record: Record) -> str:
    approvals = record.approvals()
    need = record.route.quorum
    who = voters(approvals)
    line = f"{len(approvals)} of {need} approvals" + (f": {who}" if who else "")
    if stale := record.stale_approvals():
        line += f" (approved before an edit, so no longer counted: {voters(stale)})"
    return line


def _actions(record: Record, *, details: bool) -> Block:
    """Buttons by kind. Option buttons share one block, so each action_id carries its index:
    `hitl.option:0`, `hitl.option:1`, ... (handlers match `hitl.option:\\d+`)."""
    r = record.request
    value = ButtonValue(r=record.id).pack()
    elements: list[dict[str, Any]]
    if r.kind is Kind.question:
        elements = [
            button(
                o.label if o.label.strip() else o.value,  # a label of spaces: its value says it
                f"{ActionId.option}:{i}",
                ButtonValue(r=record.id, o=o.value).pack(),
                style=o.style,
            )
            for i, o in enumerate(r.options)
        ]
        elements.append(button("Answer…", ActionId.answer, value))
    else:
        shown = ButtonValue(r=record.id, p=record.params_mark).pack()  # approvals of exactly these values
        elements = [button("Approve", ActionId.approve, shown, style="primary")]
        if record.route.grant_offer_s:
            elements.append(button(f"Approve and allow similar for {fmt_duration(record.route.grant_offer_s)}",
                                   ActionId.approve_grant, shown))
        if r.editable:
            elements.append(button("Edit…", ActionId.edit, shown))
        elements.append(button("Reject", ActionId.reject, value, style="danger"))
    if details:
        elements.append(button("Details", ActionId.show_context, value))
    return {"type": "actions", "block_id": str(BlockId.actions), "elements": elements}
