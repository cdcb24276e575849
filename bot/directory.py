"""User group membership from Slack (`usergroups.users.list`), cached with a short TTL,
channel membership (`conversations.members`: who may see a request no approver is named for),
and whether a person or a user group exists (`users.info`; `/hitl away ... to @bob`).

A cached answer is served at once; when it is older than the TTL it is still served while a
background task refreshes it, so a click never waits on Slack twice for the same group. An
answer older than `max_stale_s` (after a long quiet spell) is fetched afresh before use.
"""

from __future__ import annotations

import asyncio
import logging
import time

from bot.gateway import Gateway, SlackFailure

log = logging.getLogger("hitl.directory")

MEMBERS_PAGE = 1000
"""Members asked for per `conversations.members` call (Slack's largest page)."""
MEMBERS_PAGES = 20
"""Pages read at most: people past them are not found (not shown, never shown wrongly)."""


class SlackDirectory:
    def __init__(self, slack: Gateway, ttl_s: float = 60.0, max_stale_s: float = 300.0) -> None:
        self.slack = slack
        self.ttl_s = ttl_s
        self.max_stale_s = max_stale_s
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}
        self._refreshing: dict[str, asyncio.Task[frozenset[str]]] = {}
        self._channels: dict[str, tuple[float, frozenset[str]]] = {}
        self._listing: dict[str, asyncio.Future[frozenset[str]]] = {}

    async def members(self, group_id: str) -> frozenset[str]:
        """Members of a user group (empty if Slack does not know it)."""
        hit = self._cache.get(group_id)
        # unknown, or so old that someone removed from the group long ago could still approve
        if hit is None or time.monotonic() - hit[0] > self.max_stale_s:
            return await self._fetch(group_id)
        if time.monotonic() - hit[0] > self.ttl_s and group_id not in self._refreshing:
            task = asyncio.create_task(self._fetch(group_id))
            self._refreshing[group_id] = task
            task.add_done_callback(lambda _: self._refreshing.pop(group_id, None))
        return hit[1]

    async def _fetch(self, group_id: str) -> frozenset[str]:
        try:
            resp = await self.slack.call("usergroups.users.list", retries=1, usergroup=group_id)
            users = frozenset(str(u) for u in resp.get("users") or [])
        except SlackFailure as e:  # a click must not wait long: the last answer, or nobody
            log.warning("directory: usergroups.users.list %s failed: %s", group_id, e.error)
            hit = self._cache.get(group_id)
            return hit[1] if hit else frozenset()
        self._cache[group_id] = (time.monotonic(), users)
        return users

    async def channel_members(self, channel: str) -> frozenset[str]:
        """Members of a channel (id or `#name`), every page, cached `ttl_s`; SlackFailure when
        Slack could not say (nothing stale is served: the caller shows nothing). Concurrent asks
        for one channel share one listing."""
        hit = self._channels.get(channel)
        if hit is not None and time.monotonic() - hit[0] <= self.ttl_s:
            return hit[1]
        listing = self._listing.get(channel)
        if listing is None:
            listing = asyncio.ensure_future(self._list_channel(channel))
            self._listing[channel] = listing
            listing.add_done_callback(lambda _: self._listing.pop(channel, None))
        return await asyncio.shield(listing)

    async def _list_channel(self, channel: str) -> frozenset[str]:
        cid = await self.slack.channel_id(channel)
        members: list[str] = []
        cursor = None
        for _ in range(MEMBERS_PAGES):
            resp = await self.slack.call("conversations.members", retries=1, channel=cid, limit=MEMBERS_PAGE,
                                         cursor=cursor)
            members += [str(u) for u in resp.get("members") or []]
            cursor = (resp.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                break
        else:
            log.warning("directory: %s has more than %d members; those past them are not found",
                        channel, len(members))
        found = frozenset(members)
        self._channels[channel] = (time.monotonic(), found)
        return found

    async def exists(self, target: str) -> bool:
        """Whether `target` is an active person (U…/W…, not a bot) or a user group (S…) of the
        workspace; SlackFailure when Slack could not say."""
        if target.startswith("S"):
            try:
                resp = await self.slack.call("usergroups.users.list", retries=1, usergroup=target)
            except SlackFailure as e:
                if e.error in ("no_such_subteam", "subteam_not_found"):
                    return False
                raise
            self._cache[target] = (time.monotonic(), frozenset(str(u) for u in resp.get("users") or []))
            return True
        try:
            resp = await self.slack.call("users.info", retries=1, user=target)
        except SlackFailure as e:
            if e.error in ("user_not_found", "user_not_visible"):
                return False
            raise
        user = resp.get("user") or {}
        return not user.get("deleted") and not user.get("is_bot")
