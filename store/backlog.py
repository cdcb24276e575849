"""Per-channel backlog state: which cards wait for their posting slot, and the digest card."""

from __future__ import annotations

import json
from typing import Any

from store.redis_store import Store


class BacklogStore:
    """Waiting cards per channel (`{prefix}:waiting:<channel>`) and its digest card."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.redis: Any = store.redis
        self.prefix = store.keys.prefix

    def _waiting(self, channel: str) -> str:
        return f"{self.prefix}:waiting:{channel}"

    def _digest(self, channel: str) -> str:
        return f"{self.prefix}:digest:{channel}"

    async def add(self, channel: str, member: str, now_ms: int) -> int:
        """Note an outbox operation waiting for a posting slot; how many wait now."""
        async with self.redis.pipeline(transaction=True) as p:
            p.zadd(self._waiting(channel), {member: now_ms}, nx=True)
            p.zcard(self._waiting(channel))
            _, n = await p.execute()
        return int(n)

    async def remove(self, channel: str, member: str) -> tuple[int, bool]:
        """`member` waits no more: how many still wait, and whether the channel's digest is up."""
        async with self.redis.pipeline(transaction=True) as p:
            p.zrem(self._waiting(channel), member)
            p.zcard(self._waiting(channel))
            # HGET, not HEXISTS: redis-py's cluster transactions pass keyword arguments to each
            # reply's callback, and HEXISTS's (`bool`) takes none
            p.hget(self._digest(channel), "ts")
            _, n, ts = await p.execute()
        return int(n), bool(ts)

    async def members(self, channel: str, limit: int | None = 500) -> list[tuple[str, int]]:
        """Waiting operations, oldest first, with the time they started waiting (all: None)."""
        rows = await self.redis.zrange(self._waiting(channel), 0, -1 if limit is None else limit - 1,
                                       withscores=True)
        return [(str(m), int(s)) for m, s in rows]

    async def waiting_ids(self, channel: str, limit: int | None = 500) -> list[str]:
        """Request ids whose cards wait for a slot in `channel`, oldest first (batches expanded);
        all of them when `limit` is None."""
        members = [m for m, _ in await self.members(channel, limit)]
        async with self.redis.pipeline(transaction=False) as p:
            for m in members:
                op, _, key = m.partition(":")
                if op == "batch":
                    p.lrange(self.store.keys.batch_items(key), 0, -1)
            items = iter(await p.execute())
        ids: list[str] = []
        for m in members:
            op, _, key = m.partition(":")
            ids += [key] if op == "post" else next(items) if op == "batch" else []
        return ids if limit is None else ids[:limit]

    async def posted(self, request_ids: list[str]) -> set[str]:
        """Those of `request_ids` whose card is already in Slack (their record has a `ts`)."""
        async with self.redis.pipeline(transaction=False) as p:
            for rid in request_ids:
                p.hexists(self.store.keys.request(rid), "ts")
            return {rid for rid, has in zip(request_ids, await p.execute(), strict=True) if has}

    async def labels(self, request_ids: list[str]) -> dict[str, tuple[str, str]]:
        """(action, tier) of each request that still has a record, read in chunks of 1,000."""
        out: dict[str, tuple[str, str]] = {}
        for i in range(0, len(request_ids), 1000):
            chunk = request_ids[i:i + 1000]
            async with self.redis.pipeline(transaction=False) as p:
                for rid in chunk:
                    p.hmget(self.store.keys.request(rid), ["request", "route"])
                rows = await p.execute()
            for rid, (request, route) in zip(chunk, rows, strict=True):
                if request:
                    out[rid] = (str(json.loads(request).get("action", "")),
                                str(json.loads(route).get("tier", "")) if route else "")
        return out

    async def count(self, channel: str) -> int:
        return int(await self.redis.zcard(self._waiting(channel)))

    async def claim_digest(self, channel: str) -> bool:
        """True for the one replica that may post this channel's digest now."""
        return bool(await self.redis.hsetnx(self._digest(channel), "posting", "1"))

    async def digest(self, channel: str) -> dict[str, str]:
        return dict(await self.redis.hgetall(self._digest(channel)))

    async def set_digest(self, channel: str, channel_id: str, ts: str) -> None:
        await self.redis.hset(self._digest(channel), mapping={"channel_id": channel_id, "ts": ts})

    async def clear_digest(self, channel: str) -> None:
        await self.redis.delete(self._digest(channel))
