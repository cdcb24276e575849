"""What the web page shows one person: their channels, messages, ephemerals, modal and Home.

Pure functions of the workspace; the page renders exactly this JSON and nothing else, so a
person sees only what Slack would show them (their DMs, private channels they are in, their
own ephemeral messages and modals).
"""

from __future__ import annotations

from emulator.common import BOT_USER_ID, JSON
from emulator.state import Channel, Ephemeral, Message, User, Workspace
from emulator.views import View


def person(ws: Workspace, user: User) -> JSON:
    """A user with the user groups they belong to (what authorization is decided on)."""
    groups = [
        {"id": g.id, "handle": g.handle, "name": g.name}
        for g in ws.usergroups.values()
        if user.id in g.users
    ]
    return {
        "id": user.id,
        "name": user.name,
        "real_name": user.real_name,
        "is_admin": user.is_admin,
        "is_bot": user.is_bot,
        "groups": groups,
    }


def visible(channel: Channel, user_id: str) -> bool:
    """Whether `user_id` sees the channel in their sidebar."""
    if channel.im_user is not None:
        return channel.im_user == user_id
    return not channel.is_private or user_id in channel.members


def message(msg: Message) -> JSON:
    """A message as the page draws it (thread replies are nested by `channel()`)."""
    return {
        "ts": msg.ts,
        "user": msg.user,
        "bot": msg.bot_id is not None,
        "text": msg.text,
        "blocks": msg.blocks,
        "thread_ts": msg.thread_ts,
        "reply_count": len(msg.reply_ts),
        "edited": msg.edited is not None,
        "subtype": "thread_broadcast" if msg.reply_broadcast else msg.subtype,
        "reactions": [{"name": r["name"], "count": r["count"]} for r in msg.reactions],
        "files": [_file(f) for f in msg.files],
    }


def _file(f: JSON) -> JSON:
    """A shared file; `path` is where the emulator serves it (images are shown inline)."""
    url = str(f.get("url_private") or "")
    path = "/" + url.split("/", 3)[3] if url.count("/") >= 3 else ""
    return {"name": f.get("name"), "title": f.get("title"), "mimetype": f.get("mimetype"),
            "path": path if path.startswith("/files/") else None}


def channel(ch: Channel) -> JSON:
    """A channel with its top-level messages, each carrying its thread replies."""
    top = []
    for msg in ch.messages.values():
        if msg.is_reply and not msg.reply_broadcast:
            continue
        out = message(msg)
        out["replies"] = [message(ch.messages[t]) for t in msg.reply_ts if t in ch.messages]
        top.append(out)
    return {
        "id": ch.id,
        "name": "hitl" if ch.im_user else ch.name,
        "is_private": ch.is_private and ch.im_user is None,
        "is_im": ch.im_user is not None,
        "messages": top,
    }


def ephemeral(e: Ephemeral, author: str = BOT_USER_ID) -> JSON:
    return {
        "ts": e.ts,
        "channel": e.channel,
        "user": author,
        "text": e.text,
        "blocks": e.blocks,
        "thread_ts": e.thread_ts,
        "ephemeral": True,
    }


def view(v: View | None, depth: int = 1) -> JSON | None:
    """A modal or Home tab: its blocks, the values last sent and the errors to show inline."""
    if v is None:
        return None
    return {
        "id": v.id,
        "type": v.type,
        "hash": v.hash,
        "callback_id": v.callback_id,
        "title": v.spec.get("title"),
        "submit": v.spec.get("submit"),
        "close": v.spec.get("close"),
        "blocks": v.blocks,
        "values": v.values,
        "errors": v.errors,
        "depth": depth,
    }


def snapshot(ws: Workspace, user_id: str, notices: list[Ephemeral], last: JSON | None) -> JSON:
    """Everything the page shows `user_id`; `notices` are the Slack client's own ephemerals."""
    me = ws.user(user_id)
    people = [u for u in ws.users.values() if not u.deleted]
    ephemerals = [ephemeral(e) for e in ws.ephemerals if e.user == me.id and not e.deleted]
    ephemerals += [ephemeral(n, "USLACKBOT") for n in notices if n.user == me.id]
    stack = ws.views.stacks.get(me.id) or []
    return {
        "me": person(ws, me),
        "users": [person(ws, u) for u in people],
        "usergroups": [
            {"id": g.id, "handle": g.handle, "name": g.name, "users": list(g.users)}
            for g in ws.usergroups.values()
        ],
        "bot_user": BOT_USER_ID,
        "channels": [channel(c) for c in ws.channels.values() if visible(c, me.id)],
        "ephemerals": sorted(ephemerals, key=lambda e: e["ts"]),
        "modal": view(ws.views.top(me.id), len(stack)),
        "home": view(ws.views.home(me.id)),
        "last": last,
    }
