"""Backlog mode: when a channel's queue of unposted cards grows past a threshold, post one
digest card first (counts by action and tier, oldest waiting, a button to open the queue),
keep it updated in place while the cards follow at Slack's pace, and mark it cleared when
the backlog has drained.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from blocks.batch_views import digest_card
from store.backlog import BacklogStore
from store.models import Record
from store.redis_store import Store

if TYPE_CHECKING:
    from bot.delivery import Delivery

log = logging.getLogger("hitl.backlog")

BACKLOG_AT = 10
REFRESH_MS = 2000


class Backlog:
    def __init__(self, store: Store, threshold: int = BACKLOG_AT) -> None:
        self.store = store
        self.state = BacklogStore(store)
        self.threshold = threshold

    async def waiting(self, d: Delivery, channel: str, member: str, now_ms: int) -> None:
        """An operation had to wait for its slot: count it, refresh a digest that is up."""
        n = await self.state.add(channel, member, now_ms)
        if n >= self.threshold and (await self.state.digest(channel)).get("ts"):
            await self._schedule_refresh(channel)

    async def posted(self, d: Delivery, channel: str, member: str) -> None:
        n = await self.state.remove(channel, member)
        if (await self.state.digest(channel)).get("ts") and (n == 0 or n % 5 == 0):
            await self._schedule_refresh(channel)

    async def _schedule_refresh(self, channel: str) -> None:
        # NX: a refresh already due is not pushed back, so updates come every couple of seconds
        await self.store.enqueue_once(f"digest:{channel}", _now_ms() + REFRESH_MS)

    async def maybe_post_digest(self, d: Delivery, channel: str) -> bool:
        """With a posting slot in hand: post the digest first if the channel is backlogged."""
        if await self.state.count(channel) < self.threshold:
            return False
        if not await self.state.claim_digest(channel):
            return False
        waiting = await self.records(channel)
        message = digest_card(channel, waiting, self._oldest_age(await self.state.members(channel, 1)),
                              cleared=False)
        resp = await d.slack.call("chat.postMessage", join=True, channel=channel, text=message["text"],
                                  blocks=message["blocks"], unfurl_links=False)
        await self.state.set_digest(channel, str(resp["channel"]), str(resp["ts"]))
        d.stats["posted"] += 1
        log.info("backlog: %d cards waiting for %s; digest posted", len(waiting), channel)
        return True

    async def refresh(self, d: Delivery, channel: str, member: str, lease: int) -> None:
        """Update the digest in place, or mark it cleared once nothing waits."""
        state = await self.state.digest(channel)
        if not state.get("ts"):
            await self.store.finish_outbox(member, lease)
            return
        await d.pace("update", member, lease)
        waiting = await self.records(channel)
        cleared = not waiting
        message = digest_card(channel, waiting, self._oldest_age(await self.state.members(channel, 1)),
                              cleared=cleared)
        await d.slack.call("chat.update", channel=state["channel_id"], ts=state["ts"], text=message["text"],
                           blocks=message["blocks"])
        d.stats["updated"] += 1
        await self.store.finish_outbox(member, lease)
        if cleared:
            await self.state.clear_digest(channel)
        else:  # keep refreshing while the backlog lasts, so the "cleared" update always comes
            await self._schedule_refresh(channel)

    async def records(self, channel: str, limit: int = 500) -> list[Record]:
        """The requests whose cards wait for a slot in `channel`, oldest first."""
        return [r for r in await self.store.get_many(await self.state.waiting_ids(channel, limit)) if not r.ts]

    @staticmethod
    def _oldest_age(first: list[tuple[str, int]]) -> float | None:
        return (_now_ms() - first[0][1]) / 1000 if first else None


def _now_ms() -> int:
    return int(time.time() * 1000)
