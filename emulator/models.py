"""Workspace entities as Slack shows them: users, messages, channels, groups, ephemerals, files."""

from __future__ import annotations

from dataclasses import dataclass, field

from emulator.common import APP_ID, BOT_ID, BOT_USER_ID, JSON, TEAM_ID


@dataclass
class User:
    id: str
    name: str
    real_name: str
    is_admin: bool = False
    is_bot: bool = False
    deleted: bool = False
    team_id: str = TEAM_ID
    """The user's own workspace: another one for a guest from a Slack Connect partner."""
    enterprise_id: str | None = None
    """The user's Enterprise Grid organisation, if any."""

    def to_slack(self) -> JSON:
        """The user object as users.info returns it."""
        return {
            "id": self.id,
            "team_id": self.team_id,
            "name": self.name,
            "real_name": self.real_name,
            "deleted": self.deleted,
            "is_admin": self.is_admin,
            "is_owner": self.is_admin,
            "is_bot": self.is_bot,
            "is_app_user": False,
            "tz": "Etc/UTC",
            "tz_offset": 0,
            "profile": {
                "real_name": self.real_name,
                "display_name": self.name,
                "email": None if self.is_bot else f"{self.name}@example.com",
                "image_48": "",
            },
        }


@dataclass
class Message:
    channel: str
    ts: str
    text: str
    blocks: list[JSON] = field(default_factory=list)
    user: str = BOT_USER_ID
    bot_id: str | None = BOT_ID
    thread_ts: str | None = None
    reply_broadcast: bool = False
    metadata: JSON | None = None
    edited: JSON | None = None
    reactions: list[JSON] = field(default_factory=list)
    files: list[JSON] = field(default_factory=list)
    reply_ts: list[str] = field(default_factory=list)
    subtype: str | None = None

    @property
    def is_reply(self) -> bool:
        return self.thread_ts is not None and self.thread_ts != self.ts

    def to_slack(self, include_metadata: bool = True) -> JSON:
        """The message as conversations.history returns it."""
        out: JSON = {"type": "message", "ts": self.ts, "text": self.text, "user": self.user}
        if self.bot_id:
            out.update(bot_id=self.bot_id, app_id=APP_ID, team=TEAM_ID)
        if self.blocks:
            out["blocks"] = self.blocks
        if self.thread_ts:
            out["thread_ts"] = self.thread_ts
        if self.reply_ts:
            out.update(
                reply_count=len(self.reply_ts),
                latest_reply=self.reply_ts[-1],
            )
        if self.reply_broadcast:
            out["subtype"] = "thread_broadcast"
        if self.subtype:
            out["subtype"] = self.subtype
        if self.metadata and include_metadata:
            out["metadata"] = self.metadata
        if self.edited:
            out["edited"] = self.edited
        if self.reactions:
            out["reactions"] = self.reactions
        if self.files:
            out["files"] = self.files
            out["upload"] = True
        return out


@dataclass
class Channel:
    id: str
    name: str
    is_private: bool = False
    im_user: str | None = None
    members: set[str] = field(default_factory=set)
    created: int = 1700000000
    messages: dict[str, Message] = field(default_factory=dict)

    def to_slack(self) -> JSON:
        """The conversation object as conversations.info returns it."""
        if self.im_user:
            return {"id": self.id, "is_im": True, "user": self.im_user, "created": self.created}
        return {
            "id": self.id,
            "name": self.name,
            "name_normalized": self.name,
            "is_channel": not self.is_private,
            "is_group": self.is_private,
            "is_im": False,
            "is_private": self.is_private,
            "is_archived": False,
            "is_general": self.name == "general",
            "is_member": BOT_USER_ID in self.members,
            "created": self.created,
            "creator": "U0ADMIN",
            "context_team_id": TEAM_ID,
            "num_members": len(self.members),
            "topic": {"value": "", "creator": "", "last_set": 0},
            "purpose": {"value": "", "creator": "", "last_set": 0},
        }


@dataclass
class UserGroup:
    id: str
    handle: str
    name: str
    users: list[str]

    def to_slack(self, include_users: bool = False) -> JSON:
        out: JSON = {
            "id": self.id,
            "team_id": TEAM_ID,
            "is_usergroup": True,
            "name": self.name,
            "handle": self.handle,
            "description": "",
            "user_count": len(self.users),
        }
        if include_users:
            out["users"] = list(self.users)
        return out


@dataclass
class Ephemeral:
    channel: str
    user: str
    ts: str
    text: str
    blocks: list[JSON] = field(default_factory=list)
    thread_ts: str | None = None
    deleted: bool = False


@dataclass
class File:
    id: str
    name: str
    title: str
    length: int
    user: str = BOT_USER_ID
    content: bytes | None = None
    alt_txt: str | None = None
    channels: list[str] = field(default_factory=list)
    created: int = 0

    def to_slack(self, base_url: str) -> JSON:
        return {
            "id": self.id,
            "created": self.created,
            "name": self.name,
            "title": self.title,
            "mimetype": _mimetype(self.name),
            "filetype": self.name.rsplit(".", 1)[-1].lower() if "." in self.name else "binary",
            "user": self.user,
            "size": len(self.content) if self.content is not None else self.length,
            "url_private": f"{base_url}/files/{self.id}/{self.name}",
            "permalink": f"{base_url}/files/{self.id}/{self.name}",
            "channels": list(self.channels),
            "alt_txt": self.alt_txt,
        }


def _mimetype(name: str) -> str:
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return {
        "png": "image/png",
        "jpg": "image/jpeg",
        "csv": "text/csv",
        "json": "application/json",
        "txt": "text/plain",
    }.get(ext, "application/octet-stream")
