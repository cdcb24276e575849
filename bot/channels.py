"""Channel names (`#approvals`) to ids, as Slack's conversation methods need ids; cached."""

from __future__ import annotations

from slack_sdk.web.async_client import AsyncWebClient


class ChannelIds:
    def __init__(self, slack: AsyncWebClient) -> None:
        self.slack = slack
        self._ids: dict[str, str] = {}

    def remember(self, name: str, channel_id: str) -> None:
        """An id Slack just told us (a post's answer carries it)."""
        self._ids[name] = channel_id

    async def id(self, channel: str) -> str:
        """The id of a `#name` channel (listed once, then cached), or the id itself."""
        if not channel.startswith("#"):
            return channel
        if channel not in self._ids:
            cursor = None
            while True:
                resp = await self.slack.conversations_list(limit=1000, cursor=cursor,
                                                           types="public_channel,private_channel")
                for c in resp["channels"]:
                    self._ids["#" + c["name"]] = c["id"]
                cursor = (resp.get("response_metadata") or {}).get("next_cursor")
                if not cursor:
                    break
        return self._ids.get(channel, channel)
