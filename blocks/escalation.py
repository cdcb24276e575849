"""Escalations: the handover card with its context package, and the time-driven messages
(reminders, escalation notices) that point people at a card.

The handover card is laid out for a ten-second read, in the order of the guides' context
transfer checklist: why the agent escalated, what it was trying to do, its recommendation
and confidence, what it tried and what came of it, customer facts, the last turns of the
conversation. Everything else is one click away ("Show full context"). All agent text is
escaped and cut; the card stays well inside Slack's limits however long the conversation.
"""

from __future__ import annotations

from typing import Any

from blocks.facts import current_params, kind_title, mode_label
from blocks.ids import ActionId, BlockId
from blocks.kit import (
    FALLBACK_MAX,
    MESSAGE_BLOCKS_MAX,
    Block,
    button,
    context,
    fields,
    header,
    section,
)
from blocks.outcome import outcome_line
from blocks.payloads import ButtonValue
from blocks.text import (
    clip,
    escape,
    fmt_amount,
    fmt_confidence,
    fmt_duration,
    fmt_time,
    fmt_value,
    label,
    truncate,
    user_mention,
)
from store.models import Choice, Kind, Record, State, Status, Vote
from store.transitions import offered

CARD_TURNS = 4
TURN_MAX = 280
CARD_ATTEMPTS = 4
CUSTOMER_FACTS = 4
SUMMARY_MAX = 700
REPLY_MAX = 300

_WHY = {
    "user_requested_human": ":raising_hand: The user asked for a person",
    "confidence_low": "Low confidence",
    "tool_call_loop": "Stuck in a loop",
    "keywords": "Legal or sensitive words",
    "negative_sentiment": "Upset customer",
    "kind_escalation": None,  # the agent asked; its own reason says more
}
_AGENT_REASONS = {
    "low_confidence": "Low confidence",
    "rule": "A rule of the agent's",
    "loop": "Stuck in a loop",
    "user_requested": ":raising_hand: The user asked for a person",
    "error": "The agent hit an error",
    "other": "The agent could not continue",
}


def is_handover(record: Record) -> bool:
    """Whether the request is handed to a person (kind `escalation`, or routed `escalate`);
    a question stays a question card whatever its mode."""
    return Choice.take_over in offered(record)  # the one rule of what each card offers


def request_title(record: Record) -> str:
    """The title its card and its windows share: `Handover needed` for a handover (an approval
    routed `escalate` included), else its kind's (`Approval needed`, `Review needed`, `Question`)."""
    return "Handover needed" if is_handover(record) else kind_title(record)


def why_escalated(record: Record) -> list[str]:
    """Why this case reached a person, most telling first, as escaped mrkdwn phrases."""
    r, route = record.request, record.route
    out: list[str] = []
    for rule in route.rules:
        label = _WHY.get(rule)
        if label is None:
            continue
        if rule == "confidence_low" and r.confidence is not None:
            label += f" ({fmt_confidence(r.confidence)})"
        if rule == "tool_call_loop" and r.metadata.tool_calls is not None:
            label += f" ({r.metadata.tool_calls} tool calls)"
        out.append(label)
    reason = r.context.escalation_reason
    if reason is not None and _AGENT_REASONS[reason.value] not in out:
        out.append(_AGENT_REASONS[reason.value])
    if r.context.failure_reason:
        out.append(f"Agent: “{clip(r.context.failure_reason, 300)}”")
    if route.reasons and not any(rule in _WHY and _WHY[rule] for rule in route.rules):
        out.append(clip(route.reasons[0], 200))  # a policy rule: its reason in plain words
    return list(dict.fromkeys(out)) or ["The agent handed the case over"]


def escalation_card(record: Record) -> dict[str, Any]:
    """`{"text", "blocks"}` of a pending handover card with its buttons (under 50 blocks)."""
    r = record.request
    blocks: list[Block] = [
        header(f"{request_title(record)}: {r.action}"),
        section("*Why:* " + " · ".join(why_escalated(record)[:4])),
        section(_task(record)),
    ]
    facts = _facts(record)
    if facts:
        blocks.append(fields(facts))
    if advice := _advice(record):
        blocks.append(section(advice))
    if tried := _tried(record):
        blocks.append(section(tried))
    if r.context.conversation:
        blocks.append(_last_turns(record))
    if status := status_lines(record):
        blocks.append(context(status))
    blocks.append(context([_explainer(record)]))
    blocks.append(_actions(record))
    text = clip(f"{request_title(record)}: {r.action} — {r.summary}", 300)
    return {"text": truncate(text, FALLBACK_MAX), "blocks": blocks[:MESSAGE_BLOCKS_MAX]}


def locked_escalation_card(record: Record) -> dict[str, Any]:
    """`{"text", "blocks"}` of a closed handover: the outcome, the gist, no buttons."""
    r = record.request
    title = handover_title(record)
    blocks: list[Block] = [
        header(f"{title}: {r.action}"),
        section(handover_outcome(record)),
        section("*Why:* " + " · ".join(why_escalated(record)[:4])),
        section(_task(record)),
    ]
    if status := status_lines(record):
        blocks.append(context(status))
    blocks.append(context([_explainer(record)]))
    text = clip(f"{title}: {r.action} — {r.summary}", 300)
    return {"text": truncate(text, FALLBACK_MAX), "blocks": blocks[:MESSAGE_BLOCKS_MAX]}


def handover_title(record: Record) -> str:
    d = record.decision
    if d is None:
        return "Closed"
    if d.status is Status.answered and _last_choice(record) is Choice.hand_back:
        return "Handed back"
    return {Status.resolved: "Resolved", Status.expired: "Expired", Status.approved: "Approved",
            Status.rejected: "Rejected"}.get(d.status, d.status.value.replace("_", " ").title())


def handover_outcome(record: Record) -> str:
    """One line: resolved or handed back by whom and when, with the note; else the usual."""
    d = record.decision
    if d is None or d.status not in (Status.resolved, Status.answered):
        return outcome_line(record)
    last = d.decided_by[-1] if d.decided_by else None
    by = f" by {user_mention(last.user_id)}" if last else ""
    at = f" at {fmt_time(d.decided_at)}"
    if d.status is Status.resolved:
        note = f": {clip(d.reason, 1500)}" if d.reason else ""
        return f":white_check_mark: *Resolved*{by}{at}{note}"
    if _last_choice(record) is Choice.hand_back:
        note = f"\n*Instructions:* {clip(d.answer, 1500)}" if d.answer else ""
        return f":leftwards_arrow_with_hook: *Handed back to the agent*{by}{at}{note}"
    return outcome_line(record)


def status_lines(record: Record) -> list[str]:
    """Owner, escalation levels and the last reply: where the case stands (context items).

    Reminders are not shown: they do not update the card, so a count would go stale."""
    out = []
    if record.owner is not None:
        out.append(f":raising_hand: Taken over by {user_mention(record.owner.user_id)} "
                   f"({fmt_time(record.owner.at)})")
    if record.escalated_to:
        n = record.escalation_level  # 0: brought in by the agent's own escalation, no policy level yet
        out.append(f":arrow_double_up: Escalated{f' (level {n})' if n else ''} to "
                   + ", ".join(target_mention(t) for t in record.escalated_to[:10]))
    if record.messages:
        last = record.messages[-1]
        if last.text:
            out.append(f":speech_balloon: Last reply to the agent ({len(record.messages)} "
                       f"message{'s' if len(record.messages) != 1 else ''}): "
                       f"{clip(last.text, REPLY_MAX)}")
    return out


def target_mention(target: str) -> str:
    """A policy target for mrkdwn: `<#C1>`, `<@U1>`, `<!subteam^S1>`, or an escaped `#name`."""
    if target[:1] in "CG" and target[1:].isalnum():
        return f"<#{target}>"
    if target[:1] in "UW" and target[1:].isalnum():
        return f"<@{target}>"
    if target[:1] == "S" and target[1:].isalnum():
        return f"<!subteam^{target}>"
    return escape(target)


def _task(record: Record) -> str:
    r = record.request
    text = "*What the agent was doing:* " + clip(r.summary, SUMMARY_MAX)
    if r.context.goal:
        text += f"\n*Goal:* {clip(r.context.goal, 300)}"
    return text


def _facts(record: Record) -> list[str]:
    r = record.request
    items = [f"*Agent*\n{clip(r.agent, 200)}"]
    if r.confidence is not None:
        items.append(f"*Confidence*\n{fmt_confidence(r.confidence)}")
    if r.risk.amount is not None:
        items.append(f"*Amount*\n{fmt_amount(r.risk.amount, r.risk.currency)}")
    customer = list(r.context.customer.items())
    for key, value in customer[:CUSTOMER_FACTS]:
        items.append(f"*{clip(label(key), 60)}*\n{fmt_value(value, key=key, limit=150)}")
    if len(customer) > CUSTOMER_FACTS:
        items.append(f"*More customer facts*\n{len(customer) - CUSTOMER_FACTS} in full context")
    if r.kind is not Kind.escalation:
        params = current_params(record)
        room = 10 - len(items)
        for key in list(params)[:max(0, min(2, room))]:
            items.append(f"*{clip(label(key), 60)}*\n{fmt_value(params[key], key=key, limit=150)}")
    return items[:10]


def _advice(record: Record) -> str:
    ctx = record.request.context
    lines = []
    if ctx.recommendation:
        conf = record.request.confidence
        sure = f" _(confidence {fmt_confidence(conf)})_" if conf is not None else ""
        lines.append(f"*Agent recommends:* {clip(ctx.recommendation, 700)}{sure}")
    if ctx.alternatives:
        lines.append("*Alternatives:* " + clip("; ".join(ctx.alternatives[:5]), 400))
    return "\n".join(lines)


def _tried(record: Record) -> str:
    attempts = record.request.context.actions_attempted
    if not attempts:
        return ""
    shown = attempts[-CARD_ATTEMPTS:]
    lines = ["*Tried:*" + (f" (last {len(shown)} of {len(attempts)})"
                           if len(attempts) > len(shown) else "")]
    for a in shown:
        mark = "•" if a.ok is None else "✓" if a.ok else "✗"
        result = f" → {clip(a.result, 200)}" if a.result else ""
        lines.append(f"{mark} {clip(a.action, 100)}{result}")
    return "\n".join(lines)


def _last_turns(record: Record) -> Block:
    turns = record.request.context.conversation
    last = turns[-CARD_TURNS:]
    if len(turns) > len(last):
        head = (f"*Last {len(last)} of {len(turns)} turns* · earlier ones: "
                "_Show full context_")
    else:
        head = "*Conversation*"
    lines = [f"*{clip(t.role or 'message', 40)}:* {clip(t.text, TURN_MAX)}" for t in last]
    return context([head, *lines])


def _explainer(record: Record) -> str:
    """The footer, consistent with the card's state like every other card's: the mode's words
    only while the case waits (the outcome line says what happened once it is settled), and
    the request id as `/hitl audit` takes it."""
    route = record.route
    parts = [f"{clip(route.tier, 40).capitalize()} tier"]
    if record.state is State.pending and record.decision is None:
        parts.append(mode_label(route.mode))
    if record.request.requested_by:
        parts.append(f"for {user_mention(record.request.requested_by)}")
    parts.append(f"Request `{clip(record.id, 128)}`")
    return " · ".join(parts)


def _actions(record: Record) -> Block:
    r = record.request
    value = ButtonValue(r=record.id).pack()
    elements: list[dict[str, Any]] = []
    if record.owner is None:
        elements.append(button("Take over", ActionId.take_over, value, style="primary"))
    elements += [
        button("Reply to agent…", ActionId.reply, value),
        button("Resolve…", ActionId.resolve, value),
        button("Hand back…", ActionId.hand_back, value),
    ]
    if r.kind in (Kind.approval, Kind.review):  # the proposed action itself can be decided
        shown = ButtonValue(r=record.id, p=record.params_mark).pack()  # approvals of exactly these values
        elements.append(button("Approve action", ActionId.approve, shown))
        if r.editable:
            elements.append(button("Edit…", ActionId.edit, shown))
        elements.append(button("Reject action", ActionId.reject, value, style="danger"))
    elements.append(button("Show full context", ActionId.show_context, value))
    return {"type": "actions", "block_id": str(BlockId.actions), "elements": elements}


def _last_choice(record: Record) -> Choice | None:
    d = record.decision
    return d.decided_by[-1].choice if d is not None and d.decided_by else None


# ---- messages that point at a card ----------------------------------------------------------


def reminder_message(record: Record, who: list[str], expires_in_s: float,
                     then: Status) -> dict[str, Any]:
    """A thread reply on the card: still waiting, who should look, and what happens when."""
    ping = " ".join(target_mention(w) for w in who[:20])
    after = "approved automatically" if then is Status.auto_approved else "rejected"
    if record.request.kind is Kind.question:
        waiting = "this question is still waiting for an answer"
    elif is_handover(record):
        waiting = "this handover is still waiting for someone to take it"
    else:
        waiting = "this request is still waiting for a decision"
    text = (f":alarm_clock: {ping + ' ' if ping else ''}Reminder: {waiting}. It expires in "
            f"{fmt_duration(expires_in_s)} and is then {after}.")
    return {"text": truncate(text, FALLBACK_MAX), "blocks": [section(text)]}


def batch_reminder_message(waiting: int, who: list[str], expires_in_s: float,
                           then: Status) -> dict[str, Any]:
    """The one thread reply a batch card gets when its items' reminders come due: how many
    items still wait, who should look, and when the first of them expires."""
    ping = " ".join(target_mention(w) for w in who[:20])
    after = "approved automatically" if then is Status.auto_approved else "rejected"
    what = "1 request on this card is" if waiting == 1 else f"{waiting} requests on this card are"
    first = "It expires" if waiting == 1 else "The first expires"
    text = (f":alarm_clock: {ping + ' ' if ping else ''}Reminder: {what} still waiting for a decision. "
            f"{first} in {fmt_duration(expires_in_s)} and is then {after}.")
    return {"text": truncate(text, FALLBACK_MAX), "blocks": [section(text)]}


def escalation_note(record: Record, level: int, targets: list[str],
                    waited_s: float, stood_in: dict[str, str] | None = None) -> dict[str, Any]:
    """A thread reply on the card: the level, who was brought in, after how long. `stood_in`:
    a target away by whoever stands in for them (named instead, "for" the target)."""
    stood_in = stood_in or {}
    who = ", ".join(f"{target_mention(stood_in[t])} (for {target_mention(t)}, away)" if t in stood_in
                    else target_mention(t) for t in targets[:20])
    text = (f":arrow_double_up: No decision after {fmt_duration(waited_s)}: escalated "
            f"(level {level}) to {who}. They can decide on this card now.")
    return {"text": truncate(text, FALLBACK_MAX), "blocks": [section(text)]}


def escalation_notice(record: Record, level: int, waited_s: float,
                      permalink: str | None, *, waiting: int = 1,
                      standing_in_for: str | None = None) -> dict[str, Any]:
    """The message a level posts to a channel or DMs: what waits, for how long, the link.
    `waiting`: how many requests of a batch card (`record` the first) it is for;
    `standing_in_for`: the person the level notifies, away, this reader stands in for."""
    r = record.request
    what = "handover" if record.request.kind is Kind.escalation else "request"
    link = f" <{permalink}|Open the card>" if permalink and _safe_link(permalink) else ""
    to = "you" if standing_in_for is None else f"you, standing in for {user_mention(standing_in_for)} (away)"
    has = f"a {what} has" if waiting <= 1 else f"{waiting} requests on one card have"
    lead = (f":arrow_double_up: *Escalated to {to} (level {level}):* {has} had no "
            f"decision for {fmt_duration(waited_s)}.{link}")
    more = "" if waiting <= 1 else f" _(and {waiting - 1} more on the card)_"
    blocks: list[Block] = [
        section(lead),
        section(f"*{clip(r.action, 100)}* from *{clip(r.agent, 100)}*: {clip(r.summary, 600)}{more}"),
        context([_explainer(record)]),
    ]
    head = f"Escalated (level {level})" + ("" if standing_in_for is None else f" for {standing_in_for}")
    text = clip(f"{head}: {r.action} — {r.summary}" + ("" if waiting <= 1 else f" (+{waiting - 1} more)"), 300)
    return {"text": truncate(text, FALLBACK_MAX), "blocks": blocks}


def owned_message(owner: Vote) -> dict[str, Any]:
    """The ephemeral reply to someone acting on a case another person has taken over."""
    text = (f":raising_hand: {user_mention(owner.user_id)} took this case over "
            f"({fmt_time(owner.at)}); only they can act on it now. Ask them, or wait "
            "until they hand it back.")
    return {"text": text, "blocks": [section(text)]}


def already_owner_message() -> dict[str, Any]:
    text = ":raising_hand: You have already taken this case over."
    return {"text": text, "blocks": [section(text)]}


def _safe_link(url: str) -> bool:
    return url.startswith(("https://", "http://")) and not any(c in url for c in "<>| ")
