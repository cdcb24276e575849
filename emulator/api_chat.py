"""chat.* and reactions.add."""

from __future__ import annotations

from emulator.args import Args, Handler
from emulator.blockcheck import with_ids
from emulator.common import BOT_USER_ID, JSON, SlackError
from emulator.state import Ephemeral, Workspace

MAX_TEXT = 40_000


def _text_and_blocks(a: Args, required: bool = True) -> tuple[str, list[JSON] | None]:
    text = a.text("text")
    blocks = a.blocks()
    if required and not text and not blocks and not a.has("attachments"):
        raise SlackError("no_text")
    if len(text) > MAX_TEXT:
        raise SlackError("msg_too_long")
    return text, with_ids(blocks) if blocks is not None else None


def post_message(ws: Workspace, a: Args) -> JSON:
    channel = ws.channel(a.text("channel"))
    text, blocks = _text_and_blocks(a)
    msg = ws.post(
        channel,
        text,
        blocks,
        thread_ts=a.text("thread_ts") or None,
        metadata=a.metadata(),
        reply_broadcast=a.flag("reply_broadcast"),
    )
    return {"channel": channel.id, "ts": msg.ts, "message": msg.to_slack()}


def update(ws: Workspace, a: Args) -> JSON:
    channel = ws.channel(a.text("channel"))
    msg = ws.message(channel, a.text("ts"))
    if msg.user != BOT_USER_ID:
        raise SlackError("cant_update_message")
    text, blocks = _text_and_blocks(a, required=False)
    metadata = a.metadata()
    if not text and blocks is None and metadata is None and not a.has("attachments"):
        raise SlackError("no_text")
    # Slack keeps the previous blocks (and metadata) when the update does not send them.
    msg.text = text
    if blocks is not None:
        msg.blocks = blocks
    if metadata is not None:
        msg.metadata = metadata
    msg.edited = {"user": BOT_USER_ID, "ts": ws.next_ts()}
    return {"channel": channel.id, "ts": msg.ts, "text": msg.text, "message": msg.to_slack()}


def delete(ws: Workspace, a: Args) -> JSON:
    channel = ws.channel(a.text("channel"))
    msg = ws.message(channel, a.text("ts"))
    if msg.user != BOT_USER_ID:
        raise SlackError("cant_delete_message")
    if msg.reply_ts:
        # A parent with replies stays as a tombstone so the thread survives, as in Slack.
        msg.text, msg.blocks, msg.metadata, msg.subtype = (
            "This message was deleted.",
            [],
            None,
            "tombstone",
        )
    else:
        del channel.messages[msg.ts]
        parent = channel.messages.get(msg.thread_ts or "")
        if msg.is_reply and parent is not None:
            parent.reply_ts.remove(msg.ts)
    return {"channel": channel.id, "ts": msg.ts}


def post_ephemeral(ws: Workspace, a: Args) -> JSON:
    channel = ws.channel(a.text("channel"))
    user = ws.user(a.text("user"))
    if channel.is_private and user.id not in channel.members:
        raise SlackError("user_not_in_channel")
    text, blocks = _text_and_blocks(a)
    eph = Ephemeral(
        channel.id, user.id, ws.next_ts(), text, blocks or [], a.text("thread_ts") or None
    )
    ws.ephemerals.append(eph)
    return {"message_ts": eph.ts}


def get_permalink(ws: Workspace, a: Args) -> JSON:
    channel = ws.channel(a.text("channel"))
    msg = ws.message(channel, a.text("message_ts"))
    link = f"{ws.base_url}/archives/{channel.id}/p{msg.ts.replace('.', '')}"
    if msg.is_reply:
        link += f"?thread_ts={msg.thread_ts}&cid={channel.id}"
    return {"channel": channel.id, "permalink": link}


def reactions_add(ws: Workspace, a: Args) -> JSON:
    channel = ws.channel(a.text("channel"))
    msg = ws.message(channel, a.text("timestamp"))
    name = a.text("name").strip(":")
    reaction = next((r for r in msg.reactions if r["name"] == name), None)
    if reaction is None:
        reaction = {"name": name, "users": [], "count": 0}
        msg.reactions.append(reaction)
    if BOT_USER_ID in reaction["users"]:
        raise SlackError("already_reacted")
    reaction["users"].append(BOT_USER_ID)
    reaction["count"] += 1
    return {}


HANDLERS: dict[str, Handler] = {
    "chat.postMessage": post_message,
    "chat.update": update,
    "chat.delete": delete,
    "chat.postEphemeral": post_ephemeral,
    "chat.getPermalink": get_permalink,
    "reactions.add": reactions_add,
}
