"""What a person does in Slack, turned into the signed requests Slack sends the app."""

from __future__ import annotations

from typing import Any

from emulator import payloads
from emulator.common import JSON, SlackError
from emulator.payloads import InteractionError
from emulator.responses import Responses
from emulator.state import Channel, User, Workspace
from emulator.transport import Reply, Transport
from emulator.views import View

VERIFICATION_TOKEN = "emulator-verification-token"


class Interactions:
    """Clicks, slash commands and Home visits by workspace members."""

    def __init__(self, ws: Workspace, transport: Transport, responses: Responses) -> None:
        self.ws = ws
        self.transport = transport
        self.responses = responses

    def user(self, user_id: str) -> User:
        try:
            return self.ws.user(user_id)
        except SlackError:
            raise InteractionError(f"no user {user_id!r} in the workspace") from None

    def channel(self, ref: str) -> Channel:
        found = self.ws.find_channel(ref)
        if found is None:
            raise InteractionError(f"no channel {ref!r} in the workspace")
        return found

    def open_view(self, user_id: str, view_id: str) -> View:
        view = self.ws.views.all.get(view_id)
        if view is None or not view.open:
            raise InteractionError(f"view {view_id!r} is not open")
        if view.user_id != user_id:
            raise InteractionError(f"view {view_id!r} belongs to {view.user_id}, not {user_id}")
        return view

    def _action_ts(self) -> str:
        return f"{self.ws.clock():.6f}"

    async def click(
        self,
        user_id: str,
        channel: str,
        ts: str,
        action_id: str,
        *,
        value: Any = None,
        block_id: str | None = None,
    ) -> Reply:
        """Press a button (or choose `value` in a select/overflow) on a message or ephemeral."""
        user = self.user(user_id)
        ch = self.channel(channel)
        msg = ch.messages.get(ts)
        eph = None
        if msg is None:
            eph = next(
                (
                    e
                    for e in self.ws.ephemerals
                    if e.channel == ch.id and e.ts == ts and e.user == user.id and not e.deleted
                ),
                None,
            )
            if eph is None:
                raise InteractionError(f"no message {ts} in {ch.name} visible to {user_id}")
        blocks = msg.blocks if msg is not None else eph.blocks if eph is not None else []
        block, el = payloads.find_element(blocks, action_id, block_id)
        payload = payloads.envelope(
            "block_actions", user, self.ws.triggers.issue(user.id), VERIFICATION_TOKEN
        )
        container: JSON = {
            "type": "message",
            "message_ts": ts,
            "channel_id": ch.id,
            "is_ephemeral": eph is not None,
        }
        if msg is not None and msg.thread_ts:
            container["thread_ts"] = msg.thread_ts
        payload.update(
            container=container,
            channel={"id": ch.id, "name": "directmessage" if ch.im_user else ch.name},
            state={"values": {}},
            response_url=self.responses.issue(ch.id, user.id, ts, eph is not None),
            actions=[payloads.action(block, el, value, self._action_ts())],
        )
        if msg is not None:
            payload["message"] = msg.to_slack()
        return await self.transport.post_payload("block_actions", payload)

    async def click_view(
        self,
        user_id: str,
        view_id: str,
        action_id: str,
        *,
        value: Any = None,
        block_id: str | None = None,
        values: dict[str, dict[str, Any]] | None = None,
    ) -> Reply:
        """Press a button or choose in a modal or Home tab; `values` are inputs typed so far."""
        view = self.open_view(user_id, view_id)
        user = self.user(user_id)
        if values is not None:
            view.values = payloads.state_values(view.blocks, values)
        block, el = payloads.find_element(view.blocks, action_id, block_id)
        act = payloads.action(block, el, value, self._action_ts())
        if el.get("type") != "button":
            view.values.setdefault(block["block_id"], {})[el["action_id"]] = payloads.element_state(
                el, value
            )
        payload = payloads.envelope(
            "block_actions", user, self.ws.triggers.issue(user.id), VERIFICATION_TOKEN
        )
        payload.update(
            container={"type": "view", "view_id": view.id}, view=view.to_slack(), actions=[act]
        )
        return await self.transport.post_payload("block_actions", payload)

    async def click_home(
        self, user_id: str, action_id: str, *, value: Any = None, block_id: str | None = None
    ) -> Reply:
        home = self.ws.views.home(user_id)
        if home is None:
            raise InteractionError(f"{user_id} has no published Home tab")
        return await self.click_view(user_id, home.id, action_id, value=value, block_id=block_id)

    async def slash_command(
        self, user_id: str, channel: str, command: str, text: str = ""
    ) -> Reply:
        """Run `/command text`; an immediate JSON (or text) answer is shown as Slack shows it."""
        user = self.user(user_id)
        ch = self.channel(channel)
        fields = {
            "token": VERIFICATION_TOKEN,
            "team_id": payloads.team(user)["id"],
            "team_domain": payloads.team(user)["domain"],
            "channel_id": ch.id,
            "channel_name": "directmessage" if ch.im_user else ch.name,
            "user_id": user.id,
            "user_name": user.name,
            "command": command,
            "text": text,
            "api_app_id": payloads.APP_ID,
            "is_enterprise_install": "false",
            "response_url": self.responses.issue(ch.id, user.id, None, False),
            "trigger_id": self.ws.triggers.issue(user.id),
        }
        reply = await self.transport.post_form("slash_command", fields, dict(fields))
        if reply.status == 200:
            self.responses.immediate(ch.id, user.id, reply.body)
        return reply

    async def open_home(self, user_id: str) -> Reply:
        """Open the app's Home tab: an `app_home_opened` event."""
        user = self.user(user_id)
        home = self.ws.views.home(user.id)
        payload = payloads.app_home_opened(
            user.id,
            self.ws.im_channel(user.id).id,
            home.to_slack() if home else None,
            VERIFICATION_TOKEN,
            self.ws.new_id("Ev"),
            self.ws.clock(),
        )
        return await self.transport.post_json("event_callback", payload)
