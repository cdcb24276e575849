"""`/hitl trust`, `/hitl grants`, `/hitl away`, the App Home's grants and calibration, and the
"Approve and allow similar" button. Thin: parse, one domain call, render."""

from __future__ import annotations

import difflib
import re
from datetime import UTC, datetime, time
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond

from blocks.commands import refused_message, usage_message
from blocks.ids import ActionId, HomeActionId
from blocks.kit import Block, header, section
from blocks.messages import refusal_message
from blocks.payloads import ButtonValue, PayloadError
from blocks.text import truncate
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
from handlers.slack_errors import SlackFailure
from store.errors import NotAllowed, StoreError
from store.models import utcnow
from store.trust import Away, TrustState, member

_USER = re.compile(r"<@([UW][A-Z0-9]{2,30})(?:\|[^>]*)?>|([UW][A-Z0-9]{2,30})")
_GROUP = re.compile(r"<!subteam\^(S[A-Z0-9]{2,30})(?:\|[^>]*)?>|(S[A-Z0-9]{2,30})")
_CHANNEL = re.compile(r"#\S+")  # after `plain`: `<#C1|ops>` is `#ops`
_ESCAPED = re.compile(r"<([^<>|]+)(?:\|([^<>]*))?>")
_AWAY = re.compile(r"^until\s+(\S+)\s+to\s+(.+)$", re.IGNORECASE)


def parse_target(text: str) -> str | None:
    """The one user or user group `text` is, as a slash command carries it: escaped by Slack
    (the manifest's `should_escape: true`: `<@U1|bob>`, `<!subteam^S1|@team>`) or as an id
    (`U1`, `S1`); None for anything else (a plain `@bob`, a channel, two names)."""
    text = text.strip()
    m = _USER.fullmatch(text) or _GROUP.fullmatch(text)
    return next((g for g in m.groups() if g), None) if m else None


def plain(text: str) -> str:
    """Slash command text as the person typed it: Slack's escaped mentions, channels and links
    (`<@U1|bob>`, `<#C1|ops>`, `<!subteam^S1|@team>`, `<https://x|x>`) back to `@bob`, `#ops`,
    `@team`, `x`, and `&lt;`, `&gt;`, `&amp;` back to `<`, `>`, `&`."""
    def one(m: re.Match[str]) -> str:
        body, label = m.group(1), m.group(2)
        mark = "#" if body.startswith("#") else "@" if body.startswith(("@", "!")) else ""
        if label:
            return label if not mark or label.startswith(("@", "#")) else mark + label
        return mark + body.removeprefix("!subteam^").lstrip("@#!") if mark else body
    return _ESCAPED.sub(one, text).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _not_a_target(text: str, command: str) -> str:
    """Why `text` names nobody who can stand in, in words."""
    if _CHANNEL.fullmatch(text.strip()):
        return "A channel cannot stand in for you: name a person or a user group."
    if text.strip().startswith("@"):
        return (f"I got `{text.strip()[:80]}` as plain text, not as a mention: pick the person or user "
                f"group from Slack's list as you type, or give their member ID (U…), e.g. "
                f"`{command} away until 2026-12-24 to U012AB3CD`.")
    return (f"Use `{command} away until 2026-12-24 to @bob` (one person or user group), "
            f"or `{command} away off`.")


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


def _named(states: list[TrustState], target: str) -> list[TrustState]:
    """The actions `target` names: `agent/action` as trust stores it (`store.trust.member`: an
    agent's `/` written `%2F`), else as shown, or the bare action."""
    exact = [s for s in states if member(s.agent, s.action) == target]
    if exact:
        return exact
    return [s for s in states
            if target in (f"{s.agent}/{s.action}", member(s.agent, s.action)) or s.action == target]


async def do_trust(d: Deps, user: str, args: str, command: str) -> dict[str, Any]:
    """List every action's trust; admins reset, pin or unpin one (`agent/action`, an action
    trust has counted)."""
    op, _, target = plain(args).strip().partition(" ")
    target = target.strip()
    if not op:
        return trust_message(await d.store.trust.states(), d.trust_after(), command)
    op = op.lower()
    if op not in ("reset", "pin", "unpin") or not target:
        return usage_message(f"Use `{command} trust`, `{command} trust reset AGENT/ACTION`, "
                             f"`pin AGENT/ACTION` or `unpin AGENT/ACTION`.")
    if user not in d.admins():
        await d.store.audit_system("refused", user, {"command": f"trust {op}", "reason": "not_admin"}, utcnow())
        return refused_message("not_admin")
    states = await d.store.trust.states()
    known = _named(states, target)
    if len(known) != 1:
        return usage_message(_which_action(states, known, target, command, op))
    state = await d.store.trust.set(op, known[0].agent, known[0].action, user, utcnow())
    return trust_changed_message(op, known[0].agent, known[0].action, state)


def _which_action(states: list[TrustState], known: list[TrustState], target: str, command: str, op: str) -> str:
    """The correction for a target that names no action trust has counted, or several."""
    shown = target[:80]
    if known:
        listed = ", ".join(f"`{member(s.agent, s.action)}`" for s in known[:5])
        return f"`{shown}` names {len(known)} actions: use one of {listed}."
    close = difflib.get_close_matches(target[:200], [member(s.agent, s.action) for s in states], n=3, cutoff=0.6)
    hint = (f" Did you mean {' or '.join(f'`{c}`' for c in close)}?" if close
            else f" `{command} trust` lists them.")
    return f"No action `{shown}` has been decided by people yet, so there is nothing to {op}.{hint}"


async def do_grants(d: Deps, user: str, args: str, command: str) -> dict[str, Any]:
    words = plain(args).split()
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
    if m is not None and until is not None and delegate is None:
        return usage_message(_not_a_target(plain(m.group(2)), command))
    if until is None or delegate is None:
        return usage_message(f"Use `{command} away until 2026-12-24 to @bob` (a person or a user group), "
                             f"or `{command} away off`.")
    if until <= now:
        return usage_message("That date has passed; give a date still to come.")
    if delegate == user:
        return usage_message("Name someone else: you cannot stand in for yourself.")
    try:
        exists = await d.directory.exists(delegate)
    except SlackFailure as e:
        return usage_message(f"I couldn't check {delegate} with Slack ({e.error}); nothing changed, try again.")
    if not exists:
        kind = "user group" if delegate.startswith("S") else "active person"
        return usage_message(f"{delegate} is no {kind} of this workspace, so nobody could stand in "
                             f"for you; nothing changed.")
    away = Away(user=user, delegate=delegate, until=until, since=now)
    await d.store.trust.set_away(away, user, now)  # the scheduler redraws the cards naming them
    d.on_away(away)
    return away_message(away, now)


async def home_blocks(d: Deps, viewer: str) -> list[Block]:
    """Standing grants (with Revoke for those `viewer` may revoke) and the reliability table
    for the App Home."""
    cal = await d.store.trust.calibration()
    rows = sorted(((m, b, n, a) for (m, b), (n, a) in cal.items()), key=lambda r: (r[0], r[1]))
    grants = await domain.live_grants(d)
    return [*grants_home(grants, {g.id for g in grants if domain.may_revoke(d, g, viewer)}),
            header("Agent confidence vs. people"), section(truncate("\n".join(calibration_lines(rows)), 2900))]  # never splits an &amp;


async def on_approve_grant(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any],
                           respond: AsyncRespond, context: AsyncBoltContext) -> None:
    """Approve, and ask for a standing grant for similar requests (quorum people needed)."""
    await ack()
    user, d = body["user"], deps(context)
    try:
        value = ButtonValue.unpack(action["value"])
        # the values' mark, as Approve: none (a card drawn by an older version) is stale
        reply = await reviews.approve_with_grant(d, value.r, user["id"], user_name(user),
                                                 seen=value.p or reviews.UNSEEN)
    except (StoreError, PayloadError) as e:
        await respond(**refusal_message(e), response_type="ephemeral", replace_original=False)
        return
    await respond(text=reply["text"], response_type="ephemeral", replace_original=False)


async def on_revoke_clicked(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any],
                            context: AsyncBoltContext) -> None:
    await ack()
    from handlers.home import publish  # the Home module imports this one for its blocks

    d, user = deps(context), body["user"]["id"]
    try:
        await domain.revoke_grant(d, str(action.get("value") or ""), user, where="home")
    except NotAllowed as e:  # a Home drawn when they could (an admin then): audited, and told why
        if d.dm is not None:
            await d.dm(user, refusal_message(e))
    except StoreError:  # gone already: the Home shows what is in force
        pass
    await publish(d, context.client, user)


def register(app: AsyncApp) -> None:
    app.action(ActionId.approve_grant.value)(on_approve_grant)
    app.action(HomeActionId.revoke_grant.value)(on_revoke_clicked)
