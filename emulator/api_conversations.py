"""auth.test, conversations.*, users.* and usergroups.*."""

from __future__ import annotations

import base64
from typing import Any

from emulator.args import Args, Handler
from emulator.common import APP_ID, BOT_ID, BOT_USER_ID, JSON, TEAM_DOMAIN, TEAM_ID, SlackError
from emulator.state import Message, Workspace


def _page(items: list[Any], a: Args, default_limit: int) -> tuple[list[Any], str]:
    """One page of `items` and the next cursor ("" on the last page), as Slack paginates."""
    limit = a.number("limit", default_limit) or default_limit
    offset = 0
    if a.has("cursor"):
        try:
            offset = int(base64.b64decode(a.text("cursor")).decode().split(":", 1)[1])
        except (ValueError, IndexError):
            raise SlackError("invalid_cursor") from None
    page = items[offset : offset + limit]
    more = offset + limit < len(items)
    cursor = base64.b64encode(f"next:{offset + limit}".encode()).decode() if more else ""
    return page, cursor


def auth_test(ws: Workspace, a: Args) -> JSON:
    return {
        "url": f"https://{TEAM_DOMAIN}.slack.com/",
        "team": "hitl emulator",
        "user": "hitl",
        "team_id": TEAM_ID,
        "user_id": BOT_USER_ID,
        "bot_id": BOT_ID,
        "app_id": APP_ID,
        "is_enterprise_install": False,
        **({"enterprise_id": ws.enterprise_id} if ws.enterprise_id else {}),
    }


def _in_window(msg: Message, a: Args) -> bool:
    ts = float(msg.ts)
    inclusive = a.flag("inclusive")
    if a.has("oldest"):
        oldest = float(a.text("oldest"))
        if ts < oldest or (ts == oldest and not inclusive):
            return False
    if a.has("latest"):
        latest = float(a.text("latest"))
        if ts > latest or (ts == latest and not inclusive):
            return False
    return True


def history(ws: Workspace, a: Args) -> JSON:
    channel = ws.channel(a.text("channel"))
    top = [
        m
        for m in channel.messages.values()
        if (not m.is_reply or m.reply_broadcast) and _in_window(m, a)
    ]
    top.reverse()
    page, cursor = _page(top, a, 100)
    meta = a.flag("include_all_metadata")
    return {
        "messages": [m.to_slack(meta) for m in page],
        "has_more": bool(cursor),
        "pin_count": 0,
        "response_metadata": {"next_cursor": cursor},
    }


def replies(ws: Workspace, a: Args) -> JSON:
    channel = ws.channel(a.text("channel"))
    msg = channel.messages.get(a.text("ts"))
    if msg is None:
        raise SlackError("thread_not_found")
    parent = channel.messages[msg.thread_ts] if msg.is_reply and msg.thread_ts else msg
    thread = [parent] + [channel.messages[ts] for ts in parent.reply_ts]
    page, cursor = _page([m for m in thread if _in_window(m, a)], a, 1000)
    meta = a.flag("include_all_metadata")
    return {
        "messages": [m.to_slack(meta) for m in page],
        "has_more": bool(cursor),
        "response_metadata": {"next_cursor": cursor},
    }


def info(ws: Workspace, a: Args) -> JSON:
    return {"channel": ws.channel(a.text("channel")).to_slack()}


def list_conversations(ws: Workspace, a: Args) -> JSON:
    types = set(a.text("types", "public_channel").split(","))
    chans = [
        c
        for c in ws.channels.values()
        if ("im" in types and c.im_user)
        or ("public_channel" in types and not c.is_private and not c.im_user)
        or ("private_channel" in types and c.is_private and not c.im_user)
    ]
    page, cursor = _page(chans, a, 100)
    return {"channels": [c.to_slack() for c in page], "response_metadata": {"next_cursor": cursor}}


def join(ws: Workspace, a: Args) -> JSON:
    channel = ws.channel(a.text("channel"))
    if channel.is_private and BOT_USER_ID not in channel.members:
        raise SlackError("method_not_supported_for_channel_type")
    already = BOT_USER_ID in channel.members
    channel.members.add(BOT_USER_ID)
    out: JSON = {"channel": channel.to_slack()}
    if already:
        out.update(
            warning="already_in_channel", response_metadata={"warnings": ["already_in_channel"]}
        )
    return out


def members(ws: Workspace, a: Args) -> JSON:
    """`conversations.members`: the channel's member ids, paged like Slack."""
    channel = ws.channel(a.text("channel"))
    ids = sorted(channel.members)
    page, cursor = _page(ids, a, 100)
    return {"members": page, "response_metadata": {"next_cursor": cursor}}


def open_conversation(ws: Workspace, a: Args) -> JSON:
    if a.has("channel"):
        return {"channel": {"id": ws.channel(a.text("channel")).id}}
    users = [u for u in a.text("users").split(",") if u]
    if len(users) != 1:
        raise SlackError("users_list_not_supplied" if not users else "not_implemented")
    return {"channel": {"id": ws.im_channel(ws.user(users[0]).id).id}}


def users_info(ws: Workspace, a: Args) -> JSON:
    return {"user": ws.user(a.text("user")).to_slack()}


def users_list(ws: Workspace, a: Args) -> JSON:
    page, cursor = _page(list(ws.users.values()), a, 200)
    return {
        "members": [u.to_slack() for u in page],
        "cache_ts": int(ws.clock()),
        "response_metadata": {"next_cursor": cursor},
    }


def usergroups_list(ws: Workspace, a: Args) -> JSON:
    include = a.flag("include_users")
    return {"usergroups": [g.to_slack(include) for g in ws.usergroups.values()]}


def usergroups_users(ws: Workspace, a: Args) -> JSON:
    group = ws.usergroups.get(a.text("usergroup"))
    if group is None:
        raise SlackError("no_such_subteam")
    return {"users": list(group.users)}


HANDLERS: dict[str, Handler] = {
    "auth.test": auth_test,
    "conversations.history": history,
    "conversations.replies": replies,
    "conversations.info": info,
    "conversations.list": list_conversations,
    "conversations.join": join,
    "conversations.members": members,
    "conversations.open": open_conversation,
    "users.info": users_info,
    "users.list": users_list,
    "usergroups.list": usergroups_list,
    "usergroups.users.list": usergroups_users,
}
