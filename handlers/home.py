"""The App Home tab, published on `app_home_opened`: the viewer's queue and the loop's health."""

from __future__ import annotations

import asyncio
from typing import Any

from slack_bolt.async_app import AsyncApp, AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient

from blocks.home import WAITING_SHOWN, home_view
from handlers.commands import audit_status_line, control_line, pending_records, permalinks, stats_of
from handlers.deps import Deps, deps
from store.errors import StoreError
from store.models import Choice, Record, utcnow
from store.transitions import authorize

SCAN = 500
"""Pending requests looked at (oldest first) to find what the viewer may decide."""
HOME_HOURS = 24


async def may_decide(d: Deps, record: Record, user_id: str) -> bool:
    """Whether `user_id` could approve `record` now (approvers, user groups, no self-approval)."""
    groups = frozenset([g for g in record.route.approvers
                        if g.startswith("S") and user_id in await d.directory.members(g)])
    try:
        authorize(record, user_id, Choice.approve, groups=groups)
    except StoreError:
        return False
    return True


async def waiting_for(d: Deps, user_id: str) -> list[Record]:
    """Pending requests `user_id` may decide, oldest first."""
    records, _ = await pending_records(d.store, SCAN)
    allowed = await asyncio.gather(*(may_decide(d, r, user_id) for r in records))
    return [r for r, ok in zip(records, allowed, strict=True) if ok]


async def on_home_opened(event: dict[str, Any], client: AsyncWebClient,
                         context: AsyncBoltContext) -> None:
    if event.get("tab", "home") != "home":
        return
    d, user = deps(context), event["user"]
    now = utcnow()
    waiting = await waiting_for(d, user)
    shown = waiting[:WAITING_SHOWN]
    links = await permalinks(client, shown)
    report = await stats_of(d).report(HOME_HOURS, now.timestamp())
    view = home_view(waiting=list(zip(shown, links, strict=True)), waiting_total=len(waiting),
                     report=report, pause=await control_line(d.store), policy=d.policy_lines(),
                     now=now, audit=await audit_status_line(d.store))
    await client.views_publish(user_id=user, view=view)


def register(app: AsyncApp) -> None:
    app.event("app_home_opened")(on_home_opened)
