"""Replies to `/hitl` commands: help, queue, policy, pause and resume, an audit trail.

Each builder returns `{"text", "blocks"}` for an ephemeral reply to the person who asked.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from blocks.facts import STATUS_WORDS, mode_label
from blocks.kit import (
    MESSAGE_BLOCKS_MAX,
    SECTION_MAX,
    Block,
    context,
    fit_reply,
    header,
    section,
)
from blocks.messages import message_for
from blocks.text import clip, escape, fmt_duration, fmt_time, is_user_id, user_mention
from store.models import AuditEvent, Record, Status

COMMANDS: tuple[tuple[str, str], ...] = (
    ("help", "this list"),
    ("stats [24h|7d|30d]", "the loop's health: routes, escalation rate, decisions, time to "
     "decision and to escalate, queue, reviewers, warning signs, and a chart (default 24h)"),
    ("queue", "requests waiting for a person that you may see, oldest first, with a link to each "
     "card, and how many others wait"),
    ("pause [reason]", "admins: every request goes to a person (auto and audit suspended) "
     "until resumed; cards say why"),
    ("resume", "admins: requests route by the policy again"),
    ("policy", "the active policy in plain words"),
    ("audit <request id>", "who did what to one request you may see, and when"),
    ("trust [reset|pin|unpin AGENT/ACTION]", "each action's autonomy: new or trusted, counts, "
     "override rate, last change; admins reset or pin one"),
    ("grants [revoke GRANT_ID]", "standing grants in force (approve similar requests for a "
     "while); revoke one"),
    ("away [until DATE to @person | off]", "hand your approvals to someone while you are away"),
)
"""(usage, what it does) of every subcommand, in the order help lists them."""

QUEUE_SHOWN = 20
OPEN_CARD = "open the card"
TRAIL_SHOWN = 100
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{2,30}$")


def _reply(text: str, blocks: list[Block]) -> dict[str, Any]:
    """A reply within Slack's limits for one message (`fit_reply`: blocks past its text limit,
    a long audit trail or policy, are left out, and a last line says so)."""
    return fit_reply(text, blocks)


def help_message(command: str = "/hitl", unknown: str | None = None) -> dict[str, Any]:
    """Every subcommand with a line each; `unknown` names a subcommand that does not exist."""
    lines = [f"`{escape(command)} {escape(usage)}`: {escape(what)}" for usage, what in COMMANDS]
    blocks: list[Block] = []
    if unknown:
        blocks.append(section(f"I don't know `{clip(unknown, 50)}`. These are the commands:"))
    blocks.append(section("\n".join(lines)))
    blocks.append(context(["Replies are visible only to you. The stats chart comes to you alone, "
                           "in your direct messages with the app."]))
    return _reply(f"{command} commands: " + ", ".join(u.split()[0] for u, _ in COMMANDS), blocks)


def usage_message(text: str) -> dict[str, Any]:
    """A short correction (wrong argument), escaped."""
    return _reply(text, [section(f":information_source: {clip(text, 1000)}")])


def refused_message(code: str) -> dict[str, Any]:
    """A refusal by code (`not_admin`), in the words of `blocks.messages`."""
    text = message_for(code)
    return _reply(text, [section(f":no_entry_sign: {escape(text)}")])


# ---- queue ------------------------------------------------------------------------------------


def queue_line(record: Record, link: str | None, now: datetime) -> str:
    """A waiting request in two lines: its summary (linked to the card), id, age, tier, mode."""
    # Agent text is never a link's label: the link has fixed words of ours.
    summary = clip(record.request.summary.replace("\n", " "), 150)
    age = fmt_duration((now - record.created_at).total_seconds())
    votes = f" · {len(record.approvals())}/{record.route.quorum} approvals" if (
        record.route.quorum > 1) else ""
    where = f" · <{link}|{OPEN_CARD}>" if link else "" if record.ts else " · card not posted yet"
    if record.undeliverable:  # Slack refused the card for good: nobody sees it; it will expire
        where = f" · :warning: *card undeliverable* (Slack: `{clip(record.undeliverable, 60)}`), expires by its deadline"
    return (f"{summary}\n`{clip(record.id, 60)}` · waiting {age} · {clip(record.route.tier, 30)} "
            f"tier · {mode_label(record.route.mode)}{votes}{where}")


def queue_message(items: list[tuple[Record, str | None]], total: int, now: datetime, *,
                  hidden: int = 0, looked_at: int | None = None) -> dict[str, Any]:
    """Pending requests, oldest first, with age, tier and a link to each card. `items`: those
    the asker may see (`total` wait in all); `hidden`: how many of those looked at they may
    not see (a count, nothing more); `looked_at`: set when only that many were looked at."""
    if not total:
        return _reply("Nothing is waiting for a person.",
                      [section(":white_check_mark: Nothing is waiting for a person.")])
    shown = items[:QUEUE_SHOWN]
    blocks: list[Block] = [header(f"Waiting for a person: {total}")]
    blocks += [section(queue_line(r, link, now)) for r, link in shown]
    if not shown:
        blocks.append(section(":lock: None of them is yours to see."))
    more = total - len(shown) - hidden
    if more > 0:
        checked = f"; only the {looked_at} oldest were checked for what you may see" if looked_at else ""
        blocks.append(context([f"and {more} more (oldest shown first{checked})"]))
    if hidden:
        blocks.append(context([f":lock: {hidden} more waiting that you cannot see: only their approvers, "
                               "requester, people who acted on them and hitl admins see them."]))
    return _reply(f"{total} requests waiting for a person", blocks)


# ---- pause ------------------------------------------------------------------------------------


def paused_line(paused: bool, reason: str | None, by: str | None = None,
                since: datetime | None = None) -> str:
    """`⏸ Automation paused by @ada 5 minutes ago: reason` or that it runs by policy."""
    if not paused:
        return ":arrow_forward: *Automation runs by policy* (not paused)."
    who = f" by {user_mention(by)}" if by else ""
    when = f" since {fmt_time(since)}" if since else ""
    why = f": {clip(reason, 500)}" if reason else ""
    return f":double_vertical_bar: *Automation paused*{who}{when}{why}. Every request goes to a person."


def pause_message(user_id: str, reason: str | None, *, was_paused: bool) -> dict[str, Any]:
    """The confirmation an admin sees after `/hitl pause`."""
    why = f" Reason shown on every card: {clip(reason, 500)}" if reason else (
        " Cards say automation is paused; add a reason with `/hitl pause <reason>`.")
    first = "Pause reason updated." if was_paused else (
        f":double_vertical_bar: Automation paused by {user_mention(user_id)}.")
    text = (f"{first} Every new request now goes to a person: auto, audit and shadow routes are "
            f"suspended, stricter ones stay.{why} Undo with `/hitl resume`.")
    return _reply("Automation paused", [section(text)])


def resume_message(user_id: str, *, was_paused: bool) -> dict[str, Any]:
    """The confirmation after `/hitl resume` (or that nothing was paused)."""
    if not was_paused:
        return _reply("Automation is not paused", [section(
            ":information_source: Automation is not paused; nothing changed.")])
    text = (f":arrow_forward: Automation resumed by {user_mention(user_id)}: new requests route by "
            "the policy again. Requests already waiting stay with people.")
    return _reply("Automation resumed", [section(text)])


# ---- policy -----------------------------------------------------------------------------------


def policy_message(lines: list[str], pause: str) -> dict[str, Any]:
    """The active policy: `lines` are mrkdwn already escaped by whoever wrote them."""
    blocks: list[Block] = [header("The active policy"), section(pause)]
    blocks += chunks(lines)
    return _reply("The active policy", blocks)


def chunks(lines: list[str], limit: int = SECTION_MAX - 100) -> list[Block]:
    """Lines of mrkdwn packed into as few sections as fit Slack's section limit."""
    out, cur = [], ""
    for line in lines:
        if cur and len(cur) + len(line) + 1 > limit:
            out.append(section(cur))
            cur = ""
        cur = f"{cur}\n{line}" if cur else line
    if cur:
        out.append(section(cur))
    return out


# ---- audit trail ------------------------------------------------------------------------------


def _actor(actor: str) -> str:
    return user_mention(actor) if is_user_id(actor) else f"_{escape(actor) or 'unknown'}_"


def _detail(e: AuditEvent, *, waiting: bool = False) -> str:
    """`waiting`: the request is not decided yet (a shadow route's confidence bands are left out)."""
    d = e.detail
    if e.event == "received":
        return f"action {clip(str(d.get('action', '')), 100)}"
    if e.event == "routed":
        names = [str(x) for x in d.get("rules") or []]
        if waiting and d.get("mode") == "shadow":  # as on its card: the agent's confidence stays hidden
            names = [x for x in names if not x.startswith("confidence")]
        rules = ", ".join(names) or "no rule"
        paused = ", while paused" if d.get("paused") else ""
        sampled = ", sampled for review" if d.get("sampled") else ""
        return clip(f"{d.get('mode')} in tier {d.get('tier')} ({rules}){sampled}{paused}", 300)
    if e.event == "clicked":
        if d.get("outcome") == "already_decided":
            return f"{clip(str(d.get('choice', '')), 30)}, too late: already decided"
        why = f": {d.get('reason_code') or ''} {d.get('reason') or ''}".rstrip() if (
            d.get("reason_code") or d.get("reason")) else ""
        return clip(f"{d.get('choice')}{why}", 300)
    if e.event == "decided":
        status = str(d.get("status", ""))
        return escape(STATUS_WORDS.get(Status(status), status) if status in Status.__members__
                      else status)
    if e.event == "edited":
        return "changed " + (clip(", ".join(d.get("changes") or {}), 200) or "nothing")
    if e.event == "refused":
        return clip(str(d.get("reason", "")), 200)
    if e.event == "withdraw_refused":  # the agent's withdrawal, refused: the request is unchanged
        return clip(str(d.get("error", "")), 300)
    if e.event == "posted":
        channel = str(d.get("channel", ""))  # an id: Slack shows a mention of it as #name
        return f"card in <#{channel}>" if _CHANNEL_ID.match(channel) else f"card in {clip(channel, 40)}"
    if e.event == "published":
        return "to " + clip(", ".join(str(s) for s in d.get("streams") or []), 200)
    return clip(json.dumps(d, default=str, separators=(", ", ": ")), 200) if d else ""


def audit_message(request_id: str, events: list[AuditEvent]) -> dict[str, Any]:
    """One request's trail, oldest first: when, what, who, and the detail that matters."""
    rid = clip(request_id, 128)
    if not events:
        return _reply(f"No audit trail for {rid}", [section(
            f":mag: I have no request `{rid}` (or it has no audit entries).")])
    lines = []
    waiting = not any(e.event in ("decided", "expired", "withdrawn") for e in events)
    for e in events[:TRAIL_SHOWN]:
        detail = _detail(e, waiting=waiting)
        lines.append(f"{fmt_time(e.at)} *{escape(e.event)}* by {_actor(e.actor)}"
                     + (f": {detail}" if detail else ""))
    blocks: list[Block] = [header(f"Audit trail of {request_id}")]
    blocks += chunks(lines)[:MESSAGE_BLOCKS_MAX - 2]
    if len(events) > TRAIL_SHOWN:
        blocks.append(context([f"{len(events) - TRAIL_SHOWN} later entries not shown."]))
    return _reply(f"Audit trail of {rid}: {len(events)} entries", blocks)
