"""Backlog mode: when a channel's queue of unposted cards grows past a threshold, post one
digest card first (counts by action and tier, oldest waiting, a button to open the queue),
keep it updated in place while the cards follow at Slack's pace, and mark it cleared when
the backlog has drained.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import TYPE_CHECKING

from blocks.batch_views import DigestCounts, digest_card
from store.backlog import BacklogStore
from store.redis_store import Store

if TYPE_CHECKING:
    from bot.delivery import Delivery, Slot
    from bot.worker import Lease

log = logging.getLogger("hitl.backlog")

BACKLOG_AT = 10
REFRESH_MS = 2000


class Backlog:
    def __init__(self, store: Store, threshold: int = BACKLOG_AT) -> None:
        self.store = store
        self.state = BacklogStore(store)
        self.threshold = threshold
        self._labels: dict[str, dict[str, tuple[str, str]]] = {}
        """Per channel: (action, tier) of each request waiting there."""

    async def waiting(self, d: Delivery, channel: str, member: str, now_ms: int) -> None:
        """An operation had to wait for its slot: count it, refresh a digest that is up."""
        n = await self.state.add(channel, member, now_ms)
        if n >= self.threshold and (await self.state.digest(channel)).get("ts"):
            await self._schedule_refresh(channel)

    async def posted(self, d: Delivery, channel: str, member: str) -> None:
        n, digest_up = await self.state.remove(channel, member)
        if digest_up and (n == 0 or n % 5 == 0):
            await self._schedule_refresh(channel)

    async def _schedule_refresh(self, channel: str) -> None:
        # NX: a refresh already due is not pushed back, so updates come every couple of seconds
        await self.store.enqueue_once(f"digest:{channel}", _now_ms() + REFRESH_MS)

    async def maybe_post_digest(self, d: Delivery, channel: str, slot: Slot, waiting: int) -> bool:
        """With the channel's posting slot in hand: post the digest in it first if the channel
        is backlogged, `waiting` cards counted as the slot was taken (True: the slot went to the
        digest)."""
        if waiting < self.threshold:
            return False
        if not await self.state.claim_digest(channel):
            return False
        tally = await self.tally(channel)
        message = digest_card(channel, [], self._oldest_age(await self.state.members(channel, 1)),
                              cleared=False, counts=tally)
        resp = await d.post_message(slot, text=message["text"], blocks=message["blocks"], unfurl_links=False)
        await self.state.set_digest(channel, str(resp["channel"]), str(resp["ts"]))
        log.info("backlog: %d cards waiting for %s; digest posted", tally.total, channel)
        return True

    async def refresh(self, d: Delivery, channel: str, member: str, lease: Lease) -> None:
        """Update the digest in place, or mark it cleared once nothing waits."""
        state = await self.state.digest(channel)
        if not state.get("ts"):
            await lease.finish()
            return
        await d.pace("update", member, lease)
        tally = await self.tally(channel)
        cleared = not tally.total
        message = digest_card(channel, [], self._oldest_age(await self.state.members(channel, 1)),
                              cleared=cleared, counts=tally)
        await d.slack.call("chat.update", channel=state["channel_id"], ts=state["ts"], text=message["text"],
                           blocks=message["blocks"])
        d.stats["updated"] += 1
        await lease.finish()
        if cleared:
            await self.state.clear_digest(channel)
        else:  # keep refreshing while the backlog lasts, so the "cleared" update always comes
            await self._schedule_refresh(channel)

    async def tally(self, channel: str) -> DigestCounts:
        """Everything waiting for a slot in `channel`, counted by action and tier.

        A request's action and tier never change, so they are read once per request and kept
        while it waits; each refresh reads only which cards went out meanwhile."""
        ids = await self.state.waiting_ids(channel, None)
        known = self._labels.setdefault(channel, {})
        if unknown := [i for i in ids if i not in known]:
            known.update(await self.state.labels(unknown))
        posted = await self.state.posted(ids)
        live = {i: known[i] for i in ids if i in known and i not in posted}
        self._labels[channel] = live  # forget what no longer waits
        return DigestCounts(total=len(live), by_action=Counter(a for a, _ in live.values()),
                            by_tier=Counter(t for _, t in live.values()))

    @staticmethod
    def _oldest_age(first: list[tuple[str, int]]) -> float | None:
        return (_now_ms() - first[0][1]) / 1000 if first else None


def _now_ms() -> int:
    return int(time.time() * 1000)
