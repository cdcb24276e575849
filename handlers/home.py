"""The App Home tab, published on `app_home_opened`: the viewer's queue and the loop's health."""

from __future__ import annotations

import asyncio
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient

from blocks.home import WAITING_SHOWN, home_view, pause_modal
from blocks.ids import INPUT_ACTION, BlockId, CallbackId, HomeActionId
from handlers import reviews
from handlers.commands import (
    SCAN,
    Asked,
    audit_status_line,
    control_line,
    do_pause,
    do_resume,
    pending_records,
    permalinks,
    stats_of,
)
from handlers.deps import Deps, deps
from handlers.trust_commands import home_blocks
from store.models import Record, utcnow

HOME_HOURS = 24


async def waiting_for(d: Deps, user_id: str) -> tuple[list[Record], int]:
    """Pending requests `user_id` may decide among the SCAN oldest, oldest first: by the rule
    their click meets (`reviews.may_approve`: approvers, user groups, standing in for someone
    away) and that they may see (`reviews.may_see`: a request naming no approvers, only the
    members of its card's channel); and how many are pending in all (more than SCAN: the count
    is a lower bound)."""
    records, total = await pending_records(d.store, SCAN)
    absences = await d.store.trust.absences()  # read once for the whole scan

    async def theirs(r: Record) -> bool:
        return (await reviews.may_approve(d, r, user_id, absences=absences)
                and await reviews.may_see(d, r, user_id, absences=absences))

    allowed = await asyncio.gather(*(theirs(r) for r in records))
    return [r for r, ok in zip(records, allowed, strict=True) if ok], total


async def on_home_opened(event: dict[str, Any], client: AsyncWebClient,
                         context: AsyncBoltContext) -> None:
    if event.get("tab", "home") != "home":
        return
    await publish(deps(context), client, event["user"])


async def publish(d: Deps, client: AsyncWebClient, user: str) -> None:
    """Draw `user`'s Home tab as things stand (admins get the pause switch)."""
    now = utcnow()
    waiting, pending = await waiting_for(d, user)
    shown = waiting[:WAITING_SHOWN]
    links = await permalinks(client, shown)
    report = await stats_of(d).report(HOME_HOURS, now.timestamp())
    switch = (await d.store.control()).get("paused") == "1" if user in d.admins() else None
    view = home_view(waiting=list(zip(shown, links, strict=True)), waiting_total=len(waiting),
                     looked_at=SCAN if pending > SCAN else None,
                     report=report, pause=await control_line(d.store), policy=d.policy_lines(),
                     now=now, switch=switch, audit=await audit_status_line(d.store),
                     trust=await home_blocks(d, user))
    await client.views_publish(user_id=user, view=view)


def _asked(d: Deps, user: str, command: str, args: str = "") -> Asked:
    return Asked(d=d, user=user, channel="app_home", args=args, command=command, team_domain="")


async def _refused(d: Deps, user: str, reply: dict[str, Any]) -> None:
    """A Home control someone may not use (a Home drawn while they were an admin, a hand-made
    payload): `do_pause`/`do_resume` refused and audited it; the person is told why in a direct
    message, as the Home's Revoke does (a Home tab has no place for an ephemeral reply)."""
    if d.dm is not None:
        await d.dm(user, reply)


async def on_pause_clicked(ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext,
                           client: AsyncWebClient) -> None:
    await ack()
    d, user = deps(context), body["user"]["id"]
    if user not in d.admins():  # a stale Home tab: refused and audited like /hitl pause
        await _refused(d, user, await do_pause(_asked(d, user, "pause")))
        await publish(d, client, user)
        return
    await client.views_open(trigger_id=body["trigger_id"], view=pause_modal())


async def on_pause_submitted(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any],
                             context: AsyncBoltContext, client: AsyncWebClient) -> None:
    """The same domain call as `/hitl pause <reason>` (admins only, audited, every card redrawn)."""
    await ack()
    d, user = deps(context), body["user"]["id"]
    values = view.get("state", {}).get("values", {})
    reason = str((values.get(BlockId.reason_text, {}).get(INPUT_ACTION) or {}).get("value") or "")
    admin = user in d.admins()
    reply = await do_pause(_asked(d, user, "pause", reason.strip()))
    if not admin:
        await _refused(d, user, reply)
    await publish(d, client, user)


async def on_resume_clicked(ack: AsyncAck, body: dict[str, Any], context: AsyncBoltContext,
                            client: AsyncWebClient) -> None:
    await ack()
    d, user = deps(context), body["user"]["id"]
    admin = user in d.admins()
    reply = await do_resume(_asked(d, user, "resume"))
    if not admin:
        await _refused(d, user, reply)
    await publish(d, client, user)


def register(app: AsyncApp) -> None:
    app.event("app_home_opened")(on_home_opened)
    app.action(HomeActionId.pause.value)(on_pause_clicked)
    app.action(HomeActionId.resume.value)(on_resume_clicked)
    app.view(CallbackId.pause_modal.value)(on_pause_submitted)
