"""`/hitl` subcommands: help, stats, queue, pause, resume, policy, audit.

Every reply is ephemeral to the person who asked and is the acknowledgement itself, so it
shows at once; the stats chart goes to the person in a DM, uploaded after the acknowledgement.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from blocks.commands import (
    audit_message,
    help_message,
    pause_message,
    paused_line,
    policy_message,
    queue_message,
    refused_message,
    resume_message,
    usage_message,
)
from blocks.stats import audit_line, stats_message, window_label
from blocks.trust import with_calibration
from handlers import reviews
from handlers.deps import Deps, deps
from handlers.slack_errors import classify
from handlers.trust_commands import do_away, do_grants, do_trust, plain
from store.errors import NotFound
from store.models import Record, utcnow
from store.redis_store import Store
from store.stats import Report, StatsStore

log = logging.getLogger("hitl.commands")

WINDOWS = {"": 24, "24h": 24, "1d": 24, "7d": 168, "1w": 168, "30d": 720}
QUEUE_LIMIT = 20
SCAN = 500
"""Pending requests looked at (oldest first) to find those someone may see (not an admin)."""
PERMALINK_WAIT_S = 1.5
REASON_MAX = 500


@dataclass(frozen=True)
class Asked:
    """One `/hitl` invocation: who, where, and the words after the subcommand."""

    d: Deps
    user: str
    channel: str
    args: str
    command: str
    team_domain: str


Reply = dict[str, Any]


def stats_of(d: Deps) -> StatsStore:
    return d.store.stats


async def audit_status_line(store: Store) -> str:
    """The audit chain's state as the sealing leader last reported it."""
    status = await store.chain.status()
    return audit_line(status, int(time.time() * 1000))


async def control_line(store: Store) -> str:
    """The pause switch in words, as every replica sees it."""
    c = await store.control()
    at = c.get("at")
    since = datetime.fromisoformat(at) if at else None
    return paused_line(c.get("paused") == "1", c.get("reason") or None, c.get("by") or None, since)


async def permalinks(client: AsyncWebClient, records: list[Record],
                     team_domain: str = "") -> list[str | None]:
    """A link to each record's card (chat.getPermalink; built from channel and ts if slow)."""

    async def one(r: Record) -> str | None:
        if not (r.channel and r.ts):
            return None
        try:
            resp = await client.chat_getPermalink(channel=r.channel, message_ts=r.ts)
            return str(resp["permalink"])
        except SlackApiError as e:
            log.info("permalink of %s: %s", r.id, classify("chat.getPermalink", e).error)
            return _built_link(r, team_domain)

    tasks = [asyncio.ensure_future(one(r)) for r in records]
    if tasks:
        await asyncio.wait(tasks, timeout=PERMALINK_WAIT_S)
    out = []
    for r, t in zip(records, tasks, strict=True):
        if t.done() and not t.cancelled() and t.exception() is None:
            out.append(t.result())
        else:
            t.cancel()
            out.append(_built_link(r, team_domain))
    return out


def _built_link(r: Record, team_domain: str) -> str | None:
    if not (team_domain and r.channel and r.ts):
        return None
    return f"https://{team_domain}.slack.com/archives/{r.channel}/p{r.ts.replace('.', '')}"


async def pending_records(store: Store, limit: int) -> tuple[list[Record], int]:
    """The `limit` oldest pending records and how many are pending in all."""
    ids = await store.pending_ids(limit)
    total = await store.pending_count()
    found = await asyncio.gather(*(store.get(i) for i in ids), return_exceptions=True)
    return [r for r in found if isinstance(r, Record)], total


async def visible_pending(d: Deps, user: str) -> tuple[list[Record], int, int]:
    """Pending requests `user` may see (`reviews.may_see`) among the SCAN oldest, oldest first;
    how many are pending in all; how many of those looked at they may not see."""
    records, total = await pending_records(d.store, SCAN)
    absences = await d.store.trust.absences()  # read once for the whole scan
    seen = await asyncio.gather(*(reviews.may_see(d, r, user, absences=absences) for r in records))
    visible = [r for r, ok in zip(records, seen, strict=True) if ok]
    return visible, total, len(records) - len(visible)


# ---- subcommands --------------------------------------------------------------------------------


async def do_help(a: Asked) -> Reply:
    return help_message(a.command)


async def do_queue(a: Asked, client: AsyncWebClient) -> Reply:
    """Admins see every request waiting; anyone else those they may see, and a count of the others."""
    hidden, looked_at = 0, None
    if a.user in a.d.admins():
        records, total = await pending_records(a.d.store, QUEUE_LIMIT)
    else:
        records, total, hidden = await visible_pending(a.d, a.user)
        looked_at = SCAN if total > SCAN else None
    shown = records[:QUEUE_LIMIT]
    links = await permalinks(client, shown, a.team_domain)
    return queue_message(list(zip(shown, links, strict=True)), total, utcnow(), hidden=hidden,
                         looked_at=looked_at)


async def do_pause(a: Asked) -> Reply:
    if a.user not in a.d.admins():
        return await _refuse(a, "pause")
    reason = a.args[:REASON_MAX] or None
    was = (await a.d.store.control()).get("paused") == "1"
    await a.d.store.set_paused(True, reason, a.user, utcnow())
    a.d.on_pause(True, reason)
    return pause_message(a.user, reason, was_paused=was)


async def do_resume(a: Asked) -> Reply:
    if a.user not in a.d.admins():
        return await _refuse(a, "resume")
    was = (await a.d.store.control()).get("paused") == "1"
    if was:
        await a.d.store.set_paused(False, None, a.user, utcnow())
        a.d.on_pause(False, None)
    return resume_message(a.user, was_paused=was)


async def _refuse(a: Asked, command: str) -> Reply:
    await a.d.store.audit_system("refused", a.user, {"command": command, "reason": "not_admin",
                                                     "channel": a.channel}, utcnow())
    return refused_message("not_admin")


async def do_policy(a: Asked) -> Reply:
    return policy_message(a.d.policy_lines(), await control_line(a.d.store))


async def do_audit(a: Asked) -> Reply:
    rid = a.args.split()[0] if a.args else ""
    if not rid:
        return usage_message(f"Which request? `{a.command} audit <request id>`")
    trail = await a.d.store.trail(rid)
    if trail and a.user not in a.d.admins() and not await _may_see(a.d, rid, a.user):
        # answered as for an id that does not exist: no way to learn that it does
        await a.d.store.audit_system("refused", a.user, {"command": "audit", "reason": "not_allowed",
                                                         "request": rid, "channel": a.channel}, utcnow())
        trail = []
    return audit_message(rid, trail)


async def _may_see(d: Deps, request_id: str, user: str) -> bool:
    """Whether `user` may see the request's trail (its record gone, only admins may)."""
    try:
        record = await d.store.get(request_id)
    except NotFound:
        return False
    return await reviews.may_see(d, record, user)


async def do_stats(a: Asked) -> tuple[Reply, Report | None]:
    window = a.args.lower().split()[0] if a.args else ""
    hours = WINDOWS.get(window)
    if hours is None:
        return usage_message(f"Use `{a.command} stats 24h`, `7d` or `30d`."), None
    stats = stats_of(a.d)
    report = with_calibration(await stats.report(hours, utcnow().timestamp()),
                              await a.d.store.trust.calibration())
    chart = a.d.chart is not None and report.requests > 0
    return stats_message(report, lag=await stats.lag(), chart=chart,
                         audit=await audit_status_line(a.d.store)), report if chart else None


async def share_chart(a: Asked, report: Report, client: AsyncWebClient,
                      respond: AsyncRespond) -> None:
    """Render the chart off the event loop and send it to the asker alone (a DM with the bot),
    as private as the ephemeral reply it goes with."""
    assert a.d.chart is not None
    png = await asyncio.to_thread(a.d.chart, report)
    label = window_label(report.hours)
    try:
        dm = await client.conversations_open(users=a.user)
        await client.files_upload_v2(
            channel=str(dm["channel"]["id"]), file=png, filename=f"hitl-stats-{report.hours}h.png",
            title=f"hitl: decisions per hour and time to decision, last {label}",
            alt_txt=f"Decisions per hour by outcome and time to decision, last {label}")
    except SlackApiError as e:
        error = classify("files.upload", e).error
        log.warning("stats chart upload to %s failed: %s", a.user, error)
        await respond(**usage_message(f"I couldn't send you the chart ({error})."),
                      response_type="ephemeral", replace_original=False)


# ---- the listener -------------------------------------------------------------------------------

TRUST = {"trust": do_trust, "grants": do_grants, "away": do_away}
"""Trust subcommands (handlers.trust_commands, docs/trust.md)."""

SIMPLE: dict[str, Callable[[Asked], Awaitable[Reply]]] = {
    "help": do_help, "pause": do_pause, "resume": do_resume, "policy": do_policy,
    "audit": do_audit,
}


async def on_hitl(ack: AsyncAck, command: dict[str, Any], client: AsyncWebClient,
                  respond: AsyncRespond, context: AsyncBoltContext) -> None:
    sub, _, rest = (command.get("text") or "").strip().partition(" ")
    sub = sub.lower()
    # the manifest's `should_escape: true` makes Slack send mentions and links escaped: the
    # trust subcommands read them (`/hitl away ... to <@U1|bob>`), the others get the text as typed
    args = rest.strip() if sub in TRUST else plain(rest.strip())
    a = Asked(deps(context), command["user_id"], command.get("channel_id") or "", args,
              command.get("command") or "/hitl", command.get("team_domain") or "")
    report = None
    if sub == "stats":
        reply, report = await do_stats(a)
    elif sub == "queue":
        reply = await do_queue(a, client)
    elif sub in SIMPLE:
        reply = await SIMPLE[sub](a)
    elif sub in TRUST:
        reply = await TRUST[sub](a.d, a.user, a.args, a.command)
    else:
        reply = help_message(a.command, unknown=sub or None)
    await ack(**reply, response_type="ephemeral")
    if report is not None:
        await share_chart(a, report, client, respond)


def register(app: AsyncApp) -> None:
    app.command("/hitl")(on_hitl)
