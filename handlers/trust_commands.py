"""`/hitl trust`, `/hitl grants`, `/hitl away`, the App Home's grants and calibration, and the
"Approve and allow similar" button. Thin: parse, one domain call, render."""

from __future__ import annotations

import contextlib
import re
from datetime import UTC, datetime, time
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond

from blocks.commands import refused_message, usage_message
from blocks.ids import ActionId, HomeActionId
from blocks.kit import Block, header, section
from blocks.messages import refusal_message
from blocks.payloads import ButtonValue, PayloadError
from blocks.trust import (
    away_message,
    calibration_lines,
    grants_home,
    grants_message,
    trust_changed_message,
    trust_message,
)
from handlers import reviews
from handlers import trust as domain
from handlers.deps import Deps, deps, user_name
from store.errors import StoreError
from store.models import utcnow
from store.trust import Away

_TARGET = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>|<!subteam\^(S[A-Z0-9]+)(?:\|[^>]*)?>|\b([UWS][A-Z0-9]{2,})\b")
_AWAY = re.compile(r"^until\s+(\S+)\s+to\s+(.+)$", re.IGNORECASE)


def parse_target(text: str) -> str | None:
    """A user or user group as a slash command carries it (`<@U1|bob>`, `<!subteam^S1>`, `U1`)."""
    m = _TARGET.search(text)
    return next((g for g in m.groups() if g), None) if m else None


def parse_until(text: str, now: datetime) -> datetime | None:
    """`2026-12-24` (the start of that day, UTC) or an ISO date and time, in UTC; None if
    unreadable or out of range (a year 9999 date with an offset is not a date in UTC)."""
    try:
        when = datetime.fromisoformat(text)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        if len(text) == 10:
            when = datetime.combine(when.date(), time(0), UTC)
        return when.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


async def do_trust(d: Deps, user: str, args: str, command: str) -> dict[str, Any]:
    """List every action's trust; admins reset, pin or unpin one (`agent/action`)."""
    words = args.split()
    if not words:
        return trust_message(await d.store.trust.states(), d.trust_after(), command)
    op = words[0].lower()
    if op not in ("reset", "pin", "unpin") or len(words) != 2:
        return usage_message(f"Use `{command} trust`, `{command} trust reset AGENT/ACTION`, "
                             f"`pin AGENT/ACTION` or `unpin AGENT/ACTION`.")
    if user not in d.admins():
        await d.store.audit_system("refused", user, {"command": f"trust {op}", "reason": "not_admin"}, utcnow())
        return refused_message("not_admin")
    target = words[1]
    known = [s for s in await d.store.trust.states()
             if f"{s.agent}/{s.action}" == target or s.action == target]
    if "/" not in target and len(known) != 1:
        return usage_message(f"Name the action as AGENT/ACTION ({len(known)} agents have `{target[:80]}`).")
    agent, _, action = (target if "/" in target else f"{known[0].agent}/{known[0].action}").partition("/")
    state = await d.store.trust.set(op, agent, action, user, utcnow())
    return trust_changed_message(op, agent, action, state)


async def do_grants(d: Deps, user: str, args: str, command: str) -> dict[str, Any]:
    words = args.split()
    if not words:
        return grants_message(await domain.live_grants(d), command)
    if words[0].lower() != "revoke" or len(words) != 2:
        return usage_message(f"Use `{command} grants` or `{command} grants revoke GRANT_ID`.")
    try:
        g = await domain.revoke_grant(d, words[1], user)
    except StoreError as e:
        return refusal_message(e)
    return usage_message(f"Revoked {g.id}: {g.agent} / {g.action} needs a person again.")


async def do_away(d: Deps, user: str, args: str, command: str) -> dict[str, Any]:
    """Show, start or end the user's absence; open cards naming them are redrawn (by the
    scheduler, `awaydraw:<user>`) to say who decides for them, or no longer."""
    now = utcnow()
    text = args.strip()
    if not text:
        return away_message((await d.store.trust.away(now)).get(user), now)
    if text.lower() in ("off", "back", "none"):
        if (ended := await d.store.trust.back(user, now)) is not None:  # the scheduler redraws
            d.on_away(ended)
        return usage_message("Welcome back: cards that name you are yours alone again.")
    m = _AWAY.match(text)
    until = parse_until(m.group(1), now) if m else None
    delegate = parse_target(m.group(2)) if m else None
    if until is None or delegate is None:
        return usage_message(f"Use `{command} away until 2026-12-24 to @bob` (a person or a user group), "
                             f"or `{command} away off`.")
    if until <= now:
        return usage_message("That date has passed; give a date still to come.")
    if delegate == user:
        return usage_message("Name someone else: you cannot stand in for yourself.")
    away = Away(user=user, delegate=delegate, until=until, since=now)
    await d.store.trust.set_away(away, user, now)  # the scheduler redraws the cards naming them
    d.on_away(away)
    return away_message(away, now)


async def home_blocks(d: Deps) -> list[Block]:
    """Standing grants (with Revoke) and the reliability table for the App Home."""
    cal = await d.store.trust.calibration()
    rows = sorted(((m, b, n, a) for (m, b), (n, a) in cal.items()), key=lambda r: (r[0], r[1]))
    return [*grants_home(await domain.live_grants(d)), header("Agent confidence vs. people"),
            section("\n".join(calibration_lines(rows))[:2900])]


async def on_approve_grant(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any],
                           respond: AsyncRespond, context: AsyncBoltContext) -> None:
    """Approve, and ask for a standing grant for similar requests (quorum people needed)."""
    await ack()
    user, d = body["user"], deps(context)
    try:
        rid = ButtonValue.unpack(action["value"]).r
        reply = await reviews.approve_with_grant(d, rid, user["id"], user_name(user))
    except (StoreError, PayloadError) as e:
        await respond(**refusal_message(e), response_type="ephemeral", replace_original=False)
        return
    await respond(text=reply["text"], response_type="ephemeral", replace_original=False)


async def on_revoke_clicked(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any],
                            context: AsyncBoltContext) -> None:
    await ack()
    from handlers.home import publish  # the Home module imports this one for its blocks

    d, user = deps(context), body["user"]["id"]
    with contextlib.suppress(StoreError):  # gone already, or not theirs: the Home shows what is in force
        await domain.revoke_grant(d, str(action.get("value") or ""), user)
    await publish(d, context.client, user)


def register(app: AsyncApp) -> None:
    app.action(ActionId.approve_grant.value)(on_approve_grant)
    app.action(HomeActionId.revoke_grant.value)(on_revoke_clicked)
