"""The emulated workspace: every id and ts is issued here."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

from emulator.common import BOT_ID, BOT_USER_ID, JSON, SlackError
from emulator.models import Channel, Ephemeral, File, Message, User, UserGroup
from emulator.views import Triggers, ViewStore

__all__ = ["Channel", "Ephemeral", "File", "Message", "User", "UserGroup", "Workspace", "seed"]


class Workspace:
    """All state of one emulated team; every id and ts is issued here."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.base_url = "http://127.0.0.1"
        self.enterprise_id: str | None = None
        """The Enterprise Grid organisation this workspace belongs to (auth.test says so), if any."""
        self.users: dict[str, User] = {}
        self.channels: dict[str, Channel] = {}
        self.usergroups: dict[str, UserGroup] = {}
        self.ephemerals: list[Ephemeral] = []
        self.files: dict[str, File] = {}
        self.views = ViewStore(self.new_id)
        self.triggers = Triggers(lambda: self.clock())
        self._last_us = 0
        self._ids = itertools.count(1)

    def new_id(self, prefix: str) -> str:
        """A fresh Slack-looking id such as `C000000012`."""
        return f"{prefix}{next(self._ids):09X}"

    def next_ts(self) -> str:
        """A message ts, strictly greater than every earlier one."""
        self._last_us = max(self._last_us + 1, int(self.clock() * 1_000_000))
        return f"{self._last_us // 1_000_000}.{self._last_us % 1_000_000:06d}"

    def add_user(
        self,
        user_id: str,
        name: str,
        real_name: str | None = None,
        *,
        is_admin: bool = False,
        is_bot: bool = False,
        team_id: str | None = None,
        enterprise_id: str | None = None,
    ) -> User:
        user = User(user_id, name, real_name or name.title(), is_admin=is_admin, is_bot=is_bot,
                    enterprise_id=enterprise_id)
        if team_id:
            user.team_id = team_id
        self.users[user_id] = user
        return user

    def add_channel(
        self,
        name: str,
        channel_id: str | None = None,
        *,
        is_private: bool = False,
        members: list[str] | None = None,
    ) -> Channel:
        """A channel the bot is a member of (plus `members`, default everyone)."""
        cid = channel_id or self.new_id("C")
        member_ids = set(self.users) if members is None else set(members)
        channel = Channel(cid, name.lstrip("#"), is_private, members=member_ids | {BOT_USER_ID})
        self.channels[cid] = channel
        return channel

    def add_usergroup(
        self, handle: str, users: list[str], group_id: str | None = None, name: str | None = None
    ) -> UserGroup:
        group = UserGroup(group_id or self.new_id("S"), handle, name or handle.title(), list(users))
        self.usergroups[group.id] = group
        return group

    def find_channel(self, ref: str) -> Channel | None:
        """A channel by id, `#name`, `name`, or a user id (that user's DM with the app)."""
        if ref in self.channels:
            return self.channels[ref]
        if ref in self.users:
            return self.im_channel(ref)
        name = ref.lstrip("#")
        return next((c for c in self.channels.values() if c.name == name and not c.im_user), None)

    def channel(self, ref: str) -> Channel:
        found = self.find_channel(ref)
        if found is None:
            raise SlackError("channel_not_found")
        return found

    def im_channel(self, user_id: str) -> Channel:
        """The app's DM with a user, created on first use."""
        for c in self.channels.values():
            if c.im_user == user_id:
                return c
        cid = "D" + user_id[1:]
        channel = Channel(cid, cid, True, im_user=user_id, members={user_id, BOT_USER_ID})
        self.channels[cid] = channel
        return channel

    def message(self, channel: Channel, ts: str) -> Message:
        try:
            return channel.messages[ts]
        except KeyError:
            raise SlackError("message_not_found") from None

    def post(
        self,
        channel: Channel,
        text: str,
        blocks: list[JSON] | None = None,
        *,
        thread_ts: str | None = None,
        metadata: JSON | None = None,
        user: str = BOT_USER_ID,
        bot_id: str | None = BOT_ID,
        reply_broadcast: bool = False,
        files: list[JSON] | None = None,
    ) -> Message:
        """Store a new message (or thread reply) and return it."""
        parent = None
        if thread_ts:
            parent = channel.messages.get(thread_ts)
            if parent is None or parent.is_reply:
                raise SlackError("thread_not_found")
        msg = Message(
            channel.id,
            self.next_ts(),
            text,
            blocks or [],
            user,
            bot_id,
            thread_ts=thread_ts,
            metadata=metadata,
            reply_broadcast=reply_broadcast,
            files=files or [],
        )
        if parent is not None:
            parent.thread_ts = parent.ts
            parent.reply_ts.append(msg.ts)
        channel.messages[msg.ts] = msg
        return msg

    def user(self, user_id: str) -> User:
        try:
            return self.users[user_id]
        except KeyError:
            raise SlackError("user_not_found") from None


def seed(ws: Workspace) -> None:
    """The default workspace every emulator starts with."""
    ws.add_user(BOT_USER_ID, "hitl", "hitl", is_bot=True)
    ws.add_user("U0ADMIN", "ada", "Ada Admin", is_admin=True)
    for uid, name in (
        ("U0ALICE", "alice"),
        ("U0BOB", "bob"),
        ("U0CAROL", "carol"),
        ("U0DAVE", "dave"),
    ):
        ws.add_user(uid, name, f"{name.title()}")
    for cid, name in (
        ("C0APPROVALS", "approvals"),
        ("C0APPRHIGH", "approvals-high"),
        ("C0APPRLEADS", "approvals-leads"),
        ("C0GENERAL", "general"),
    ):
        ws.add_channel(name, cid)
    ws.add_usergroup("managers", ["U0ALICE", "U0BOB"], "S0MANAGERS", "Managers")
